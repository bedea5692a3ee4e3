"""Condition maps of Shapes World scenes: exact (image, condition, caption) triples for adapters.

The maps are in the format of t2ikit.control.encoders (float32 (C, H, W) in [0, 1]), read straight from a
rendered scene's modalities instead of from a PNG.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2ikit.control.encoders import check_condition_name, to_batch
from t2ikit.world.caption import write_caption
from t2ikit.world.render import Modalities, render
from t2ikit.world.scene import sample_scene, scene_rng


def from_modalities(modalities: Modalities, name: str) -> np.ndarray:
    """(C, H, W) float32 condition map `name` of a rendered scene."""
    check_condition_name(name)
    if name == "sketch":
        return modalities.sketch[None].astype(np.float32)
    if name == "depth":
        return modalities.depth[None].astype(np.float32)
    if name == "mask":
        return modalities.classes.astype(np.float32)
    if modalities.reference is None:
        raise ValueError("this scene was rendered without a reference image (render(..., reference=True))")
    return modalities.reference.transpose(2, 0, 1).astype(np.float32)


def shapes_batch(seed: int, index: int, batch_size: int, resolution: int = 64, names=("sketch",),
                 split: str = "train") -> dict:
    """Exact (image, conditions, caption) triples from Shapes World: {"rgb": (B,3,H,W), name: (B,C,H,W),
    "captions": [...]} (with "reference" also "reference_captions": the reference's objects and style in
    the grammar's canonical wording); batch `index` of stream `seed` is always the same."""
    rgb, conds, captions, ref_captions = [], {n: [] for n in names}, [], []
    for j in range(batch_size):
        k = index * batch_size + j
        scene = sample_scene(seed, k, split=split, reference="reference" in names)
        m = render(scene, resolution, reference="reference" in names)
        rgb.append(m.rgb.transpose(2, 0, 1))
        for n in names:
            conds[n].append(from_modalities(m, n))
        captions.append(write_caption(scene.spec, scene_rng(seed ^ 0xC0FFEE, k)))
        if "reference" in names:  # what the reference shows: the objects and style, not the relations
            ref_captions.append(write_caption(dataclasses.replace(scene.spec, relations=()), None))
    out = {"rgb": to_batch(rgb), **{n: to_batch(v) for n, v in conds.items()}, "captions": captions}
    return {**out, "reference_captions": ref_captions} if "reference" in names else out
