"""Three ways to decompose one prompt into component prompts that condition one generation together.

The seed (Q6) names three strategies; each reads the prompt with the model's `Parser` (`pipe.parser`: objects,
their attribute words, relations, style), so it works on Shapes World captions and on English prompts alike:

- global-local: one scene component (the prompt with every object's attribute words removed: the layout, the
  nouns, the relations and the background) over the whole image, plus one local component per object group (its
  phrase, "a red circle") in the box(es) the layout planner (`control.layout.plan_layout`) gives it;
- hierarchical: sentence -> phrases (each object phrase, each relation as "circle to the left of square") ->
  words (each attribute word and noun), all over the whole image, combined coarse to fine by weight: every
  component of level l has weight LEVEL_WEIGHTS[l] (the sentence most, single words least);
- aspect-based: one component per visual aspect, over the whole image: colour words ("red and blue"), shape
  nouns ("circle and square"), size words, other attribute words, relations, style/background.

A decomposition is a list of `Component`s; `generate_composed` turns it into region prompts (`control.regions`,
one `Region` per component: its mask, its weight) of one `T2IPipeline.run`, in attention mode (masked
cross-attention over the concatenated contexts, each block's share scaled by its weight) or noise mode (one
guidance condition per component, Composable Diffusion / MultiDiffusion, weights as priorities). Every strategy
has a whole-image component, so the base prompt's block is never attended (attention mode) or is masked out
(noise mode): the components alone condition the image. No new sampling loop.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from t2ikit.control.layout import plan_layout
from t2ikit.control.regions import REGION_MODES, Region
from t2ikit.pipeline import PLAIN
from t2ikit.text import lexicon
from t2ikit.text.parser import PromptParseError, PromptStructure, get_parser
from t2ikit.world.caption import decompose as world_decompose

STRATEGIES = ("global-local", "hierarchical", "aspect")
LEVEL_WEIGHTS = {"sentence": 1.0, "phrase": 0.5, "word": 0.25}  # hierarchical: coarse levels weigh more
GLOBAL_WEIGHT = 1.0  # global-local: the scene component's weight (it shares an object's box with the object)
LOCAL_WEIGHT = 1.0  # global-local: each object's weight inside its box
ASPECT_WEIGHT = 1.0  # aspect-based: every aspect the same weight


@dataclass(frozen=True)
class Component:
    """One component prompt: its text, what it carries, its weight, and where it acts."""

    text: str
    kind: str  # "scene" | "object" | "sentence" | "phrase" | "word" | "colour" | "shape" | "size" | "attribute"
    #            | "relation" | "style"
    weight: float
    boxes: tuple[tuple[int, int, int, int], ...] = ()  # (x0, y0, x1, y1) pixels, x1/y1 exclusive; () = whole image


# ----------------------------------------------------------------------------------------------------
# Reading a prompt


def read_prompt(prompt: str, parser) -> PromptStructure:
    """`prompt` read by `parser` (a Parser or a registered name); ValueError when there is none or it cannot read."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    p = get_parser(parser)
    if p is None:
        raise ValueError("decomposing a prompt needs a prompt parser (pipe.parser); this model names none")
    try:
        structure = p.parse(prompt)
    except PromptParseError as err:
        raise ValueError(f"the {p.name} parser cannot read {prompt!r}: {err}") from None
    if not structure.objects:
        raise ValueError(f"the {p.name} parser finds no object in {prompt!r}: nothing to decompose")
    return structure


def _relation_and_style_texts(structure: PromptStructure) -> tuple[list[str], list[str]]:
    """The text of each relation's words and of each style span; where the parser gives no span (the Shapes World
    parser gives none), the Shapes World grammar's own decomposition of the caption, else the relation's name."""
    p = structure.prompt
    rel = [p[r.start:r.end] if r.start is not None else None for r in structure.relations]
    style = [p[s.start:s.end] for s in structure.style]
    if any(t is None for t in rel) or not style:
        try:
            d = world_decompose(p)
        except ValueError:
            d = None
        if d is not None:
            if any(t is None for t in rel) and len(d.relations) == len(rel):
                rel = [t if t is not None else s.text for t, s in zip(rel, d.relations)]
            if not style:
                style = [s.text for s in d.style]
    rel = [t if t is not None else r.relation for t, r in zip(rel, structure.relations)]
    return rel, style


def _nouns(structure: PromptStructure) -> dict[int, str]:
    """The head noun of each group, from its first mention."""
    out: dict[int, str] = {}
    for o in structure.objects:
        out.setdefault(o.group, o.noun or structure.prompt[o.noun_start:o.noun_end])
    return out


def _first_phrases(structure: PromptStructure) -> dict[int, str]:
    out: dict[int, str] = {}
    for o in structure.objects:
        out.setdefault(o.group, structure.prompt[o.start:o.end].strip())
    return out


def _relation_phrases(structure: PromptStructure) -> list[str]:
    nouns = _nouns(structure)
    rel, _ = _relation_and_style_texts(structure)
    return [f"{nouns[r.subject]} {t.strip()} {nouns[r.object]}" for r, t in zip(structure.relations, rel)]


def _attribute_words(structure: PromptStructure) -> list[str]:
    """Every group's attribute words, first mentions, in prompt order."""
    seen, out = set(), []
    for o in structure.objects:
        if o.group not in seen:
            seen.add(o.group)
            out += list(o.attributes)
    return out


def _join(words: list[str]) -> str:
    return " and ".join(dict.fromkeys(words))


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" ,")


# ----------------------------------------------------------------------------------------------------
# The three strategies


