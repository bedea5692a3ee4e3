"""The word-level tokenizer: one token per known word, byte fallback, save/load, spans, checks."""

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from transformers import CLIPTokenizer

from t2ikit.text import (
    ENGLISH_WORDS,
    PromptWarning,
    build_tokenizer,
    check_prompt,
    known_words,
    save_tokenizer,
    token_positions,
    word_token_spans,
)
from t2ikit.text.tokenizer import bytes_to_unicode, learn_merges
from t2ikit.world.vocab import caption_words


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(caption_words(), 32)


def test_every_known_word_is_one_token(tok):
    words = caption_words() + list(ENGLISH_WORDS)
    for w in words:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids) == [w + "</w>"], w
    assert tok.model_max_length == 32
    assert known_words(tok) == frozenset(words)


def test_any_text_tokenizes_without_unknown_token(tok):
    ids = tok("Zebra 42 ünïcode ☃ !?", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids and len(ids) > 5


def test_learn_merges_handles_overlapping_words():
    # "he" as a suffix of "the" and "then" is the case naive prefix merges get wrong
    words = ["the", "he", "then", "hen", "there", "here", "aaa", "aa"]
    tok = build_tokenizer(words, 8)
    for w in words:
        assert len(tok(w, add_special_tokens=False)["input_ids"]) == 1, w
    assert len(bytes_to_unicode()) == 256
    assert learn_merges(["ab"]) == [("a", "b</w>")]


def test_bad_words_and_length_rejected():
    with pytest.raises(ValueError, match="single words"):
        build_tokenizer(["red circle"], 32)
    with pytest.raises(ValueError, match="max_length"):
        build_tokenizer(["red"], 2)


def test_save_load_round_trip(tok, tmp_path):
    save_tokenizer(tok, tmp_path)
    assert {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    loaded = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "two small blue squares to the left of a red circle, zebra"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.model_max_length == 32 and known_words(loaded) == known_words(tok)
    # the classic files alone (what older SD folders carry) give the same ids
    classic = tmp_path / "classic"
    classic.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (classic / name).write_bytes((tmp_path / name).read_bytes())
    assert CLIPTokenizer.from_pretrained(classic)(text)["input_ids"] == tok(text)["input_ids"]


def test_word_spans_one_token_per_word(tok):
    spans = word_token_spans(tok, "A red circle, left of the zebra")
    assert [s.word for s in spans] == ["A", "red", "circle", "left", "of", "the", "zebra"]
    assert [s.positions for s in spans[:6]] == [(1,), (2,), (3,), (5,), (6,), (7,)]  # "," is 4
    assert len(spans[-1].positions) > 1  # unknown word: several byte-level pieces
    assert spans[1].start == 2 and spans[1].end == 5


def _bpe_tokenizer(tmp_path):
    """A real-CLIP-style BPE where "circle" is two tokens: cir + cle</w>."""
    base = sorted(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(base + [s + "</w>" for s in base])}
    merges = [("r", "e"), ("re", "d</w>"), ("c", "i"), ("ci", "r"), ("c", "l"), ("cl", "e</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def test_word_spans_multi_token_words(tmp_path):
    bpe = _bpe_tokenizer(tmp_path)
    spans = word_token_spans(bpe, "red circle")
    assert spans[0].positions == (1,) and spans[1].positions == (2, 3)
    assert token_positions(bpe, "a red circle", "circle") == [3, 4]
    assert known_words(bpe) is None
    assert check_prompt(bpe, "a zebra", warn=False).unknown_words == []  # BPE: nothing is unknown


def test_token_positions_words_and_phrases(tok):
    prompt = "a red circle and a red square"
    assert token_positions(tok, prompt, "red") == [2, 6]
    assert token_positions(tok, prompt, "RED", occurrence=1) == [6]
    assert token_positions(tok, prompt, "a red square") == [5, 6, 7]
    with pytest.raises(ValueError, match="not a word or phrase"):
        token_positions(tok, prompt, "blue")
    with pytest.raises(ValueError, match="occurrence 2"):
        token_positions(tok, prompt, "red", occurrence=2)


def test_check_prompt_truncation_names_dropped_words(tok):
    prompt = " ".join(["red circle"] * 15) + " blue square"  # 32 words: positions 1..32, 31+ dropped
    with pytest.warns(PromptWarning, match="34 tokens.*dropped: 'blue square'") as record:
        check = check_prompt(tok, prompt)
    assert check.dropped_words == ["blue", "square"] and not check.ok
    assert len(record) == 1
    with pytest.raises(ValueError, match="past the 32-token context"):
        token_positions(tok, prompt, "blue")


def test_check_prompt_unknown_and_empty(tok):
    with pytest.warns(PromptWarning, match="zebra, giraffe"):
        check = check_prompt(tok, "a red zebra and a giraffe")
    assert check.unknown_words == ["zebra", "giraffe"]
    with pytest.warns(PromptWarning, match="unconditionally"):
        assert check_prompt(tok, "").empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prompt(tok, "a red circle above a blue square").ok
