"""Captions both ways: a grammar that writes varied captions of a spec, and a parser that reads them back.

Grammar (words in vocab.py):

    caption  := clause (("," | "and" | ", and") clause)* suffix*
    clause   := np (relation np ((",")? ("which" | "that") ("is" | "are") relation np)*)?
    np       := det (fill-adj | size)* colour shape
    det      := "a" | "an" | "one" | "two" | "three" | "four"
    suffix   := ","? (background-phrase | fill-phrase)

Relations join consecutive noun phrases: "A left of B, which is above C" says (A left of B), (B above C).
`parse_caption(write_caption(spec, rng)) == spec` for every spec the world draws (a property test checks
it over thousands of seeds). `decompose` splits a caption into the seed's components (global, objects,
relations, style) with character spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from t2ikit.world import vocab
from t2ikit.world.spec import Group, Relation, Spec, Style

# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------

_SIZE_SYNONYMS = {canon: [w for w, c in vocab.SIZE_WORDS.items() if c == canon] for canon in vocab.SIZES}
_RELATION_SYNONYMS = {r: [p for p, c in vocab.RELATION_PHRASES.items() if c == r] for r in vocab.RELATIONS}
_FILL_ADJECTIVES = {"filled": ["filled", "solid"], "outlined": ["outlined"]}
_FILL_SUFFIXES = {f: [p for p, c in vocab.FILL_PHRASES.items() if c == f] for f in vocab.FILLS}


def _choose(rng: np.random.Generator | None, options: list[str]) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _noun_phrase(g: Group, fill_adj: str | None, rng) -> str:
    words = []
    if fill_adj:
        words.append(fill_adj)
    if g.size:
        words.append(_choose(rng, _SIZE_SYNONYMS[g.size]))
    words.append(g.colour)
    words.append(g.shape if g.count == 1 else vocab.PLURAL_SHAPES[g.shape])
    if g.count == 1:
        det = "one" if rng is not None and rng.random() < 0.1 else ("an" if words[0][0] in "aeiou" else "a")
    else:
        det = vocab.NUMBER_WORDS[g.count]
    return " ".join([det] + words)


def _clauses(spec: Spec) -> list[list[int]]:
    """Groups split into chains joined by relations; raises if a relation is not between neighbours."""
    linked = {}
    for r in spec.relations:
        if r.object != r.subject + 1 or r.subject in linked:
            raise ValueError(
                f"the caption grammar says relations between consecutive groups only, once each; {r} is not"
            )
        linked[r.subject] = r.relation
    clauses, current = [], [0]
    for i in range(1, len(spec.groups)):
        if i - 1 in linked:
            current.append(i)
        else:
            clauses.append(current)
            current = [i]
    clauses.append(current)
    return clauses


def write_caption(spec: Spec, rng: np.random.Generator | None = None) -> str:
    """A caption saying exactly `spec`; `rng` varies the wording (None: the canonical wording)."""
    spec.validate()
    links = {r.subject: r.relation for r in spec.relations}
    fill = spec.style.fill
    adjective_fill = fill is not None and rng is not None and rng.random() < 0.5
    fill_adj = _choose(rng, _FILL_ADJECTIVES[fill]) if adjective_fill else None
    parts = []
    for clause in _clauses(spec):
        text = _noun_phrase(spec.groups[clause[0]], fill_adj, rng)
        for k, gi in enumerate(clause[1:]):
            prev = clause[k]
            relation = _choose(rng, _RELATION_SYNONYMS[links[prev]])
            if k > 0:
                verb = "is" if spec.groups[prev].count == 1 else "are"
                text += f", {_choose(rng, ['which', 'that'])} {verb}"
            text += f" {relation} {_noun_phrase(spec.groups[gi], fill_adj, rng)}"
        parts.append(text)
    if len(parts) == 1:
        body = parts[0]
    else:
        last_join = _choose(rng, [" and ", ", and "]) if len(parts) > 2 else " and "
        body = ", ".join(parts[:-1]) + last_join + parts[-1]
    suffixes = []
    if fill is not None and not adjective_fill:
        suffixes.append(", " + _choose(rng, _FILL_SUFFIXES[fill]))
    if spec.style.background is not None:
        bg_word = "grey" if spec.style.background == "gray" and rng is not None and rng.random() < 0.3 \
            else spec.style.background
        suffixes.append(" " + _choose(rng, list(vocab.BACKGROUND_PHRASES)).format(bg_word))
    if rng is not None and len(suffixes) == 2 and rng.random() < 0.5:
        suffixes = [", " + suffixes[1].strip(), suffixes[0]]
    return body + "".join(suffixes)


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


class CaptionError(ValueError):
    """A caption the grammar cannot read; the message points at the first unreadable word."""


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the caption, end exclusive
    end: int
    text: str
    kind: str  # "global" | "object" | "relation" | "style"
    ref: tuple[int, ...] = ()  # group indices the span is about


@dataclass
class Decomposition:
    """The seed's components of a caption: tau = global + objects + relations + style."""

    caption: str
    global_: Span
    objects: list[Span] = field(default_factory=list)
    relations: list[Span] = field(default_factory=list)
    style: list[Span] = field(default_factory=list)

    def spans(self) -> list[Span]:
        return [self.global_, *self.objects, *self.relations, *self.style]


