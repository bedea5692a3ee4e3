"""Target conditions for shape and size edits: the object the edit should draw, from the shape vocabulary.

A blend edit that changes an object's shape (or size) regenerates the object's box; the weak model fills
a box with a square or a blob. The edit knows what it asks for (the target phrase: colour, shape, size)
and where (the edited object inside the mask), so it can draw the target's outline itself:

    box     the edited object's bounding box: the largest connected piece of the image's foreground
            (`blend.foreground`) inside the mask; centre and extent (the larger side) of that box
    extent  the box's, or for a size change the middle of the target size's range (vocab.SIZES)
    render  a one-object Shapes World scene with the target shape at that centre and extent
            (`t2ikit.world.render.render`): its sketch (the one-pixel contour) and its shape-class map

The sketch condition is then the image's own outlines outside the edit region plus the target's outline,
and the class-mask condition (the shipped mask adapter, K = len(vocab.SHAPES) class maps) is the target's
silhouette in its shape's channel. The outline comes from the shape vocabulary (circle, square, triangle,
diamond, as Shapes World draws them), so this needs a target that names a Shapes World shape; it works on
any image whose edited object stands out from a flat background, not only on renders.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t2ikit.world import vocab


@dataclass(frozen=True)
class ObjectBox:
    """An object's square box in image pixels: centre (x, y) and side."""

    cx: float
    cy: float
    extent: float


def edited_groups(source: str, target: str):
    """(source Group, target Group) of the one object the edit changes; ValueError when there is not one."""
    from t2ikit.diffusion.blend import changed_spans
    from t2ikit.diffusion.edit import _group_from_phrase, edited_group
    from t2ikit.text.phrases import noun_phrases

    before = edited_group(source, target)
    _, added = changed_spans(source, target)
    phrases = [ph.text for ph in noun_phrases(target) if any(ph.start <= i < ph.end for i, _ in added)]
    if len(phrases) != 1:
        raise ValueError(f"the target outline needs the edit to change one object; the target {target!r} "
                         f"brings in {len(phrases)} changed noun phrases")
    return before, _group_from_phrase(phrases[0], "target")


def object_box(image: torch.Tensor, pixel_mask: torch.Tensor) -> ObjectBox | None:
    """The edited object's box: (3, H, W) image, (1, H, W) mask; None when the mask holds no foreground."""
    from scipy import ndimage

    from t2ikit.diffusion.blend import foreground

    inside = foreground(image) & (pixel_mask[0].numpy() > 0)
    labels, count = ndimage.label(inside)
    if not count:
        return None
    biggest = 1 + int(np.argmax(ndimage.sum(inside, labels, range(1, count + 1))))
    ys, xs = np.nonzero(labels == biggest)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return ObjectBox((x0 + x1) / 2.0, (y0 + y1) / 2.0, float(max(y1 - y0, x1 - x0)))


