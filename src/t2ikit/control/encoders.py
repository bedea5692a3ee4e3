"""Condition maps: reading sketch, depth, mask and reference images into tensors, checked before compute.

Every condition is a float32 (C, H, W) map in [0, 1] at the image size:
- sketch: C = 1, 1 on edges (one-pixel contours);
- depth: C = 1, nearness (larger is nearer, background 0), as MiDaS/ControlNet depth maps;
- mask: C = K = MASK_CLASSES, one channel per shape class; from a PNG, the colours of MASK_PALETTE
  (what `t2ikit world` writes), nearest colour per pixel;
- reference: C = 3, an RGB image of the same objects in another layout.

Maps of Shapes World scenes (exact training triples) are made in t2ikit.world.conditions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# The shipped adapters' mask classes are Shapes World's shapes (t2ikit.world.vocab.SHAPES: circle, square,
# triangle, diamond) and a mask PNG uses t2ikit.world.render.class_colour_map's colours, background black.
# They are constants here so the core does not import the world; tests/test_control.py checks both against it.
MASK_CLASSES = 4
MASK_PALETTE = np.asarray([(0, 0, 0), (0.9, 0.2, 0.2), (0.2, 0.7, 0.2), (0.2, 0.3, 0.9), (0.9, 0.8, 0.1)],
                          np.float32)  # (K + 1, 3): background, then class k at row k + 1
CONDITIONS = {"sketch": 1, "depth": 1, "mask": MASK_CLASSES, "reference": 3}  # name -> channels


def check_condition_name(name: str) -> str:
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; allowed: {', '.join(CONDITIONS)}")
    return name


def _from_image(image, name: str) -> np.ndarray:
    """PIL image -> (C, H, W) map of condition `name`."""
    if name in ("sketch", "depth"):
        return (np.asarray(image.convert("L"), np.float32) / 255.0)[None]
    rgb = np.asarray(image.convert("RGB"), np.float32) / 255.0  # (H, W, 3)
    if name == "reference":
        return rgb.transpose(2, 0, 1).copy()
    dist = ((rgb[:, :, None, :] - MASK_PALETTE[None, None]) ** 2).sum(-1)  # (H, W, K + 1)
    label = dist.argmin(-1)  # 0 background, k + 1 class k
    return np.stack([(label == k + 1) for k in range(CONDITIONS["mask"])]).astype(np.float32)


def load_condition(source, name: str, size: tuple[int, int]) -> np.ndarray:
    """A condition map (C, H, W) from a PNG path, a PIL image or an array; ValueError before any compute.

    `size` is the (height, width) of the images to generate: the map must have exactly that size (a
    condition is never silently resized: a sketch stretched to another aspect is another sketch).
    """
    check_condition_name(name)
    if isinstance(source, (str, Path)):
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
