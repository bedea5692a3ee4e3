"""Noun-phrase chunker on arbitrary English, hierarchical attention limits and the hook in a tiny pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2ikit.attention.hierarchical import HierarchicalHook, check_lambdas, hierarchical_attention, pooling_matrices
from t2ikit.attention.sparse import bound_generate
from t2ikit.text.phrases import noun_phrases, phrase_token_spans


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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


# ---------------------------------------------------------------------------------------------------
# The phrase level reads the model's prompt parser (issue 21)
# ---------------------------------------------------------------------------------------------------


def test_the_shapes_world_parser_gives_the_chunker_phrases_on_shapes_world_captions():
    """The shipped model's hierarchical outputs stay bitwise: on Shapes World captions (backgrounds, fills,
    relations, counts) the parser's phrases are the chunker's, so the pooling matrices are equal."""
    from tiny import tiny_tokenizer

    from t2ikit.text.parser import get_parser
    from t2ikit.world.caption import write_caption
    from t2ikit.world.scene import sample_scene, scene_rng

    parser = get_parser("shapes-world")
    captions = [write_caption(sample_scene(5, i, reference=False).spec, scene_rng(9, i)) for i in range(150)]
    assert sum("background" in c for c in captions) > 20  # where the chunker finds a phrase the parser reads as none
    tok = tiny_tokenizer(32)
    assert torch.equal(pooling_matrices(tok, captions, parser=parser), pooling_matrices(tok, captions))


@pytest.fixture(scope="module")
def bpe_pipe():
    """What the hook reads of a tiny SD folder with the real CLIP BPE tokenizer and no "parser" key: the
    tokenizer and the English parser (tests/test_families.py generates with "hier" on such folders)."""
    from types import SimpleNamespace

    from families import clip_tokenizer

    from t2ikit.pipeline import DEFAULT_PARSER
    from t2ikit.text.parser import get_parser

    return SimpleNamespace(tokenizer=clip_tokenizer(32), parser=get_parser(DEFAULT_PARSER))


def _pooled(pool, row):
    """The token positions each phrase row of a pooling matrix averages."""
    n = pool.shape[-1]
    return [tuple(torch.nonzero(r).ravel().tolist()) for r in pool[row, :n] if r.sum() > 0]


def test_phrase_pools_are_the_english_parsers_phrases_with_a_clip_bpe_tokenizer(bpe_pipe):
    from t2ikit.text.phrases import phrase_token_spans
    from t2ikit.text.spans import token_positions

    tok = bpe_pipe.tokenizer
    hook = HierarchicalHook((1, 1, 0))
    prompt = "a red cat to the left of a small blue dog in the style of an oil painting"
    want = [tuple(token_positions(tok, prompt, t)) for t in
            ("a red cat", "a small blue dog", "in the style of an oil painting")]  # objects, then the style span
    assert _pooled(hook.row_info(bpe_pipe, [prompt]), 0) == want
    assert [s.phrase.text for s in phrase_token_spans(tok, prompt)] == [  # the chunker splits the style
        "a red cat", "a small blue dog", "the style", "an oil painting"]
    # where the chunker cuts an object apart, the parser's object (attributes included) is one pool
    for prompt, objects in [("a pair of red shoes under a chair", ["a pair of red shoes", "a chair"]),
                            ("a dog next to a sleeping cat", ["a dog", "a sleeping cat"]),
                            ("a red, shiny car next to a dog", ["a red, shiny car", "a dog"])]:
        assert _pooled(hook.row_info(bpe_pipe, [prompt]), 0) == [tuple(token_positions(tok, prompt, o))
                                                                  for o in objects]
    # an attribute stated after the noun ("the cat is red") joins the cat's pool
    prompt = "the cat is red"
    assert _pooled(hook.row_info(bpe_pipe, [prompt]), 0) == [
        tuple(token_positions(tok, prompt, "the cat") + token_positions(tok, prompt, "red"))]


def test_a_prompt_the_parser_cannot_read_falls_back_to_the_chunker_with_a_warning(bpe_pipe):
    from t2ikit.text.phrases import phrase_token_spans

    prompt = "a cat to the left of"  # a relation with no object phrase after it
    with pytest.warns(UserWarning, match=r"english parser cannot read 'a cat to the left of' \(the relation "
                                         r"'to the left of' has no object phrase after it"):
        pool = pooling_matrices(bpe_pipe.tokenizer, [prompt, ""], parser=bpe_pipe.parser)
    assert _pooled(pool, 0) == [s.positions for s in phrase_token_spans(bpe_pipe.tokenizer, prompt)]
    assert _pooled(pool, 1) == []  # the empty unconditional prompt has no phrase, and no warning
