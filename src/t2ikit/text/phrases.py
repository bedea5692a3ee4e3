"""Noun-phrase spans of arbitrary English prompts: a small rule-based chunker.

A noun phrase is a maximal run of words that are neither function words (prepositions, conjunctions,
verbs, pronouns, relation words) nor punctuation-separated, with its determiner or number in front:
"a big red circle", "two small dogs", "the old wooden house". Runs are split at punctuation, at
prepositions ("on", "of", "under"), conjunctions ("and", "or", "which"), common verbs and -ing/-ed
verb forms, so "a red cube on a blue table, and a cat sitting nearby" gives "a red cube", "a blue table",
"a cat". A relation noun followed by "of" ("the left of", "the top of") is a relation, not a phrase.

No part-of-speech model: the word lists below are the whole grammar, so an unknown word counts as a
content word (adjective or noun). Phrases carry character spans and their token positions (via
`word_token_spans`), so attention tools pool exactly the phrase's tokens; no hand-picked indices.

`parsed_phrase_spans` gives the phrases as a prompt parser (`t2ikit.text.parser`) reads them: its object
phrases and style spans, with the chunker's noun phrases only where the parser reads no object or style
("a white background" in a Shapes World caption). On Shapes World captions that is exactly the chunker's
phrases (tests/test_hierarchical.py), so tools that moved from the chunker to the parser give the shipped model
the same outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from t2ikit.text.spans import word_token_spans

if TYPE_CHECKING:
    from t2ikit.text.parser import Parser

DETERMINERS = frozenset(
    "a an the this that these those some any every each all both either neither no another my your his "
    "her its our their one two three four five six seven eight nine ten many several few single".split())
PREPOSITIONS = frozenset(
    "on in at of under over above below beneath behind beside besides between among near next to from with "
    "without into onto upon inside outside around across along against toward towards through by for about "
    "after before underneath atop within beyond via like than as".split())
CONJUNCTIONS = frozenset("and or but nor yet so while whereas because although though if then".split())
PRONOUNS = frozenset(
    "which that who whom whose what where when it they them he she we i you itself themselves there here".split())
VERBS = frozenset(
    "is are was were be been being am has have had do does did can could will would shall should may might "
    "must sits sit stands stand lies lie holds hold runs run flies fly looks look appears appear shows show "
    "contains contain made make drawn".split())
ADVERBS = frozenset("very quite rather too also not just only really slightly nearby together almost".split())
# Nouns that name a place relative to another object: "to the left of X" is a relation, not a phrase.
RELATION_NOUNS = frozenset("left right top bottom front back middle center centre side edge corner".split())
_BREAK = PREPOSITIONS | CONJUNCTIONS | PRONOUNS | VERBS | ADVERBS
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[,.;:!?()\[\]\"]")
_VERB_FORMS = re.compile(r"^[a-z]{3,}(ing|ed)$")
# Participles used as adjectives ("a filled square"): content words, but never the head of a phrase.
PARTICIPLE_ADJECTIVES = frozenset("filled outlined striped dotted colored coloured shaded painted".split())
_NOT_VERB_FORMS = PARTICIPLE_ADJECTIVES | frozenset(
    "red bed wing king ring thing string ceiling painting building clothing".split())


@dataclass(frozen=True)
class Phrase:
    text: str  # the phrase as written, e.g. "a big red circle"
    start: int  # char offset of its first character
    end: int  # char offset one past its last character
    head: str  # the last word: the noun the attributes bind to
    words: tuple[str, ...]  # its words, determiner included


def _is_break(word: str) -> bool:
    w = word.lower()
    if w in _BREAK:
        return True
    return bool(_VERB_FORMS.match(w)) and w not in _NOT_VERB_FORMS


def noun_phrases(prompt: str) -> list[Phrase]:
    """The noun phrases of `prompt`, in order (see the module docstring for the rules)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str; got {type(prompt).__name__}")
    tokens = list(_TOKEN.finditer(prompt))
    phrases: list[Phrase] = []
    run: list[re.Match] = []

    def close(next_word: str | None):
        if run and next_word == "of" and run[-1].group().lower() in RELATION_NOUNS:
            run.pop()  # "a vase left of ...": "left of" is the relation, "a vase" the phrase
            while run and run[-1].group().lower() in DETERMINERS:
                run.pop()  # "... the left of": its article goes with it
        content = [m for m in run if m.group().lower() not in DETERMINERS]
        if content and content[-1].group().lower() not in PARTICIPLE_ADJECTIVES:
            first, last = run[0], run[-1]
            phrases.append(Phrase(prompt[first.start():last.end()], first.start(), last.end(), last.group(),
                                  tuple(m.group() for m in run)))
        run.clear()

    for i, m in enumerate(tokens):
        word = m.group()
        if not word[0].isalnum() or _is_break(word):
            close(word.lower())
            continue
        if word.lower() in DETERMINERS and any(x.group().lower() not in DETERMINERS for x in run):
            close(word.lower())  # "circle the square": a new determiner after content starts a new phrase
        run.append(m)
    close(None)
    return phrases


