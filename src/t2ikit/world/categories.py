"""Kinds of statement (CompBench categories) and the training mix, as spec samplers.

Every category draws groups that the oracle can tell apart: no two groups share both colour and shape.
Relations join consecutive groups only, which is what the caption grammar can say
("A left of B, which is above C").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t2ikit.world import vocab
from t2ikit.world.spec import Group, Relation, Spec, Style

CATEGORIES: tuple[str, ...] = (
    "single",  # one object: "a large red circle"
    "colour_binding",  # two objects, colours and shapes differ: "a red circle and a blue square"
    "shape_binding",  # two objects of one colour, shapes bound to sizes: "a small red circle and a large red square"
    "size",  # two objects of one shape, sizes bound to colours: "a small red circle and a large blue circle"
    "spatial",  # two objects and a relation: "a red circle to the left of a blue square"
    "counting",  # "three yellow triangles", "two red circles and a blue square"
    "style",  # background and fill: "an outlined green square on a black background"
    "complex",  # 3-4 objects with 1-3 relations
)
# The training stream draws categories with these weights; "free" is any statement the grammar can say.
TRAIN_MIX: dict[str, float] = {
    "single": 0.12, "colour_binding": 0.08, "shape_binding": 0.06, "size": 0.06, "spatial": 0.14,
    "counting": 0.1, "style": 0.08, "complex": 0.16, "free": 0.2,
}
TRAIN_STYLE_PROB = 0.25  # outside "style", a training statement also states a style this often
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class World:
    """A named restriction of Shapes World: which colours, shapes, sizes and categories its statements use.

    "full" is the whole world (every name of vocab.py, TRAIN_MIX, styles). "mini" is the reduced protocol in
    which a CPU run of minutes learns something measurable (docs/results/training.md, section "The mini
    protocol"): 3 colours x 3 shapes, every object large and stated so, white background, one or two objects
    (single, colour binding, spatial). Captions, the parser and the oracle are the full world's: a mini
    statement is a full-world statement.
    """

    name: str
    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    sizes: tuple[str, ...]  # sizes a statement may state
    categories: tuple[str, ...]  # the CompBench categories of the world
    mix: dict  # category -> weight of the training stream ("free" only in the full world)
    style_prob: float  # how often a training statement outside "style" also states a style
    fixed_size: str | None = None  # every object is this size, and its statement says so


WORLDS: dict[str, World] = {
    "full": World("full", tuple(vocab.COLOURS), vocab.SHAPES, tuple(vocab.SIZES), CATEGORIES, TRAIN_MIX,
                  TRAIN_STYLE_PROB),
    "mini": World("mini", ("red", "green", "blue"), ("circle", "square", "triangle"), ("large",),
                  ("single", "colour_binding", "spatial"),
                  {"single": 0.25, "colour_binding": 0.25, "spatial": 0.5}, 0.0, fixed_size="large"),
}


def get_world(name: str) -> World:
    """The named world; ValueError listing the known ones."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; known worlds: {', '.join(WORLDS)}")
    return WORLDS[name]


