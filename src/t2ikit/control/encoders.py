"""Condition maps: reading sketch, depth, mask and reference images into tensors, checked before compute.

Every condition is a float32 (C, H, W) map in [0, 1] at the image size:
- sketch: C = 1, 1 on edges (Shapes World's one-pixel contours);
- depth: C = 1, nearness (larger is nearer, background 0), as MiDaS/ControlNet depth maps;
- mask: C = K = len(vocab.SHAPES), one channel per shape class (Shapes World's `classes`); from a PNG,
  the colours of `render.class_colour_map` (what `t2ikit world` writes), nearest colour per pixel;
- reference: C = 3, an RGB image of the same objects in another layout.
"""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import torch

from t2ikit.world import vocab

CONDITIONS = {"sketch": 1, "depth": 1, "mask": len(vocab.SHAPES), "reference": 3}  # name -> channels
# class_colour_map's palette, background black: a mask PNG's colours map back to classes through it
_MASK_PALETTE = np.asarray([(0, 0, 0), (0.9, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.3, 0.9), (0.9, 0.8, 0.1)],
                           np.float32)


def check_condition_name(name: str) -> str:
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; allowed: {', '.join(CONDITIONS)}")
    return name


def from_modalities(modalities, name: str) -> np.ndarray:
    """(C, H, W) float32 condition map of a rendered scene (t2ikit.world.render.Modalities)."""
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


def _from_image(image, name: str) -> np.ndarray:
    """PIL image -> (C, H, W) map of condition `name`."""
    if name in ("sketch", "depth"):
        return (np.asarray(image.convert("L"), np.float32) / 255.0)[None]
    rgb = np.asarray(image.convert("RGB"), np.float32) / 255.0  # (H, W, 3)
    if name == "reference":
        return rgb.transpose(2, 0, 1).copy()
    dist = ((rgb[:, :, None, :] - _MASK_PALETTE[None, None]) ** 2).sum(-1)  # (H, W, K + 1)
    label = dist.argmin(-1)  # 0 background, k + 1 class k
    return np.stack([(label == k + 1) for k in range(CONDITIONS["mask"])]).astype(np.float32)


def load_condition(source, name: str, size: tuple[int, int]) -> np.ndarray:
    """A condition map (C, H, W) from a PNG path, a PIL image or an array; ValueError before any compute.

    `size` is the (height, width) of the images to generate: the map must have exactly that size (a
    condition is never silently resized: a sketch stretched to another aspect is another sketch).
    """
    check_condition_name(name)
    if isinstance(source, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(source)
        if not path.is_file():
            raise ValueError(f"--{name} image {path} does not exist")
        try:
            with Image.open(path) as image:
                image.load()
                array = _from_image(image, name)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"--{name} image {path} could not be read as an image: {err}") from None
        where = str(path)
    elif type(source).__module__.startswith("PIL"):
        array, where = _from_image(source, name), "image"
    else:
        array = np.asarray(source, dtype=np.float32)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != CONDITIONS[name]:
            raise ValueError(f"{name} map must be (C={CONDITIONS[name]}, H, W) or (H, W); got shape {array.shape}")
        where = "array"
    if tuple(array.shape[1:]) != tuple(size):
        raise ValueError(
            f"{name} condition ({where}) is {array.shape[2]}x{array.shape[1]} px (w x h) but the images to "
            f"generate are {size[1]}x{size[0]}; give a {name} map of the image size"
        )
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"{name} condition ({where}) must hold values in [0, 1]")
    return array


def to_batch(maps: list[np.ndarray], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """(B, C, H, W) tensor of condition maps."""
    return torch.from_numpy(np.stack(maps)).to(device=device, dtype=dtype)


def shapes_batch(seed: int, index: int, batch_size: int, resolution: int = 64, names=("sketch",),
                 split: str = "train") -> dict:
    """Exact (image, conditions, caption) triples from Shapes World: {"rgb": (B,3,H,W), name: (B,C,H,W),
    "captions": [...]} (with "reference" also "reference_captions": the reference's objects and style in
    the grammar's canonical wording); batch `index` of stream `seed` is always the same."""
    from t2ikit.world.caption import write_caption
    from t2ikit.world.render import render
    from t2ikit.world.scene import sample_scene, scene_rng

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
