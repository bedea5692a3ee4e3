"""Controlled generation: text + condition maps (through adapters) + region prompts + per-condition scales.

    from t2ikit.control import generate_controlled
    gen = generate_controlled(pipe, "a red circle", sketch="s.png", scales={"text": 4, "sketch": 1},
                              regions=["0,0,32,64:a red circle", "32,0,64,64:a blue square"], seed=0)

Everything is checked before any compute: condition images (readable, the image size), scale names,
region boxes and weights, adapters (trained, matching the UNet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2ikit.control.encoders import CONDITIONS, load_condition, to_batch
from t2ikit.control.guidance import DEFAULT_MODE, Condition, sample_conditions
from t2ikit.control.regions import REGION_MODES, Region, RegionAttentionHook, check_regions, latent_masks, \
    parse_region, region_context

ADAPTER_DIR = Path(__file__).parent / "weights"  # shipped adapters: weights/<condition>-v1/
SCALE_NAMES = ("text", "regions", *CONDITIONS)


def shipped_adapter(name: str) -> Path | None:
    folder = ADAPTER_DIR / f"{name}-v1"
    return folder if (folder / "adapter.safetensors").is_file() else None


def _resolve_adapter(pipe, name: str, given):
    from t2ikit.control.adapters import ConditionAdapter, load_adapter

    if isinstance(given, ConditionAdapter):
        adapter = given
    else:
        folder = given if given is not None else shipped_adapter(name)
        if folder is None:
            raise ValueError(
                f"no trained {name} adapter: t2ikit ships none for {name!r} (shipped: "
                f"{[c for c in CONDITIONS if shipped_adapter(c)] or 'none'}); train one with "
                f"`python -m t2ikit.control.train_adapter --modality {name} --out DIR` and pass adapters={{'{name}': DIR}}"
            )
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


@torch.no_grad()
def generate_controlled(
    pipe,
    prompt: str | list[str],
    negative_prompt: str | None = None,
    sketch=None,  # path, PIL image or (1, H, W) array
    depth=None,
    mask=None,  # (K, H, W) classes or a class-colour PNG
    reference=None,
    scales: dict | list | None = None,  # {"text": s, "sketch": s, ...} or ["sketch=0.8", ...]
    regions: list | None = None,  # Region or "x0,y0,x1,y1:prompt" / "mask.png:prompt"
    region_mode: str = "attention",  # "attention" (masked cross-attention) or "noise" (MultiDiffusion)
    adapters: dict | None = None,  # condition -> adapter folder or ConditionAdapter (default: shipped)
    guidance_mode: str = DEFAULT_MODE,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    n: int = 1,
    size: tuple[int, int] | None = None,
    sampler: str | None = None,
    progress: bool = False,
    hooks=None,
    callback=None,
    decode: bool = True,
):
    """A t2ikit.pipeline.Generation; see module docstring. Checks everything before compute."""
    from t2ikit.attention.processor import AttentionController
    from t2ikit.diffusion.loop import initial_noise
    from t2ikit.diffusion.samplers import make_scheduler
    from t2ikit.pipeline import Generation

    spec = pipe.make_spec(prompt, negative_prompt, steps, guidance, seed, n, size, sampler)
    scales = parse_scales(scales)
    given = {k: v for k, v in {"sketch": sketch, "depth": depth, "mask": mask, "reference": reference}.items()
             if v is not None}
    for name in scales:
        if name in CONDITIONS and name not in given:
            raise ValueError(f"--scale {name}=... given without a {name} condition")
    if region_mode not in REGION_MODES:
        raise ValueError(f"unknown region mode {region_mode!r}; allowed: {', '.join(REGION_MODES)}")
    maps = {name: load_condition(src, name, spec.size) for name, src in given.items()}
    regions = [r if isinstance(r, Region) else parse_region(r, spec.size) for r in (regions or [])]
    if "regions" in scales and not regions:
        raise ValueError("--scale regions=... given without --region")
    region_masks = check_regions(regions, spec.size) if regions else None
    adapters = {name: _resolve_adapter(pipe, name, (adapters or {}).get(name)) for name in maps}

    # --- compute ---
    count = spec.count
    seeds = [spec.seed + k for k in range(count)]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    h, w = spec.size[0] // pipe.vae_scale_factor, spec.size[1] // pipe.vae_scale_factor
    noise = initial_noise((count, pipe.unet.config.in_channels, h, w), generators, pipe.device, pipe.dtype)
    base = pipe._encode_each(spec.image_prompts())  # (N, T, D)
    uncond = pipe._encode_each(spec.image_negatives())
    text_scale = scales.get("text", spec.guidance)
    residuals = None
    for name, adapter in adapters.items():
        cond = to_batch([maps[name]] * count, pipe.device, pipe.dtype)
        res = adapter(cond, scales.get(name, 1.0))
        residuals = res if residuals is None else [a + b for a, b in zip(residuals, res)]
    controller = hooks if isinstance(hooks, AttentionController) else AttentionController(hooks or [])
    if regions and region_mode == "attention":
        region_states = [pipe._encode_each([r.prompt] * count) for r in regions]
        conditions = [Condition(region_context(base, region_states), text_scale, name="text+regions")]
        uncond = region_context(uncond, [uncond] * len(regions))
        controller.add(RegionAttentionHook(region_masks, [r.weight for r in regions], base.shape[1]))
    elif regions:  # noise space: one condition per region, the base prompt outside them
        lm = latent_masks(region_masks, (h, w)).to(pipe.device, pipe.dtype)
        outside = (1 - lm.sum(0)).clamp(min=0)
        region_scale = scales.get("regions", text_scale)
        conditions = [Condition(base, text_scale, mask=outside, name="text")] + [
            Condition(pipe._encode_each([r.prompt] * count), region_scale, mask=m, priority=r.weight,
                      name=f"region {i}: {r.prompt}") for i, (r, m) in enumerate(zip(regions, lm))]
    else:
        conditions = [Condition(base, text_scale, name="text")]
    scheduler = make_scheduler(spec.sampler, pipe.scheduler_config)
    if controller.hooks:
        controller.install(pipe.unet)
    try:
        latents = sample_conditions(pipe.unet, scheduler, noise, uncond, conditions, spec.steps, guidance_mode,
                                    generators, residuals, progress, callback,
                                    controller if controller.hooks else None)
    finally:
        controller.uninstall()
        controller.reset_clock()
    images = pipe.decode(latents) if decode else None
    return Generation(latents=latents, images=images, spec=spec, seeds=seeds)
