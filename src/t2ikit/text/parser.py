"""The Parser interface: what the techniques read in a prompt, whoever reads it.

Relation guidance, Attend-and-Excite, instruction edits and token spans ask a Parser for the objects
of a prompt (the character span of each object phrase and of its noun) and the spatial relations
between them. The core owns this interface and knows no grammar: an implementation (the Shapes World
caption grammar in `t2ikit.world.parser`, an English parser) registers itself under a name with
`register_parser`, and a model folder names the parser its prompts are read with (t2ikit.json
"parser"). Character spans are tokenizer-free; `t2ikit.text.spans` maps them to token positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

RELATIONS = ("left of", "right of", "above", "below")
# (axis, sign) of each relation: sign * (object's centre - subject's centre) along axis (0: x, 1: y, down) > 0
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


@dataclass(frozen=True)
class RelationPhrase:
    """`subject` stands `relation` `object` (indices into PromptStructure.groups)."""

    subject: int
    relation: str  # one of RELATIONS
    object: int


@dataclass(frozen=True)
class PromptStructure:
    """What a parser read: object phrases (a group may be mentioned more than once) and relations."""

    prompt: str
    objects: tuple[ObjectPhrase, ...]
    relations: tuple[RelationPhrase, ...] = ()

    @property
    def groups(self) -> int:
        return 1 + max((o.group for o in self.objects), default=-1)


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


__all__ = ["InstructionReader", "ObjectPhrase", "Parser", "PromptParseError", "PromptStructure", "RELATIONS",
           "RELATION_AXES", "RelationPhrase", "get_parser", "parser_names", "register_parser"]