_TOKEN = re.compile(r"[a-z]+|,|\S")
_DETERMINERS = {"a": 1, "an": 1, "one": 1} | {w: n for n, w in vocab.NUMBER_WORDS.items() if n > 1}
_PLURAL_TO_SHAPE = {p: s for s, p in vocab.PLURAL_SHAPES.items()}


def _phrase_table(phrases: dict[str, str]) -> list[tuple[tuple[str, ...], str]]:
    return sorted(((tuple(p.split()), c) for p, c in phrases.items()), key=lambda t: -len(t[0]))


_RELATION_TABLE = _phrase_table(vocab.RELATION_PHRASES)
_FILL_TABLE = _phrase_table(vocab.FILL_PHRASES)


class _Reader:
    def __init__(self, text: str):
        self.text = text
        stripped = text.rstrip()
        if stripped.endswith("."):
            stripped = stripped[:-1]
        self.tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(stripped.lower())]
        self.pos = 0
        self.groups: list[Group] = []
        self.relations: list[Relation] = []
        self.fill_adjectives: list[str | None] = []
        self.fill_suffix: str | None = None
        self.background: str | None = None
        self.decomposition = Decomposition(text, Span(0, len(text), text, "global"))

    # -- token helpers --
    def peek(self, k: int = 0) -> str | None:
        i = self.pos + k
        return self.tokens[i][0] if i < len(self.tokens) else None

    def fail(self, expected: str) -> CaptionError:
        if self.pos < len(self.tokens):
            word, start, end = self.tokens[self.pos]
            found = f"found {word!r}"
        else:
            start = end = len(self.text.rstrip())
            found = "found the end of the caption"
        pointer = " " * start + "^" * max(1, end - start)
        return CaptionError(
            f"cannot read caption at character {start}: expected {expected}, {found}\n  {self.text}\n  {pointer}"
        )

    def match_phrase(self, table) -> tuple[str, int, int] | None:
        for words, canonical in table:
            n = len(words)
            if tuple(self.peek(k) for k in range(n)) == words:
                start, end = self.tokens[self.pos][1], self.tokens[self.pos + n - 1][2]
                self.pos += n
                return canonical, start, end
        return None

    # -- grammar --
    def noun_phrase(self) -> int:
        word = self.peek()
        if word not in _DETERMINERS:
            raise self.fail("'a', 'an' or a number word (one to four) starting an object")
        start = self.tokens[self.pos][1]
        count = _DETERMINERS[word]
        self.pos += 1
        size = fill = None
        while self.peek() in vocab.SIZE_WORDS or self.peek() in vocab.FILL_WORDS:
            word = self.peek()
            if word in vocab.SIZE_WORDS:
                size = vocab.SIZE_WORDS[word]
            else:
                fill = vocab.FILL_WORDS[word]
                self.decomposition.style.append(self._span(self.pos, "style", (len(self.groups),)))
            self.pos += 1
        colour = self.peek()
        if colour not in vocab.COLOURS:
            raise self.fail(f"a colour ({', '.join(vocab.COLOURS)})")
        self.pos += 1
        word = self.peek()
        shape = word if word in vocab.SHAPES else _PLURAL_TO_SHAPE.get(word)
        if shape is None:
            raise self.fail(f"a shape ({', '.join(vocab.SHAPES)}, or their plurals)")
        end = self.tokens[self.pos][2]
        self.pos += 1
        index = len(self.groups)
        self.groups.append(Group(colour, shape, size, count))
        self.fill_adjectives.append(fill)
        self.decomposition.objects.append(Span(start, end, self.text[start:end], "object", (index,)))
        return index

    def _span(self, token_index: int, kind: str, ref: tuple[int, ...]) -> Span:
        _, start, end = self.tokens[token_index]
        return Span(start, end, self.text[start:end], kind, ref)

    def relation_ahead(self) -> bool:
        return any(tuple(self.peek(k) for k in range(len(words))) == words for words, _ in _RELATION_TABLE)

    def relation_then_np(self, subject: int) -> int:
        found = self.match_phrase(_RELATION_TABLE)
        if found is None:
            raise self.fail("a relation (" + ", ".join(vocab.RELATION_PHRASES) + ")")
        relation, start, end = found
        obj = self.noun_phrase()
        self.relations.append(Relation(subject, relation, obj))
        self.decomposition.relations.append(Span(start, end, self.text[start:end], "relation", (subject, obj)))
        return obj

    def clause(self) -> None:
        current = self.noun_phrase()
        if self.relation_ahead():
            current = self.relation_then_np(current)
            while True:
                k = 1 if self.peek() == "," else 0
                if self.peek(k) in ("which", "that") and self.peek(k + 1) in ("is", "are"):
                    self.pos += k + 2
                    current = self.relation_then_np(current)
                else:
                    break

    def caption(self) -> Spec:
        if not self.tokens:
            raise CaptionError("cannot read an empty caption: it names no object")
        self.clause()
        while True:
            k = 1 if self.peek() == "," else 0
            if self.peek(k) == "and":
                k += 1
            if k and self.peek(k) in _DETERMINERS:
                self.pos += k
                self.clause()
            else:
                break
        while self.pos < len(self.tokens):
            if self.peek() == ",":
                self.pos += 1
                continue
            if not (self.background_phrase() or self.fill_phrase()):
                raise self.fail("'and' and another object, a background phrase ('on a white background') "
                                "or a fill phrase ('drawn in outline')")
        return Spec(tuple(self.groups), tuple(self.relations), Style(self.background, self._fill()))

    def background_phrase(self) -> bool:
        if self.peek() in ("on", "against", "with") and self.peek(1) == "a" \
                and self.peek(2) in vocab.BACKGROUND_WORDS and self.peek(3) == "background":
            start, end = self.tokens[self.pos][1], self.tokens[self.pos + 3][2]
            self.background = vocab.BACKGROUND_WORDS[self.peek(2)]
            self.decomposition.style.append(Span(start, end, self.text[start:end], "style"))
            self.pos += 4
            return True
        return False

    def fill_phrase(self) -> bool:
        found = self.match_phrase(_FILL_TABLE)
        if found is None:
            return False
        self.fill_suffix, start, end = found
        self.decomposition.style.append(Span(start, end, self.text[start:end], "style"))
        return True

    def _fill(self) -> str | None:
        stated = {f for f in self.fill_adjectives if f is not None}
        if stated and (len(stated) > 1 or None in self.fill_adjectives):
            raise CaptionError(
                f"fill is a scene-level style, but the objects of {self.text!r} do not all say the same "
                f"one ({', '.join(str(f) for f in self.fill_adjectives)}); say it once, e.g. ', drawn in outline'"
            )
        if stated and self.fill_suffix and stated != {self.fill_suffix}:
            raise CaptionError(f"contradictory fill styles in {self.text!r}: {stated.pop()} and {self.fill_suffix}")
        return self.fill_suffix or (stated.pop() if stated else None)



def parse_caption(text: str) -> Spec:
    """The spec a caption states; CaptionError (a ValueError) points at the first word it cannot read."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be a str, got {type(text).__name__}")
    reader = _Reader(text)
    spec = reader.caption()
    try:
        return spec.validate()
    except ValueError as err:
        raise CaptionError(f"the caption {text!r} states an impossible scene: {err}") from None


def decompose(text: str) -> Decomposition:
    """Split a caption into global, object, relation and style components with character spans."""
    reader = _Reader(text)
    reader.caption()
    return reader.decomposition
