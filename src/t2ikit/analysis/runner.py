"""Batched generation from precomputed text embeddings with explicit per-image seeds.

The analyses compare many variants of one prompt under the same noise: image i is drawn from
`torch.Generator().manual_seed(seeds[i])`, so two variants that share a seed share their initial noise
(unlike `T2IPipeline.run`, where image k of a call gets seed + k). Built from the same public parts as
the pipeline (`initial_noise`, `make_scheduler`, `sample`, `decode`), so a variant with the plain
prompt's embedding and seed s reproduces `pipe.generate(prompt, seed=s, relation_guidance=0)` exactly (the
plain sampler: no sampling-time latent guidance, whatever the model's default).
"""

from __future__ import annotations

import torch

DEFAULT_BATCH = 32  # images per UNet batch (twice that with classifier-free guidance)


def _check_seeds(seeds, count: int) -> list[int]:
    seeds = list(seeds)
    if len(seeds) != count:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {count} embeddings")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63:
            raise ValueError(f"seeds must be ints in [0, 2**63), got {s!r}")
    return seeds


@torch.no_grad()
def sample_embeds(pipe, cond: torch.Tensor, seeds, steps: int, guidance: float, sampler: str,
                  negative_prompt: str = "", hooks=None, decode: bool = True, batch_size: int = DEFAULT_BATCH,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] (or (N, C, h, w) latents if not `decode`) for (N, T, D) `cond`.

    `hooks`: attention hooks or a controller, installed for every batch (their clock follows the steps).
    """
    from t2ikit.attention.processor import AttentionController
    from t2ikit.diffusion.loop import initial_noise, sample
    from t2ikit.diffusion.samplers import make_scheduler

    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        raise TypeError(f"cond must be a (N, T, D) tensor, got {getattr(cond, 'shape', type(cond).__name__)}")
    seeds = _check_seeds(seeds, cond.shape[0])
    spec = pipe.make_spec("x", None, steps, guidance, 0, 1, size, sampler)  # validates steps/guidance/sampler
    h, w = spec.size[0] // pipe.vae_scale_factor, spec.size[1] // pipe.vae_scale_factor
    uncond_row = pipe.encode_text([negative_prompt]) if spec.guidance != 1.0 else None  # (1, T, D)
    controller = hooks if isinstance(hooks, AttentionController) or hooks is None else AttentionController(hooks)
    out = []
    for start in range(0, cond.shape[0], batch_size):
        c = cond[start:start + batch_size].to(pipe.device, pipe.dtype)
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds[start:start + batch_size]]
        noise = initial_noise((len(c), pipe.unet.config.in_channels, h, w), gens, pipe.device, pipe.dtype)
        uncond = None if uncond_row is None else uncond_row.expand(len(c), -1, -1)
        scheduler = make_scheduler(spec.sampler, pipe.scheduler_config)
        if controller is not None:
            controller.install(pipe.unet)
        try:
            latents = sample(pipe.unet, scheduler, noise, c, uncond, spec.steps, spec.guidance, gens, False, None,
                             controller)
        finally:
            if controller is not None:
                controller.uninstall()
                controller.reset_clock()
        out.append(pipe.decode(latents) if decode else latents)
    return torch.cat(out)


def sample_prompts(pipe, prompts: list[str], seeds, steps: int, guidance: float, sampler: str,
                   hooks=None, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """(len(prompts), 3, H, W): plain prompts, each distinct text encoded once, image i seeded seeds[i]."""
    unique = list(dict.fromkeys(prompts))
    embeds = pipe.encode_text(unique)  # (U, T, D)
    rows = torch.tensor([unique.index(p) for p in prompts])
    return sample_embeds(pipe, embeds[rows], seeds, steps, guidance, sampler, hooks=hooks, batch_size=batch_size)
