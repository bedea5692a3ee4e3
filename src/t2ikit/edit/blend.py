"""Blended latent editing: regenerate only inside a mask, under the target prompt at real guidance.

    x_k  = the source at level k (SDEdit, Meng et al. 2022: the image partially noised to `strength` of
           the schedule): the inverted trajectory's latent, or inside the mask the encoded image noised
           with fresh, seeded noise
    for i = k .. N-1: x = DDIM step of x under the target prompt (CFG against `uncond`)
                      x = m * x + (1 - m) * trajectory[i + 1]        (Blended Latent Diffusion,
                                                                      Avrahami et al. 2023, Alg. 1)

Outside the mask the latents are the inverted source's at every level, so the edited region is drawn in
the context of the untouched image. Optionally condition adapters (`t2ikit.control`) hold the source's
outlines (`t2ikit.edit.outlines.sketch_for_edit`) or the target's silhouette: their residuals are added to
the UNet's through the Conditioning (`residuals`).
"""

from __future__ import annotations

import math

import torch

from t2ikit.diffusion.inversion import Schedule, ddim_denoise, item_noise

STARTS = ("inverted", "noise")  # what the masked region starts from at level k


def start_level(steps: int, strength: float) -> int:
    """The trajectory level k an edit of `strength` starts from: strength 1 is x_T (k = 0), 0 is x_0 (k = steps)."""
    if not (isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0.0 < strength <= 1.0):
        raise ValueError(f"strength must be a number in (0, 1] (the fraction of the schedule re-noised); got {strength!r}")
    return steps - max(1, round(strength * steps))


@torch.no_grad()
def blended_denoise(unet, schedule: Schedule, trajectory: torch.Tensor, cond: torch.Tensor, uncond, guidance: float,
                    latent_mask: torch.Tensor | None, strength: float = 0.8, start: str = "inverted",
                    seed: int | list[int] = 0, controller=None, residuals: list[torch.Tensor] | None = None,
                    added: dict | None = None, uncond_added: dict | None = None) -> torch.Tensor:
    """(B, C, h, w) edited latents; see the module docstring. `latent_mask` (B or 1, 1, h, w), None = everywhere.
    start="noise": item b's fresh noise is drawn with seed `seed + b`, or `seed[b]` for a list (a batch equals
    its items one by one).

    trajectory: (N + 1, B, C, h, w) from `invert` ([0] = x_T, [N] = x_0). residuals: adapter residuals per
    UNet down level (a sketch or class-mask adapter holding the edit's structure), added to every guidance row.
    added, uncond_added: SDXL's added conditioning of the `cond` and the `uncond` rows (None for SD 1.x / 2.x).
    """
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}; got {start!r}")
    k = start_level(schedule.steps, strength)
    m = None if latent_mask is None else latent_mask.to(trajectory)
    x = trajectory[k]
    if start == "noise":
        a = float(schedule.levels[k])
        eps = item_noise(x.shape[1:], x.shape[0], seed).to(x)
        fresh = math.sqrt(a) * trajectory[-1] + math.sqrt(1 - a) * eps
        x = fresh if m is None else m * fresh + (1 - m) * x
    sub = Schedule(schedule.timesteps[k:], schedule.levels[k:], schedule.prediction_type)

    def keep_outside(i, z):  # level k + i + 1
        return z if m is None else m * z + (1 - m) * trajectory[k + i + 1]

    return ddim_denoise(unet, sub, x, cond, uncond, guidance, controller=controller, after_step=keep_outside,
                        residuals=residuals, added=added, uncond_added=uncond_added)


__all__ = ["STARTS", "blended_denoise", "start_level"]
