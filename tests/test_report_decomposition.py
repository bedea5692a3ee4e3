"""Q6: the three decomposition strategies, their composed generation, and the report experiment on a tiny model."""

import math

import numpy as np
import pytest
import torch

import t2ikit  # noqa: F401  (registers the parsers)
from t2ikit.analysis.decompose_strategies import (STRATEGIES, changed_components, decompose_prompt,
                                                  generate_composed, regions_of)
from t2ikit.bench.compbench import ground_truth_generator
from t2ikit.report import q6_decomposition as q6
from t2ikit.report.core import ReportContext
from t2ikit.world.caption import write_caption
from t2ikit.world.oracle import detect
from t2ikit.world.spec import Group, Relation, Spec

PROMPT = "two small green triangles above a large pink diamond on a black background"


@pytest.mark.parametrize("parser", ["shapes-world", "english"])
def test_strategies_split_the_prompt_as_described(parser):
    gl = decompose_prompt("global-local", PROMPT, parser, (64, 64))
    assert gl[0].kind == "scene" and gl[0].boxes == ()
    assert gl[0].text == "two triangles above a diamond on a black background"  # attribute words removed
    assert [c.text for c in gl[1:]] == ["two small green triangles", "a large pink diamond"]
    assert len(gl[1].boxes) == 2 and len(gl[2].boxes) == 1  # one box per instance, from the layout planner
    for c in gl[1:]:
        assert all(0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 for x0, y0, x1, y1 in c.boxes)
    h = decompose_prompt("hierarchical", PROMPT, parser)
    assert [c.kind for c in h].count("sentence") == 1 and h[0].text == PROMPT
    assert "triangle above diamond" in [c.text for c in h if c.kind == "phrase"]
    weights = {c.kind: c.weight for c in h}
    assert weights["sentence"] > weights["phrase"] > weights["word"]  # coarse to fine
    a = {c.kind: c.text for c in decompose_prompt("aspect", PROMPT, parser)}
    assert a == {"colour": "green and pink", "shape": "triangle and diamond", "size": "small and large",
                 "relation": "triangle above diamond", "style": "on a black background"}


def test_a_colour_edit_touches_one_component_except_in_the_hierarchy():
    before, after = "a red circle to the left of a blue square", "a green circle to the left of a blue square"
    touched = {s: changed_components(decompose_prompt(s, before, "shapes-world"),
                                     decompose_prompt(s, after, "shapes-world")) for s in STRATEGIES}
    assert touched == {"global-local": 1, "hierarchical": 3, "aspect": 1}  # sentence, phrase and word change


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown decomposition strategy"):
        decompose_prompt("semantic", PROMPT, "shapes-world")
    with pytest.raises(ValueError, match="needs a prompt parser"):
        decompose_prompt("aspect", PROMPT, None)
    with pytest.raises(ValueError, match="cannot read"):
        decompose_prompt("aspect", "a red zebra", "shapes-world")


def test_regions_cover_the_boxes_or_the_whole_image():
    comps = decompose_prompt("global-local", "a red circle to the left of a blue square", "shapes-world", (64, 64))
    regions = regions_of(comps, (64, 64))
    assert regions[0].mask.sum() == 64 * 64
    x0, y0, x1, y1 = comps[1].boxes[0]
    assert regions[1].mask.sum() == (x1 - x0) * (y1 - y0) and regions[1].mask[y0, x0] == 1


def test_one_whole_image_component_equal_to_the_prompt_is_the_plain_prompt(pipe):
    from t2ikit.analysis.decompose_strategies import Component

    prompt = "a red circle to the left of a blue square"
    plain = generate_composed(pipe, prompt, None, [3, 4], steps=3)
    same = generate_composed(pipe, prompt, [Component(prompt, "sentence", 1.0)], [3, 4], steps=3)
    other = generate_composed(pipe, prompt, [Component("a green triangle", "sentence", 1.0)], [3, 4], steps=3)
    assert torch.allclose(plain, same, atol=1e-4)  # the base block gets no attention, the copy all of it
    noise = generate_composed(pipe, prompt, [Component(prompt, "sentence", 1.0)], [3, 4], steps=3, mode="noise")
    assert torch.allclose(plain, noise, atol=1e-4)  # the base condition is masked out, the copy guides alone
    assert not torch.allclose(plain, other, atol=1e-3)  # the components, not the base prompt, condition
    assert torch.equal(same, generate_composed(pipe, prompt, [Component(prompt, "sentence", 1.0)], [3, 4], steps=3))


