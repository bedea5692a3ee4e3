"""`t2ikit ui`: a web UI (gradio) over the generation core, for people who know AUTOMATIC1111.

An app layer like cli/: it imports the core, the core never imports it. gradio is an optional extra
(`pip install -e ".[ui]"`); importing this package does not import it.

    backend.py  the tabs' calls without the web (Backend), upload checks, region tables
    app.py      the page: gradio Blocks and its events
    server.py   start offline on 127.0.0.1, print the URL, stop on Ctrl-C
"""
