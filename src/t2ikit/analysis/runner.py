"""Batched generation from precomputed text embeddings with explicit per-image seeds.

The analyses compare many variants of one prompt under the same noise: image i is drawn from
`torch.Generator().manual_seed(seeds[i])`, so two variants that share a seed share their initial noise
(where `T2IPipeline.run` gives image k of a call seed + k). Every batch is one `T2IPipeline.run` with the
embeddings and seeds given, so a variant with the plain prompt's embedding and seed s reproduces
`pipe.generate(prompt, seed=s, **PLAIN)` exactly (the plain sampler: no sampling-time latent guidance or planned
layout, whatever the model's defaults). On SDXL it reads each row's pooled text from `prompts` and reproduces
generate with negative_prompt="" (generate's default there is zero unconditional states, which `run` does not
take with precomputed states).
"""

from __future__ import annotations

import torch

from t2ikit.bench.progress import bar
from t2ikit.pipeline import PLAIN

DEFAULT_BATCH = 32  # images per UNet batch (twice that with classifier-free guidance)


def _check_seeds(seeds, count: int) -> list[int]:
    seeds = list(seeds)
    if len(seeds) != count:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {count} embeddings")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63:
            raise ValueError(f"seeds must be ints in [0, 2**63), got {s!r}")
    return seeds


def _negative_states(pipe, negative_prompt: str, cond: torch.Tensor) -> torch.Tensor:
    """(N, T, D) states of the negative prompt, padded with empty-prompt chunks to the length of `cond` (a
    prompt encoded in several 77-token chunks is longer than one chunk's negative)."""
    uncond = pipe.encode_text([negative_prompt])  # (1, T0, D)
    if cond.shape[1] % uncond.shape[1] or cond.shape[1] < uncond.shape[1]:
        raise ValueError(f"cond has {cond.shape[1]} token rows, not a multiple of the {uncond.shape[1]}-token context")
    chunks = cond.shape[1] // uncond.shape[1]
    if chunks > 1:
        uncond = torch.cat([uncond] + [pipe.encode_text([""])] * (chunks - 1), dim=1)
    return uncond.expand(len(cond), -1, -1)


@torch.no_grad()
def sample_embeds(pipe, cond: torch.Tensor, seeds, steps: int, guidance: float, sampler: str,
                  negative_prompt: str = "", hooks=None, decode: bool = True, batch_size: int = DEFAULT_BATCH,
                  size: tuple[int, int] | None = None, progress: bool = False,
                  desc: str = "sampling", prompts: list[str] | None = None) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] (or (N, C, h, w) latents if not `decode`) for (N, T, D) `cond`.

    `prompts`: the plain text each row's states stand for. An SDXL UNet also reads a pooled text embedding per
    row, which comes from it (None: the empty prompt's); other models read the states alone and ignore it.

    `hooks`: attention hooks or a controller, installed for every batch (their clock follows the steps).
    `progress`: one bar (titled `desc`) over every sampling step of every batch, on stderr.
    """
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        raise TypeError(f"cond must be a (N, T, D) tensor, got {getattr(cond, 'shape', type(cond).__name__)}")
    seeds = _check_seeds(seeds, cond.shape[0])
    if prompts is not None and (len(prompts) != cond.shape[0] or not all(isinstance(p, str) for p in prompts)):
        raise ValueError(f"prompts: need one str per row of cond ({cond.shape[0]}); got {prompts!r}")
    texts = prompts if prompts is not None and getattr(pipe, "is_sdxl", False) else [""] * cond.shape[0]
    out, steps_bar = [], None
    for start in range(0, cond.shape[0], batch_size):
        c = cond[start:start + batch_size]
        spec = pipe.make_spec(texts[start:start + batch_size], negative_prompt, steps, guidance, 0, 1, size, sampler,
                              **PLAIN, weighting="none")  # states from `c`; SDXL's pooled text from the texts
        if steps_bar is None:
            batches = -(-cond.shape[0] // batch_size)
            steps_bar = bar(total=batches * spec.steps, desc=desc, enabled=progress, unit="step")
        uncond = _negative_states(pipe, negative_prompt, c) if spec.guidance != 1.0 else None
        result = pipe.run(spec, decode=decode, progress=steps_bar.update, hooks=hooks, embeds=(c, uncond),
                          seeds=seeds[start:start + batch_size])
        out.append(result.images if decode else result.latents)
    if steps_bar is not None:
        steps_bar.close()
    return torch.cat(out)


def sample_prompts(pipe, prompts: list[str], seeds, steps: int, guidance: float, sampler: str,
                   hooks=None, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """(len(prompts), 3, H, W): plain prompts, each distinct text encoded once, image i seeded seeds[i]."""
    unique = list(dict.fromkeys(prompts))
    embeds = pipe.encode_text(unique)  # (U, T, D)
    rows = torch.tensor([unique.index(p) for p in prompts])
    return sample_embeds(pipe, embeds[rows], seeds, steps, guidance, sampler, hooks=hooks, batch_size=batch_size,
                         prompts=list(prompts))
