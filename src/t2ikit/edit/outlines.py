"""Objects read from the image itself: silhouettes on a flat background, their outlines, masks snapped to them.

The shipped sketch adapter (`t2ikit.control`) holds outlines of the form Shapes World draws (outer
contours, one pixel wide); `image_sketch` computes that form from any image whose objects stand on a
flat background. An edit that changes only colours keeps every outline; any other edit keeps only those
outside the mask (`sketch_for_edit`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch
from scipy import ndimage

from t2ikit.edit.changes import outlines_kept

BACKGROUND_TOL = 0.08  # max |rgb - background| (per channel) of a background pixel in `image_sketch`


def foreground(image: torch.Tensor, tol: float = BACKGROUND_TOL) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) bool: pixels not of the background colour, holes filled.

    The background is the most common colour of the image's border (flat backgrounds, as Shapes World's);
    filling holes makes an outlined object's silhouette whole.
    """
    rgb = image.float().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # (4(H + W), 3)
    keys, counts = np.unique(np.round(border * 255).astype(np.int32), axis=0, return_counts=True)
    background = keys[counts.argmax()] / 255.0
    return ndimage.binary_fill_holes(np.abs(rgb - background).max(-1) > tol)


def image_sketch(images: torch.Tensor, tol: float = BACKGROUND_TOL) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) in {0, 1}: the outer contour of every object, one pixel wide.

    The form of the shipped sketch condition: an object pixel with a 4-neighbour outside the object
    (`foreground`).
    """
    out = []
    for im in images:
        fg = foreground(im, tol)
        inner = ndimage.binary_erosion(np.pad(fg, 1))[1:-1, 1:-1]
        out.append(torch.from_numpy((fg & ~inner).astype(np.float32))[None])
    return torch.stack(out)


def snap_mask(pixel_mask: torch.Tensor, images: torch.Tensor, pad: int = 2, share: float = 0.8,
              tol: float = BACKGROUND_TOL) -> torch.Tensor:
    """A rough edit mask (B, 1, H, W) snapped to the image's objects: (B, 1, H, W) in {0, 1}.

    The objects are the connected components of `foreground`; an object is edited when the rough mask
    covers at least `share` of the best-covered object's fraction; the mask becomes those objects'
    bounding boxes grown by `pad` px (room for a new outline). An image whose rough mask touches no object
    keeps its rough mask.
    """
    out = pixel_mask.clone()
    for b, im in enumerate(images):
        labels, count = ndimage.label(foreground(im, tol))
        rough = pixel_mask[min(b, len(pixel_mask) - 1), 0].numpy() > 0
        cover = np.asarray([rough[labels == k + 1].mean() for k in range(count)])
        if not count or cover.max() <= 0:
            continue
        m = np.zeros(rough.shape, dtype=np.float32)
        for k in np.flatnonzero(cover >= share * cover.max()):
            ys, xs = np.nonzero(labels == k + 1)
            m[max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = 1
        out[b, 0] = torch.from_numpy(m)
    return out


def sketch_for_edit(images: torch.Tensor, pixel_mask: torch.Tensor | None, sources: list[str],
                    targets: list[str], colours: Collection[str] = ()) -> torch.Tensor:
    """(B, 1, H, W) sketch condition: the image's outlines, removed inside the mask unless only `colours`
    words change (a scene support's colour words; none known: every edit may change an outline)."""
    sketch = image_sketch(images)
    for k, (s, t) in enumerate(zip(sources, targets)):
        if pixel_mask is not None and not outlines_kept(s, t, colours):
            sketch[k] = sketch[k] * (1 - pixel_mask[min(k, len(pixel_mask) - 1)])
    return sketch


__all__ = ["BACKGROUND_TOL", "foreground", "image_sketch", "sketch_for_edit", "snap_mask"]
