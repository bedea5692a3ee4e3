"""Where each word of a prompt lands in the token sequence: the one place tools ask for token indices.

Works for any fast CLIP tokenizer: ours (one token per known word) and a real SD tokenizer (a word may
be several BPE tokens). Positions index the encoded ids exactly as the pipeline feeds them to the text
encoder, so position 0 is BOS and the first word starts at 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A word is a run of letters/digits with inner apostrophes ("don't"); punctuation belongs to no word.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@dataclass(frozen=True)
class WordSpan:
    word: str  # the word as written in the prompt
    start: int  # char offset of its first character in the prompt
    end: int  # char offset one past its last character
    positions: tuple[int, ...]  # indices into the encoded ids (BOS is 0), in order
    truncated: bool  # True if any of its tokens falls past the context and is dropped


def _encode_with_offsets(tokenizer, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"word spans need a fast tokenizer (char offsets); got {type(tokenizer).__name__}")
    enc = tokenizer(prompt, add_special_tokens=True, truncation=False, return_offsets_mapping=True, verbose=False)
    return enc["input_ids"], enc["offset_mapping"]


def word_token_spans(tokenizer, prompt: str) -> list[WordSpan]:
    """Every word of `prompt` with its char range and its token positions in the encoded ids."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str; got {type(prompt).__name__}")
    ids, offsets = _encode_with_offsets(tokenizer, prompt)
    context = tokenizer.model_max_length - 1  # the last slot is always EOS after truncation
    specials = set(tokenizer.all_special_ids)
    spans = []
    for m in _WORD.finditer(prompt):
        positions = tuple(
            i
            for i, (tok, (s, e)) in enumerate(zip(ids, offsets))
            if tok not in specials and e > s and s < m.end() and e > m.start()
        )
        spans.append(WordSpan(m.group(), m.start(), m.end(), positions, any(p >= context for p in positions)))
    return spans


def find_text(tokenizer, prompt: str, text: str) -> list[list[WordSpan]]:
    """Each occurrence of a word or phrase `text` in `prompt` (case-insensitive, whole words) as its spans."""
    target = [w.lower() for w in _WORD.findall(text)]
    if not target:
        raise ValueError(f"text to find must contain at least one word; got {text!r}")
    spans = word_token_spans(tokenizer, prompt)
    words = [s.word.lower() for s in spans]
    n = len(target)
    return [spans[i : i + n] for i in range(len(spans) - n + 1) if words[i : i + n] == target]


def token_positions(tokenizer, prompt: str, text: str, occurrence: int | None = None) -> list[int]:
    """The token positions of word or phrase `text` in `prompt`: "the tokens of the word red".

    All occurrences by default, or only the `occurrence`-th (0-based). Raises ValueError if `text`
    is not in the prompt or lies past the context, naming the prompt's words.
    """
    found = find_text(tokenizer, prompt, text)
    if not found:
        words = [s.word for s in word_token_spans(tokenizer, prompt)]
        raise ValueError(f"{text!r} is not a word or phrase of the prompt {prompt!r}; its words are {words}")
    if occurrence is not None:
        if not 0 <= occurrence < len(found):
            raise ValueError(f"occurrence {occurrence} of {text!r}: the prompt has {len(found)} occurrence(s)")
        found = [found[occurrence]]
    if any(s.truncated for spans in found for s in spans):
        raise ValueError(
            f"{text!r} lies (partly) past the {tokenizer.model_max_length}-token context of the prompt "
            f"{prompt!r}; the model never sees it"
        )
    return sorted(p for spans in found for s in spans for p in s.positions)
