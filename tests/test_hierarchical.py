"""Noun-phrase chunker on arbitrary English, hierarchical attention limits and the hook in a tiny pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2ikit.attention.hierarchical import HierarchicalHook, check_lambdas, hierarchical_attention, pooling_matrices
from t2ikit.attention.sparse import bound_generate
from t2ikit.text.phrases import noun_phrases, phrase_token_spans


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("prompt, phrases", [
    ("a red circle to the left of a blue square", ["a red circle", "a blue square"]),
    ("a purple circle over a big purple triangle, that is on the left of a cyan diamond, which is below a red diamond",
     ["a purple circle", "a big purple triangle", "a cyan diamond", "a red diamond"]),
    ("two little blue diamonds and two green squares", ["two little blue diamonds", "two green squares"]),
    ("a filled cyan diamond and a filled large green square with a grey background",
     ["a filled cyan diamond", "a filled large green square", "a grey background"]),
    ("a red cube on a blue table, and a cat sitting nearby", ["a red cube", "a blue table", "a cat"]),
    ("the old wooden house beside two tall pine trees under a cloudy sky",
     ["the old wooden house", "two tall pine trees", "a cloudy sky"]),
    ("photo of an astronaut riding a horse on mars", ["photo", "an astronaut", "a horse", "mars"]),
    ("a painted vase left of the red box", ["a painted vase", "the red box"]),
    ("", []),
    ("and, of the", []),
])
def test_noun_phrases_of_arbitrary_english(prompt, phrases):
    found = noun_phrases(prompt)
    assert [p.text for p in found] == phrases
    assert all(prompt[p.start:p.end] == p.text for p in found)


def test_phrase_token_spans_and_pooling():
    from tiny import tiny_tokenizer

    tok = tiny_tokenizer(16)
    prompt = "a red circle left of a big blue square"
    spans = phrase_token_spans(tok, prompt)
    assert [s.positions for s in spans] == [(1, 2, 3), (6, 7, 8, 9)]  # BOS is 0
    pool = pooling_matrices(tok, [prompt, ""])
    assert pool.shape == (2, 17, 16)
    assert torch.allclose(pool[0, 0, 1:4], torch.full((3,), 1 / 3)) and pool[0, 2:16].sum() == 0
    assert pool[0, 16, 10] == 1.0 and pool[1, :16].sum() == 0 and pool[1, 16, 1] == 1.0  # first EOS
    mean = pooling_matrices(tok, [prompt], sentence="mean")
    assert torch.allclose(mean[0, 16, 1:10], torch.full((9,), 1 / 9))
    with pytest.raises(TypeError):
        noun_phrases(None)


def test_bad_lambdas_are_refused():
    for bad in [(0, 0, 0), (1, -1, 1), (1, float("nan"), 0)]:
        with pytest.raises(ValueError, match="lambdas"):
            check_lambdas(bad)
    with pytest.raises(ValueError, match="three"):
        HierarchicalHook((1, 1))
    with pytest.raises(TypeError):
        HierarchicalHook("abc")
    with pytest.raises(ValueError, match="sentence pooling"):
        HierarchicalHook(sentence="cls")


def test_levels():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 12, 8, generator=g) for _ in range(3))
    k, v = torch.randn(2, 2, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    phrase = torch.zeros(2, 2, 6)
    phrase[0, 0, 1:3] = 0.5  # row 0: one phrase, row 1: none
    sentence = torch.zeros(2, 6)
    sentence[:, 4] = 1.0
    dense = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(hierarchical_attention(q, k, v, phrase, sentence, (1, 0, 0)), dense)
    sent = hierarchical_attention(q, k, v, phrase, sentence, (0, 0, 2))
    torch.testing.assert_close(sent, v[:, :, 4:5].expand_as(sent))  # one key takes all the mass
    ph = hierarchical_attention(q, k, v, phrase, sentence, (0, 1, 0))
    torch.testing.assert_close(ph[0], v[0, :, 1:3].mean(-2, keepdim=True).expand_as(ph[0]))  # one phrase
    torch.testing.assert_close(ph[1], dense[1])  # no phrase: the word level stands in
    mix = hierarchical_attention(q, k, v, phrase, sentence, (1, 1, 2))
    torch.testing.assert_close(mix, (dense + ph + 2 * sent) / 4)


def test_hook_in_the_pipeline(tmp_path):
    from tiny import make_tiny_sd_folder

    from t2ikit.pipeline import T2IPipeline

    pipe = T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path / "m"))
    prompts = ["a red circle left of a blue square", "a big green square"]
    kw = dict(steps=2, progress=False, seed=1)
    plain = np.stack([np.asarray(i, dtype=np.int16) for i in pipe.generate(prompts, **kw)])
    word_only = np.stack([np.asarray(i, dtype=np.int16)
                          for i in bound_generate(pipe, [HierarchicalHook((1, 0, 0))], prompts, **kw)])
    assert np.abs(word_only - plain).max() <= 2
    mixed = bound_generate(pipe, [HierarchicalHook((1, 1, 0.5))], prompts, **kw)
    assert len(mixed) == 2
    with pytest.raises(RuntimeError, match="bind"):
        pipe.generate(prompts, hooks=[HierarchicalHook()], **kw)


def test_hook_reads_each_condition_rows_own_prompt_in_noise_mode_regions(tmp_path, monkeypatch):
    """With noise-space regions the UNet batch is [uncond; text; region ...]: the hook pools each block of rows
    over its own prompt's phrases."""
    from tiny import make_tiny_sd_folder

    from t2ikit.attention.processor import AttentionContext
    from t2ikit.pipeline import T2IPipeline

    pipe = T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path / "m"))
    hook = HierarchicalHook((1, 1, 0)).bind(pipe, ["a red circle left of a blue square"], [""],
                                             {"region 0: a big green square": ["a big green square"]})
    ctx = AttentionContext("l", True, 0, 2, 1.0, 64, (8, 8), False, ("uncond", "text", "region 0: a big green square"))
    expected = torch.cat([hook.row_info(pipe, [t]) for t in ["", "a red circle left of a blue square",
                                                             "a big green square"]])
    torch.testing.assert_close(hook.batch_rows(ctx, 3), expected)
    with pytest.raises(RuntimeError, match="bound without the prompts of condition"):
        hook.batch_rows(AttentionContext("l", True, 0, 2, 1.0, 64, (8, 8), False, ("uncond", "region 1: x")), 2)

    seen = []
    real = HierarchicalHook.batch_rows
    monkeypatch.setattr(HierarchicalHook, "batch_rows",
                        lambda self, ctx, batch: seen.append((ctx.blocks, batch)) or real(self, ctx, batch))
    spec = pipe.make_spec("a red circle", steps=2, guidance=3.0, regions=["8,0,16,16:a big blue square"],
                          region_mode="noise", attention="hier:1/1/0", relation_guidance=0.0)
    pipe.run(spec, decode=False, progress=False)
    assert {blocks for blocks, _ in seen} == {("uncond", "text", "region 0: a big blue square")}
    assert {batch for _, batch in seen} == {3}
