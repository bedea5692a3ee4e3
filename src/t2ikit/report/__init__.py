"""`t2ikit report`: the seed's eight questions answered by experiment (runner.py runs, render.py writes).

Experiments live one module per question (`q1_fusion.py` .. `q8_scaling.py`) and register with
`core.experiment`; this package sits above the core, next to bench/ and analysis/, and may import them.
"""
