"""Denoisers: (x, t, conditioning, step, num_steps) -> the model's prediction, in k-diffusion's spirit.

`unet_denoiser` wraps a diffusers UNet; guidance is part of the wrapper: the active conditions and the
unconditional states run as one UNet batch [uncond; c_1; ...; c_k] (as diffusers' SD pipeline runs
[uncond; cond]; `Conditioning.batch_rows=False` makes one call per block instead) and are combined by `t2ikit.diffusion.guidance.combine`. Adapter residuals are added to
every row (unconditional included), as diffusers' T2I-Adapter pipeline does, so text guidance acts on
top of the structure they impose.
"""

from __future__ import annotations

import torch

from t2ikit.diffusion.conditioning import Conditioning, cat_added
from t2ikit.diffusion.guidance import combine


def unet_call(unet, x: torch.Tensor, t, embeds: torch.Tensor, residuals: list[torch.Tensor] | None = None,
              added: dict | None = None):
    """One UNet prediction; `residuals` (per image) are repeated over the rows of a guidance batch; `added`:
    SDXL's added_cond_kwargs (text_embeds, time_ids), one row per batch row."""
    kwargs = {} if added is None else {"added_cond_kwargs": added}
    if residuals is not None:
        reps = x.shape[0] // residuals[0].shape[0]
        kwargs["down_intrablock_additional_residuals"] = [torch.cat([r] * reps) for r in residuals]
    return unet(x, t, encoder_hidden_states=embeds, return_dict=False, **kwargs)[0]


def unet_denoiser(unet):
    """The guided prediction of `unet` for Conditioning `c` at step `step` (module docstring)."""

    def denoise(x: torch.Tensor, t, c: Conditioning, step: int, num_steps: int) -> torch.Tensor:
        active = [k for k in c.conditions if k.active(step, num_steps)]
        shared = c.take_shared(step)  # the condition's prediction, made by this step's guidance pass
        if not active:  # every condition outside its step range: the unconditional prediction
            _layout(c, False, ("uncond",))
            return unet_call(unet, x, t, c.uncond_at(step), c.residuals, c.uncond_added)
        if shared is not None:  # one unmasked condition (CapturedGuidance.share): at most the unconditional row runs
            if c.unguided(active, step, num_steps):
                return shared
            _layout(c, False, ("uncond",))
            uncond = unet_call(unet, x, t, c.uncond_at(step), c.residuals, c.uncond_added)
            return combine(uncond, [shared], c.conditions, step, num_steps, c.mode,
                           guidance_rescale=c.guidance_rescale)
        if c.unguided(active, step, num_steps):
            _layout(c, False, (active[0].name,))
            return unet_call(unet, x, t, active[0].embeds, c.residuals, active[0].added)
        rows = 1 + len(active)
        # hooks that read "the cond half" need the 2-row layout [uncond; cond]; text-bound ones read the blocks
        _layout(c, rows == 2, ("uncond", *(k.name for k in active)))
        if c.batch_rows:
            embeds = torch.cat([c.uncond_at(step)] + [k.embeds for k in active])  # (rows * N, T, D)
            added = cat_added([c.uncond_added] + [k.added for k in active])
            eps = unet_call(unet, torch.cat([x] * rows), t, embeds, c.residuals, added)
            parts = list(eps.split(x.shape[0]))
        else:
            _layout(c, False, ("uncond",))  # each call is one block; hooks that read a guided batch see none
            parts = [unet_call(unet, x, t, c.uncond_at(step), c.residuals, c.uncond_added)]
            for k in active:
                _layout(c, False, (k.name,))
                parts.append(unet_call(unet, x, t, k.embeds, c.residuals, k.added))
        return combine(parts[0], parts[1:], c.conditions, step, num_steps, c.mode,
                       guidance_rescale=c.guidance_rescale)

    return denoise


def _layout(c: Conditioning, guided: bool, blocks: tuple[str, ...]) -> None:
    """Tell the attention hooks the batch's row layout of this call."""
    if c.controller is not None:
        c.controller.guided, c.controller.blocks = guided, blocks


__all__ = ["unet_call", "unet_denoiser"]
