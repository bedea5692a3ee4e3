"""`t2ikit models`: the models t2ikit knows (the shipped one first), from t2ikit.models.registry; and
`load_pipeline`, how every verb loads its `--model` with its `--threads`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from t2ikit.models.registry import ENV_VAR, known_models, resolve_model


def load_pipeline(model: str | None, threads: int | None = None, device: str = "cpu"):
    """The T2IPipeline for a verb's `--model` (path, name or None for the shipped model), with `--threads`
    applied and the libraries' weight-loading progress bars off (noise for a one-shot command)."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from t2ikit.pipeline import T2IPipeline

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    return T2IPipeline.from_folder(resolve_model(model), device=device)


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="the models t2ikit knows and their folders")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(func=_models)


def _models(args) -> int:
    entries = known_models()
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    for e in entries:
        size = f"{e.params / 1e6:.1f}M params" if e.params is not None else "-"
        note = " (shipped; not installed yet)" if e.shipped and e.kind == "missing" else " (shipped)" if e.shipped else ""
        print(f"{e.name:<20} {e.kind:<18} {size:>14}  {e.path}{note}")
    if len(entries) == 1:
        print(f"(add folders of diffusers models with {ENV_VAR}=DIR{os.pathsep}DIR...)")
    return 0
