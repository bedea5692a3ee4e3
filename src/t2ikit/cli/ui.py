"""`t2ikit ui`: the web UI (needs the `ui` extra: pip install -e ".[ui]")."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("ui", help="a web UI in the browser: generate, edit, explain, PNG info, bench")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument("--out-dir", default="outputs",
                   help="folder for the images and uploads; the server writes nothing elsewhere (default ./outputs, as `t2ikit generate`)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.set_defaults(func=_ui)


def _ui(args) -> int:
    from t2ikit.cli.paths import check_output
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import check_model_folder

    from t2ikit.ui.server import check_host

    check_host(args.host, args.port)
    check_model_folder(resolve_model(args.model))  # a missing model folder: a sentence, before gradio loads
    check_output(f"{args.out_dir}/x.png", (".png",), "--out-dir")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the web UI needs gradio: pip install -e ".[ui]"') from None
    from t2ikit.ui.server import serve

    return serve(model=args.model, host=args.host, port=args.port, outdir=args.out_dir, threads=args.threads,
                 device=args.device)
