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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from t2ikit.text.spans import word_token_spans

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
