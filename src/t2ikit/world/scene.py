"""Scenes of Shapes World: what a caption says (a `Spec`) and one concrete layout of it (a `Scene`).

A spec (world/spec.py) is the statement: groups of identical objects (colour, shape, size, count), relations
between groups, and a scene-level style. A scene adds what the statement leaves open: exact extents, positions,
depth order, and the defaults for unspecified style. `sample_scene(seed, index)` is the infinite,
deterministic world: the same (seed, index) always gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t2ikit.world import vocab
from t2ikit.world.categories import sample_spec
# the statement lives in world/spec.py; these names stay importable from here
from t2ikit.world.spec import (MAX_RELATIONS, RELATION_AXES, Group, Relation, Spec, Style,  # noqa: F401
                               relation_rows, with_style)

# ---------------------------------------------------------------------------------------------------
# One layout of a statement
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """One object, in reference-resolution pixels (64x64 canvas; renders scale it)."""

    colour: str
    shape: str
    size: str  # "small" | "large"
    extent: int  # bounding-box side, px at 64
    x0: int  # top-left corner, px at 64
    y0: int
    depth: float  # nearness in (0, 1]; larger is nearer (drawn later)
    group: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.extent / 2.0, self.y0 + self.extent / 2.0


@dataclass(frozen=True)
class Scene:
    spec: Spec
    objects: tuple[Obj, ...]
    background: str
    fill: str
    reference_objects: tuple[Obj, ...] = ()  # the same objects in another layout


# Layout rules, in px at 64. The generator keeps a wider margin than the oracle asks for, so that a
# viewer (and the oracle, on a blurred or noisy image) agrees with every stated relation.
CANVAS = vocab.REFERENCE_RESOLUTION
BORDER = 2  # empty pixels kept around the canvas edge
GAP = 3  # min empty pixels between two objects' bounding boxes: they never touch or overlap
RELATION_MIN_OFFSET = 8.0  # centre offset along the relation's axis
RELATION_DOMINANCE = 1.5  # |offset along the axis| >= this * |offset across it|
LAYOUT_CANDIDATES = 256  # layouts drawn at once per attempt
LAYOUT_ATTEMPTS = 16


def layout(spec: Spec, rng: np.random.Generator, relations: bool = True) -> tuple[Obj, ...]:
    """Positions for every object of `spec` satisfying its relations, or ValueError if none is found."""
    sizes, extents, groups = [], [], []
    for gi, g in enumerate(spec.groups):
        size = g.size if g.size is not None else ("small", "large")[int(rng.integers(2))]
        lo, hi = vocab.SIZES[size]
        extent = int(rng.integers(lo, hi + 1))  # identical objects of a group share one extent
        for _ in range(g.count):
            sizes.append(size)
            extents.append(extent)
            groups.append(gi)
    n = len(extents)
    e = np.asarray(extents, dtype=np.int64)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    rel_pairs = []  # (a, b, axis, sign): sign*(c_b - c_a) along axis must be large
    if relations:
        for r in spec.relations:
            axis, sign = RELATION_AXES[r.relation]
            for a in range(n):
                for b in range(n):
                    if groups[a] == r.subject and groups[b] == r.object:
                        rel_pairs.append((a, b, axis, sign))
    for _ in range(LAYOUT_ATTEMPTS):
        k = LAYOUT_CANDIDATES
        hi = CANVAS - BORDER - e + 1  # exclusive upper bound of x0 per object
        x0 = rng.integers(BORDER, hi, size=(k, n))
        y0 = rng.integers(BORDER, hi, size=(k, n))
        ok = np.ones(k, dtype=bool)
        for a, b in pairs:
            gap_x = np.maximum(x0[:, a], x0[:, b]) - np.minimum(x0[:, a] + e[a], x0[:, b] + e[b])
            gap_y = np.maximum(y0[:, a], y0[:, b]) - np.minimum(y0[:, a] + e[a], y0[:, b] + e[b])
            ok &= (gap_x >= GAP) | (gap_y >= GAP)
        if rel_pairs:
            cx, cy = x0 + e / 2.0, y0 + e / 2.0
            for a, b, axis, sign in rel_pairs:
                along = sign * ((cx if axis == 0 else cy)[:, b] - (cx if axis == 0 else cy)[:, a])
                across = np.abs((cy if axis == 0 else cx)[:, b] - (cy if axis == 0 else cx)[:, a])
                ok &= (along >= RELATION_MIN_OFFSET) & (along >= RELATION_DOMINANCE * across)
        hits = np.flatnonzero(ok)
        if hits.size:
            c = hits[0]
            depths = rng.permutation(n)  # depth order: rank 0 farthest
            return tuple(
                Obj(
                    colour=spec.groups[groups[i]].colour,
                    shape=spec.groups[groups[i]].shape,
                    size=sizes[i],
                    extent=int(e[i]),
                    x0=int(x0[c, i]),
                    y0=int(y0[c, i]),
                    depth=round(0.3 + 0.7 * (depths[i] + 1) / n, 4),
                    group=groups[i],
                )
                for i in range(n)
            )
    raise ValueError(
        f"could not lay out {n} objects with {len(spec.relations)} relation(s) on a {CANVAS}x{CANVAS} "
        f"canvas after {LAYOUT_ATTEMPTS * LAYOUT_CANDIDATES} tries; use fewer or smaller objects"
    )


def make_scene(spec: Spec, rng: np.random.Generator, reference: bool = True) -> Scene:
    """Lay out a validated spec; unspecified style takes the defaults (white, filled)."""
    spec.validate()
    objects = layout(spec, rng)
    ref = layout(spec, rng, relations=False) if reference else ()
    return Scene(
        spec=spec,
        objects=objects,
        background=spec.style.background or vocab.DEFAULT_BACKGROUND,
        fill=spec.style.fill or vocab.DEFAULT_FILL,
        reference_objects=ref,
    )


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of scene `index` of world `seed`: independent across indices."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFFFFFF, 0x5A17E5])


def sample_scene(seed: int, index: int, category: str | None = None, split: str = "train",
                 reference: bool = True, mix: dict[str, float] | None = None, world: str = "full") -> Scene:
    """Scene `index` of the world `seed`: deterministic, and independent of every other index.

    `category` restricts the kind of statement (see `categories.CATEGORIES`; None draws from the
    training mix, or `mix`: category -> weight); `split` is "train" (no held-out colour-shape pair) or
    "heldout" (at least one); `world` names the world's restriction (categories.WORLDS: "full", "mini").
    """
    rng = scene_rng(seed, index)
    for _ in range(32):
        spec = sample_spec(rng, category=category, split=split, mix=mix, world=world)
        try:
            return make_scene(spec, rng, reference=reference)
        except ValueError:
            continue  # rare: a statement with no layout found; draw another statement
    raise RuntimeError(f"no layout found for 32 statements of category {category!r}")