def global_local(prompt: str, parser, size: tuple[int, int] = (64, 64), layout_seed: int = 0) -> list[Component]:
    """Scene component (attribute words removed) over the image + one local component per group in its boxes."""
    s = read_prompt(prompt, parser)
    p = s.prompt
    cut = []  # character spans of attribute words inside object phrases
    for o in s.objects:
        for word in set(o.attributes):
            cut += [(o.start + m.start(), o.start + m.end()) for m in re.finditer(rf"\b{re.escape(word)}\b",
                                                                                    p[o.start:o.end])]
    keep = np.ones(len(p), bool)
    for a, b in cut:
        keep[a:b] = False
    scene = _squash("".join(ch for ch, k in zip(p, keep) if k))
    phrases = _first_phrases(s)
    boxes: dict[str, list] = {}
    for box in plan_layout(s, size, layout_seed):
        boxes.setdefault(box.phrase, []).append(box.xyxy)
    out = [Component(scene, "scene", GLOBAL_WEIGHT)]
    for g in sorted(phrases):
        out.append(Component(phrases[g], "object", LOCAL_WEIGHT, tuple(boxes[phrases[g]])))
    return out


def hierarchical(prompt: str, parser) -> list[Component]:
    """Sentence, then phrases (objects, relations), then words (attributes, nouns), weighted by LEVEL_WEIGHTS."""
    s = read_prompt(prompt, parser)
    out = [Component(s.prompt, "sentence", LEVEL_WEIGHTS["sentence"])]
    phrases = _first_phrases(s)
    out += [Component(phrases[g], "phrase", LEVEL_WEIGHTS["phrase"]) for g in sorted(phrases)]
    out += [Component(t, "phrase", LEVEL_WEIGHTS["phrase"]) for t in _relation_phrases(s)]
    nouns = _nouns(s)
    words = []
    seen = set()
    for o in s.objects:
        if o.group not in seen:
            seen.add(o.group)
            words += [*o.attributes, nouns[o.group]]
    out += [Component(w, "word", LEVEL_WEIGHTS["word"]) for w in dict.fromkeys(words)]
    return out


def aspect(prompt: str, parser) -> list[Component]:
    """One component per visual aspect present: colour, shape, size, other attributes, relation, style."""
    s = read_prompt(prompt, parser)
    attrs = _attribute_words(s)
    colours = [w for w in attrs if w.lower() in lexicon.COLOURS]
    sizes = [w for w in attrs if w.lower() in lexicon.SIZES and w not in colours]
    other = [w for w in attrs if w not in colours and w not in sizes]
    nouns = _nouns(s)
    _, style = _relation_and_style_texts(s)
    parts = [("colour", _join(colours)), ("shape", _join([nouns[g] for g in sorted(nouns)])),
             ("size", _join(sizes)), ("attribute", _join(other)),
             ("relation", " and ".join(_relation_phrases(s))), ("style", " ".join(t.strip() for t in style))]
    return [Component(text, kind, ASPECT_WEIGHT) for kind, text in parts if text]


def decompose_prompt(strategy: str, prompt: str, parser, size: tuple[int, int] = (64, 64),
                     layout_seed: int = 0) -> list[Component]:
    """The components of `prompt` under `strategy` (one of STRATEGIES)."""
    if strategy == "global-local":
        return global_local(prompt, parser, size, layout_seed)
    if strategy == "hierarchical":
        return hierarchical(prompt, parser)
    if strategy == "aspect":
        return aspect(prompt, parser)
    raise ValueError(f"unknown decomposition strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def changed_components(before: list[Component], after: list[Component]) -> int:
    """How many components of `after` are not in `before` (as multisets): what an edit touched."""
    return sum((Counter(after) - Counter(before)).values())


# ----------------------------------------------------------------------------------------------------
# Generating with a decomposition


def regions_of(components: list[Component], size: tuple[int, int]) -> list[Region]:
    """One `Region` per component: the union of its boxes (the whole image when it has none) and its weight."""
    h, w = size
    out = []
    for c in components:
        mask = np.zeros((h, w), np.float32) if c.boxes else np.ones((h, w), np.float32)
        for x0, y0, x1, y1 in c.boxes:
            mask[y0:y1, x0:x1] = 1.0
        out.append(Region(c.text, mask=mask, weight=c.weight))
    return out


def generate_composed(pipe, prompt: str, components: list[Component] | None, seeds: list[int],
                      steps: int | None = None, guidance: float | None = None, sampler: str | None = None,
                      mode: str = "attention", size: tuple[int, int] | None = None) -> torch.Tensor:
    """(len(seeds), 3, H, W) images in [0, 1] of `prompt` (image i seeded seeds[i]) conditioned by `components`
    together (None: the plain prompt), at `size` (None: the model's). No sampling-time latent guidance (relation
    guidance off), so the plain prompt and every decomposition share the same sampler and the same noise per seed."""
    if mode not in REGION_MODES:
        raise ValueError(f"unknown composition mode {mode!r}; allowed: {', '.join(REGION_MODES)}")
    if not seeds:
        raise ValueError("need at least one seed")
    seeds = [int(x) for x in seeds]
    spec = pipe.make_spec(prompt, None, steps, guidance, seeds[0], len(seeds), size, sampler, **PLAIN)
    if components:
        spec = pipe.make_spec(prompt, None, steps, guidance, seeds[0], len(seeds), spec.size, sampler, **PLAIN,
                              regions=regions_of(components, spec.size), region_mode=mode)
    return pipe.run(spec, progress=False, seeds=seeds).images


__all__ = ["ASPECT_WEIGHT", "Component", "GLOBAL_WEIGHT", "LEVEL_WEIGHTS", "LOCAL_WEIGHT", "STRATEGIES", "aspect",
           "changed_components", "decompose_prompt", "generate_composed", "global_local", "hierarchical",
           "read_prompt", "regions_of"]
