"""The Q2 (sparsity) and Q3 (hierarchical attention) report experiments on the tiny model at the smoke budget,
and the learnable-lambda hook they rely on."""

import math

import numpy as np
import pytest
import torch

from t2ikit.attention.hierarchical import (LearnableHierarchicalHook, hierarchical_attention, hierarchical_levels,
                                           pooling_matrices)
from t2ikit.report import q2_sparsity as q2
from t2ikit.report import q3_hierarchical as q3
from t2ikit.report.core import Finding, ReportContext


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def oracle_size(monkeypatch):
    monkeypatch.setattr(q2, "IMAGE_SIZE", (32, 32))  # the tiny model draws 16 px; the oracle reads >= 32 px


def _ctx(tmp_path, pipe, experiment_id):
    ctx = ReportContext(tmp_path, budget="smoke", progress=False, experiment_id=experiment_id)
    ctx.pipe = lambda model=None: pipe  # the tiny model instead of the shipped one
    return ctx


def _finite_in(value, interval):
    return math.isfinite(value) and interval[0] - 1e-9 <= value <= interval[1] + 1e-9


def test_levels_mix_to_hierarchical_attention(pipe):
    g = torch.Generator().manual_seed(0)
    texts = ["a red circle and a blue square", ""]
    pool = pooling_matrices(pipe.tokenizer, texts)
    n = pool.shape[-1]
    q, k, v = (torch.randn(2, 2, 6, 4, generator=g) for _ in range(3))
    k, v = torch.randn(2, 2, n, 4, generator=g), torch.randn(2, 2, n, 4, generator=g)
    levels = hierarchical_levels(q, k, v, pool[:, :2], pool[:, n])
    lam = torch.tensor([1.0, 0.5, 0.25])
    mixed = (lam[:, None, None, None, None] * levels).sum(0) / lam.sum()
    torch.testing.assert_close(mixed, hierarchical_attention(q, k, v, pool[:, :2], pool[:, n], (1.0, 0.5, 0.25)))


def test_learnable_hook_gets_a_gradient_and_rejects_zero_start():
    with pytest.raises(ValueError, match="start > 0"):
        LearnableHierarchicalHook((1.0, 1.0, 0.0))
    hook = LearnableHierarchicalHook((2.0, 1.0, 1.0))
    assert hook.learned() == pytest.approx((0.5, 0.25, 0.25))
    (hook.mix() * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert hook.logits.grad is not None and hook.logits.grad.abs().sum() > 0


def test_k_star_follows_lambda():
    # loss falls with k, cost rises with k: lambda 0 picks the best quality, a large lambda the cheapest k
    fractions = np.array([[0.2] * 5, [0.6] * 5, [0.8] * 5])
    cost = np.array([0.1, 0.5, 1.0])
    assert q2.k_star(fractions[-1].mean() - fractions.mean(1), cost, [1, 4, 8], [0.0, 100.0]) == [8, 1]
    curve = q2.k_star_curve(fractions, cost, [1, 4, 8], [0.0, 100.0], np.random.default_rng(0), 20)
    assert curve["k"] == [8, 1] and curve["lo"] == [8, 1]


def test_information_share_is_one_for_the_dense_map_and_less_when_sparse():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(600, 12)) * 2
    dense = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    from scipy.cluster.vq import kmeans2

    codebook, _ = kmeans2(np.sqrt(dense), 8, rng=np.random.default_rng(1), minit="++")
    same = q2.information_kept_mi(dense, dense, codebook, np.random.default_rng(2), 20)
    assert same["kept_share"] == pytest.approx(1.0)
    top1 = np.eye(12)[dense.argmax(1)]
    sparse = q2.information_kept_mi(dense, top1, codebook, np.random.default_rng(2), 20)
    assert sparse["kept_share"] < 0.9 and _finite_in(sparse["kept_share"], sparse["kept_share_ci"])


def test_table_estimator_equals_discrete_mi():
    from t2ikit.bench.information import discrete_mi

    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 400)
    b = (a + rng.integers(0, 2, 400)) % 5
    joint = np.zeros((5, 5))
    np.add.at(joint, (a, b), 1)
    assert q2.miller_madow_mi(joint) == pytest.approx(discrete_mi(a, b))
    assert q2.miller_madow_mi(np.diag(joint.sum(0))) == pytest.approx(discrete_mi(b, b))


def test_q2_sparsity_smoke(pipe, tmp_path):
    ctx = _ctx(tmp_path, pipe, "q2.sparsity")
    finding = q2.run(ctx)
    assert isinstance(finding, Finding) and finding.verdict in ("holds", "partly holds", "does not hold",
                                                                "no difference")
    n = finding.numbers
    assert set(n["curve"]) == {"dense", "topk:2", "topp:0.9"}
    assert n["curve"]["dense"]["flop_ratio"] == 1.0
    assert 0.5 < n["curve"]["topk:2"]["flop_ratio"] < 1.0  # every score, then 2 values per query
    for name, c in n["curve"].items():
        assert _finite_in(c["diff"], c["ci95"]) and _finite_in(c["kept_share"], c["kept_share_ci"])
    assert n["k_star_counted"] in (2, pipe.tokenizer.model_max_length)
    assert len(finding.tables[0].rows) == 3 and len(finding.figures) == 2
    assert all((tmp_path / f.file).is_file() for f in finding.figures)

    # every unit is cached: a second run generates nothing and captures nothing
    again = q2.run(_ctx(tmp_path, _NoGeneration(pipe), "q2.sparsity"))
    assert again.numbers["curve"] == n["curve"]


class _NoGeneration:
    """The pipeline for everything but generating: a second run of a finished experiment must not generate."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        if name in ("generate", "run"):
            pytest.fail("a cached unit was computed again")
        return getattr(self._pipe, name)


def test_q3_hierarchical_smoke(pipe, tmp_path, monkeypatch):
    ctx = _ctx(tmp_path, pipe, "q3.hierarchical")
    finding = q3.run(ctx)
    n = finding.numbers
    assert len(n["lambdas"]) == 3 and sum(n["lambdas"]) == pytest.approx(1.0)
    assert set(n["check_rate_diff"]) == {"hier:1/1/0", "hier:1/0.5/0.25", "learned"}
    for diff, lo, hi in n["check_rate_diff"].values():
        assert _finite_in(diff, (lo, hi))
    assert len(finding.tables[0].rows) == 4  # word-only, two fixed mixes, learned
    assert n["learning_loss"][0] > 0 and all(math.isfinite(x) for x in n["learning_loss"])
    assert all(_finite_in(v[0], v[1:]) for k, v in n.items() if k.startswith("heldout_loss_diff_"))
    assert (tmp_path / finding.figures[0].file).is_file()

    monkeypatch.setattr(q3, "learn_lambdas", lambda *a, **k: pytest.fail("the lambdas were learned again"))
    again = q3.run(_ctx(tmp_path, _NoGeneration(pipe), "q3.hierarchical"))
    assert again.numbers["lambdas"] == n["lambdas"] and again.numbers["check_rate"] == n["check_rate"]
