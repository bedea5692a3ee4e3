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
from t2ikit.control.reference import ReferenceAdapter
from t2ikit.control.regions import REGION_MODES, Region, RegionAttentionHook, check_regions, latent_masks, \
    parse_region, region_context

ADAPTER_DIR = Path(__file__).parent / "weights"  # shipped adapters: weights/<condition>-v1/
SCALE_NAMES = ("text", "regions", *CONDITIONS)


def shipped_adapter(name: str) -> Path | None:
    folder = ADAPTER_DIR / f"{name}-v1"
    return folder if (folder / "adapter.safetensors").is_file() else None


def _resolve_adapter(pipe, name: str, given):
    from t2ikit.control.adapters import ConditionAdapter, load_adapter
    from t2ikit.control.reference import ReferenceAdapter, is_attention_adapter, load_reference_adapter

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


def _background_latents(pipe, colour: str, size, count: int) -> torch.Tensor:
    """(N, C, h, w) clean latents of a plain image of `colour`."""
    from t2ikit.world import vocab

    if colour not in vocab.BACKGROUNDS:
        raise ValueError(f"unknown background {colour!r}; allowed: {', '.join(vocab.BACKGROUNDS)}")
    rgb = torch.tensor(vocab.BACKGROUNDS[colour], dtype=pipe.dtype).view(1, 3, 1, 1).expand(1, 3, *size)
    z = pipe.vae.encode((rgb * 2 - 1).to(pipe.device)).latent_dist.mean * pipe.vae.config.scaling_factor
    return z.expand(count, -1, -1, -1)


def _bootstrap_callback(pipe, scheduler, region_masks, latent_hw, background, spec, fraction, callback):
    """Bootstrapping (MultiDiffusion, Bar-Tal et al. 2023, Sec. 4.2), on the one shared latent: for the
    first `fraction` of the steps, the latents outside every region are replaced by a plain background
    noised to the next step's level, so objects can only form inside the regions."""
    count = spec.count
    bg = _background_latents(pipe, background, spec.size, count)
    union = latent_masks(region_masks, latent_hw).sum(0).clamp(max=1).to(pipe.device, pipe.dtype)  # (h, w)
    gens = [torch.Generator("cpu").manual_seed(spec.seed + k) for k in range(count)]

    def reset(i, t, z):
        steps = len(scheduler.timesteps)
        if i + 1 < steps and (i + 1) / steps <= fraction:
            noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens]).to(z)
            noisy = scheduler.add_noise(bg, noise, scheduler.timesteps[i + 1].reshape(1))
            z.copy_(union * z + (1 - union) * noisy)
        if callback is not None:
            callback(i, t, z)

    return reset


@torch.no_grad()
def generate_controlled(
    pipe,
    prompt: str | list[str],
    negative_prompt: str | None = None,
    sketch=None,  # path, PIL image or (1, H, W) array; or a list of those, one per prompt
    depth=None,
    mask=None,  # (K, H, W) classes or a class-colour PNG
    reference=None,
    scales: dict | list | None = None,  # {"text": s, "sketch": s, ...} or ["sketch=0.8", ...]
    regions: list | None = None,  # Region or "x0,y0,x1,y1:prompt" / "mask.png:prompt"
    region_mode: str = "attention",  # "attention" (masked cross-attention) or "noise" (MultiDiffusion)
    bootstrap: float = 0.0,  # with regions: fraction of steps the latents outside all regions are reset
    background: str = "white",  # the plain background's colour (a Shapes World background name)
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
    maps = {}  # name -> one (C, H, W) map per prompt
    for name, src in given.items():
        if isinstance(src, (list, tuple)):
            if len(src) != len(spec.prompts):
                raise ValueError(f"{name}: {len(src)} maps for {len(spec.prompts)} prompts; give one per prompt or one")
            maps[name] = [load_condition(s, name, spec.size) for s in src]
        else:
            maps[name] = [load_condition(src, name, spec.size)] * len(spec.prompts)
    regions = [r if isinstance(r, Region) else parse_region(r, spec.size) for r in (regions or [])]
    if "regions" in scales and not regions:
        raise ValueError("--scale regions=... given without --region")
    region_masks = check_regions(regions, spec.size) if regions else None
    adapters = {name: _resolve_adapter(pipe, name, (adapters or {}).get(name)) for name in maps}
    if regions and any(isinstance(a, ReferenceAdapter) and a.concat for a in adapters.values()):
        raise ValueError("a concat-fusion reference adapter lengthens the text context, which region prompts do not "
                         "share: use a reference or regions, not both")

    # --- compute ---
    count = spec.count
    seeds = [spec.seed + k for k in range(count)]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    h, w = spec.size[0] // pipe.vae_scale_factor, spec.size[1] // pipe.vae_scale_factor
    noise = initial_noise((count, pipe.unet.config.in_channels, h, w), generators, pipe.device, pipe.dtype)
    base = pipe._encode_each(spec.image_prompts())  # (N, T, D)
    uncond = pipe._encode_each(spec.image_negatives())
    text_scale = scales.get("text", spec.guidance)
    controller = hooks if isinstance(hooks, AttentionController) else AttentionController(hooks or [])
    residuals = None
    for name, adapter in adapters.items():
        cond = to_batch([m for m in maps[name] for _ in range(spec.n)], pipe.device, pipe.dtype)  # (N, C, H, W)
        if isinstance(adapter, ReferenceAdapter) and adapter.concat:  # image tokens after the text's
            base = adapter.context(base, cond, scales.get(name, 1.0))
            uncond = adapter.null_context(uncond, pipe.encode_text([""]))  # guidance amplifies the reference too
            continue
        if isinstance(adapter, ReferenceAdapter):  # decoupled attention fusion: a hook on every cross-attention
            controller.add(adapter.hook(cond, scales.get(name, 1.0)))
            continue
        res = adapter(cond, scales.get(name, 1.0))  # additive fusion: residuals into the down blocks
        residuals = res if residuals is None else [a + b for a, b in zip(residuals, res)]
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
    if regions and bootstrap > 0:
        callback = _bootstrap_callback(pipe, scheduler, region_masks, (h, w), background, spec, bootstrap, callback)
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
