"""Layout-first generation's planner: boxes from what a prompt says (objects, counts, sizes, relations).

`plan_layout(structure, size, seed)` turns a parsed prompt (`t2ikit.text.parser.PromptStructure`, from any
Parser) into one `t2ikit.control.boxes.Box` per object instance ("three red squares" gets three boxes), each
as large as its size words ask, placed so that every stated relation holds between the boxes' centres and no
two boxes overlap; the seed varies the layout. Planner and generator are separate: a plan is a list of boxes a
user can read (`t2ikit layout PROMPT --json`), change, and pass as `boxes=`.

Placement is sequential rejection sampling over seeded uniform positions: each box in turn takes the first
position that overlaps no placed box and keeps every relation with the placed ones, the whole placement starts
again when a box finds none, and the boxes shrink (SHRINK) only when no placement of the asked sizes is found;
relations between groups apply to every pair of their instances. "near" asks the centres
to be within NEAR of the image side; "in front of" puts the subject lower in the image and "behind" higher
(the picture-plane reading of depth); the four image-plane relations need the offset along their axis to be at
least MARGIN of the side and at least DOMINANCE times the offset across it (the dominant-axis reading the oracle
scores).
"""

from __future__ import annotations

import numpy as np

from t2ikit.control.boxes import Box
from t2ikit.text.parser import PromptStructure

# box side as a fraction of the image's shorter side, by the size an object's words ask for
SIDES = {"small": 0.24, "medium": 0.31, "large": 0.38}
SMALL_WORDS = frozenset({"small", "tiny", "little", "mini", "miniature"})
LARGE_WORDS = frozenset({"big", "large", "huge", "giant", "enormous", "massive"})
MARGIN = 0.08  # left of / right of / above / below: centres this far apart along the axis (fraction of side)
DOMINANCE = 1.5  # ... and the offset along the axis at least this many times the offset across it (docs/BOXES.md)
NEAR = 0.45  # near: centres within this distance (fraction of side)
PAD = 0.02  # boxes keep this distance from the image's edge (fraction of side)
GAP = 0.0  # ... and at least this distance from each other (fraction of side; a model may set its own: `check_gap`)
RESTARTS = 200  # fresh placements tried at each size before the boxes shrink
TRIES_PER_BOX = 60  # positions tried for one box against the boxes already placed
SHRINK = (1.0, 0.85, 0.72, 0.6)  # box sizes (times SIDES) tried in turn when the asked sizes do not fit
# GenerationSpec.layout: none; "auto": boxes planned for every prompt; "many": only for the prompts that name several
# objects (`names_many`), the others generated as without a layout; "many+relations": also for the prompts that state
# a relation between their objects (`states_relation`)
LAYOUTS = (None, "auto", "many", "many+relations")
CHOOSING = ("many", "many+relations")  # the layouts that plan boxes for some prompts only (`boxed`)
MANY_OBJECTS = 3  # "many": this many distinct objects, or any object counted above one

# relation -> predicate on (subject centre, object centre) in fractions of the image side, y down; the four
# image-plane relations take the dominant-axis reading (the offset along the relation's axis is at least MARGIN
# and DOMINANCE times the offset across it: "left of" is not "far above and a little left of")
_HOLDS = {
    "left of": lambda s, o: o[0] - s[0] >= max(MARGIN, DOMINANCE * abs(o[1] - s[1])),
    "right of": lambda s, o: s[0] - o[0] >= max(MARGIN, DOMINANCE * abs(o[1] - s[1])),
    "above": lambda s, o: o[1] - s[1] >= max(MARGIN, DOMINANCE * abs(o[0] - s[0])),
    "below": lambda s, o: s[1] - o[1] >= max(MARGIN, DOMINANCE * abs(o[0] - s[0])),
    "near": lambda s, o: float(np.hypot(s[0] - o[0], s[1] - o[1])) <= NEAR,
    "in front of": lambda s, o: s[1] - o[1] >= MARGIN,
    "behind": lambda s, o: o[1] - s[1] >= MARGIN,
}


