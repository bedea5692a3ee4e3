"""LoRA weights a user has (Hu et al. 2021): a .safetensors file in diffusers' or kohya/AUTOMATIC1111's key
format, merged into the UNet and the text encoder(s) at a scale.

diffusers reads the file's layout (`lora_state_dict` converts kohya keys) and injects peft LoRA layers
(`load_lora_into_unet`, `load_lora_into_text_encoder`); the layers are then fused into the weights and
removed, so a loaded LoRA costs nothing per step: plain generation runs the same modules as before.
Loading twice adds twice (as fusing does in diffusers). Pickle files (.bin, .pt, .ckpt) are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def check_safetensors(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path if it is an existing .safetensors file, else ValueError naming the problem."""
    path = Path(path).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(f"{what} {path} is a pickle file; loading pickle runs arbitrary code, so t2ikit refuses it. "
                         f"Convert it to .safetensors")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{what} must be a .safetensors file; got {path}")
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    return path


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{what} {path} is not a readable safetensors file: {err}") from None


def load_lora(pipe, path: str | os.PathLike, scale: float = 1.0) -> list[str]:
    """Merge the LoRA in `path` into `pipe`'s UNet and text encoder(s) at `scale`; the names of the models it
    changed. ValueError for pickle, a missing file, a bad scale or a file with no LoRA weights for this model."""
    import math

    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    path = check_safetensors(path, "LoRA file")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"LoRA scale must be a finite number; got {scale!r}")
    loader = StableDiffusionXLLoraLoaderMixin if pipe.is_sdxl else StableDiffusionLoraLoaderMixin
    try:
        state, alphas = loader.lora_state_dict(_read(path, "LoRA file"), unet_config=pipe.unet.config)
    except (ValueError, KeyError) as err:
        raise ValueError(f"LoRA file {path} is not in a LoRA format diffusers reads: {err}") from None
    encoders = {"text_encoder": pipe.text_encoder}
    if pipe.is_sdxl:
        encoders = {"text_encoder": pipe.text_encoder.text_encoder, "text_encoder_2": pipe.text_encoder.text_encoder_2}
    flat = [name for name, encoder in encoders.items() if not hasattr(encoder, "text_model")]
    state = _text_encoder_keys_named(state, flat)
    alphas = None if alphas is None else _text_encoder_keys_named(alphas, flat)  # kohya's alphas; None in peft files
    targets = {"unet": pipe.unet, **encoders}
    found = [name for name in targets if any(k.startswith(name + ".") for k in state)]
    if not found:
        raise ValueError(f"LoRA file {path} has no weights for the unet or the text encoder(s) "
                         f"(keys such as {', '.join(list(state)[:3])})")
    adapter = "t2ikit_lora"
    try:
        if "unet" in found:
            loader.load_lora_into_unet(state, alphas, unet=pipe.unet, adapter_name=adapter)
        for name, encoder in encoders.items():
            if name in found:
                loader.load_lora_into_text_encoder(state, alphas, text_encoder=encoder, prefix=name,
                                                   adapter_name=adapter)
    except (ValueError, RuntimeError, KeyError) as err:  # shapes of another model's layers
        _unload(targets)
        raise ValueError(f"LoRA file {path} does not fit this model ({pipe.name}): {err}") from None
    _fuse(targets, found, adapter, float(scale))
    return found


def _text_encoder_keys_named(state: dict, flat: list[str]) -> dict:
    """`state` with its text-encoder keys in diffusers' current names (`self_attn.q_proj.lora_linear_layer.down`),
    and without `text_model.` for the encoders in `flat` (transformers 5 flattens CLIPTextModel: diffusers drops
    that part of the weights' keys itself but not of the alphas', so per-module alphas were ignored).

    diffusers' kohya converter names a text encoder's attention LoRAs in diffusers' old format
    (`self_attn.to_q_lora.down`) and its MLP ones in the current one; its text-encoder loader then guesses the
    format of all of them from one key: old only if some `to_out_lora` is there. So a kohya file (`lora_te_`,
    `lora_te1_`, `lora_te2_`) whose attention LoRAs skip out_proj failed ("Could not automatically infer state
    dict type"), and with MLP LoRAs beside them its attention LoRAs were dropped without a word. Naming the keys
    here (diffusers' own old-to-current table) leaves the loader one format to read. UNet keys are left as they are.
    """
    from diffusers.utils.state_dict_utils import DIFFUSERS_OLD_TO_DIFFUSERS

    def rename(key: str) -> str:
        if not key.startswith(("text_encoder.", "text_encoder_2.")):
            return key
        for old, new in DIFFUSERS_OLD_TO_DIFFUSERS.items():
            key = key.replace(old, new)
        encoder, rest = key.split(".", 1)
        return f"{encoder}.{rest.removeprefix('text_model.')}" if encoder in flat else key

    return {rename(k): v for k, v in state.items()}


def _fuse(targets: dict, found: list[str], adapter: str, scale: float) -> None:
    """Fuse the adapter's layers into the weights at `scale` and remove them (no LoRA layer left to run)."""
    from diffusers.loaders.lora_base import fuse_text_encoder_lora

    for name in found:
        model = targets[name]
        if name == "unet":
            model.fuse_lora(lora_scale=scale, adapter_names=[adapter])
        else:
            fuse_text_encoder_lora(model, lora_scale=scale, adapter_names=[adapter])
    _unload(targets)


def _unload(targets: dict) -> None:
    from diffusers.loaders.lora_base import _remove_text_encoder_monkey_patch

    for name, model in targets.items():
        if name == "unet":
            if getattr(model, "peft_config", None):
                model.unload_lora()
        else:
            _remove_text_encoder_monkey_patch(model)


__all__ = ["check_safetensors", "load_lora"]
