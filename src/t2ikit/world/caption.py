"""Captions both ways: a grammar that writes varied captions of a spec, and a parser that reads them back.

Grammar (words in vocab.py):

    caption  := clause (("," | "and" | ", and") clause)* suffix*
    clause   := ("there" ("is" | "are"))? np (("is" | "are")? relation np
                ((",")? ("which" | "that") ("is" | "are") relation np)*)?
    np       := det? (fill-adj | size)* colour shape         (a new group; no det: one object)
              | "the" count? size? colour? shape              (a group named before; no new group)
    det      := "a" | "an" | "one" | "two" | "three" | "four" | "1" ... "4"
    suffix   := ","? (background-phrase | fill-phrase)

Relations join consecutive noun phrases: "A left of B, which is above C" says (A left of B), (B above C).
A definite noun phrase refers back: "a red circle left of a blue square and a green triangle above the blue
square" says (0 left of 1), (2 above 1); it must name exactly one group named before it. The grammar writes
only the canonical forms (an article, vocab's written synonyms, relations between consecutive groups); the
reader also takes what users type (bare noun phrases, vocab.READ_* synonyms, "is", references).
`parse_caption(write_caption(spec, rng)) == spec` for every spec the world draws (a property test checks
it over thousands of seeds). `decompose` splits a caption into the seed's components (global, objects,
relations, style) with character spans; a reference is an object span whose `ref` is the group it names.
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


_TOKEN = re.compile(r"[a-z]+|[0-9]+|,|\S")
_COUNTS = {w: n for n, w in vocab.NUMBER_WORDS.items()} | {str(n): n for n in vocab.NUMBER_WORDS}
_DETERMINERS = {"a": 1, "an": 1} | _COUNTS
_PLURAL_TO_SHAPE = {p: s for s, p in vocab.PLURAL_SHAPES.items()}
_SIZE_WORDS = vocab.SIZE_WORDS | vocab.READ_SIZE_WORDS
_NP_OPENERS = frozenset(_DETERMINERS) | frozenset(_SIZE_WORDS) | frozenset(vocab.COLOURS) | {"the"}


def _phrase_table(phrases: dict[str, str]) -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """Phrases by their first word, longest first: (words, canonical name)."""
    table: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for words, canonical in sorted(((tuple(p.split()), c) for p, c in phrases.items()), key=lambda t: -len(t[0])):
        table.setdefault(words[0], []).append((words, canonical))
    return table


_RELATION_TABLE = _phrase_table(vocab.RELATION_PHRASES | vocab.READ_RELATION_PHRASES)
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

    def error(self, start: int, end: int, message: str) -> CaptionError:
        pointer = " " * start + "^" * max(1, end - start)
        return CaptionError(f"cannot read caption at character {start}: {message}\n  {self.text}\n  {pointer}")

    def fail(self, expected: str) -> CaptionError:
        if self.pos < len(self.tokens):
            word, start, end = self.tokens[self.pos]
            found = f"found {word!r}"
        else:
            start = end = len(self.text.rstrip())
            found = "found the end of the caption"
        return self.error(start, end, f"expected {expected}, {found}")

    def phrase_ahead(self, table, k: int = 0) -> tuple[tuple[str, ...], str] | None:
        """The longest phrase of `table` that starts `k` tokens ahead: (words, canonical name)."""
        for words, canonical in table.get(self.peek(k), ()):
            if all(self.peek(k + i) == w for i, w in enumerate(words)):
                return words, canonical
        return None

    def match_phrase(self, table) -> tuple[str, int, int] | None:
        found = self.phrase_ahead(table)
        if found is None:
            return None
        n = len(found[0])
        start, end = self.tokens[self.pos][1], self.tokens[self.pos + n - 1][2]
        self.pos += n
        return found[1], start, end

    # -- grammar --
    def np_ahead(self, k: int = 0) -> bool:
        """Whether a noun phrase (or "there is" and one) starts `k` tokens ahead."""
        word, after = self.peek(k), self.peek(k + 1)
        if word == "there":
            return after in ("is", "are")
        # a fill word opens a noun phrase only before its other words: ", solid" alone is a fill suffix
        return word in _NP_OPENERS or (word in vocab.FILL_WORDS and
                                       (after in _NP_OPENERS or after in vocab.FILL_WORDS))

    def noun_phrase(self) -> int:
        """A new group ("a small red circle", "two blue squares", "red circle") or one named before ("the
        red circle"); returns its index."""
        if self.peek() == "the":
            return self.reference()
        word = self.peek()
        if word is not None and word.isdigit() and word not in _COUNTS:
            raise self.fail(f"a count from 1 to {vocab.MAX_OBJECTS} (at most {vocab.MAX_OBJECTS} objects fit)")
        if not self.np_ahead():
            raise self.fail("'a', 'an' or a number word (one to four), 'the', or a colour starting an object")
        first = self.pos
        count = _DETERMINERS.get(word)
        if count is not None:
            self.pos += 1
        size = fill = None
        while self.peek() in _SIZE_WORDS or self.peek() in vocab.FILL_WORDS:
            word = self.peek()
            if word in _SIZE_WORDS:
                size = _SIZE_WORDS[word]
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
        start, end = self.tokens[first][1], self.tokens[self.pos][2]
        self.pos += 1
        if count is None:  # a bare noun phrase: "red circle" is one; "red circles" says no number
            if word != shape:
                raise self.error(start, end, f"{self.text[start:end]!r} does not say how many; write a number "
                                             f"word before it ('two {colour} {word}')")
            count = 1
        index = len(self.groups)
        self.groups.append(Group(colour, shape, size, count))
        self.fill_adjectives.append(fill)
        self.decomposition.objects.append(Span(start, end, self.text[start:end], "object", (index,)))
        return index

    def reference(self) -> int:
        """"the" [count] [size] [colour] shape: the one group named before that it fits (no new group)."""
        first = self.pos
        self.pos += 1
        count = _COUNTS.get(self.peek())
        if count is not None:
            self.pos += 1
        size = colour = None
        described = []  # the words that say which group, as typed: "big blue square"
        if self.peek() in _SIZE_WORDS:
            size = _SIZE_WORDS[self.peek()]
            described.append(self.peek())
            self.pos += 1
        if self.peek() in vocab.COLOURS:
            colour = self.peek()
            described.append(colour)
            self.pos += 1
        word = self.peek()
        shape = word if word in vocab.SHAPES else _PLURAL_TO_SHAPE.get(word)
        if shape is None:
            raise self.fail(f"a shape ({', '.join(vocab.SHAPES)}, or their plurals) after 'the', "
                            "which names an object named before")
        start, end = self.tokens[first][1], self.tokens[self.pos][2]
        self.pos += 1
        phrase, plural, named = self.text[start:end], word != shape, " ".join(described + [word])
        fits = [i for i, g in enumerate(self.groups)
                if g.shape == shape and colour in (None, g.colour) and size in (None, g.size)]
        agree = [i for i in fits if (self.groups[i].count > 1) == plural and count in (None, self.groups[i].count)]
        if len(agree) == 1:
            index = agree[0]
        elif not fits:
            new = f"two {named}" if plural else ("an " if named[0] in "aeiou" else "a ") + named
            raise self.error(start, end, f"{phrase!r} refers to an object named before, but no {named} "
                                         f"{'were' if plural else 'was'} named before it; to name a new one, "
                                         f"write {new!r}")
        elif agree:
            raise self.error(start, end, f"{phrase!r} could be any of {self._mentions(agree)}; "
                                         "say which with its colour or size")
        else:
            raise self.error(start, end, f"{phrase!r} does not agree in number with {self._mentions(fits)}, "
                                         "named before")
        self.decomposition.objects.append(Span(start, end, phrase, "object", (index,)))
        return index

    def _mentions(self, groups: list[int]) -> str:
        """The first mention of each group, quoted: "'a red square' and 'a blue square'"."""
        first = {}
        for span in self.decomposition.objects:
            first.setdefault(span.ref[0], span.text)
        quoted = [repr(first[i]) for i in groups]
        return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]

    def _span(self, token_index: int, kind: str, ref: tuple[int, ...]) -> Span:
        _, start, end = self.tokens[token_index]
        return Span(start, end, self.text[start:end], kind, ref)

    def relation_ahead(self, k: int = 0) -> bool:
        return self.phrase_ahead(_RELATION_TABLE, k) is not None

    def relation_then_np(self, subject: int) -> int:
        found = self.match_phrase(_RELATION_TABLE)
        if found is None:
            raise self.fail("a relation (" + ", ".join(vocab.RELATION_PHRASES) + ")")
        relation, start, end = found
        obj = self.noun_phrase()
        if obj == subject:
            span = self.decomposition.objects[-1]
            raise self.error(span.start, span.end, f"{span.text!r} is the object the relation starts from; "
                                                   f"nothing is {relation} itself")
        self.relations.append(Relation(subject, relation, obj))
        self.decomposition.relations.append(Span(start, end, self.text[start:end], "relation", (subject, obj)))
        return obj

    def clause(self) -> None:
        if self.peek() == "there" and self.peek(1) in ("is", "are"):
            self.pos += 2
        current = self.noun_phrase()
        k = 1 if self.peek() in ("is", "are") else 0  # "a red circle is left of ..."
        if self.relation_ahead(k):
            self.pos += k
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
            if k and self.np_ahead(k):
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
