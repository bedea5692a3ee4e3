"""Attribute control: change one object's colour and nothing else.

`recolour` generates the source image, then generates again from the same noise with the edited
caption, (a) the object's box as a region whose cross-attention sees only the edited object's phrase
(`RegionAttentionHook`) and (b) the latents outside the box replaced at every step by the source run's
latents of that step (Blended Latent Diffusion, Avrahami et al. 2023, Alg. 1), so the rest of the image
is the source's by construction and only the box can change.

`hold` adds layout conditions to both runs (e.g. {"sketch": map} or {"mask": map} through the shipped
adapters): without one, the colour the model commits to in the first steps survives the edited caption
(docs/results/control.md); with the object's outline or class mask held, only its colour is left free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2ikit.control.regions import Region


def recolour(pipe, prompt: str, new_prompt: str, box: tuple[int, int, int, int], region_prompt: str,
             seed: int = 0, steps: int | None = None, guidance: float | None = None, use_region: bool = True,
             hold: dict | None = None, adapters: dict | None = None):
    """(source Generation, edited Generation). `box` (x0, y0, x1, y1) in pixels bounds the object to change;
    `hold`: condition name -> map given to both runs (adapters: name -> folder, default the shipped ones)."""
    size = pipe.default_size
    region = Region(region_prompt, box=tuple(box))
    pixel = torch.from_numpy(region.pixel_mask(size))[None, None]  # checks the box before compute
    h, w = size[0] // pipe.vae_scale_factor, size[1] // pipe.vae_scale_factor
    keep_inside = (F.adaptive_avg_pool2d(pixel, (h, w)) > 0).to(pipe.dtype)  # (1, 1, h, w): any overlap may change
    trajectory = []
    held = {**(hold or {}), "adapters": adapters} if hold else {}
    plain = {"relation_guidance": 0.0, "layout": "none"}  # t2ikit.pipeline.PLAIN (the core imports no pipeline)
    source = pipe.run(pipe.make_spec(prompt, None, steps, guidance, seed, **plain, **held),
                      progress=False, callback=lambda i, t, z: trajectory.append(z.clone()))

    def blend(i, t, z):  # outside the box: the source run's latents of this step
        z.copy_(keep_inside * z + (1 - keep_inside) * trajectory[i])

    edited = pipe.run(pipe.make_spec(new_prompt, None, steps, guidance, seed, **plain,
                                     regions=[region] if use_region else None, **held),
                      progress=False, callback=blend)
    return source, edited
