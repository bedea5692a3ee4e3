"""The text encoder builder and prompt encoding."""

import pytest
import torch

from tiny import tiny_tokenizer
from t2ikit.text import build_text_encoder, encode_prompts, text_encoder_for


def test_text_encoder_shapes_and_ids():
    tok = tiny_tokenizer(16)
    enc = text_encoder_for(tok, hidden_size=32, layers=1, heads=4)
    assert enc.config.vocab_size == len(tok) and enc.config.eos_token_id == tok.eos_token_id
    emb = encode_prompts(tok, enc, ["a red circle", ""])
    assert emb.shape == (2, 16, 32)
    assert not torch.allclose(emb[0], emb[1])
    # padding after EOS does not change earlier positions (causal mask)
    assert torch.allclose(encode_prompts(tok, enc, ["a red circle"])[0, :5], emb[0, :5])


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="heads"):
        build_text_encoder(hidden_size=30, heads=4, vocab_size=100)
