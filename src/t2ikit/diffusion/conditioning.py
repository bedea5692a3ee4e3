"""The Conditioning bundle: everything a denoising step needs besides the latents.

    text conditions (weighted prompt states, each with a scale, a step range, a mask, a priority)
    + the unconditional states (negative prompt; one per step after null-text inversion)
    + adapter residuals (T2I-Adapter) + attention hooks (an AttentionController)
    + SDXL's added conditioning per row (pooled text embeddings, size/crop time ids), beside each condition
  + latent updates before each step (Attend-and-Excite, relation guidance) and after it (bootstrapping,
      blended editing)

`t2ikit.diffusion.loop.sample` reads it; `T2IPipeline` builds it from a request, so every technique
reaches the one loop through this one object and composes with every other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from t2ikit.attention.processor import AttentionController
from t2ikit.diffusion.guidance import DEFAULT_MODE, MODES, Condition, check_conditions, check_rescale

# before_step(i, t, latents, scheduler) -> latents: a latent update before step i (may run the UNet with grad)
BeforeStep = Callable[[int, torch.Tensor, torch.Tensor, object], torch.Tensor]
# after_step(i, t, latents) -> latents: runs on the latents a scheduler step produced
AfterStep = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def cat_added(parts: list[dict | None]) -> dict | None:
    """SDXL's added_cond_kwargs of stacked row blocks (e.g. a guidance batch [uncond; c_1; ...]): each key's rows
    concatenated in order; None for a model without added conditioning (SD 1.x / 2.x: every part None)."""
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError("this model needs added conditioning (SDXL's pooled text and time ids) on every row block")
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


@dataclass
class Conditioning:
    """One generation's conditioning (module docstring); checked by `check` before compute."""

    conditions: list[Condition]  # text guidance terms; [0] is usually the prompt itself
    uncond: torch.Tensor | list[torch.Tensor] | None = None  # (N, T, D) negative states, one per step, or None
    mode: str = DEFAULT_MODE  # how N conditions combine: "composed" or "nested" (t2ikit.diffusion.guidance)
    residuals: list[torch.Tensor] | None = None  # adapter residuals per UNet down level, (N, C_k, h_k, w_k)
    controller: AttentionController | None = None  # attention hooks for this call; its clock follows the steps
    before_step: list[BeforeStep] = field(default_factory=list)
    after_step: list[AfterStep] = field(default_factory=list)
    uncond_added: dict | None = None  # SDXL: the unconditional rows' added_cond_kwargs (pooled negative, time ids)
    batch_rows: bool = True  # one UNet call for [uncond; c_1; ...] (diffusers' way); False: one call per row
    # block, the same numbers as separate calls (null-text inversion optimises against separate calls) in less memory
    # classifier-free guidance only on the steps i of n with start <= i / n < end (Kynkaenniemi et al. 2024, "Applying
    # Guidance in a Limited Interval"); outside it a step is the one text condition's prediction alone, one UNet row
    # instead of two (a late cut-off saves those steps' unconditional half)
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    # phi of guidance rescale (t2ikit.diffusion.guidance.rescale): each guided step's prediction brought toward the
    # spread of its scale-1 prediction; 0 = off
    guidance_rescale: float = 0.0
    # (step, prediction): the text condition's prediction that a latent-guidance pass of this step already made
    # (a CapturedGuidance with shared=True); the denoiser uses it instead of running the condition's rows again
    shared: tuple[int, torch.Tensor] | None = None

    @classmethod
    def text(cls, cond: torch.Tensor, uncond: torch.Tensor | list | None = None, guidance: float = 1.0,
             **kwargs) -> Conditioning:
        """Plain classifier-free guidance of `cond` against `uncond` at scale `guidance`."""
        return cls([Condition(cond, float(guidance), name="text")], uncond, **kwargs)

    def take_shared(self, step: int) -> torch.Tensor | None:
        """The prediction a guidance pass left for step `step` (once), else None."""
        shared, self.shared = self.shared, None
        return shared[1] if shared is not None and shared[0] == step else None

    def uncond_at(self, step: int) -> torch.Tensor | None:
        return self.uncond[step] if isinstance(self.uncond, (list, tuple)) else self.uncond

    def unguided(self, active: list[Condition], step: int = 0, num_steps: int = 1) -> bool:
        """True when the `active` conditions of step `step` of `num_steps` need the conditional prediction alone:
        one unmasked condition at scale 1 (cfg(u, c, 1) == c, so the unconditional half is skipped) or outside
        the guidance interval, or no unconditional states."""
        if self.uncond is None:
            return True
        start, end = self.guidance_interval
        outside = not start <= step / num_steps < end
        return len(active) == 1 and active[0].mask is None and (active[0].scale == 1.0 or outside)

    def check(self, latent_hw: tuple[int, int]) -> Conditioning:
        """ValueError naming what is inconsistent, before any compute."""
        if self.mode not in MODES:
            raise ValueError(f"unknown guidance mode {self.mode!r}; allowed: {', '.join(MODES)}")
        check_conditions(self.conditions, latent_hw)
        self.guidance_rescale = check_rescale(self.guidance_rescale)
        partial = any(c.start > 0 or c.end < 1 for c in self.conditions)
        if self.uncond is None and (len(self.conditions) > 1 or self.conditions[0].mask is not None or partial):
            raise ValueError("guidance over several, masked or step-limited conditions needs unconditional states")
        masked = sum(c.mask is not None for c in self.conditions)
        if check_guidance_interval(self.guidance_interval) != (0.0, 1.0) and (len(self.conditions) > 1 or masked):
            raise ValueError("a guidance interval applies to one unmasked text condition (outside it a step is that "
                             "condition's prediction alone), not to regions or composed prompts; this generation has "
                             f"{len(self.conditions)} condition(s), masked: {masked}")
        return self


def check_guidance_interval(interval) -> tuple[float, float]:
    """(start, end) with 0 <= start < end <= 1, as floats; ValueError otherwise."""
    try:
        start, end = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be two fractions of the steps (start, end); got {interval!r}") \
            from None
    if not 0 <= start < end <= 1:
        raise ValueError(f"guidance_interval must satisfy 0 <= start < end <= 1; got ({start:g}, {end:g})")
    return start, end


__all__ = ["AfterStep", "BeforeStep", "Conditioning", "check_guidance_interval"]
