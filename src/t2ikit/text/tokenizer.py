"""A word-level CLIP tokenizer: every known word is exactly one token, any other text still tokenizes.

The tokenizer is an ordinary `transformers.CLIPTokenizer` (byte-level BPE with the `</w>` end-of-word
suffix, the class Stable Diffusion folders use), so diffusers loads it unchanged. Its vocabulary is
  1. the 256 byte-level symbols, bare and with `</w>`: the fallback that lets any text tokenize;
  2. the tokens made by BPE merges learned on the known words until each word is one token;
  3. `<|startoftext|>` and `<|endoftext|>` (the latter also pads and stands for unknown).
The known words are stored in `tokenizer_config.json` under `t2ikit_words`, so a loaded tokenizer can
still tell a word it was built for from one that happens to be a merge product.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from functools import lru_cache

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
WORDS_KEY = "t2ikit_words"  # tokenizer_config.json key holding the known words
DEFAULT_MAX_LENGTH = 32  # context of the shipped model: BOS + 30 words + EOS

# Common English words beyond the caption grammar, so that ordinary prompts ("a photo of a red
# circle next to it") are whole words rather than letters. Letters-only and lower case, like the
# tokenizer's pre-tokenizer sees them.
ENGLISH_WORDS: tuple[str, ...] = (
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "around", "as", "at", "be",
    "before", "behind", "beside", "between", "both", "but", "by", "can", "corner", "each", "every",
    "few", "for", "from", "front", "has", "have", "here", "image", "in", "inside", "into", "is", "it",
    "its", "many", "more", "most", "near", "next", "no", "not", "of", "on", "one", "only", "or",
    "other", "outside", "picture", "photo", "scene", "several", "some", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "three", "to", "top",
    "bottom", "middle", "center", "two", "under", "up", "down", "very", "was", "where", "which",
    "while", "with", "without", "object", "objects", "shape", "colour", "color", "colours", "colors",
    "drawing", "painting", "style", "plain", "simple", "bright", "dark", "light", "empty",
)

_LETTERS = re.compile(r"[^\W\d_]+")  # what CLIP's pre-tokenizer keeps together as one word


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the ByteLevel pre-tokenizer's)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def _symbols(word: str) -> list[str]:
    """A word as the byte-level symbols BPE starts from, the last one carrying `</w>`."""
    table = bytes_to_unicode()
    symbols = [table[b] for b in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return symbols


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE training (Sennrich et al. 2016) on a word list, run until every word is a single symbol.

    Each word counts once; ties go to the lexicographically smallest pair so the result is deterministic.
    """
    seqs = [_symbols(w) for w in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seq in seqs:
            pairs.update(zip(seq, seq[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for k, seq in enumerate(seqs):
            if len(seq) < 2:
                continue
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[k] = out


def normalize_words(words: list[str]) -> list[str]:
    """Lower-cased, de-duplicated, sorted; ValueError for anything that is not a single word of letters."""
    bad = [w for w in words if not isinstance(w, str) or not _LETTERS.fullmatch(w)]
    if bad:
        raise ValueError(
            f"words must be single words of letters (CLIP splits digits, spaces and punctuation "
            f"into separate tokens); got {bad[:10]}"
        )
    return sorted({w.lower() for w in words})


def build_tokenizer(words: list[str], max_length: int = DEFAULT_MAX_LENGTH):
    """A `CLIPTokenizer` in which each of `words` (plus `ENGLISH_WORDS`) is exactly one token.

    `max_length` is the context length including BOS and EOS (`model_max_length`).
    """
    from transformers import CLIPTokenizer

    if not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"max_length must be an int >= 3 (BOS, one word, EOS); got {max_length!r}")
    words = normalize_words(list(words) + list(ENGLISH_WORDS))
    base = sorted(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for sym in base + [s + END_OF_WORD for s in base]:
        vocab[sym] = len(vocab)
    merges = learn_merges(words)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=max_length,
        **{WORDS_KEY: words},
    )
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False)["input_ids"]) != 1]
    if split:  # learn_merges guarantees this; checked because a wrong vocabulary fails silently later
        raise RuntimeError(f"BPE merges left these words as several tokens: {split[:10]}")
    return tokenizer


def known_words(tokenizer) -> frozenset[str] | None:
    """The word vocabulary of a tokenizer made by `build_tokenizer`; None for an ordinary BPE tokenizer."""
    words = getattr(tokenizer, "init_kwargs", {}).get(WORDS_KEY)
    return frozenset(words) if words else None


def save_tokenizer(tokenizer, path: str | os.PathLike) -> None:
    """`save_pretrained` plus `vocab.json` and `merges.txt`, the files SD tokenizer folders carry.

    transformers 5 writes only `tokenizer.json`; the classic files keep the folder loadable by older
    transformers and by any CLIP BPE implementation.
    """
    tokenizer.save_pretrained(path)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(model["vocab"], f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in model["merges"]:
            f.write((" ".join(merge) if isinstance(merge, list) else merge) + "\n")
