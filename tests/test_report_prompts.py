"""Q4, Q5 and Q7 of the report (prompt length, binding, modalities) on the tiny model at the smoke budget: the
findings have their tables, finite numbers inside their intervals and a figure, and a second run reads every
unit back instead of generating again; plus the pure parts (prompts by level, information, word roles)."""

import math

import numpy as np
import pytest
from report_helpers import tiny_adapters

from t2ikit.report import q4_prompts, q5_binding, q7_modalities
from t2ikit.report.core import VERDICTS, Finding, ReportContext
from t2ikit.world.caption import parse_caption


def _ctx(tmp_path, pipe, exp_id):
    ctx = ReportContext(out=tmp_path / "report", budget="smoke", progress=False)
    ctx._pipes["shipped"] = pipe  # the report's model: the tiny one
    ctx.experiment_id = exp_id
    return ctx


def _inside(value, ci):
    return ci[0] - 1e-9 <= value <= ci[1] + 1e-9


def _check_finding(f: Finding, ctx, tables: int):
    assert isinstance(f, Finding) and f.verdict in VERDICTS and f.answer and f.what_was_run
    assert len(f.tables) == tables and all(t.rows for t in f.tables)
    assert all((ctx.out / fig.file).stat().st_size > 1000 for fig in f.figures)


# ----------------------------------------------------------------------------------------------------
# Q4


def test_prompts_grow_one_stated_attribute_per_level():
    scene = {"shape": "circle", "colour": "red", "size": "small", "background": "gray", "fill": "outlined"}
    prompts = [q4_prompts.prompt_at(scene, L) for L in range(6)]
    assert prompts[:3] == ["", "a circle", "a red circle"]
    spec = parse_caption(prompts[5])
    g = spec.groups[0]
    assert (g.colour, g.shape, g.size, spec.style.background, spec.style.fill) == ("red", "circle", "small", "gray",
                                                                                   "outlined")
    assert parse_caption(prompts[4]).style.fill is None and parse_caption(prompts[3]).style.background is None
    with pytest.raises(ValueError, match="level"):
        q4_prompts.prompt_at(scene, 6)


def test_information_is_the_entropy_when_read_exactly_and_near_zero_when_shuffled():
    scenes = q4_prompts.base_scenes(200)
    exact = q4_prompts.information(scenes, scenes)
    for a in q4_prompts.ATTRIBUTES:  # Miller-Madow on a perfect copy: about H(A) <= log |values|
        assert abs(exact[a] - q4_prompts.entropy_nats(a)) < 0.15
    rng = np.random.default_rng(0)
    shuffled = [scenes[i] for i in rng.permutation(200)]
    bias = q4_prompts.permutation_bias(scenes, shuffled, rng, permutations=10)
    raw = q4_prompts.information(scenes, shuffled)
    assert all(abs(raw[a] - bias[a]) < 0.1 for a in q4_prompts.ATTRIBUTES)


def test_q4_runs_and_a_second_run_reads_its_units_back(tmp_path, pipe, monkeypatch):
    ctx = _ctx(tmp_path, pipe, "q4.prompts")
    f = q4_prompts.run(ctx)
    _check_finding(f, ctx, tables=2)
    n = f.numbers
    assert len(f.tables[0].rows) == 6 and n["scenes"] == 4 and n["tokens"][0] == 0 and n["tokens"][-1] > n["tokens"][1]
    for v, ci in zip(n["info_nats"], n["info_ci"]):
        assert math.isfinite(v) and _inside(v, ci)
    for v, ci in zip(n["stated_accuracy"][1:], n["stated_ci"][1:]):
        assert 0 <= v <= 1 and _inside(v, ci)
    monkeypatch.setattr(q4_prompts, "read_attributes", lambda rgb: pytest.fail("a cached unit was recomputed"))
    again = q4_prompts.run(ctx)
    assert again.numbers["info_nats"] == n["info_nats"]


# ----------------------------------------------------------------------------------------------------
# Q5