@dataclass(frozen=True)
class PhraseSpan:
    phrase: Phrase
    positions: tuple[int, ...]  # token positions of its words in the encoded ids (BOS is 0)
    kind: str = "phrase"  # "phrase" (the chunker's), or what the parser read: "object" or "style"


def phrase_token_spans(tokenizer, prompt: str) -> list[PhraseSpan]:
    """Each noun phrase of `prompt` with its token positions; phrases wholly past the context are dropped
    (their tokens never reach the model), partly truncated ones keep the positions inside it."""
    words = word_token_spans(tokenizer, prompt)
    context = tokenizer.model_max_length - 1
    out = []
    for ph in noun_phrases(prompt):
        pos = tuple(p for w in words if w.start >= ph.start and w.end <= ph.end for p in w.positions if p < context)
        if pos:
            out.append(PhraseSpan(ph, pos))
    return out


def parsed_phrases(parser: Parser, prompt: str) -> list[tuple[Phrase, str, tuple[tuple[int, int], ...]]]:
    """(phrase, kind, extra character spans) of `prompt` as `parser` reads it, in order of their start.

    kind "object": an object phrase with the parser's span ("a red, shiny car", "a pair of red shoes"); an
    attribute it binds from outside that span ("the cat is red") adds that word's span as extra. kind "style":
    a style span ("in the style of an oil painting"), one phrase. kind "phrase": a noun phrase of the chunker
    that overlaps no object or style span, nor is such a bound attribute ("a white background" in a Shapes World
    caption, which its parser reads as neither). An empty prompt has no phrase; a prompt the parser cannot
    read raises its PromptParseError (a ValueError naming the part).
    """
    if not prompt.strip():
        return []
    structure = parser.parse(prompt)
    found = []
    for o in structure.objects:
        words = tuple(m.group() for m in _TOKEN.finditer(prompt[o.start:o.end]) if m.group()[0].isalnum())
        head = o.noun if o.noun is not None else prompt[o.noun_start:o.noun_end]
        found.append([Phrase(prompt[o.start:o.end], o.start, o.end, head, words), "object", [], o])
    for t in structure.style:
        text = prompt[t.start:t.end]
        words = tuple(m.group() for m in _TOKEN.finditer(text) if m.group()[0].isalnum())
        found.append([Phrase(text, t.start, t.end, words[-1] if words else text, words), "style", [], None])
    taken = [(p.start, p.end) for p, _, _, _ in found]
    for ph in noun_phrases(prompt):
        if any(ph.start < b and a < ph.end for a, b in taken):
            continue
        owner = _predicate_owner(ph, found)
        if owner is not None:  # "the cat is red": "red" is the cat's, pooled with it
            owner[2].append((ph.start, ph.end))
        else:
            found.append([ph, "phrase", [], None])
    return [(p, kind, tuple(extra)) for p, kind, extra, _ in sorted(found, key=lambda f: f[0].start)]


def _predicate_owner(ph: Phrase, found: list) -> list | None:
    """The last object before `ph` that the parser gave all of `ph`'s words as attributes outside its own
    span ("the cat is red"), or None."""
    words = {w.lower() for w in ph.words}
    for item in reversed(found):
        phrase, kind, _, obj = item
        if kind != "object" or phrase.end > ph.start:
            continue
        if words <= {a.lower() for a in obj.attributes} - {w.lower() for w in phrase.words}:
            return item
    return None


def parsed_phrase_token_spans(tokenizer, parser: Parser, prompt: str) -> list[PhraseSpan]:
    """`parsed_phrases` with each phrase's token positions (bound attributes' included), as
    `phrase_token_spans` gives the chunker's; PromptParseError where the parser cannot read `prompt`."""
    words = word_token_spans(tokenizer, prompt)
    context = tokenizer.model_max_length - 1
    out = []
    for ph, kind, extra in parsed_phrases(parser, prompt):
        spans = ((ph.start, ph.end), *extra)
        pos = tuple(sorted({p for w in words for a, b in spans if w.start >= a and w.end <= b
                            for p in w.positions if p < context}))
        if pos:
            out.append(PhraseSpan(ph, pos, kind))
    return out
