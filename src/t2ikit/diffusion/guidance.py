"""Guidance: pure functions of the model outputs for each condition."""

from __future__ import annotations

import torch


def cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): eps_u + s (eps_c - eps_u).

    s = 1 is the conditional prediction, s = 0 the unconditional one, s > 1 extrapolates past the condition.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)
