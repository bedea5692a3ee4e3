"""Sparse cross-attention: gathered computation equals the masked definition, limits equal dense,
bad input is refused before compute, hooks run in a tiny pipeline."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2ikit.attention import sparse as sp
from t2ikit.attention.capture import AttentionStore


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def qkv(B=2, h=2, Nq=24, n=10, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, h, Nq, d, generator=g), 2 * torch.randn(B, h, n, d, generator=g),
            torch.randn(B, h, n, d, generator=g))


def masked(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def scores_of(q, k):
    return (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5


def test_bad_input_is_refused_before_compute():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="larger than the number of text tokens"):
        sp.topk_attention(q, k, v, 11)
    with pytest.raises(ValueError, match=">= 1"):
        sp.TopKHook(0)
    with pytest.raises(TypeError, match="int"):
        sp.TopKHook(2.5)
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            sp.DynamicHook(p)
    with pytest.raises(TypeError):
        sp.topp_attention(q, k, v, float("nan"))
    with pytest.raises(ValueError, match="keep=11 is larger"):
        sp.prune_tokens(q, k, v, 11)
    with pytest.raises(ValueError, match="unknown strategy"):
        sp.selection_mask(scores_of(q, k), "random", 3)
    with pytest.raises(ValueError, match="nothing is pruned"):
        sp.PruneHook(keep=None, drop_padding=False)


@pytest.mark.parametrize("kk", [1, 3, 10])
def test_topk_gather_equals_mask_and_full_k_equals_dense(kk):
    q, k, v = qkv()
    out = sp.topk_attention(q, k, v, kk)
    ref = masked(q, k, v, sp.selection_mask(scores_of(q, k), "topk", kk))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    if kk == 10:
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.3, 0.8, 1.0])
def test_topp_keeps_the_smallest_set_with_mass_p(p):
    q, k, v = qkv()
    out, mean_k = sp.topp_attention(q, k, v, p, return_k=True)
    mask = sp.selection_mask(scores_of(q, k), "topp", p)
    torch.testing.assert_close(out, masked(q, k, v, mask), atol=1e-5, rtol=1e-5)
    dense = scores_of(q, k).softmax(-1)
    kept = (dense * mask).sum(-1)
    assert (kept >= p - 1e-5).all()  # holds mass p ...
    smallest = ((dense * mask).sum(-1) - (dense.masked_fill(~mask, 2).amin(-1)))  # ... and is the smallest such set
    assert (smallest < p + 1e-6).all()
    assert mean_k == pytest.approx(mask.sum(-1).float().mean().item())
    if p == 1.0:
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_prune_gathers_the_same_tokens_for_every_query():
    q, k, v = qkv()
    allowed = torch.zeros(2, 10, dtype=torch.bool)
    allowed[:, :4] = True
    allowed[1, 4] = True  # row 1 has 5 allowed tokens, row 0 four: both gather 5
    k2, v2 = sp.prune_tokens(q, k, v, 5, allowed, stride=1)
    assert k2.shape == (2, 2, 5, 8)
    mass = sp.token_mass(q, k, stride=1)
    idx = sp.prune_indices(mass, 5, allowed)
    assert set(idx[1, 0].tolist()) == {0, 1, 2, 3, 4} and {0, 1, 2, 3} <= set(idx[0, 0].tolist())
    mask = torch.zeros(2, 2, 10, dtype=torch.bool).scatter_(-1, idx, True)[:, :, None].expand(-1, -1, 24, -1)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k2, v2), masked(q, k, v, mask), atol=1e-5, rtol=1e-5)
    full_k, full_v = sp.prune_tokens(q, k, v, 10)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, full_k, full_v), F.scaled_dot_product_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_information_kept_and_gates():
    q, k, v = qkv()
    full = torch.ones(2, 2, 24, 10, dtype=torch.bool)
    info = sp.information_kept(q, k, v, full)
    assert info["rel_error"] < 1e-6 and abs(info["kl"]) < 1e-6 and info["kept_mass"] == pytest.approx(1.0)
    mask = sp.selection_mask(scores_of(q, k), "topk", 2)
    info = sp.information_kept(q, k, v, mask)
    # KL(sparse || dense) of a renormalised restriction is -log(kept mass), row by row
    dense = scores_of(q, k).softmax(-1)
    assert info["kl"] == pytest.approx((-(dense * mask).sum(-1).log()).mean().item(), rel=1e-4)
    torch.testing.assert_close(sp.gated_attention(q, k, v, torch.ones(2, 10)), F.scaled_dot_product_attention(q, k, v))


def test_learned_scorer_trades_error_for_sparsity():
    torch.manual_seed(0)
    embeds = torch.randn(2, 10, 16)
    samples = [qkv(seed=s) for s in range(2)]
    _, hist_dense = sp.train_keep_scorer(embeds, samples, steps=20, sparsity=0.0, lr=2e-2)
    _, hist_sparse = sp.train_keep_scorer(embeds, samples, steps=20, sparsity=2.0, lr=2e-2)
    assert hist_sparse[-1]["mean_gate"] < hist_dense[-1]["mean_gate"] - 0.1
    assert hist_sparse[-1]["loss"] < hist_sparse[0]["loss"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from tiny import make_tiny_sd_folder

    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path_factory.mktemp("m") / "m"))


def _img(images):
    return np.stack([np.asarray(i, dtype=np.int16) for i in images])


def test_hooks_in_the_pipeline(pipe):
    prompts = ["a red circle", "a big blue square left of a green circle"]
    kw = dict(steps=2, progress=False, seed=3)
    plain = _img(pipe.generate(prompts, **kw))
    n = pipe.tokenizer.model_max_length
    same = [sp.TopKHook(n), sp.DynamicHook(1.0), sp.PruneHook(keep=n, drop_padding=False)]
    for hook in same:  # keeping every token is dense attention
        assert np.abs(_img(sp.bound_generate(pipe, [hook], prompts, **kw)) - plain).max() <= 2, hook.name
    prune = sp.PruneHook()
    out = _img(sp.bound_generate(pipe, [prune], prompts, **kw))
    assert out.shape == plain.shape and max(prune.kept) < n  # padding dropped: fewer tokens gathered
    scorer = sp.TokenKeepScorer(pipe.text_encoder.config.hidden_size)
    learned = sp.LearnedPruneHook(scorer, keep=3)
    sp.bound_generate(pipe, [learned], prompts, **kw)
    assert set(learned.kept) == {3}
    topk = sp.TopKHook(2)
    assert np.abs(_img(sp.bound_generate(pipe, [topk], prompts, **kw)) - plain).max() > 0
    with pytest.raises(ValueError, match="larger than the number of text tokens"):
        sp.bound_generate(pipe, [sp.TopKHook(n + 1)], prompts, **kw)
    with pytest.raises(ValueError, match="cannot combine"):
        pipe.generate(prompts, hooks=[sp.TopKHook(2), AttentionStore()], **kw)
    wrapped = sp.HookedPipeline(pipe, lambda: [sp.PruneHook()], "prune")
    assert len(wrapped.generate(prompts, **kw)) == 2


def test_bench_sparse_cli(pipe, capsys):
    from t2ikit.cli import main

    assert main(["bench", "sparse", "dense", "prune", "hier:1/1/0", "--model", str(pipe.path), "--n-prompts", "1",
                 "--steps", "1", "--categories", "colour_binding", "--size", "32x32"]) == 0
    out = capsys.readouterr().out
    assert "| prune |" in out and "| hier:1/1/0 |" in out
    assert main(["bench", "sparse", "topk:0", "--model", str(pipe.path)]) != 0  # refused before loading
    assert main(["bench", "sparse", "hier:0/0/0", "--model", str(pipe.path)]) != 0


def test_generate_cli_attention_option(pipe, tmp_path):
    from t2ikit.cli import main

    out = tmp_path / "x.png"
    for variant in ("prune", "hier:1/1/0.5", "topk:3"):
        assert main(["generate", "a red circle left of a blue square", "--model", str(pipe.path), "--steps", "1",
                     "--quiet", "--attention", variant, "--out", str(out), "--overwrite"]) == 0 and out.exists()
    assert main(["generate", "a red circle", "--model", str(pipe.path), "--attention", "topp:1.5"]) == 2
