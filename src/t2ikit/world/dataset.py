"""The training stream: deterministic batches of (image, caption) from Shapes World.

Batch `index` of stream `seed` is always the same, whatever process or worker draws it, so a run that
resumes at step k sees exactly the batches an uninterrupted run would, and data-parallel ranks can take
disjoint indices.
"""

from __future__ import annotations

import numpy as np

from t2ikit.world.caption import write_caption
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import sample_scene, scene_rng


def make_batch(seed: int, index: int, batch_size: int, resolution: int = 64, split: str = "train",
               category: str | None = None) -> dict:
    """{"rgb": float32 (B, H, W, 3) in [0, 1], "captions": list[str]} for batch `index` of stream `seed`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rgb = np.empty((batch_size, resolution, resolution, 3), dtype=np.float32)
    captions = []
    for j in range(batch_size):
        scene_index = index * batch_size + j
        scene = sample_scene(seed, scene_index, category=category, split=split, reference=False)
        render_rgb(scene, resolution, out=rgb[j])
        # a separate stream for wording, so captions vary independently of the layout draw
        captions.append(write_caption(scene.spec, scene_rng(seed ^ 0xC0FFEE, scene_index)))
    return {"rgb": rgb, "captions": captions}
