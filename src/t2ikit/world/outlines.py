"""Target conditions for shape and size edits: the object the edit should draw, from Shapes World's shapes.

A blend edit that changes an object's shape (or size) regenerates the object's box; the weak model fills
a box with a square or a blob. The edit knows what it asks for (the target phrase: colour, shape, size)
and where (the edited object inside the mask), so it can draw the target's outline itself:

    box     the edited object's bounding box: the largest connected piece of the image's foreground
            (`t2ikit.edit.outlines.foreground`) inside the mask; centre and extent (the larger side) of that box
    extent  the box's, or for a size change the middle of the target size's range (vocab.SIZES)
    render  a one-object Shapes World scene with the target shape at that centre and extent
            (`t2ikit.world.render.render`): its sketch (the one-pixel contour) and its shape-class map

The sketch condition is then the image's own outlines outside the edit region plus the target's outline,
and the class-mask condition (the shipped mask adapter, K = len(vocab.SHAPES) class maps) is the target's
silhouette in its shape's channel. The outline comes from the shape vocabulary (circle, square, triangle,
diamond, as Shapes World draws them), so this needs a target that names a Shapes World shape; it works on
any image whose edited object stands out from a flat background, not only on renders. The edit reaches it
through Shapes World's scene support (`t2ikit.world.edit_support`); the conditions are the core's
`TargetConditions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from t2ikit.edit.changes import outlines_kept
from t2ikit.edit.outlines import foreground, image_sketch
from t2ikit.edit.support import TargetConditions
from t2ikit.world import vocab
from t2ikit.world.edit_objects import edited_groups
from t2ikit.world.render import render
from t2ikit.world.scene import Group, Obj, Scene, Spec


@dataclass(frozen=True)
class ObjectBox:
    """An object's square box in image pixels: centre (x, y) and side."""

    cx: float
    cy: float
    extent: float


def object_box(image: torch.Tensor, pixel_mask: torch.Tensor) -> ObjectBox | None:
    """The edited object's box: (3, H, W) image, (1, H, W) mask; None when the mask holds no foreground."""
    inside = foreground(image) & (pixel_mask[0].numpy() > 0)
    labels, count = ndimage.label(inside)
    if not count:
        return None
    biggest = 1 + int(np.argmax(ndimage.sum(inside, labels, range(1, count + 1))))
    ys, xs = np.nonzero(labels == biggest)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return ObjectBox((x0 + x1) / 2.0, (y0 + y1) / 2.0, float(max(y1 - y0, x1 - x0)))


def target_box(box: ObjectBox, before: Group, after: Group, resolution: int) -> ObjectBox:
    """The box the target is drawn in: the object's, with the target size's extent when the edit changes size."""
    if after.size is not None and after.size != before.size:
        lo, hi = vocab.SIZES[after.size]
        return ObjectBox(box.cx, box.cy, (lo + hi) // 2 * resolution / vocab.REFERENCE_RESOLUTION)
    return box


def render_target(group: Group, box: ObjectBox, height: int, width: int):
    """Modalities of a one-object scene: `group`'s shape in `box` (image px) on a height x width canvas.

    The box is shifted (not shrunk) to lie inside the canvas; the renderer works on a square canvas of the
    larger side, cropped back to (height, width).
    """
    side = max(height, width)
    scale = side / vocab.REFERENCE_RESOLUTION  # image px per reference px
    e = max(1, int(round(box.extent / scale)))
    x0 = int(round(box.cx / scale - e / 2))
    y0 = int(round(box.cy / scale - e / 2))
    limit_x, limit_y = int(width / scale) - e, int(height / scale) - e
    x0, y0 = min(max(0, x0), max(0, limit_x)), min(max(0, y0), max(0, limit_y))
    obj = Obj(group.colour, group.shape, group.size or "large", e, x0, y0, 1.0, 0)
    m = render(Scene(Spec((group,)), (obj,), vocab.DEFAULT_BACKGROUND, vocab.DEFAULT_FILL), side, reference=False)
    m.sketch, m.classes, m.instances = m.sketch[:height, :width], m.classes[:, :height, :width], m.instances[:height, :width]
    return m


def target_conditions(images: torch.Tensor, pixel_mask: torch.Tensor, sources: list[str], targets: list[str],
                      pad: int = 2) -> TargetConditions:
    """See the module docstring. images (B, 3, H, W) in [0, 1]; pixel_mask (B, 1, H, W) in {0, 1}."""
    b, _, h, w = images.shape
    sketch = image_sketch(images)
    classes = torch.zeros(b, len(vocab.SHAPES), h, w)
    mask = pixel_mask.expand(b, 1, h, w).clone()
    missing = []
    for k in range(b):
        before, after = edited_groups(sources[k], targets[k])
        box = object_box(images[k], mask[k])
        if box is None:
            missing.append(k)
            continue
        m = render_target(after, target_box(box, before, after, max(h, w)), h, w)
        ys, xs = np.nonzero(m.instances)
        mask[k, 0, max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = 1
        classes[k] = torch.from_numpy(m.classes.astype(np.float32))
        if not outlines_kept(sources[k], targets[k], vocab.COLOURS):  # a colour edit keeps the image's own outline
            sketch[k] = sketch[k] * (1 - mask[k]) + torch.from_numpy(m.sketch)[None]
    return TargetConditions(sketch, classes, mask, missing)


__all__ = ["ObjectBox", "object_box", "render_target", "target_box", "target_conditions"]
