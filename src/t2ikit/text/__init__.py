"""Prompt text: the word-level tokenizer, the text encoder, word/phrase token spans and prompt checks.

Any tool that needs "the tokens of the word red" calls `token_positions(tokenizer, prompt, "red")`.
Imports here are light; transformers is imported inside the functions that build models.
"""

from t2ikit.text.check import PromptCheck, PromptWarning, check_prompt
from t2ikit.text.spans import WordSpan, find_text, token_positions, word_token_spans
from t2ikit.text.tokenizer import (
    DEFAULT_MAX_LENGTH,
    ENGLISH_WORDS,
    build_tokenizer,
    known_words,
    save_tokenizer,
)


def __getattr__(name):  # the encoder module imports torch; load it only when asked for
    if name in ("build_text_encoder", "text_encoder_for", "encode_prompts"):
        from t2ikit.text import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 't2ikit.text' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_LENGTH",
    "ENGLISH_WORDS",
    "PromptCheck",
    "PromptWarning",
    "WordSpan",
    "build_text_encoder",
    "build_tokenizer",
    "check_prompt",
    "encode_prompts",
    "find_text",
    "known_words",
    "save_tokenizer",
    "text_encoder_for",
    "token_positions",
    "word_token_spans",
]
