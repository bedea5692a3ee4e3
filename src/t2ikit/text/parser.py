"""The Parser interface: what the techniques read in a prompt, whoever reads it.

Relation guidance, Attend-and-Excite, instruction edits and token spans ask a Parser for the objects
of a prompt (the character span of each object phrase and of its noun) and the spatial relations
between them. The core owns this interface and knows no grammar: an implementation (the Shapes World
caption grammar in `t2ikit.world.parser`, an English parser) registers itself under a name with
`register_parser`, and a model folder names the parser its prompts are read with (t2ikit.json
"parser"). Character spans are tokenizer-free; `t2ikit.text.spans` maps them to token positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from t2ikit.text.spans import word_token_spans

RELATIONS = ("left of", "right of", "above", "below", "near", "in front of", "behind")
# the names JSON output uses (`t2ikit parse --json`)
RELATION_NAMES = {r: r.replace(" ", "_") for r in RELATIONS}
# (axis, sign) of each image-plane relation: sign * (object's centre - subject's centre) along axis (0: x, 1: y,
# down) > 0. "near", "in front of" and "behind" have no axis: a technique that guides along axes cannot guide them.
RELATION_AXES = {"left of": (0, 1), "right of": (0, -1), "above": (1, 1), "below": (1, -1)}


class PromptParseError(ValueError):
    """A prompt the parser cannot read; the message says where and why."""


@dataclass(frozen=True)
class ObjectPhrase:
    """One object (or group of identical objects) named in a prompt."""

    start: int  # character span of the whole phrase ("a small red circle") in the prompt
    end: int
    noun_start: int  # character span of its head noun ("circle")
    noun_end: int
    group: int  # index of the object in PromptStructure.objects order of first mention (relations refer to it)
    noun: str | None = None  # the head noun's lemma ("dogs" -> "dog"); None: the noun span's text
    count: int | None = None  # how many ("two dogs" -> 2, "a dog" -> 1); None: not said ("dogs", "some dogs")
    attributes: tuple[str, ...] = ()  # the words that modify the noun ("small", "red", "wooden"), in order


@dataclass(frozen=True)
class RelationPhrase:
    """`subject` stands `relation` `object` (indices into PromptStructure.groups)."""

    subject: int
    relation: str  # one of RELATIONS
    object: int
    start: int | None = None  # character span of the relation's words ("to the left of"), if the parser says
    end: int | None = None


@dataclass(frozen=True)
class TextSpan:
    """A character span of a prompt (a style phrase: "an oil painting of", "in the style of Monet")."""

    start: int
    end: int


@dataclass(frozen=True)
class PromptStructure:
    """What a parser read: object phrases (a group may be mentioned more than once), relations and style."""

    prompt: str
    objects: tuple[ObjectPhrase, ...]
    relations: tuple[RelationPhrase, ...] = ()
    style: tuple[TextSpan, ...] = field(default=())

    @property
    def groups(self) -> int:
        return 1 + max((o.group for o in self.objects), default=-1)

    def components(self) -> dict[str, list[tuple[int, int]]]:
        """The seed's components as character spans: tau = global + objects + relations + style.

        "global" is the whole prompt; "relations" holds the spans of relation words the parser gave.
        """
        return {
            "global": [(0, len(self.prompt))],
            "objects": [(o.start, o.end) for o in self.objects],
            "relations": [(r.start, r.end) for r in self.relations if r.start is not None and r.end is not None],
            "style": [(s.start, s.end) for s in self.style],
        }

    def to_json(self, tokenizer=None) -> dict:
        """A JSON-ready dict (`t2ikit parse --json`); with a fast tokenizer, each span's token positions too
        (BOS is 0, as `t2ikit.text.spans` counts them)."""
        p = self.prompt
        words = None if tokenizer is None else word_token_spans(tokenizer, p)

        def span(start: int, end: int) -> dict:
            out = {"text": p[start:end], "span": [start, end]}
            if words is not None:
                out["tokens"] = sorted({t for w in words if start <= w.start and w.end <= end for t in w.positions})
            return out

        objects = []
        for o in self.objects:
            noun = o.noun if o.noun is not None else p[o.noun_start:o.noun_end]
            objects.append({**span(o.start, o.end), "noun": noun, "count": o.count,
                            "attributes": list(o.attributes), "group": o.group,
                            "noun_span": [o.noun_start, o.noun_end]})
        relations = []
        for r in self.relations:
            item = {"subject": r.subject, "relation": RELATION_NAMES.get(r.relation, r.relation), "object": r.object}
            if r.start is not None and r.end is not None:
                item.update(span(r.start, r.end))
            relations.append(item)
        comp = self.components()
        return {
            "prompt": p,
            "objects": objects,
            "relations": relations,
            "style": [span(s.start, s.end) for s in self.style],
            "components": {kind: [span(a, b) for a, b in spans] for kind, spans in comp.items()},
        }


@runtime_checkable
class Parser(Protocol):
    """Reads prompts into a PromptStructure; raises PromptParseError for a prompt it cannot read."""

    name: str

    def parse(self, prompt: str) -> PromptStructure: ...


_PARSERS: dict[str, Callable[[], Parser]] = {}


def register_parser(name: str, factory: Callable[[], Parser]) -> None:
    """Make `get_parser(name)` build a parser with `factory()` (implementations call this at import)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a parser's name must be a non-empty str; got {name!r}")
    _PARSERS[name] = factory


def parser_names() -> list[str]:
    return sorted(_PARSERS)


def get_parser(name: str | Parser | None) -> Parser | None:
    """The registered parser `name` (a Parser passes through; None is None); ValueError for an unknown name."""
    if name is None or isinstance(name, Parser):
        return name
    if name not in _PARSERS:
        raise ValueError(f"unknown prompt parser {name!r}; registered: {', '.join(parser_names()) or 'none'}")
    return _PARSERS[name]()


@runtime_checkable
class InstructionReader(Protocol):
    """Reads an edit instruction ("change the red circle to a blue square") into a source and a target prompt.

    `read` raises ValueError naming the part of the instruction it cannot read; `prompts` says the source
    prompt (`source_prompt` if given: the instruction's object is found in it) and the target prompt.
    An implementation reaches the edit through the edit's scene support (`t2ikit.edit.support`).
    """

    name: str

    def read(self, instruction: str) -> object: ...

    def prompts(self, instruction: object, source_prompt: str | None = None) -> tuple[str, str]: ...


_READERS: dict[str, Callable[[], InstructionReader]] = {}


def register_instruction_reader(parser_name: str, factory: Callable[[], InstructionReader]) -> None:
    """Make `get_instruction_reader(parser_name)` build the instruction reader of the prompts a parser reads (an
    edit on a model whose parser is `parser_name` reads its instructions with it)."""
    if not isinstance(parser_name, str) or not parser_name:
        raise ValueError(f"a parser's name must be a non-empty str; got {parser_name!r}")
    _READERS[parser_name] = factory


def get_instruction_reader(parser: str | Parser | None) -> InstructionReader | None:
    """The instruction reader registered for `parser` (a name or a Parser), or None when it has none (then an
    edit reads instructions through its scene support, `t2ikit.edit.support`)."""
    name = getattr(parser, "name", parser)
    return _READERS[name]() if name in _READERS else None


__all__ = ["InstructionReader", "ObjectPhrase", "Parser", "PromptParseError", "PromptStructure", "RELATIONS",
           "RELATION_AXES", "RELATION_NAMES", "RelationPhrase", "TextSpan", "get_instruction_reader", "get_parser",
           "parser_names", "register_instruction_reader", "register_parser"]
