"""An English prompt parser: rule-based, one pass, a hand lexicon (`t2ikit.text.lexicon`), no model.

Registered as "english" (`t2ikit.text.parser`). It reads

    objects    noun phrases: determiner or number, attributes, head noun ("two small red cubes": count 2,
               attributes small, red, noun "cube"); two-word nouns from the lexicon ("a teddy bear");
               "a pair of shoes" (count 2); "the car is red" adds "red" to the car; a later "the cube"
               that names an earlier cube is the same group
    relations  left of, right of, above, below, near, in front of, behind, with their synonyms ("to the left
               of", "on top of", "under", "next to", "beside", "hidden by", ...): the subject is the first
               object of the clause (a clause ends at a comma, "and", "with", a full stop; "which" / "that"
               refer back to the object before them), the object is the next object phrase
    style      "a photo of", "an oil painting of", "in the style of ...", "by <Name>", "in watercolor",
               "on a white background", and trailing comma segments made only of style words ("oil
               painting", "digital art, 4k, trending on artstation")

English is open-ended: a word in no list is read by its position (the last content word of a noun phrase is
its noun, the words before it its attributes), never rejected. A prompt is refused (PromptParseError, a
ValueError with a caret under the place) only where a part cannot be read at all: an empty prompt, a relation
with no object phrase after it, a relation of an object to itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from t2ikit.text import lexicon as lx
from t2ikit.text.parser import (ObjectPhrase, PromptParseError, PromptStructure, RelationPhrase, TextSpan,
                                register_parser)

_TOKEN = re.compile(r"[^\W_]+(?:['\u2019\-][^\W_]+)*|[^\w\s]")
_RELATIONS = sorted(((tuple(p.split()), r) for p, r in lx.RELATION_PHRASES.items()), key=lambda t: -len(t[0]))
_RELATION_TABLE = {words: r for words, r in _RELATIONS}
_RELATION_MAX = max(len(w) for w, _ in _RELATIONS)
_CLAUSE_PUNCT = frozenset(",;.!?:")
_CLAUSE_WORDS = lx.CONJUNCTIONS | {"with", "without", "where", "when"}
_BREAK = lx.PREPOSITIONS | lx.CONJUNCTIONS | lx.PRONOUNS | lx.VERBS | lx.RELATIVES - {"that"}
_STYLE_FILLER = frozenset("and of on in with by against the a an".split())


@dataclass
class _Tok:
    text: str
    low: str
    start: int
    end: int

    @property
    def is_word(self) -> bool:
        return self.text[0].isalnum()


@dataclass
class _Object:
    start: int
    end: int
    noun_start: int
    noun_end: int
    noun: str
    count: int | None
    attributes: list[str]
    group: int


@dataclass
class _Relation:
    relation: str
    start: int
    end: int
    subject: int | None = None  # group; None until known (a fronted relation: "next to the lamp, a cat")
    object: int | None = None


@dataclass
class _State:
    objects: list[_Object] = field(default_factory=list)
    relations: list[_Relation] = field(default_factory=list)
    style: list[tuple[int, int]] = field(default_factory=list)
    clause_subject: int | None = None  # group of the clause's first object
    pending: _Relation | None = None  # a relation waiting for its object phrase
    fronted: _Relation | None = None  # a relation with its object, waiting for its subject
    after_copula: bool = False  # the words after "is" / "are" ("the car is red")
    quantity: tuple[int, int | None] | None = None  # (char start, count) of "a pair of" before a phrase
    groups: int = 0


def singular(word: str) -> tuple[str, bool]:
    """(lemma, plural?) of a lower-case noun: "dogs" -> ("dog", True), "mice" -> ("mouse", True)."""
    if word in lx.IRREGULAR_PLURALS:
        lemma = lx.IRREGULAR_PLURALS[word]
        return lemma, lemma != word or word in ("sheep", "fish", "deer")
    if word in lx.PLURAL_ONLY:
        return word, True
    if len(word) < 3 or not word.endswith("s") or word in lx.SINGULAR_S or word.endswith(("ss", "us")):
        return word, False
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y", True
    if word.endswith(("ches", "shes", "xes", "zzes", "sses")):
        return word[:-2], True
    return word[:-1], True


def _is_participle(low: str) -> bool:
    return (len(low) > 4 and low.endswith(("ing", "ed")) and low not in lx.NOT_PARTICIPLES
            and low not in lx.PARTICIPLE_ADJECTIVES and low not in lx.ADJECTIVES)


def _caret(prompt: str, start: int, end: int, message: str) -> PromptParseError:
    return PromptParseError(f"{message}\n  {prompt}\n  {' ' * start}{'^' * max(end - start, 1)}")


class EnglishParser:
    """Reads English prompts into a PromptStructure (module docstring); PromptParseError names the part it
    cannot read."""

    name = "english"

    def parse(self, prompt: str) -> PromptStructure:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str; got {type(prompt).__name__}")
        if not prompt.strip():
            raise PromptParseError("empty prompt: there is nothing to read")
        toks = [_Tok(m.group(), m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(prompt)]
        style = _style_marks(toks)
        st = _State()
        run: list[int] = []
        i, n = 0, len(toks)

        def content(j: int) -> bool:
            """Token j can continue a noun phrase as a content word."""
            if j >= n or style[j] or not toks[j].is_word:
                return False
            low = toks[j].low
            if low in _BREAK or low in lx.DETERMINERS or low in lx.NUMBERS or low in lx.ADVERBS:
                return False
            return _relation_at(toks, style, j) is None

        while i < n:
            t = toks[i]
            if style[i]:
                _close(prompt, toks, run, st, i)
                j = i
                while j + 1 < n and style[j + 1] == style[i]:
                    j += 1
                st.style.append((t.start, toks[j].end))
                i = j + 1
                continue
            match = _relation_at(toks, style, i)
            if match is not None and _adverb(toks, i, match[0]):
                _close(prompt, toks, run, st, i)  # "the waves below.", "parked behind": an adverb, no relation
                i += 1
                continue
            if match is not None:
                _close(prompt, toks, run, st, i)
                length, relation = match
                _start_relation(prompt, st, relation, t.start, toks[i + length - 1].end)
                i += length
                continue
            low = t.low
            if not t.is_word:
                run_words = [toks[j].low for j in run if toks[j].low not in lx.DETERMINERS]
                if low == "," and run_words and run_words[-1] in lx.ADJECTIVES and content(i + 1):
                    i += 1  # "a long, narrow kitchen": a list of adjectives
                    continue
                _close(prompt, toks, run, st, i)
                if low in _CLAUSE_PUNCT:
                    st.clause_subject = None
                    st.after_copula = False
                    if low in ".!?;" and st.pending is not None:
                        _unfinished(prompt, st.pending)
                i += 1
                continue
            if low in ("and", "or") and run and toks[run[-1]].low in lx.ADJECTIVES and i + 1 < n \
                    and toks[i + 1].low in lx.ADJECTIVES and content(i + 1):
                i += 1  # "a black and white cat": coordinated adjectives
                continue
            after_object = i > 0 and (toks[i - 1].low == "," or
                                      bool(st.objects) and st.objects[-1].end == toks[i - 1].end)
            if low == "that" and not run and not after_object and content(i + 1):
                run.append(i)  # "that cat": a determiner
                i += 1
                continue
            if low in lx.RELATIVES:
                _close(prompt, toks, run, st, i)
                if st.objects:
                    st.clause_subject = st.objects[-1].group  # "..., which is below ...": the object before
                st.after_copula = False
                i += 1
                continue
            if low in ("it", "them") and st.pending is not None and not run:
                subject = st.pending.subject  # "a cat to the left of it": the object named before the subject
                before = [o.group for o in st.objects if o.group != subject]
                if before:
                    _finish_relation(prompt, st, before[-1])
                i += 1
                continue
            if low in lx.VERBS and low not in lx.AUXILIARIES and run and not content(i + 1) and (
                    toks[run[-1]].low in lx.DETERMINERS or toks[run[-1]].low in lx.ADJECTIVES):
                run.append(i)  # "a yellow fly", "a long walk": a verb's form after an article or adjective is a noun
                i += 1
                continue
            if low in _BREAK:
                _close(prompt, toks, run, st, i)
                if low in _CLAUSE_WORDS:
                    st.clause_subject = None
                st.after_copula = low in lx.COPULAS or (st.after_copula and low in lx.VERBS)
                i += 1
                continue
            if low in lx.ADVERBS:
                if not content(i + 1):
                    _close(prompt, toks, run, st, i)
                i += 1  # "a very big dog": the adverb is no attribute
                continue
            if low in lx.DETERMINERS or low in lx.NUMBERS or low.isdigit():
                if any(_is_content_word(toks[j].low) for j in run):
                    _close(prompt, toks, run, st, i)  # a new determiner starts a new phrase
                run.append(i)
                i += 1
                continue
            if _is_participle(low) and not content(i + 1):
                _close(prompt, toks, run, st, i)  # a verb: "a man riding a horse", "a cat sitting on"
                i += 1
                continue
            run.append(i)
            i += 1
        _close(prompt, toks, run, st, n)
        if st.pending is not None:
            _unfinished(prompt, st.pending)
        if st.fronted is not None:
            r = st.fronted
            raise _caret(prompt, r.start, r.end, f"the relation {prompt[r.start:r.end]!r} has no subject: no object "
                                                 "phrase stands before it or after its object")
        return _structure(prompt, st)


def _is_content_word(low: str) -> bool:
    return low not in lx.DETERMINERS and low not in lx.NUMBERS and not low.isdigit()


def _relation_at(toks: list[_Tok], style: list[int], i: int) -> tuple[int, str] | None:
    """(number of tokens, canonical relation) of the longest relation phrase starting at token i, or None."""
    for length in range(min(_RELATION_MAX, len(toks) - i), 0, -1):
        words = tuple(t.low for t in toks[i:i + length])
        if words in _RELATION_TABLE and not any(style[i:i + length]):
            return length, _RELATION_TABLE[words]
    return None


def _adverb(toks: list[_Tok], i: int, length: int) -> bool:
    """The relation words at token i end a clause and are one word ("below", "behind"), not "left of"."""
    after = i + length
    return length == 1 and (after == len(toks) or toks[after].low in _CLAUSE_PUNCT or toks[after].low in _BREAK)


def _start_relation(prompt: str, st: _State, relation: str, start: int, end: int) -> None:
    if st.pending is not None:
        _unfinished(prompt, st.pending)
    subject = st.clause_subject if st.clause_subject is not None else (
        st.objects[-1].group if st.objects and not st.after_copula else None)
    st.pending = _Relation(relation, start, end, subject)
    st.after_copula = False


def _finish_relation(prompt: str, st: _State, group: int) -> None:
    r, st.pending = st.pending, None
    r.object = group
    if r.subject is None:
        st.fronted = r  # "next to the lamp, a cat": the subject comes later
        return
    if r.subject == r.object:
        raise _caret(prompt, r.start, r.end, f"the relation {prompt[r.start:r.end]!r} relates an object to itself")
    st.relations.append(r)


def _unfinished(prompt: str, r: _Relation):
    raise _caret(prompt, r.start, r.end, f"the relation {prompt[r.start:r.end]!r} has no object phrase after it")


def _style_marks(toks: list[_Tok]) -> list[int]:
    """Per token, the id (> 0) of the style phrase it belongs to, or 0."""
    n = len(toks)
    mark = [0] * n
    next_id = 1

    def clause_end(j: int) -> int:
        while j < n and toks[j].low not in (",", ";", ".", "!", "?", "|"):
            j += 1
        return j

    def set_mark(a: int, b: int) -> None:
        nonlocal next_id
        if a < b and not any(mark[a:b]):
            mark[a:b] = [next_id] * (b - a)
            next_id += 1

    low = [t.low for t in toks]
    # comma segments made only of style words ("oil painting", "4k", "trending on artstation"); the first
    # segment only when it starts without an article ("oil painting, a cat" but not "a painting")
    start = 0
    for end in [j for j in range(n) if low[j] in (",", ";", "|")] + [n]:
        words = [w for w in low[start:end] if w not in _STYLE_FILLER]
        first_is_article = start < n and (low[start] in lx.DETERMINERS or low[start] in lx.NUMBERS)
        if _style_words(words) and not first_is_article and (start > 0 or end < n):
            set_mark(start, end)
        start = end + 1
    for i in range(n):
        if low[i] == "in" and low[i + 1:i + 4] == ["the", "style", "of"]:
            set_mark(i, clause_end(i))  # "in the style of Van Gogh"
        elif low[i] == "by" and i + 1 < n and i > 0 and toks[i + 1].text[:1].isupper():
            set_mark(i, clause_end(i))  # "by Greg Rutkowski"
        elif low[i] in ("in", "as") and i + 1 < n:
            end = clause_end(i + 1)
            words = [w for w in low[i + 1:end] if w not in _STYLE_FILLER]
            if _style_words(words):
                set_mark(i, end)  # "in watercolor", "in pixel art style", "as outlines"
    return mark


def _style_words(words: list[str]) -> bool:
    """Every word a style word or a number (colours too: "on a gray background"), at least one not a colour."""
    return bool(words) and all(w in lx.STYLE_WORDS or w in lx.COLOURS or w.isdigit() for w in words) \
        and any(w not in lx.COLOURS for w in words)


def _close(prompt: str, toks: list[_Tok], run: list[int], st: _State, next_i: int) -> None:
    """End the noun phrase in `run` (token indices) before token `next_i`: an object, style or nothing."""
    if not run:
        return
    words = list(run)
    run.clear()
    n = len(toks)
    nxt = toks[next_i].low if next_i < n else None
    dets = [j for j in words if not _is_content_word(toks[j].low)]
    content = [j for j in words if _is_content_word(toks[j].low)]
    if not content:
        return  # "two of the cats", "one of": the count words alone name nothing
    head = content[-1]
    hlow = toks[head].low
    first = words[0]
    if hlow in lx.MEDIUM_NOUNS and nxt == "of":
        st.style.append((toks[first].start, toks[next_i].end))  # "a photo of", "an oil painting of"
        return
    if hlow in lx.QUANTITY_NOUNS and nxt == "of":
        count = lx.QUANTITY_NOUNS[hlow]
        st.quantity = (toks[first].start, count)  # "a pair of": the next phrase's count
        return
    if hlow in lx.BACKGROUND_NOUNS:
        before = toks[first - 1].low if first > 0 else None
        start = toks[first - 1].start if before in ("on", "against", "with", "in", "over") else toks[first].start
        st.style.append((start, toks[head].end))  # "on a white background"
        return
    if hlow in lx.POSITION_NOUNS and (first == 0 or toks[first - 1].low in lx.PREPOSITIONS):
        return  # "on the left", "at the top": a place, not a thing
    only_adjectives = all(toks[j].low in lx.ADJECTIVES or toks[j].low in lx.PARTICIPLE_ADJECTIVES
                          for j in content)
    if only_adjectives and (not dets or (len(content) == 1 and hlow not in lx.COLOUR_NOUNS
                                         and hlow not in lx.SHAPES and hlow not in lx.MATERIALS)):
        # "the car is red", "one blue and the other orange": adjectives without a noun
        if st.after_copula and st.objects:
            target = st.clause_subject if st.clause_subject is not None else st.objects[-1].group
            for o in st.objects:
                if o.group == target:
                    o.attributes.extend(toks[j].low for j in content)
        return
    # the noun: a two- or three-word compound from the lexicon, else the last content word
    noun_first = head
    lemma, plural = singular(hlow)
    for size in (3, 2):
        if len(content) >= size:
            part = content[-size:]
            if part == list(range(part[0], part[0] + size)):
                key = tuple(toks[j].low for j in part[:-1]) + (lemma,)
                if key in lx.COMPOUND_NOUNS:
                    noun_first = part[0]
                    lemma = " ".join(key)
                    break
    attributes = [toks[j].low for j in content if j < noun_first]
    count = _count(toks, dets, plural)
    start = toks[first].start
    if st.quantity is not None:
        start, quantity = st.quantity
        count = quantity if quantity is not None else (None if plural else count)
        st.quantity = None
    definite = bool(dets) and toks[dets[0]].low in ("the", "this", "that")
    group = None
    if definite:  # "the cube" after "a red cube": the same object
        for o in reversed(st.objects):
            if o.noun == lemma and set(attributes) <= set(o.attributes):
                group = o.group
                break
    if group is None:
        group, st.groups = st.groups, st.groups + 1
    obj = _Object(start, toks[head].end, toks[noun_first].start, toks[head].end, lemma, count, attributes, group)
    st.objects.append(obj)
    st.after_copula = False
    if st.pending is not None:
        _finish_relation(prompt, st, group)
    elif st.fronted is not None and st.fronted.object != group:
        r, st.fronted = st.fronted, None
        r.subject = group
        st.relations.append(r)
    if st.clause_subject is None:
        st.clause_subject = group


def _count(toks: list[_Tok], dets: list[int], plural: bool) -> int | None:
    for j in dets:
        low = toks[j].low
        if low.isdigit():
            return int(low)
        if low in lx.NUMBERS and not (low == "one" and plural):
            return lx.NUMBERS[low]
        if low in lx.ARTICLES_ONE:
            return 1
        if low == "no":
            return 0
    return None if plural else 1


def _structure(prompt: str, st: _State) -> PromptStructure:
    objects = tuple(ObjectPhrase(o.start, o.end, o.noun_start, o.noun_end, o.group, noun=o.noun, count=o.count,
                                 attributes=tuple(o.attributes)) for o in st.objects)
    relations = tuple(RelationPhrase(r.subject, r.relation, r.object, r.start, r.end) for r in st.relations)
    style = tuple(TextSpan(a, b) for a, b in sorted(st.style))
    return PromptStructure(prompt, objects, relations, style)


register_parser("english", EnglishParser)

__all__ = ["EnglishParser", "singular"]
