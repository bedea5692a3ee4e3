"""Scenes of Shapes World: what a caption says (a `Spec`) and one concrete layout of it (a `Scene`).

A spec is the statement: groups of identical objects (colour, shape, size, count), relations between
groups, and a scene-level style. A scene adds what the statement leaves open: exact extents, positions,
depth order, and the defaults for unspecified style. `sample_scene(seed, index)` is the infinite,
deterministic world: the same (seed, index) always gives the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from t2ikit.world import vocab

# ---------------------------------------------------------------------------------------------------
# The statement
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """`count` identical objects: "three small yellow triangles"."""

    colour: str
    shape: str
    size: str | None = None  # "small" | "large" | None (the caption does not say)
    count: int = 1


@dataclass(frozen=True)
class Relation:
    """Every object of group `subject` stands `relation` every object of group `object`."""

    subject: int
    relation: str  # one of vocab.RELATIONS
    object: int


# (axis, sign) of each relation: sign * (object's centre - subject's centre) along axis (0: x, 1: y, down) > 0
RELATION_AXES = {"left of": (0, 1), "right of": (0, -1), "above": (1, 1), "below": (1, -1)}
MAX_RELATIONS = vocab.MAX_OBJECTS - 1  # relations join consecutive groups


def relation_rows(spec: "Spec") -> np.ndarray:
    """(MAX_RELATIONS, 4) int64 rows (subject group, object group, axis, sign) of `spec`'s relations; -1 rows pad."""
    out = np.full((MAX_RELATIONS, 4), -1, dtype=np.int64)
    for k, r in enumerate(spec.relations):
        out[k] = (r.subject, r.object, *RELATION_AXES[r.relation])
    return out


@dataclass(frozen=True)
class Style:
    background: str | None = None  # one of vocab.BACKGROUNDS, or None (default white)
    fill: str | None = None  # "filled" | "outlined" | None (default filled)


@dataclass(frozen=True)
class Spec:
    groups: tuple[Group, ...]
    relations: tuple[Relation, ...] = ()
    style: Style = field(default_factory=Style)

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def validate(self) -> Spec:
        """Raise ValueError naming the first problem; return self so calls chain."""
        if not self.groups:
            raise ValueError("a spec needs at least one object group")
        for i, g in enumerate(self.groups):
            _check_name("colour", g.colour, vocab.COLOURS, i)
            _check_name("shape", g.shape, vocab.SHAPES, i)
            if g.size is not None:
                _check_name("size", g.size, vocab.SIZES, i)
            if not isinstance(g.count, int) or g.count < 1:
                raise ValueError(f"group {i}: count must be a positive integer, got {g.count!r}")
        for i, a in enumerate(self.groups):
            for j in range(i + 1, len(self.groups)):
                b = self.groups[j]
                if (a.colour, a.shape) == (b.colour, b.shape) and (a.size is None or a.size == b.size):
                    raise ValueError(
                        f"groups {i} and {j} are both {a.colour} {a.shape}s that nothing tells apart; "
                        f"say 'two {a.colour} {vocab.PLURAL_SHAPES[a.shape]}' or give them different sizes"
                    )
        if self.n_objects > vocab.MAX_OBJECTS:
            raise ValueError(
                f"{self.n_objects} objects do not fit the canvas: at most {vocab.MAX_OBJECTS} are allowed"
            )
        if self.style.background is not None and self.style.background not in vocab.BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.style.background!r}; allowed: {', '.join(vocab.BACKGROUNDS)}"
            )
        if self.style.fill is not None and self.style.fill not in vocab.FILLS:
            raise ValueError(f"unknown fill {self.style.fill!r}; allowed: {', '.join(vocab.FILLS)}")
        _check_relations(self)
        return self


def _check_name(kind: str, value: str, allowed, index: int) -> None:
    if value not in allowed:
        raise ValueError(f"group {index}: unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def _check_relations(spec: Spec) -> None:
    """Relations must name existing, distinct groups and be satisfiable (no cycle on either axis)."""
    n = len(spec.groups)
    axis_edges: dict[str, list[tuple[int, int]]] = {"x": [], "y": []}
    pair_axis: dict[frozenset, str] = {}
    for r in spec.relations:
        if r.relation not in vocab.RELATIONS:
            raise ValueError(f"unknown relation {r.relation!r}; allowed: {', '.join(vocab.RELATIONS)}")
        if not (0 <= r.subject < n and 0 <= r.object < n):
            raise ValueError(f"relation {r} names a group that does not exist (there are {n})")
        if r.subject == r.object:
            raise ValueError(f"relation {r} relates a group to itself")
        axis = "x" if r.relation in ("left of", "right of") else "y"
        pair = frozenset((r.subject, r.object))
        if pair_axis.setdefault(pair, axis) != axis:
            raise ValueError(
                f"groups {r.subject} and {r.object} are related both horizontally and vertically; "
                "a relation holds along the dominant axis only, so both cannot be true"
            )
        # edge a -> b means "a before b" (a left of b, a above b)
        a, b = (r.subject, r.object) if r.relation in ("left of", "above") else (r.object, r.subject)
        axis_edges[axis].append((a, b))
    for axis, edges in axis_edges.items():
        if _has_cycle(n, edges):
            raise ValueError(f"contradictory relations: the {'horizontal' if axis == 'x' else 'vertical'} "
                             f"order they ask for has a cycle ({edges})")


def _has_cycle(n: int, edges: list[tuple[int, int]]) -> bool:
    indegree = [0] * n
    for _, b in edges:
        indegree[b] += 1
    ready = [i for i in range(n) if indegree[i] == 0]
    seen = 0
    while ready:
        a = ready.pop()
        seen += 1
        for x, b in edges:
            if x == a:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return seen < n


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
                 reference: bool = True, mix: dict[str, float] | None = None) -> Scene:
    """Scene `index` of the world `seed`: deterministic, and independent of every other index.

    `category` restricts the kind of statement (see `categories.CATEGORIES`; None draws from the
    training mix, or `mix`: category -> weight); `split` is "train" (no held-out colour-shape pair) or
    "heldout" (at least one).
    """
    from t2ikit.world.categories import sample_spec  # categories imports this module

    rng = scene_rng(seed, index)
    for _ in range(32):
        spec = sample_spec(rng, category=category, split=split, mix=mix)
        try:
            return make_scene(spec, rng, reference=reference)
        except ValueError:
            continue  # rare: a statement with no layout found; draw another statement
    raise RuntimeError(f"no layout found for 32 statements of category {category!r}")


def with_style(spec: Spec, **style) -> Spec:
    return replace(spec, style=replace(spec.style, **style))