def check_mix(mix: dict, world: str = "full") -> dict[str, float]:
    """A training mix (category -> weight; "free" is any statement): ValueError for a category unknown to
    `world`, a negative weight or an all-zero mix. Weights need not sum to 1."""
    allowed = get_world(world).mix
    unknown = sorted(set(mix) - set(allowed))
    if unknown:
        raise ValueError(f"unknown mix categories {unknown} in world {world!r}; allowed: {', '.join(allowed)}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in mix.values()):
        raise ValueError(f"mix weights must be numbers >= 0, got {mix}")
    if not sum(mix.values()) > 0:
        raise ValueError(f"mix weights must not all be 0, got {mix}")
    return {k: float(v) for k, v in mix.items()}


def sample_spec(rng: np.random.Generator, category: str | None = None, split: str = "train",
                mix: dict[str, float] | None = None, world: str = "full") -> Spec:
    """A random statement of `category` (None: the training mix, `mix` or the world's) in `split` of the
    named `world` (WORLDS)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    w = get_world(world)
    training = category is None
    if training:
        weights = check_mix(mix, world) if mix is not None else w.mix
        names = list(weights)
        category = names[int(rng.choice(len(names), p=np.asarray(list(weights.values())) / sum(weights.values())))]
    elif category not in w.categories:
        raise ValueError(f"unknown category {category!r} in world {world!r}; allowed: {', '.join(w.categories)}")
    for _ in range(100):
        spec = _SAMPLERS[category](rng, w)
        if training and category != "style" and w.style_prob > 0 and rng.random() < w.style_prob:
            spec = Spec(spec.groups, spec.relations, _random_style(rng, both=False))
        if w.fixed_size is not None:
            spec = Spec(tuple(Group(g.colour, g.shape, w.fixed_size, g.count) for g in spec.groups), spec.relations,
                        spec.style)
        held = [(g.colour, g.shape) in vocab.HELD_OUT for g in spec.groups]
        if (split == "train" and not any(held)) or (split == "heldout" and any(held)):
            return spec
    raise RuntimeError(f"could not draw a {split} statement of category {category!r}")


# --- drawing parts -------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, options, k: int = 1, distinct: bool = True) -> list:
    options = list(options)
    idx = rng.choice(len(options), size=k, replace=not distinct)
    return [options[int(i)] for i in idx]


def _maybe_size(rng: np.random.Generator, w: World, p: float = 0.5) -> str | None:
    return _pick(rng, w.sizes)[0] if rng.random() < p else None


def _random_style(rng: np.random.Generator, both: bool) -> Style:
    background = _pick(rng, vocab.BACKGROUNDS)[0] if rng.random() < 0.75 else None
    fill = _pick(rng, vocab.FILLS)[0] if rng.random() < 0.75 else None
    if background is None and fill is None:  # a style statement states something
        background = _pick(rng, vocab.BACKGROUNDS)[0]
    if both:
        background = background or _pick(rng, vocab.BACKGROUNDS)[0]
        fill = fill or _pick(rng, vocab.FILLS)[0]
    return Style(background=background, fill=fill)


def _distinct_groups(rng: np.random.Generator, w: World, n: int, size_p: float = 0.0, counts=None) -> list[Group]:
    """n groups with pairwise different (colour, shape)."""
    pairs = [(c, s) for c in w.colours for s in w.shapes]
    chosen = _pick(rng, pairs, k=n)
    counts = counts or [1] * n
    return [Group(c, s, _maybe_size(rng, w, size_p), k) for (c, s), k in zip(chosen, counts)]


def _chain_relations(rng: np.random.Generator, n: int, n_relations: int) -> tuple[Relation, ...]:
    """`n_relations` relations between consecutive groups (i, i+1), at distinct links."""
    links = sorted(int(i) for i in rng.choice(n - 1, size=n_relations, replace=False))
    return tuple(Relation(i, _pick(rng, vocab.RELATIONS)[0], i + 1) for i in links)


# --- one sampler per category --------------------------------------------------------------------

def _single(rng, w):
    return Spec(tuple(_distinct_groups(rng, w, 1, size_p=0.5)))


def _colour_binding(rng, w):
    colours = _pick(rng, w.colours, 2)
    shapes = _pick(rng, w.shapes, 2)
    return Spec(tuple(Group(c, s) for c, s in zip(colours, shapes)))


def _shape_binding(rng, w):
    colour = _pick(rng, w.colours)[0]
    shapes = _pick(rng, w.shapes, 2)
    sizes = _pick(rng, w.sizes, 2)
    return Spec(tuple(Group(colour, s, z) for s, z in zip(shapes, sizes)))


def _size(rng, w):
    shape = _pick(rng, w.shapes)[0]
    colours = _pick(rng, w.colours, 2)
    sizes = _pick(rng, w.sizes, 2)
    return Spec(tuple(Group(c, shape, z) for c, z in zip(colours, sizes)))


def _spatial(rng, w):
    groups = _distinct_groups(rng, w, 2, size_p=0.2)
    return Spec(tuple(groups), _chain_relations(rng, 2, 1))


def _counting(rng, w):
    if rng.random() < 0.6:
        return Spec(tuple(_distinct_groups(rng, w, 1, size_p=0.2, counts=[int(rng.integers(2, 5))])))
    first = int(rng.integers(2, 4))
    second = int(rng.integers(1, vocab.MAX_OBJECTS - first + 1))
    counts = [first, second] if rng.random() < 0.5 else [second, first]
    return Spec(tuple(_distinct_groups(rng, w, 2, size_p=0.2, counts=counts)))


def _style(rng, w):
    groups = _distinct_groups(rng, w, int(rng.integers(1, 3)), size_p=0.2)
    return Spec(tuple(groups), (), _random_style(rng, both=rng.random() < 0.5))


def _complex(rng, w):
    n = int(rng.integers(3, vocab.MAX_OBJECTS + 1))
    groups = _distinct_groups(rng, w, n, size_p=0.3)
    relations = _chain_relations(rng, n, int(rng.integers(1, n)))
    style = _random_style(rng, both=False) if rng.random() < 0.3 else Style()
    return Spec(tuple(groups), relations, style)


def _free(rng, w):
    n_objects = int(rng.integers(1, vocab.MAX_OBJECTS + 1))
    counts: list[int] = []
    while sum(counts) < n_objects:
        counts.append(int(rng.integers(1, n_objects - sum(counts) + 1)))
    groups = _distinct_groups(rng, w, len(counts), size_p=0.5, counts=counts)
    relations = _chain_relations(rng, len(groups), int(rng.integers(0, len(groups)))) if len(groups) > 1 else ()
    return Spec(tuple(groups), relations)


_SAMPLERS = {
    "single": _single, "colour_binding": _colour_binding, "shape_binding": _shape_binding, "size": _size,
    "spatial": _spatial, "counting": _counting, "style": _style, "complex": _complex, "free": _free,
}
