"""Start and stop the web UI: offline, on 127.0.0.1 unless told otherwise, until Ctrl-C.

Everything the server writes goes under the output folder: the images (with their parameters) at its top
level, the web server's upload cache in `OUTDIR/.uploads` (GRADIO_TEMP_DIR).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

LOCAL_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
QUEUE_SIZE = 64  # requests waiting for the model beyond this are refused ("queue full"), not held in memory
OPEN_HOSTS = ("0.0.0.0", "::")


def offline_environment(outdir: Path) -> None:
    """Environment gradio and the hub libraries read: no telemetry, no hub, uploads under `outdir`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["GRADIO_TEMP_DIR"] = str(outdir / ".uploads")


def check_host(host: str, port: int) -> str | None:
    """ValueError for a bad port; a warning sentence when `host` opens the server to the network."""
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"--port must be 0..65535 (0: any free port); got {port!r}")
    if host in OPEN_HOSTS:
        return (f"--host {host}: the UI listens on every network interface, so anyone who can reach this machine on "
                f"port {port} can use it (generate, upload images, fill the output folder); there is no login")
    return None


def start(model: str | None = None, host: str = LOCAL_HOST, port: int = DEFAULT_PORT, outdir="outputs",
          threads: int | None = None, device: str = "cpu", quiet: bool = False):
    """Load the model and start serving in a background thread; returns (demo, url). `demo.close()` stops it."""
    outdir = Path(outdir).resolve()
    offline_environment(outdir)
    warning = check_host(host, port)
    if warning:
        print(f"t2ikit ui: warning: {warning}", file=sys.stderr)
    from t2ikit.ui.backend import MAX_UPLOAD_BYTES, Backend

    backend = Backend(model, outdir, threads, device)  # a missing model folder fails here, before any socket
    from t2ikit.ui.app import build_app, theme

    demo = build_app(backend)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port or None, share=False, inbrowser=False, prevent_thread_lock=True,
                show_error=True, quiet=True, ssr_mode=False, max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(outdir)],
                footer_links=["api", "settings"], theme=theme(), mcp_server=False, pwa=False)
    url = demo.local_url
    if not quiet:
        print(f"t2ikit ui: serving {backend.pipe.name} at {url} (outputs in {outdir}); Ctrl-C stops it", flush=True)
    demo.backend = backend
    return demo, url


def serve(**kwargs) -> int:
    """`start`, then wait until Ctrl-C (or SIGTERM) and stop cleanly."""
    import signal

    demo, _ = start(**kwargs)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also where the shell started us with SIGINT ignored (a background job)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("t2ikit ui: stopping", file=sys.stderr, flush=True)
    finally:
        demo.close()
    return 0


__all__ = ["DEFAULT_PORT", "LOCAL_HOST", "QUEUE_SIZE", "check_host", "offline_environment", "serve", "start"]
