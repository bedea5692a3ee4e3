"""The model registry: the models t2ikit knows (the shipped one first) and how a model name resolves.

Known models are the shipped Shapes World model (`src/t2ikit/weights/shapes-v6b/`, a diffusers folder)
and every model folder inside the directories of the `T2IKIT_MODELS` environment variable
(os.pathsep-separated). Everything here reads JSON and safetensors headers only: no torch, so `t2ikit
models` starts at once.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

SHIPPED_MODEL = "shapes-v6b"
ENV_VAR = "T2IKIT_MODELS"


@dataclass
class ModelEntry:
    name: str  # folder name; what `--model NAME` accepts
    path: str  # absolute folder path
    kind: str  # "t2ikit word-level", "sd1", "sd2", "sdxl" (`family`) or "missing"
    params: int | None  # parameters of unet + vae + text encoder(s), from safetensors headers
    shipped: bool = False  # the model inside the package
    prediction: str | None = None  # the scheduler's prediction_type: "epsilon" or "v_prediction"


def shipped_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / SHIPPED_MODEL


def _safetensors_params(path: Path) -> int:
    """Number of parameters in a safetensors file, from its JSON header alone."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for d in info["shape"]:
                count *= d
            total += count
    return total


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() and (path / "unet").is_dir()


def describe(path: Path, shipped: bool = False) -> ModelEntry:
    """A ModelEntry for a model folder (kind and size read from its configs and weight headers)."""
    path = path.resolve()
    if not _is_model_folder(path):
        return ModelEntry(path.name, str(path), "missing", None, shipped)
    kind, prediction = "sd1", None
    try:
        tok_config = json.loads((path / "tokenizer" / "tokenizer_config.json").read_text())
        kind = "t2ikit word-level" if tok_config.get("t2ikit_words") else family(path)
        prediction = json.loads((path / "scheduler" / "scheduler_config.json").read_text()).get(
            "prediction_type", "epsilon")
    except (OSError, json.JSONDecodeError):
        pass
    try:
        params = sum(
            _safetensors_params(f) for part in ("unet", "vae", "text_encoder", "text_encoder_2")
            for f in (path / part).glob("*.safetensors")
        )
    except (OSError, ValueError, KeyError, struct.error):
        params = None
    return ModelEntry(path.name, str(path), kind, params, shipped, prediction)


def family(path: Path) -> str:
    """"sdxl" (two text encoders), "sd2" (OpenCLIP text width 1024, or the linear-projection transformers SD 2
    converts to at any width) or "sd1", from a Stable Diffusion folder's configs."""
    index = json.loads((path / "model_index.json").read_text())
    if index.get("_class_name") == "StableDiffusionXLPipeline" or "text_encoder_2" in index:
        return "sdxl"
    text = json.loads((path / "text_encoder" / "config.json").read_text())
    unet = json.loads((path / "unet" / "config.json").read_text())
    return "sd2" if text.get("hidden_size") == 1024 or unet.get("use_linear_projection") else "sd1"


def known_models() -> list[ModelEntry]:
    """The shipped model first (kind "missing" until it is trained), then models under T2IKIT_MODELS."""
    entries = [describe(shipped_model_path(), shipped=True)]
    seen = {entries[0].path}
    for directory in filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)):
        directory = Path(directory).expanduser()
        candidates = [directory] if _is_model_folder(directory) else sorted(directory.glob("*/"))
        for folder in candidates:
            if _is_model_folder(folder) and str(folder.resolve()) not in seen:
                entries.append(describe(folder))
                seen.add(entries[-1].path)
    return entries


def resolve_model(model: str | None) -> Path:
    """The folder for `--model`: a path, a known model's name, or None for the shipped model."""
    if model is None:
        path = shipped_model_path()
        if not _is_model_folder(path):
            raise ValueError(
                f"the shipped model {SHIPPED_MODEL} is not installed (expected a diffusers folder at {path}); "
                f"pass --model DIR with a local diffusers folder, or see `t2ikit models`"
            )
        return path
    path = Path(model).expanduser()
    if path.exists():
        return path
    entries = [e for e in known_models() if e.kind != "missing"]
    for entry in entries:
        if entry.name == model:
            return Path(entry.path)
    names = ", ".join(e.name for e in entries) or "none"
    raise ValueError(f"model {model!r} is neither a folder nor a known model name (known: {names}; see `t2ikit models`)")
