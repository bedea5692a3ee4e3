"""Textual inversion and PEZ projection on a tiny random model: only the new row learns, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from t2ikit.analysis.soft_prompt import (SoftPromptConfig, SoftTokenEmbedding, add_token, encode_images,
                                         example_images, learn_token)
from t2ikit.pipeline import T2IPipeline

torch.set_num_threads(1)


@pytest.fixture()
def pipe(folder):  # conftest's tiny folder, a fresh pipeline per test: learning adds tokens to it
    return T2IPipeline.from_folder(folder)


def test_example_images_are_exact_renders():
    from t2ikit.world.oracle import score
    from t2ikit.world.caption import parse_caption

    ims = example_images("a red circle", 3, seed=0, resolution=32)
    assert ims.shape == (3, 3, 32, 32) and 0 <= ims.min() and ims.max() <= 1
    assert all(score(im, parse_caption("a red circle")).all_passed for im in ims)
    assert not torch.equal(ims[0], ims[1])  # fresh layouts
    assert torch.equal(ims, example_images("a red circle", 3, seed=0, resolution=32))


def test_learning_changes_only_the_new_row_and_the_prompt_uses_it(pipe):
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    before = pipe.encode_text(["a red circle"])
    ims = example_images("a red circle", 4, resolution=16)
    r = learn_token(pipe, "zorb", ims, SoftPromptConfig(steps=5, batch_size=2, lr=0.05))
    after = pipe.text_encoder.get_input_embeddings().weight
    assert after.shape[0] == table.shape[0] + 1 and r.token_ids == [table.shape[0]]
    assert torch.equal(after[:-1], table)
    assert torch.equal(after[r.token_ids], r.vectors)
    assert torch.equal(pipe.encode_text(["a red circle"]), before)  # the model itself is untouched
    assert len(r.losses) == 5 and all(np.isfinite(r.losses))
    from t2ikit.text.check import PromptWarning
    from t2ikit.text.tokenizer import known_words

    assert r.projected_word in known_words(pipe.tokenizer) and r.projected_word != "zorb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptWarning)  # the new token is a known word now
        img = pipe.run(pipe.make_spec("a zorb", steps=2), progress=False).images
    assert img.shape == (1, 3, 16, 16)


def test_pez_forward_is_a_vocabulary_embedding_and_gradient_reaches_the_vector():
    base = torch.nn.Embedding(6, 4)
    soft = SoftTokenEmbedding(base, [5], torch.randn(1, 4), torch.arange(1, 5), project=True)
    out = soft(torch.tensor([[0, 5]]))
    # the straight-through estimator (v + (e - v).detach()) is the vocabulary embedding up to float rounding
    torch.testing.assert_close(out[0, 1], base.weight[soft.nearest()[0]], atol=1e-6, rtol=0)
    assert torch.equal(out[0, 0], base.weight[0])
    assert 1 <= soft.nearest()[0] <= 4
    out.sum().backward()
    assert soft.vectors.grad is not None and torch.all(soft.vectors.grad == 1)


def test_a_two_token_prompt_learns_two_rows(pipe):
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    r = learn_token(pipe, "zorb blick", example_images("a red circle", 2, resolution=16),
                    SoftPromptConfig(steps=2, batch_size=2, lr=0.05, project=True))
    after = pipe.text_encoder.get_input_embeddings().weight
    assert len(r.token_ids) == 2 and len(r.projected_word.split()) == 2
    assert torch.equal(after[: len(table)], table)
    words = r.projected_word.split()  # PEZ rows hold the projected (vocabulary) embeddings
    ids = [pipe.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    assert torch.equal(after[r.token_ids], table[ids])


def test_bad_input_is_a_sentence(pipe):
    ims = example_images("a red circle", 2, resolution=16)
    with pytest.raises(ValueError, match="at least one example image"):
        example_images("a red circle", 0)
    with pytest.raises(ValueError, match="non-empty"):
        learn_token(pipe, "zorb", ims[:0])
    with pytest.raises(ValueError, match="clashes"):
        add_token(pipe, "circle")
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        learn_token(pipe, "zorb", ims, SoftPromptConfig(steps=0))
    with pytest.raises(ValueError, match="one lower-case"):
        add_token(pipe, "two words")
    with pytest.raises(ValueError, match="clashes"):
        learn_token(pipe, "zorb circle", ims, SoftPromptConfig(steps=1))
    with pytest.raises(ValueError, match="distinct new words"):
        learn_token(pipe, "zorb zorb", ims, SoftPromptConfig(steps=1))
    n = len(pipe.tokenizer)
    with pytest.raises(ValueError, match="init_word"):
        learn_token(pipe, "zorb", ims, SoftPromptConfig(steps=1, init_word="notaword"))
    assert len(pipe.tokenizer) == n  # nothing added before the checks
    with pytest.raises(ValueError, match="non-empty"):
        encode_images(pipe, torch.zeros(3, 16, 16))
