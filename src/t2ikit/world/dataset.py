"""The training stream: deterministic batches of (image, caption) from Shapes World.

Batch `index` of stream `seed` is always the same, whatever process or worker draws it, so a run that
resumes at step k sees exactly the batches an uninterrupted run would, and data-parallel ranks can take
disjoint indices.
"""

from __future__ import annotations

import numpy as np

from t2ikit.world.caption import write_caption
from t2ikit.world.render import group_silhouettes, render_rgb
from t2ikit.world.scene import relation_rows, sample_scene, scene_rng


MAX_OBJECTS_TRIES = 64  # redraws of a scene over max_objects before falling back to category "single"


def make_batch(seed: int, index: int, batch_size: int, resolution: int = 64, split: str = "train",
               category: str | None = None, max_objects: int | None = None,
               mix: dict[str, float] | None = None, masks: bool = False, world: str = "full") -> dict:
    """{"rgb": float32 (B, H, W, 3) in [0, 1], "captions": list[str]} for batch `index` of stream `seed`.

    `masks` adds "group_masks": uint8 (B, MAX_OBJECTS, H, W), the silhouettes of each noun phrase's
    objects, and "relations": int64 (B, MAX_OBJECTS - 1, 4), the stated relations as (subject group, object
    group, axis, sign) rows (`scene.relation_rows`; for the grounding losses, t2ikit.train.grounding); images and
    captions are unchanged.

    `max_objects` (a complexity curriculum) keeps only scenes with at most that many objects: a scene
    over the limit is redrawn from derived streams (deterministically), so batch `index` is still a
    pure function of its arguments; None keeps every scene, exactly as before. `mix` (category ->
    weight) replaces the training mix when no `category` is given. `world` restricts the scenes to a named
    world (categories.WORLDS, e.g. "mini").
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_objects is not None and max_objects < 1:
        raise ValueError(f"max_objects must be at least 1 (or None), got {max_objects}")
    rgb = np.empty((batch_size, resolution, resolution, 3), dtype=np.float32)
    captions = []
    group_masks, relations = [], []
    for j in range(batch_size):
        scene_index = index * batch_size + j
        scene = sample_scene(seed, scene_index, category=category, split=split, reference=False, mix=mix, world=world)
        tries = 0
        while max_objects is not None and len(scene.objects) > max_objects:
            tries += 1
            redraw_seed, redraw_category = seed + 1_000_003 * tries, category
            if tries > MAX_OBJECTS_TRIES:
                redraw_category = "single"  # always one object
            scene = sample_scene(redraw_seed, scene_index, category=redraw_category, split=split, reference=False,
                                 mix=mix, world=world)
        render_rgb(scene, resolution, out=rgb[j])
        if masks:
            group_masks.append(group_silhouettes(scene, resolution))
            relations.append(relation_rows(scene.spec))
        # a separate stream for wording, so captions vary independently of the layout draw
        captions.append(write_caption(scene.spec, scene_rng(seed ^ 0xC0FFEE, scene_index)))
    batch = {"rgb": rgb, "captions": captions}
    if masks:
        batch["group_masks"] = np.stack(group_masks)
        batch["relations"] = np.stack(relations)
    return batch