def test_word_roles_and_pair_kinds(pipe):
    assert [r for _, r in q5_binding.roles(pipe.tokenizer, "a red circle and a blue square", "colour_binding")] == \
        ["colour1", "shape1", "colour2", "shape2"]
    assert [r for _, r in q5_binding.roles(pipe.tokenizer, "a big red circle to the left of a small red square",
                                           "shape_binding")] == ["size1", "shape1", "relation", "size2", "shape2"]
    assert q5_binding.pair_kind("colour1", "shape1") == "bound"
    assert q5_binding.pair_kind("shape2", "colour1") == "crossed"
    assert q5_binding.pair_kind("colour1", "colour2") is None and q5_binding.pair_kind("relation", "shape1") is None


def test_bound_minus_crossed_reads_the_matrix():
    pair = np.zeros((4, 4))
    pair[0, 1] = pair[1, 0] = pair[2, 3] = pair[3, 2] = 2.0  # bound
    pair[0, 3] = pair[3, 0] = 0.5  # crossed
    unit = {"roles": ["colour1", "shape1", "colour2", "shape2"], "oracle": {"pair": pair.tolist(), "single": [1] * 4}}
    assert q5_binding.bound_vs_crossed([unit], "oracle").tolist() == [2.0 - 0.25]
    assert q5_binding.nonadditivity([unit], "oracle")[0] == pytest.approx(pair[np.triu_indices(4, 1)].mean() / 2)


def test_q5_runs_and_a_second_run_reads_its_units_back(tmp_path, pipe, monkeypatch):
    ctx = _ctx(tmp_path, pipe, "q5.binding")
    f = q5_binding.run(ctx)
    _check_finding(f, ctx, tables=3)
    n = f.numbers
    assert set(n["methods"]) == {"plain", "relation guidance", "attend-and-excite", "layout boxes"}
    assert n["interaction_prompts"] == 3
    for name, m in n["methods"].items():
        for c in q5_binding.CATEGORIES:
            assert _inside(m[c]["accuracy"], m[c]["accuracy_ci"])
            if name != "plain":
                assert _inside(m[c]["diff_B"], m[c]["diff_B_ci"]) and 0 <= m[c]["mcnemar_p"] <= 1
    assert math.isfinite(n["interactions"]["pixel"]["nonadditivity"])
    monkeypatch.setattr(q5_binding, "score_items", lambda *a: pytest.fail("a cached unit was recomputed"))
    monkeypatch.setattr(q5_binding, "interactions", lambda *a: pytest.fail("a cached unit was recomputed"))
    assert q5_binding.run(ctx).numbers["methods"] == n["methods"]


# ----------------------------------------------------------------------------------------------------
# Q7


@pytest.mark.slow  # ~10 s on the shared CPU: nine generations, their FLOP counts and the conflict section
def test_q7_runs_and_a_second_run_reads_its_units_back(tmp_path, pipe, monkeypatch):
    monkeypatch.setattr(q7_modalities, "load_adapters", tiny_adapters)
    ctx = _ctx(tmp_path, pipe, "q7.modalities")
    f = q7_modalities.run(ctx)
    _check_finding(f, ctx, tables=3)
    n = f.numbers
    assert len(f.tables[0].rows) == 1 + 4 + 1 and len(f.tables[2].rows) == 5  # smoke: text, 4 conditions, 1 pair
    assert f.tables[1].rows[0][0] == "text + sketch + depth (0.5 each)"
    for row in n["consistency"].values():
        for m in q7_modalities.MODALITIES:
            assert 0 <= row[m]["mean"] <= 1 and _inside(row[m]["mean"], row[m]["ci"])
    assert n["flops_per_step"]["text + reference"] > n["flops_per_step"]["text only"] > 0
    assert n["time_ratio"]["text only"] == 1.0
    monkeypatch.setattr(q7_modalities, "generate_row", lambda *a: pytest.fail("a cached unit was recomputed"))
    monkeypatch.setattr(q7_modalities, "flops", lambda *a: pytest.fail("a cached unit was recomputed"))
    monkeypatch.setattr(q7_modalities, "bench_conflict", lambda *a: pytest.fail("a cached unit was recomputed"))
    assert q7_modalities.run(ctx).numbers["consistency"] == n["consistency"]
