"""Relation edits: move an object to where the target relation holds ("a red circle right of a blue square").

`relation_move` reads the move a pair of captions asks for; `plan_move` finds both objects with Shapes
World's detector and places the subject `GAP` px past the other object along the relation's axis (or the
other object past the subject, or the two trade places); `placement_conditions` draws each placement as
the edit's mask and class-mask condition (`t2ikit.world.outlines.render_target`). The edit reaches these
through Shapes World's scene support (`t2ikit.world.edit_support`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from t2ikit.edit.support import TargetConditions
from t2ikit.world import vocab
from t2ikit.world.caption import CaptionError, parse_caption
from t2ikit.world.instructions import write_group
from t2ikit.world.oracle import detect
from t2ikit.world.outlines import ObjectBox, render_target
from t2ikit.world.scene import GAP, Group


@dataclass(frozen=True)
class Move:
    """A relation edit: `subject` is to stand in `relation` to `other` (both as the captions name them)."""

    subject: Group
    other: Group
    relation: str

    def __str__(self) -> str:  # what the edit's warnings call the two objects
        return f"the {self.subject.colour} {self.subject.shape} and the {self.other.colour} {self.other.shape}"


def relation_move(source: str, target: str) -> Move | None:
    """The move a relation edit asks for: `target` names the same objects as `source` (in any order) and
    one relation between them that `source` does not state; None for any other edit."""
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

    group: Group
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
    return TargetConditions(None, classes, mask, [], [write_group(p.group) for p in placements])


def _side(det) -> float:
    return float(max(det.bbox[2] - det.bbox[0], det.bbox[3] - det.bbox[1]))


def _box_centre(det) -> tuple[float, float]:
    x0, y0, x1, y1 = det.bbox
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


__all__ = ["Move", "Placement", "moved_box", "placement_conditions", "plan_move", "relation_move"]
