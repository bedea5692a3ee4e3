"""Guidance: pure functions of the model outputs, for one condition (CFG) or N conditions.

N conditions each have their own scale, step range, spatial mask and priority. Two combination rules:

- composed (default; Composable Diffusion, Liu et al. 2022, Eq. 10):
      eps = eps_0 + sum_i s_i W_i (eps_i - eps_0)
  every condition is one model call on its own text, independent of the others, so a condition can be
  switched on or off per step range, masked to a region, or given its own scale without touching the
  rest. This is why it is the default: it needs nothing of the model but ordinary CFG training.
- nested (InstructPix2Pix, Brooks et al. 2023, Eq. 3):
      eps = eps_0 + s_1 (eps_1 - eps_0) + s_2 (eps_12 - eps_1) + ...
  condition k's prediction is made with conditions 1..k together (eps_12: both), so the scales act on
  increments; it needs a model trained on the joint conditions and the order matters.

Spatial masks and priorities: W_i(x) = p_i M_i(x) / sum_j p_j M_j(x) over the active conditions that
cover x (M = 1 for an unmasked condition). Where one condition covers x, W = 1; where several overlap,
the priorities share x. With masks and W summing to 1, composed guidance equals MultiDiffusion's
noise-space blend of each condition's guided prediction, `M * eps_c1 + (1 - M) * eps_c2` (Bar-Tal et
al. 2023, Eq. 5). Without masks and with `blend=False`, W_i = 1: plain sums of guidance terms.

Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Sec. 3.4):
a large scale inflates the guided prediction's spread past any the model makes, which over-exposes (or, on a
dark background, darkens everything drawn on it); `rescale` scales each image's guided prediction to the
spread of the prediction at scale 1 and mixes that back with weight phi.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): eps_u + s (eps_c - eps_u).

    s = 1 is the conditional prediction, s = 0 the unconditional one, s > 1 extrapolates past the condition.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def rescale(guided: torch.Tensor, reference: torch.Tensor, phi: float) -> torch.Tensor:
    """phi * guided * std(reference) / std(guided) + (1 - phi) * guided, the std over each image's (C, H, W)
    (Lin et al. 2024, Eq. 15-16; diffusers' `guidance_rescale`). phi = 0 is `guided`; the reference is the
    prediction at scale 1 (for CFG the conditional one)."""
    if phi == 0:
        return guided
    dims = tuple(range(1, guided.ndim))
    spread = guided.std(dim=dims, keepdim=True)
    matched = guided * (reference.std(dim=dims, keepdim=True) / spread.clamp_min(torch.finfo(spread.dtype).tiny))
    return phi * matched + (1.0 - phi) * guided


def check_rescale(phi) -> float:
    """phi as a float in [0, 1]; ValueError otherwise."""
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not 0.0 <= float(phi) <= 1.0:
        raise ValueError(f"guidance_rescale must be a number in [0, 1] (0 = off, 0.7 as Lin et al.); got {phi!r}")
    return float(phi)


MODES = ("composed", "nested")
DEFAULT_MODE = "composed"


@dataclass
class Condition:
    """One guidance term."""

    embeds: torch.Tensor  # (N, T, D) text states of this condition, one row per image
    scale: float = 4.0  # guidance scale s_i
    start: float = 0.0  # active from this fraction of the steps (step / num_steps >= start) ...
    end: float = 1.0  # ... up to, not including, this fraction
    mask: torch.Tensor | None = None  # (h, w) or (N, 1, h, w) in [0, 1] at latent size; None = everywhere
    priority: float = 1.0  # share of overlapping pixels: p_i / sum of covering p_j
    name: str = "text"
    added: dict | None = None  # SDXL's added_cond_kwargs, one row per image: text_embeds (N, P), time_ids (N, 6)

    def active(self, step: int, num_steps: int) -> bool:
        f = step / max(num_steps, 1)
        return self.start <= f < self.end


def check_conditions(conditions: list[Condition], latent_hw: tuple[int, int]) -> None:
    """ValueError naming the first bad condition (scale, range, mask shape, priorities) before compute."""
    if not conditions:
        raise ValueError("guidance needs at least one condition")
    for c in conditions:
        if not 0.0 <= c.start < c.end <= 1.0:
            raise ValueError(f"condition {c.name!r}: need 0 <= start < end <= 1; got start={c.start}, end={c.end}")
        if not torch.isfinite(torch.tensor(float(c.scale))):
            raise ValueError(f"condition {c.name!r}: scale must be finite; got {c.scale}")
        if c.mask is not None:
            if tuple(c.mask.shape[-2:]) != tuple(latent_hw):
                raise ValueError(f"condition {c.name!r}: mask is {tuple(c.mask.shape[-2:])}, latents are {latent_hw}")
            if c.mask.min() < 0 or c.mask.max() > 1:
                raise ValueError(f"condition {c.name!r}: mask values must be in [0, 1]")
    masks = [_mask(c, latent_hw) for c in conditions]
    total = sum(c.priority * m for c, m in zip(conditions, masks))
    covered = sum(m for m in masks) > 0
    if bool((covered & (total <= 0)).any()):
        names = [c.name for c in conditions]
        raise ValueError(
            f"priorities of overlapping conditions {names} ({[c.priority for c in conditions]}) do not sum to a "
            f"positive number where they overlap; give priorities > 0"
        )


def _mask(c: Condition, latent_hw) -> torch.Tensor:
    if c.mask is None:
        return torch.ones(1, 1, *latent_hw)
    m = c.mask.float()
    return m.view(1, 1, *m.shape) if m.ndim == 2 else m


def priority_weights(masks: list[torch.Tensor], priorities: list[float]) -> list[torch.Tensor]:
    """W_i = p_i M_i / sum_j p_j M_j, 0 where nothing covers (see module docstring)."""
    weighted = [p * m for p, m in zip(priorities, masks)]
    total = sum(weighted)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return [torch.where(total > 0, w / safe, torch.zeros_like(w)) for w in weighted]


def composed_guidance(eps_uncond: torch.Tensor, eps_conds: list[torch.Tensor], scales: list[float],
                      weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """eps_0 + sum_i s_i W_i (eps_i - eps_0) (Composable Diffusion); W_i = 1 when weights is None."""
    out = eps_uncond.clone()
    for i, (e, s) in enumerate(zip(eps_conds, scales)):
        w = 1.0 if weights is None else weights[i]
        out = out + s * w * (e - eps_uncond)
    return out


def nested_guidance(eps_chain: list[torch.Tensor], scales: list[float]) -> torch.Tensor:
    """eps_chain[0] + sum_k s_k (eps_chain[k] - eps_chain[k-1]) (InstructPix2Pix, Eq. 3).

    eps_chain[0] is unconditional; eps_chain[k] is conditioned on conditions 1..k together.
    """
    if len(eps_chain) != len(scales) + 1:
        raise ValueError(f"nested guidance needs len(scales) + 1 predictions; got {len(eps_chain)} and {len(scales)}")
    out = eps_chain[0].clone()
    for k, s in enumerate(scales, start=1):
        out = out + s * (eps_chain[k] - eps_chain[k - 1])
    return out


def masked_blend(eps_list: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    """sum_i M_i eps_i / sum_i M_i (MultiDiffusion's noise-space blend; M*c1 + (1-M)*c2 for two)."""
    total = sum(masks)
    if bool((total <= 0).any()):
        raise ValueError("masked_blend: the masks leave some pixels uncovered (sum of masks must be > 0 everywhere)")
    return sum(m * e for m, e in zip(masks, eps_list)) / total


def combine(eps_uncond, eps_conds, conditions, step, num_steps, mode: str = DEFAULT_MODE, blend: bool = True,
            guidance_rescale: float = 0.0):
    """One step's guided prediction from the active conditions' predictions (`eps_conds` in order); with
    `guidance_rescale` phi > 0, rescaled (`rescale`) to the spread of the same combination at every scale 1."""
    active = [c for c in conditions if c.active(step, num_steps)]
    if len(active) != len(eps_conds):
        raise ValueError(f"{len(eps_conds)} predictions for {len(active)} active conditions")
    if not active:
        return eps_uncond
    scales = [c.scale for c in active]
    if mode == "nested":
        out = nested_guidance([eps_uncond, *eps_conds], scales)
        return rescale(out, eps_conds[-1], guidance_rescale)  # every scale 1: the prediction on all conditions
    hw = tuple(eps_uncond.shape[-2:])
    masks = [_mask(c, hw).to(eps_uncond) for c in active]
    any_mask = any(c.mask is not None for c in active)
    weights = priority_weights(masks, [c.priority for c in active]) if (blend and any_mask) else masks
    out = composed_guidance(eps_uncond, eps_conds, scales, weights)
    if guidance_rescale == 0:
        return out
    return rescale(out, composed_guidance(eps_uncond, eps_conds, [1.0] * len(active), weights), guidance_rescale)
