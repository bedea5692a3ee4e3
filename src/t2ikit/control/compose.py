"""The parts of a Conditioning that come from condition images, adapters and regions.

`T2IPipeline.run` calls these while it builds one Conditioning for a request: shipped or given
adapters checked against the model, scale names, per-condition maps, the bootstrap update of regions.
Everything is checked before any compute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2ikit.control.adapters import ConditionAdapter, load_adapter
from t2ikit.control.encoders import CONDITIONS
from t2ikit.control.reference import ReferenceAdapter, is_attention_adapter, load_reference_adapter
from t2ikit.control.regions import latent_masks

ADAPTER_DIR = Path(__file__).parent / "weights"  # shipped adapters: weights/<condition>-v1/
SCALE_NAMES = ("text", "regions", *CONDITIONS)
WHITE = (1.0, 1.0, 1.0)


def shipped_adapter(name: str) -> Path | None:
    folder = ADAPTER_DIR / f"{name}-v1"
    return folder if (folder / "adapter.safetensors").is_file() else None


def resolve_adapter(pipe, name: str, given):
    if isinstance(given, ReferenceAdapter):
        if given.config.token_dim != pipe.unet.config.cross_attention_dim:
            raise ValueError(f"the reference adapter's tokens are {given.config.token_dim} wide; this model's "
                             f"cross-attention takes {pipe.unet.config.cross_attention_dim}")
        return given.to(pipe.device, pipe.dtype)
    if isinstance(given, ConditionAdapter):
        adapter = given
    else:
        folder = given if given is not None else shipped_adapter(name)
        if folder is None:
            raise ValueError(
                f"no trained {name} adapter: t2ikit ships none for {name!r} (shipped: "
                f"{[c for c in CONDITIONS if shipped_adapter(c)] or 'none'}); train one with "
                f"`t2ikit train --config configs/adapter-{name}.toml --out DIR` and pass adapters={{'{name}': DIR}}"
            )
        if is_attention_adapter(folder):
            if name != "reference":
                raise ValueError(f"{folder} holds an attention (reference) adapter, not a {name} adapter")
            return load_reference_adapter(folder, pipe.unet).to(pipe.device, pipe.dtype)
        adapter = load_adapter(folder)
    c = adapter.config
    if c.modality != name or tuple(c.channels) != tuple(pipe.unet.config.block_out_channels) \
            or c.downscale != pipe.vae_scale_factor:
        raise ValueError(
            f"the {name} adapter (modality {c.modality!r}, channels {c.channels}, downscale {c.downscale}) does not "
            f"fit this model (channels {tuple(pipe.unet.config.block_out_channels)}, VAE factor {pipe.vae_scale_factor})"
        )
    return adapter.to(pipe.device, pipe.dtype)


def parse_scales(items) -> dict[str, float]:
    """["sketch=0.8", ...] or {"sketch": 0.8} -> dict, names checked against SCALE_NAMES."""
    out = {}
    for item in (items.items() if isinstance(items, dict) else [s.partition("=")[::2] for s in items or []]):
        name, value = item
        if name not in SCALE_NAMES:
            raise ValueError(f"unknown condition {name!r} in --scale; allowed: {', '.join(SCALE_NAMES)}")
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"--scale {name}={value!r}: the scale must be a number") from None
        if not np.isfinite(out[name]):
            raise ValueError(f"--scale {name}: the scale must be finite; got {value!r}")
    return out


def parse_adapter_args(items) -> dict[str, str]:
    """["sketch=DIR", ...] (the CLI's --adapter) -> {condition: folder}; each folder must exist."""
    out = {}
    for item in items or []:
        name, sep, folder = item.partition("=")
        if not sep or name not in CONDITIONS or not Path(folder).is_dir():
            raise ValueError(f"--adapter must be CONDITION=DIR with CONDITION one of {', '.join(CONDITIONS)} and an "
                             f"existing folder; got {item!r}")
        out[name] = folder
    return out


def _background_latents(pipe, rgb: tuple[float, float, float], size, count: int) -> torch.Tensor:
    """(N, C, h, w) clean latents of a plain image of colour `rgb` (each in [0, 1])."""
    colour = torch.tensor(rgb, dtype=pipe.dtype).view(1, 3, 1, 1).expand(1, 3, *size)
    z = pipe.vae.encode((colour * 2 - 1).to(pipe.device)).latent_dist.mean * pipe.vae.config.scaling_factor
    return z.expand(count, -1, -1, -1)


def bootstrap_step(pipe, scheduler, region_masks, latent_hw, background, spec, fraction, generators):
    """Bootstrapping (MultiDiffusion, Bar-Tal et al. 2023, Sec. 4.2), on the one shared latent: for the
    first `fraction` of the steps, the latents outside every region are replaced by a plain background
    noised to the next step's level, so objects can only form inside the regions."""
    bg = _background_latents(pipe, background, spec.size, spec.count)
    union = latent_masks(region_masks, latent_hw).sum(0).clamp(max=1).to(pipe.device, pipe.dtype)  # (h, w)

    def reset(i, t, z):  # an after-step update (Conditioning.after_step)
        steps = len(scheduler.timesteps)
        if i + 1 < steps and (i + 1) / steps <= fraction:
            noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in generators]).to(z)
            noisy = scheduler.add_noise(bg, noise, scheduler.timesteps[i + 1].reshape(1))
            z = union * z + (1 - union) * noisy
        return z

    return reset


__all__ = ["SCALE_NAMES", "bootstrap_step", "parse_adapter_args", "parse_scales", "resolve_adapter", "shipped_adapter"]
