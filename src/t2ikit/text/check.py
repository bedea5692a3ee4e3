"""Prompt checks before generation: truncation, unknown words, empty prompt (warned, never fixed)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from t2ikit.text.spans import word_token_spans
from t2ikit.text.tokenizer import known_words


class PromptWarning(UserWarning):
    """A prompt the model will not see as written: truncated, unknown words, or empty."""


@dataclass
class PromptCheck:
    prompt: str
    n_tokens: int  # tokens including BOS and EOS, before truncation
    context: int  # the tokenizer's model_max_length
    dropped_words: list[str] = field(default_factory=list)  # words (partly) past the context
    unknown_words: list[str] = field(default_factory=list)  # not in a word-level vocabulary
    empty: bool = False  # no words: the image is generated unconditionally
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.messages


def check_prompt(tokenizer, prompt: str, warn: bool = True) -> PromptCheck:
    """Check `prompt` against `tokenizer`; each problem is a message and (if `warn`) a PromptWarning.

    Unknown words are only defined for a word-level vocabulary (`build_tokenizer`): with an ordinary
    BPE tokenizer every word tokenizes, possibly into several tokens, and none is unknown.
    """
    spans = word_token_spans(tokenizer, prompt)
    n_tokens = len(tokenizer(prompt, truncation=False, verbose=False)["input_ids"])
    check = PromptCheck(prompt=prompt, n_tokens=n_tokens, context=tokenizer.model_max_length)
    if not spans:
        check.empty = True
        check.messages.append(f"empty prompt {prompt!r}: the image is generated unconditionally")
    check.dropped_words = [s.word for s in spans if s.truncated]
    if check.dropped_words:
        check.messages.append(
            f"prompt is {n_tokens} tokens, longer than the {check.context}-token context; "
            f"these words are dropped: {' '.join(check.dropped_words)!r}"
        )
    vocab = known_words(tokenizer)
    if vocab is not None:
        unknown = dict.fromkeys(s.word for s in spans if s.word.lower() not in vocab)
        check.unknown_words = list(unknown)
        if unknown:
            check.messages.append(
                f"words not in the model's vocabulary (spelled out as sub-word pieces it was not "
                f"trained on): {', '.join(unknown)}"
            )
    if warn:
        for message in check.messages:
            warnings.warn(message, PromptWarning, stacklevel=2)
    return check