def _chw(image) -> torch.Tensor:
    """(3, H, W) float in [0, 1], what a pipeline returns, from a rendered HxWx3 array."""
    a = np.asarray(image)
    a = a / 255.0 if a.dtype == np.uint8 else a
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)


def test_oracle_reading_and_edit_outcome_on_rendered_scenes():
    spec = Spec((Group("red", "circle"), Group("blue", "square")), (Relation(0, "left of", 1),))
    render = ground_truth_generator(64)
    for kind, value in (("colour", "green"), ("shape", "triangle"), ("relation", "above")):
        new = q6.edited(spec, kind, value)
        before, after = render([write_caption(spec), write_caption(new)], [0, 0])
        assert q6.read_value(detect(after), new, kind) == value
        rb = q6._record(_chw(before), spec, kind, "x", 0)
        ra = q6._record(_chw(after), new, kind, value, 0)
        assert q6.edit_outcome(rb, ra, kind) == (True, True)
    # the other object lost its colour, or kept it but moved: the edit followed, the rest was not kept
    rb_ok = {"checks": [["group 0 colour", True], ["group 1 colour", True]], "centres": [[10, 10], [40, 40]]}
    ra_bad = {"checks": [["group 0 colour", True], ["group 1 colour", False]], "centres": [[10, 10], None]}
    assert q6.edit_outcome(rb_ok, ra_bad, "colour") == (True, False)
    moved = {"checks": rb_ok["checks"], "centres": [[10, 10], [40, 40 + q6.MOVE_TOLERANCE + 1]]}
    assert q6.edit_outcome(rb_ok, moved, "colour") == (True, False)
    assert q6.edit_outcome(rb_ok, moved, "relation") == (True, True)  # a relation edit may move the objects
    stayed = {"checks": rb_ok["checks"], "centres": [[10, 10], [40, 40 + q6.MOVE_TOLERANCE - 1]]}
    assert q6.edit_outcome(rb_ok, stayed, "shape") == (True, True)


def test_experiment_runs_end_to_end_and_resumes(pipe, tmp_path, monkeypatch):
    monkeypatch.setitem(q6.SIZES, "prompts", (1, 1))
    monkeypatch.setitem(q6.SIZES, "seeds", (1, 1))
    kinds = ("colour", "relation")
    monkeypatch.setitem(q6.SIZES, "kinds", (kinds, kinds))
    monkeypatch.setitem(q6.SIZES, "values", (3, 3))
    monkeypatch.setitem(q6.SIZES, "steps", (2, 2))
    monkeypatch.setattr(q6, "IMAGE_SIZE", (32, 32))
    ctx = ReportContext(tmp_path, "quick", experiment_id="q6.decomposition", progress=False)
    ctx._pipes["shipped"] = pipe
    finding = q6.run(ctx)
    rows, edits = finding.tables[0].rows, finding.tables[0].columns.index("edits")
    assert [r[0] for r in rows] == list(q6.METHODS) and all(r[edits] == 4 for r in rows)  # 2 kinds x 2 edits
    for m in q6.METHODS:
        v, lo, hi = finding.numbers[f"control_{m}"]
        assert math.isfinite(v) and lo <= v <= hi
    assert finding.verdict in ("holds", "partly holds", "does not hold", "no difference")
    assert [r[:2] for r in finding.tables[1].rows] == [[m, k] for m in q6.METHODS for k in kinds]  # MI of each
    for f in finding.figures:
        assert (tmp_path / f.file).is_file()
    monkeypatch.setattr(q6, "run_unit", lambda *a, **k: pytest.fail("a cached unit was computed again"))
    again = q6.run(ctx)
    assert again.numbers == finding.numbers
