"""What a caption states (a `Spec`): groups of identical objects (colour, shape, size, count), relations
between groups, and a scene-level style, with the checks that make a statement valid. A layout of it is a
`t2ikit.world.scene.Scene`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from t2ikit.world import vocab


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


def relation_rows(spec: Spec) -> np.ndarray:
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


def with_style(spec: Spec, **style) -> Spec:
    return replace(spec, style=replace(spec.style, **style))