def target_box(box: ObjectBox, before, after, resolution: int) -> ObjectBox:
    """The box the target is drawn in: the object's, with the target size's extent when the edit changes size."""
    if after.size is not None and after.size != before.size:
        lo, hi = vocab.SIZES[after.size]
        return ObjectBox(box.cx, box.cy, (lo + hi) // 2 * resolution / vocab.REFERENCE_RESOLUTION)
    return box


def render_target(group, box: ObjectBox, height: int, width: int):
    """Modalities of a one-object scene: `group`'s shape in `box` (image px) on a height x width canvas.

    The box is shifted (not shrunk) to lie inside the canvas; the renderer works on a square canvas of the
    larger side, cropped back to (height, width).
    """
    from t2ikit.world.render import render
    from t2ikit.world.scene import Obj, Scene, Spec

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


@dataclass
class TargetConditions:
    """Per image: the sketch and class-mask conditions holding the target object, and the grown edit mask."""

    sketch: torch.Tensor | None  # (B, 1, H, W): the image's outlines outside `mask`, the target's outline inside
    #                               (None for a relation edit's placement: the blend makes its sketch as usual)
    classes: torch.Tensor  # (B, K, H, W): the target's silhouette in its shape's channel, 0 elsewhere
    mask: torch.Tensor  # (B, 1, H, W): the edit mask grown to hold the target's box (+ pad px)
    missing: list[int]  # images whose mask holds no object: no target drawn, their conditions are the image's
    prompts: list[str] | None = None  # relation edits: the placed object's phrase, what the mask is drawn under


def target_conditions(images: torch.Tensor, pixel_mask: torch.Tensor, sources: list[str], targets: list[str],
                      pad: int = 2) -> TargetConditions:
    """See the module docstring. images (B, 3, H, W) in [0, 1]; pixel_mask (B, 1, H, W) in {0, 1}."""
    from t2ikit.diffusion.blend import image_sketch, outlines_kept

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
        if not outlines_kept(sources[k], targets[k]):  # a colour edit keeps the image's own outline
            sketch[k] = sketch[k] * (1 - mask[k]) + torch.from_numpy(m.sketch)[None]
    return TargetConditions(sketch, classes, mask, missing)


# ----------------------------------------------------------------------------------------------------
# Relation edits: move the subject to where the target relation holds


@dataclass(frozen=True)
class Move:
    """A relation edit: `subject` is to stand in `relation` to `other` (both as the captions name them)."""

    subject: object  # world.scene.Group
    other: object
    relation: str


def relation_move(source: str, target: str) -> Move | None:
    """The move a relation edit asks for: `target` names the same objects as `source` (in any order) and
    one relation between them that `source` does not state; None for any other edit."""
    from t2ikit.world.caption import CaptionError, parse_caption

    try:
        a, b = parse_caption(source), parse_caption(target)
    except CaptionError:
        return None
    if sorted(map(repr, a.groups)) != sorted(map(repr, b.groups)) or len(b.relations) != 1 or a.style != b.style:
        return None
    r = b.relations[0]
    subject, other = b.groups[r.subject], b.groups[r.object]
    if any((a.groups[q.subject], a.groups[q.object], q.relation) == (subject, other, r.relation) for q in a.relations):
        return None
    return Move(subject, other, r.relation)


def moved_box(subject_extent: float, other_bbox: tuple[float, float, float, float], relation: str,
              gap: float) -> ObjectBox:
    """Where the subject's box goes (reference px): `gap` past the other object's box along the relation's
    axis, centred on it across the axis, so the oracle's dominant-axis rule holds with room to spare."""
    x0, y0, x1, y1 = other_bbox
    cx, cy, half = (x0 + x1) / 2.0, (y0 + y1) / 2.0, subject_extent / 2.0
    return {"left of": ObjectBox(x0 - gap - half, cy, subject_extent),
            "right of": ObjectBox(x1 + gap + half, cy, subject_extent),
            "above": ObjectBox(cx, y0 - gap - half, subject_extent),
            "below": ObjectBox(cx, y1 + gap + half, subject_extent)}[relation]


@dataclass(frozen=True)
class Placement:
    """One object drawn at a new place (reference px): `group` centred at (cx, cy) with side `extent`, in
    place of the object whose box was `replaces` (x0, y0, x1, y1)."""

    group: object  # world.scene.Group
    cx: float
    cy: float
    extent: float
    replaces: tuple[float, float, float, float]


def plan_move(image: torch.Tensor, move: Move) -> list[Placement] | None:
    """The placements that make `move` hold in `image` (3, H, W), found with Shapes World's detector; None
    when the subject or the other object is not found exactly once.

    The subject goes beside the other object (`moved_box`); where that leaves the canvas, the other object
    goes to the inverse side of the subject; where neither fits, the two trade places: two placements, the
    subject into the other's place, then the other into the subject's."""
    from t2ikit.world.oracle import detect
    from t2ikit.world.scene import GAP

    h, w = image.shape[-2:]
    scale = max(h, w) / vocab.REFERENCE_RESOLUTION
    found = detect(image.permute(1, 2, 0).numpy()).detections
    subj = [d for d in found if (d.colour, d.shape) == (move.subject.colour, move.subject.shape)]
    other = [d for d in found if (d.colour, d.shape) == (move.other.colour, move.other.shape)]
    if len(subj) != 1 or len(other) != 1:
        return None
    s, o = subj[0], other[0]
    for mover, group, anchor, relation in ((s, move.subject, o, move.relation),
                                           (o, move.other, s, vocab.INVERSE_RELATION[move.relation])):
        box = moved_box(_side(mover), anchor.bbox, relation, GAP + 1)
        half = _side(mover) / 2
        if half + 1 <= box.cx <= w / scale - half - 1 and half + 1 <= box.cy <= h / scale - half - 1:
            return [Placement(group, box.cx, box.cy, _side(mover), mover.bbox)]
    return [Placement(move.subject, *_box_centre(o), _side(s), o.bbox),
            Placement(move.other, *_box_centre(s), _side(o), s.bbox)]


def placement_conditions(images: torch.Tensor, placements: list[Placement], pad: int = 2) -> TargetConditions:
    """Per image, one placement: the edit mask (the replaced object's box and the new one, + `pad` px), the
    class map holding the placed silhouette and nothing elsewhere (the replaced object's place included, so
    the class-mask adapter asks for background there) and the placed object's phrase as the prompt."""
    from t2ikit.diffusion.edit import _write_group

    b, _, h, w = images.shape
    classes = torch.zeros(b, len(vocab.SHAPES), h, w)
    mask = torch.zeros(b, 1, h, w)
    scale = max(h, w) / vocab.REFERENCE_RESOLUTION  # image px per reference px
    for k, p in enumerate(placements):
        m = render_target(p.group, ObjectBox(p.cx * scale, p.cy * scale, p.extent * scale), h, w)
        ys, xs = np.nonzero(m.instances)
        mask[k, 0, max(0, ys.min() - pad):ys.max() + pad + 1, max(0, xs.min() - pad):xs.max() + pad + 1] = 1
        x0, y0, x1, y1 = (int(round(v * scale)) for v in p.replaces)
        mask[k, 0, max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = 1
        classes[k] = torch.from_numpy(m.classes.astype(np.float32))
    return TargetConditions(None, classes, mask, [], [_write_group(p.group) for p in placements])


def _side(det) -> float:
    return float(max(det.bbox[2] - det.bbox[0], det.bbox[3] - det.bbox[1]))


def _box_centre(det) -> tuple[float, float]:
    x0, y0, x1, y1 = det.bbox
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


__all__ = ["Move", "ObjectBox", "Placement", "TargetConditions", "edited_groups", "moved_box", "object_box",
           "placement_conditions", "plan_move", "relation_move", "render_target", "target_box", "target_conditions"]