def object_size(attributes: tuple[str, ...]) -> str:
    """"small", "medium" or "large" from an object's attribute words."""
    words = {a.lower() for a in attributes}
    if words & SMALL_WORDS:
        return "small"
    if words & LARGE_WORDS:
        return "large"
    return "medium"


def _phrases(structure: PromptStructure) -> list[tuple[str, int, str]]:
    """(phrase text of its first mention, instances, size) per object group."""
    out = {}
    for o in structure.objects:
        if o.group in out:
            continue
        out[o.group] = (structure.prompt[o.start:o.end].strip(), max(1, o.count or 1), object_size(o.attributes))
    return [out[g] for g in sorted(out)]


def names_many(structure: PromptStructure) -> bool:
    """True when a prompt names several objects: an object counted above one ("three red squares") or at least
    MANY_OBJECTS distinct objects; the prompts that layout="many" plans boxes for (docs/BOXES.md: on both CompBench
    splits the layout path gained on such prompts and lost held out on two-object ones)."""
    groups = _phrases(structure)
    return len(groups) >= MANY_OBJECTS or any(count > 1 for _, count, _ in groups)


def states_relation(structure: PromptStructure) -> bool:
    """True when a prompt states a relation the planner places ("left of", "near", "behind", ...)."""
    return any(r.relation in _HOLDS for r in structure.relations)


def boxed(structure: PromptStructure, layout: str) -> bool:
    """Does `layout` (one of CHOOSING) plan boxes for this prompt?"""
    if layout not in CHOOSING:
        raise ValueError(f"boxed() reads the layouts that choose their prompts ({', '.join(CHOOSING)}); got {layout!r}")
    return names_many(structure) or (layout == "many+relations" and states_relation(structure))


