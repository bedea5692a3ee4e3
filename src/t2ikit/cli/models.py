"""`t2ikit models`: the models t2ikit knows (the shipped one first), from t2ikit.models.registry; and
`load_pipeline`, how every verb loads its `--model` with its `--threads`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from t2ikit.models.registry import ENV_VAR, known_models, resolve_model


def add_device_options(parser) -> None:
    """`--device` and `--dtype`, the same on every verb that runs a model (t2ikit.models.device)."""
    from t2ikit.models.device import DEVICES, DTYPES

    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the model runs; auto: CUDA when present, else MPS, else the CPU")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES),
                        help="precision of the weights (default: fp16 on CUDA/MPS, fp32 on the CPU)")


def load_pipeline(model: str | None, threads: int | None = None, device: str = "auto", dtype: str | None = None,
                  lora=(), embeddings=()):
    """The T2IPipeline for a verb's `--model` (path, name or None for the shipped model), on `--device` in
    `--dtype`, with `--threads` applied, `--lora` / `--embedding` files loaded, and the libraries'
    weight-loading progress bars off (noise for a one-shot command)."""
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
    from t2ikit.models.device import resolve_device, resolve_dtype

    device = resolve_device(device)  # before loading: a missing CUDA is a sentence, not a traceback
    dtype = resolve_dtype(dtype, device)
    pipe = T2IPipeline.from_folder(resolve_model(model), device=device, dtype=dtype)
    for spec in lora:
        pipe.load_lora(*parse_lora(spec))
    for path in embeddings:
        pipe.load_embedding(path)
    return pipe


def parse_lora(text: str) -> tuple[str, float]:
    """"FILE.safetensors[:SCALE]" -> (path, scale); scale 1 when the text does not end in ":NUMBER"."""
    path, sep, scale = text.rpartition(":")
    try:
        return (path, float(scale)) if sep and path else (text, 1.0)
    except ValueError:
        return text, 1.0  # a colon inside the path; the loader names the file if it does not exist


def add_loading_options(parser) -> None:
    """`--device`, `--dtype`, `--lora` and `--embedding`: what every verb that runs a model loads it with."""
    add_device_options(parser)
    parser.add_argument("--lora", action="append", default=[], metavar="FILE.safetensors[:SCALE]",
                        help="LoRA weights (diffusers / kohya format) merged at SCALE (default 1); repeatable")
    parser.add_argument("--embedding", action="append", default=[], metavar="FILE.safetensors",
                        help="textual-inversion embedding (A1111 / diffusers format); its token is the file's "
                             "name, or the token it names; repeatable")


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
        kind = f"{e.kind} (v-pred)" if e.prediction == "v_prediction" else e.kind
        print(f"{e.name:<20} {kind:<26} {size:>14}  {e.path}{note}")
    if len(entries) == 1:
        print(f"(add folders of diffusers models with {ENV_VAR}=DIR{os.pathsep}DIR...)")
    return 0