def check_sides(sides: dict | None) -> dict[str, float]:
    """SIDES with a model's own box sides for some size classes ("layout_sides" in its t2ikit.json: the sizes its
    training world draws); ValueError naming an unknown class or a side outside (0, 1)."""
    sides = {} if sides is None else sides
    if not isinstance(sides, dict):
        raise ValueError(f"layout_sides must map size classes to box sides; got {sides!r}")
    for name, value in sides.items():
        if name not in SIDES:
            raise ValueError(f"layout_sides: unknown size class {name!r}; allowed: {', '.join(SIDES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"layout_sides[{name!r}] must be a fraction of the image side in (0, 1); got {value!r}")
    return {**SIDES, **{k: float(v) for k, v in sides.items()}}


def check_gap(gap) -> float:
    """GAP, or a model's own least distance between two boxes ("layout_gap" in its t2ikit.json, a fraction of the
    image side: the space its training world keeps between objects, so that two objects of one colour are not drawn
    touching, where they read as one); ValueError outside [0, 0.5)."""
    if gap is None:
        return GAP
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not 0 <= gap < 0.5:
        raise ValueError(f"layout_gap must be a fraction of the image side in [0, 0.5); got {gap!r}")
    return float(gap)


def plan_layout(structure: PromptStructure, size: tuple[int, int], seed: int = 0,
                sides: dict[str, float] | None = None, gap: float | None = None) -> list[Box]:
    """One Box per object instance of `structure` in an image of `size` (height, width) (module docstring);
    `sides`: box side per size class (`check_sides`; default SIDES); `gap`: least distance between two boxes
    (`check_gap`; default GAP). ValueError naming the prompt when no layout satisfies its relations with boxes
    apart."""
    groups = _phrases(structure)
    if not groups:
        raise ValueError(f"the prompt {structure.prompt!r} names no object to place")
    sides = check_sides(sides)
    h, w = size
    side = min(h, w)
    instances = [(g, sides[sz] * side) for g, (_, count, sz) in enumerate(groups) for _ in range(count)]
    relations = [r for r in structure.relations if r.relation in _HOLDS]
    rng = np.random.default_rng(seed)
    pad, gap = int(round(PAD * side)), int(round(check_gap(gap) * side))
    for scale in SHRINK:  # boxes shrink only when no layout of the asked sizes is found
        for _ in range(RESTARTS):
            placed = _place(instances, relations, scale, (h, w), pad, gap, side, rng)
            if placed is not None:
                return [Box(x0, y0, x0 + s, y0 + s, groups[g][0]) for g, x0, y0, s in placed]
    stated = ", ".join(f"{groups[r.subject][0]!r} {r.relation} {groups[r.object][0]!r}" for r in relations)
    raise ValueError(f"no layout of {len(instances)} boxes apart in a {w}x{h} image satisfies "
                     f"{stated or 'the prompt'} ({structure.prompt!r}): fewer objects or a larger image")


def _place(instances, relations, scale: float, size: tuple[int, int], pad: int, gap: int, side: int, rng):
    """Boxes placed one after another, each at the first of TRIES_PER_BOX seeded positions that comes no closer
    than `gap` px to a placed box and keeps every relation with the placed ones; None when one cannot be placed."""
    h, w = size
    placed = []
    for g, base in instances:
        s = max(1, int(round(base * scale)))
        for _ in range(TRIES_PER_BOX):
            x0 = int(rng.integers(pad, max(pad + 1, w - s - pad + 1)))
            y0 = int(rng.integers(pad, max(pad + 1, h - s - pad + 1)))
            candidate = placed + [(g, x0, y0, s)]
            if not _overlap(candidate, gap) and _relations_hold(candidate, relations, side):
                placed = candidate
                break
        else:
            return None
    return placed


def _overlap(placed, gap: int = 0) -> bool:
    """Whether two of the boxes overlap or come closer than `gap` px along both axes."""
    for i, (_, ax, ay, a) in enumerate(placed):
        for _, bx, by, b in placed[i + 1:]:
            if ax < bx + b + gap and bx < ax + a + gap and ay < by + b + gap and by < ay + a + gap:
                return True
    return False


def _relations_hold(placed, relations, side: int) -> bool:
    centres: dict[int, list[tuple[float, float]]] = {}
    for g, x0, y0, s in placed:
        centres.setdefault(g, []).append(((x0 + s / 2) / side, (y0 + s / 2) / side))
    for r in relations:
        holds = _HOLDS[r.relation]
        if not all(holds(sc, oc) for sc in centres.get(r.subject, []) for oc in centres.get(r.object, [])):
            return False
    return True


def draw_layout(boxes: list[Box], size: tuple[int, int], scale: int = 4):
    """A PIL image of the plan: each box outlined in its own colour with its phrase, `scale` times the image."""
    from PIL import Image, ImageDraw

    h, w = size
    image = Image.new("RGB", (w * scale, h * scale), "white")
    draw = ImageDraw.Draw(image)
    palette = [(220, 50, 47), (38, 139, 210), (133, 153, 0), (211, 54, 130), (181, 137, 0), (42, 161, 152)]
    colour = {p: palette[k % len(palette)] for k, p in enumerate(dict.fromkeys(b.phrase for b in boxes))}
    for b in boxes:
        xy = (b.x0 * scale, b.y0 * scale, b.x1 * scale - 1, b.y1 * scale - 1)
        draw.rectangle(xy, outline=colour[b.phrase], width=max(2, scale // 2))
        draw.text((xy[0] + 4, xy[1] + 3), b.phrase, fill=colour[b.phrase])
    return image


__all__ = ["CHOOSING", "DOMINANCE", "LAYOUTS", "LARGE_WORDS", "MARGIN", "NEAR", "SIDES", "SMALL_WORDS", "boxed",
           "check_sides", "draw_layout", "names_many", "object_size", "plan_layout", "states_relation"]
