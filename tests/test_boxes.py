"""Boxes (control.boxes) and the layout planner (control.layout): parsing, the energy, the latent update, the
attention mask, plans that hold their relations, and the pipeline and CLI paths."""

import json

import numpy as np
import pytest
import torch
from tiny import make_tiny_sd_folder

from t2ikit.cli import main
from t2ikit.control.boxes import Box, BoxAttentionHook, BoxGuidance, box_loss, box_targets, parse_box
from t2ikit.control import layout
from t2ikit.control.layout import SIDES, check_gap, check_sides, draw_layout, object_size, plan_layout
from t2ikit.pipeline import T2IPipeline
from t2ikit.text.parser import ObjectPhrase, PromptStructure, RelationPhrase, get_parser

SIZE = 16  # the tiny folder's images


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path_factory.mktemp("boxes") / "m", "dpmpp_2m"))


def test_boxes_parse_and_bad_ones_say_why():
    assert parse_box(" 0, 2,8,10 : a red circle", (16, 16)) == Box(0, 2, 8, 10, "a red circle")
    assert parse_box("0,2,8,10:a red circle").spec() == "0,2,8,10:a red circle"
    for text, why in [("0,0,8:a red circle", "x0,y0,x1,y1:phrase"), ("0,0,8,8:", "x0,y0,x1,y1:phrase"),
                      ("0,0,8,8", "x0,y0,x1,y1:phrase"), ("4,0,2,8:a red circle", "not inside"),
                      ("0,0,8,17:a red circle", "not inside the 16x16 image")]:
        with pytest.raises(ValueError, match=why):
            parse_box(text, (16, 16))


def test_targets_find_each_phrase_per_image_and_refuse_a_missing_one(pipe):
    boxes = [Box(0, 0, 8, 8, "red circle"), Box(8, 8, 16, 16, "blue square"), Box(0, 8, 8, 16, "red circle")]
    member, masks, real = box_targets(pipe.tokenizer, ["a red circle and a blue square"], [boxes], (16, 16))
    assert member.shape[:2] == (1, 2) and masks.shape == (1, 2, 2, 16, 16)
    assert real.tolist() == [[[True, True], [True, False]]]  # "red circle" has two boxes, "blue square" one
    assert member[0, 0].sum() == 2 and member[0, 1].sum() == 2  # two words each (word-level tokenizer)
    assert masks[0, 0, 1, 8:, :8].all() and masks[0, 0, 1].sum() == 64
    with pytest.raises(ValueError, match="'green triangle' is not a phrase of the prompt"):
        box_targets(pipe.tokenizer, ["a red circle"], [[Box(0, 0, 8, 8, "green triangle")]], (16, 16))


def _maps(inside: float) -> list:
    """One 4x4 layer: token 1 puts `inside` of its attention on the top-left 2x2 cells, the rest spread."""
    a = torch.full((1, 1, 16, 3), 1.0 / 16)
    cells = torch.full((4, 4), (1 - inside) / 12)
    cells[:2, :2] = inside / 4
    a[0, 0, :, 1] = cells.flatten()
    return [((4, 4), a)]


def test_energy_falls_as_the_phrase_attends_inside_its_box():
    member = torch.tensor([[[0.0, 1.0, 0.0]]])
    masks = torch.zeros(1, 1, 1, 16, 16)
    masks[..., :8, :8] = 1
    real = torch.ones(1, 1, 1, dtype=torch.bool)
    energies = [float(box_loss(_maps(f), member, masks, real)) for f in (0.1, 0.5, 0.9, 1.0)]
    assert energies == sorted(energies, reverse=True) and energies[-1] == pytest.approx(0.0, abs=1e-6)
    # a box with no peak in it costs the presence term; an image without the phrase costs nothing
    assert float(box_loss(_maps(0.0), member, masks, real)) == pytest.approx(2.0)
    assert float(box_loss(_maps(0.0), torch.zeros_like(member), masks, real)) == 0.0


def test_guidance_moves_the_latent_each_image_on_its_own(pipe):
    prompts = ["a red circle and a blue square", "a green triangle"]
    boxes = [[Box(0, 0, 8, 8, "red circle")], [Box(8, 8, 16, 16, "green triangle")]]

    def run(**kw):
        spec = pipe.make_spec(prompts, steps=3, seed=4, relation_guidance=0.0, **kw)
        return pipe.run(spec, decode=False, progress=False, updates=[])

    plain = pipe.make_spec(prompts, steps=3, seed=4, relation_guidance=0.0)
    cond = pipe.encode_text(prompts)
    guided = pipe.run(plain, decode=False, progress=False,
                      updates=[BoxGuidance(pipe.unet, pipe.tokenizer, prompts, cond, boxes, (SIZE, SIZE), 200.0,
                                           steps=2)]).latents
    base = run().latents
    assert not torch.allclose(guided, base, atol=1e-5)
    one = pipe.run(pipe.make_spec(prompts[1], steps=3, seed=5, relation_guidance=0.0), decode=False, progress=False,
                   updates=[BoxGuidance(pipe.unet, pipe.tokenizer, prompts[1:], cond[1:], boxes[1], (SIZE, SIZE),
                                        200.0, steps=2)]).latents
    torch.testing.assert_close(one[0], guided[1], atol=1e-4, rtol=0)  # a batch equals its items (batched passes reorder float sums)


def test_attention_mask_hides_a_phrase_outside_its_box_in_the_prompt_rows_only():
    from t2ikit.attention.processor import AttentionContext

    member = torch.tensor([[[0.0, 1.0, 0.0]]])
    masks = torch.zeros(1, 1, 1, 4, 4)
    masks[..., :2, :2] = 1
    hook = BoxAttentionHook(member, masks, fraction=0.5)
    probs = torch.full((2, 1, 16, 3), 1 / 3)
    ctx = AttentionContext("l", True, 0, 4, 1.0, 16, (4, 4), True, ("uncond", "text"))
    out = hook.on_probs(ctx, probs)
    torch.testing.assert_close(out[0], probs[0])  # the unconditional row is left alone
    q = out[1, 0].reshape(4, 4, 3)
    assert (q[:2, :2, 1] > 0.3).all() and (q[2:, :, 1] == 0).all() and (q[:, 2:, 1] == 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 1, 16))
    assert not hook.applies(AttentionContext("l", True, 2, 4, 1.0, 16, (4, 4), True))  # past half the steps


def test_plans_place_every_instance_apart_with_their_relations_and_sizes():
    parse = get_parser("shapes-world").parse
    structure = parse("three small red squares above a big blue circle")
    plan = plan_layout(structure, (64, 64), seed=1)
    assert [b.phrase for b in plan] == ["three small red squares"] * 3 + ["a big blue circle"]
    sides = [b.x1 - b.x0 for b in plan]
    assert sides[0] < sides[3]  # small vs big
    for i, a in enumerate(plan):
        assert 0 <= a.x0 < a.x1 <= 64 and 0 <= a.y0 < a.y1 <= 64
        for b in plan[i + 1:]:
            assert a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0  # apart
    circle_x, circle_y = (plan[3].x0 + plan[3].x1) / 2, (plan[3].y0 + plan[3].y1) / 2
    assert all((b.y0 + b.y1) / 2 < circle_y for b in plan[:3])  # the squares above the circle
    assert layout.DOMINANCE == 1.5  # ... and clearly so: 1.5 times as far above as aside (the dominant-axis reading)
    assert all(circle_y - (b.y0 + b.y1) / 2 >= 1.5 * abs((b.x0 + b.x1) / 2 - circle_x) for b in plan[:3])
    assert plan_layout(structure, (64, 64), seed=1) == plan and plan_layout(structure, (64, 64), seed=2) != plan
    english = get_parser("english").parse("a cat to the left of a dog")
    cat, dog = plan_layout(english, (512, 512), seed=3)
    assert (cat.x0 + cat.x1) / 2 < (dog.x0 + dog.x1) / 2
    assert object_size(("tiny", "red")) == "small" and object_size(("huge",)) == "large"
    both_ways = PromptStructure("a cat and a dog", (ObjectPhrase(0, 5, 2, 5, 0), ObjectPhrase(10, 15, 12, 15, 1)),
                                (RelationPhrase(0, "left of", 1), RelationPhrase(1, "left of", 0)))
    with pytest.raises(ValueError, match="no layout of 2 boxes apart"):
        plan_layout(both_ways, (64, 64), seed=0)
    assert draw_layout(plan, (64, 64)).size == (256, 256)


def test_plans_keep_the_gap_between_boxes_and_shrink_them_when_it_does_not_fit(monkeypatch):
    parse = get_parser("shapes-world").parse
    crowded = parse("three big yellow squares and a big blue square")
    monkeypatch.setattr(layout, "GAP", 0.0)
    touching = [plan_layout(crowded, (64, 64), seed=s) for s in range(20)]

    def apart(a, b):  # the empty pixels between two boxes along the axis that separates them
        return max(b.x0 - a.x1, a.x0 - b.x1, b.y0 - a.y1, a.y0 - b.y1)

    assert min(apart(a, b) for p in touching for i, a in enumerate(p) for b in p[i + 1:]) < 3  # some touch
    for gap, px in ((0.1, 6), (0.25, 16)):
        monkeypatch.setattr(layout, "GAP", gap)
        for s in range(20):
            plan = plan_layout(crowded, (64, 64), seed=s)
            assert len(plan) == 4
            assert all(apart(a, b) >= px for i, a in enumerate(plan) for b in plan[i + 1:])
            assert gap < 0.25 or plan[0].x1 - plan[0].x0 < 24  # four 24 px boxes 16 px apart do not fit in 64 px
    monkeypatch.setattr(layout, "GAP", 0.6)  # nor four boxes 38 px apart at any size
    with pytest.raises(ValueError, match="no layout of 4 boxes apart"):
        plan_layout(crowded, (64, 64), seed=0)


def test_a_model_sets_its_own_box_sizes_and_bad_ones_are_refused(tmp_path, capsys):
    structure = get_parser("shapes-world").parse("a small red square above a big blue circle")
    small, big = plan_layout(structure, (64, 64), seed=1, sides={"small": 0.17, "large": 0.33})
    assert (small.x1 - small.x0, big.x1 - big.x0) == (round(0.17 * 64), round(0.33 * 64))
    assert check_sides({"small": 0.2}) == {**SIDES, "small": 0.2}
    for bad, why in [({"tiny": 0.1}, "unknown size class 'tiny'"), ({"large": 1.5}, r"in \(0, 1\)"),
                     ({"small": "0.2"}, r"in \(0, 1\)"), ([0.2], "must map size classes")]:
        with pytest.raises(ValueError, match=why):
            check_sides(bad)
    # a model folder's t2ikit.json "layout_sides" reaches generate's planner and `t2ikit layout`
    folder = make_tiny_sd_folder(tmp_path / "m", "dpmpp_2m")
    config = json.loads((folder / "t2ikit.json").read_text())
    (folder / "t2ikit.json").write_text(json.dumps({**config, "layout_sides": {"small": 0.5}}))
    pipe = T2IPipeline.from_folder(folder)
    assert pipe.layout_sides["small"] == 0.5
    [box] = pipe.plan_boxes(["a small red circle"], (16, 16), [0])[0]
    assert box.x1 - box.x0 == 8
    assert main(["layout", "a small red circle", "--model", str(folder), "--json"]) == 0
    [planned] = json.loads(capsys.readouterr().out)["boxes"]
    assert planned["box"][2] - planned["box"][0] == 8
    (folder / "t2ikit.json").write_text(json.dumps({**config, "layout_sides": {"small": 2}}))
    with pytest.raises(ValueError, match="t2ikit.json: layout_sides"):
        T2IPipeline.from_folder(folder)
    # ... and its "layout_gap" (a fraction of the side: 0.25 of 32 px = 8 px between boxes), checked the same way
    (folder / "t2ikit.json").write_text(json.dumps({**config, "layout_sides": {"small": 0.25}, "layout_gap": 0.25}))
    pipe = T2IPipeline.from_folder(folder)
    assert main(["layout", "three small red circles", "--model", str(folder), "--size", "32x32", "--json"]) == 0
    planned = [b["box"] for b in json.loads(capsys.readouterr().out)["boxes"]]
    plans = [[list(b.xyxy) for b in pipe.plan_boxes(["three small red circles"], (32, 32), [s])[0]] for s in range(5)]
    assert plans[0] == planned  # the CLI plans as generate does (seed 0)
    for plan in plans:
        assert len(plan) == 3 and all(max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) >= 8
                                      for i, a in enumerate(plan) for b in plan[i + 1:])
    assert check_gap(None) == layout.GAP and check_gap(0.1) == 0.1
    for bad in (0.5, -0.1, "0.1", True):
        with pytest.raises(ValueError, match=r"layout_gap must be a fraction of the image side in \[0, 0.5\)"):
            check_gap(bad)
    (folder / "t2ikit.json").write_text(json.dumps({**config, "layout_gap": 0.9}))
    with pytest.raises(ValueError, match="t2ikit.json: layout_gap"):
        T2IPipeline.from_folder(folder)


def test_generate_with_boxes_and_with_a_planned_layout(pipe):
    base = dict(steps=3, seed=2, relation_guidance=0.0)
    plain = pipe.run(pipe.make_spec("a red circle", **base), decode=False, progress=False).latents
    boxed = pipe.run(pipe.make_spec("a red circle", boxes=["0,0,8,8:red circle"], box_guidance=200.0, **base),
                     decode=False, progress=False)
    assert not torch.allclose(boxed.latents, plain, atol=1e-5)
    assert boxed.spec.settings()["Boxes"] == "0,0,8,8:red circle"
    masked = pipe.run(pipe.make_spec("a red circle", boxes=["0,0,8,8:red circle"], box_guidance=0.0, box_mask=1.0,
                                     **base), decode=False, progress=False).latents
    assert not torch.allclose(masked, plain, atol=1e-5)  # the mask alone acts too
    planned = pipe.run(pipe.make_spec(["a red circle above a blue square", "two green triangles"], layout="auto",
                                      box_guidance=200.0, **base), decode=False, progress=False)
    assert planned.spec.settings()["Layout"] == "auto" and torch.isfinite(planned.latents).all()
    for bad, why in [(dict(boxes=["0,0,8,8:a blue square"]), "not a phrase of the prompt"),
                     (dict(boxes=["0,0,8,8:red circle"], layout="auto"), "not both"),
                     (dict(layout="manual"), "layout must be one of"),
                     (dict(boxes=["0,0,8,8:red circle"], box_mask=2.0), "box_mask must be"),
                     (dict(layout="auto", prompt="a red blob"), "cannot read")]:
        prompt = bad.pop("prompt", "a red circle")
        with pytest.raises(ValueError, match=why):
            pipe.run(pipe.make_spec(prompt, **base, **bad), progress=False)


def test_cli_box_layout_and_plan(pipe, tmp_path, capsys):
    model = str(pipe.path)
    out = tmp_path / "b.png"
    assert main(["generate", "a red circle above a blue square", "--model", model, "--steps", "2", "--seed", "1",
                 "--box", "0,0,16,8:red circle", "--box", "0,8,16,16:blue square", "--out", str(out),
                 "--quiet"]) == 0
    assert main(["info", str(out)]) == 0
    assert "Boxes: \"0,0,16,8:red circle; 0,8,16,16:blue square\"" in capsys.readouterr().out
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--model", model, "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(__import__("PIL.Image").Image.open(out)),
                          np.asarray(__import__("PIL.Image").Image.open(again)))  # the PNG re-runs its boxes
    capsys.readouterr()
    assert main(["layout", "two red circles left of a blue square", "--model", model, "--json", "--seed", "3",
                 "--out", str(tmp_path / "plan.png")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [b["phrase"] for b in plan["boxes"]] == ["two red circles"] * 2 + ["a blue square"]
    assert (tmp_path / "plan.png").is_file()
    assert main(["generate", "a red circle", "--model", model, "--box", "0,0,8,8:blue square",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "not a phrase of the prompt" in capsys.readouterr().err
    assert main(["generate", "a red circle", "--model", model, "--box-guidance", "5",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "give --box or a --layout" in capsys.readouterr().err


def test_the_web_ui_backend_reaches_boxes_and_layouts(pipe, tmp_path):
    pytest.importorskip("gradio")  # the backend is plain Python; the UI extra is installed with the tests in CI
    from t2ikit.ui.backend import Backend, GenerateRequest

    backend = Backend(str(pipe.path), outdir=tmp_path)
    spec, _ = backend.make_spec(GenerateRequest("a red circle above a blue square", seed=1, steps=2,
                                                regions=[[0, 0, 16, 8, "red circle"]], region_mode="boxes"))
    assert spec.boxes == [parse_box("0,0,16,8:red circle")] and spec.regions == []
    spec, _ = backend.make_spec(GenerateRequest("a red circle above a blue square", seed=1, steps=2, layout="auto"))
    assert spec.layout == "auto" and "Layout" in spec.settings()


def test_layout_many_boxes_only_the_prompts_naming_several_objects(pipe, tmp_path):
    from t2ikit.control.layout import names_many

    parser = get_parser("shapes-world")
    assert [names_many(parser.parse(p)) for p in ("two red circles", "a red circle above a blue square",
                                                  "a red circle, a blue square and a green triangle")] == \
        [True, False, True]
    base = dict(steps=3, relation_guidance=200.0, box_guidance=200.0)
    prompts = ["two red circles left of a blue square", "a red circle above a blue square"]
    batch = pipe.run(pipe.make_spec(prompts, seed=4, layout="many", **base), decode=False, progress=False)
    assert batch.spec.settings()["Layout"] == "many"
    # the first image as layout="auto" without relation guidance, the second as without a layout; a batch = its items
    boxed = pipe.run(pipe.make_spec(prompts[0], seed=4, layout="auto", **{**base, "relation_guidance": 0.0}),
                     decode=False, progress=False).latents
    related = pipe.run(pipe.make_spec(prompts[1], seed=5, **base), decode=False, progress=False).latents
    assert torch.allclose(batch.latents[0], boxed[0], atol=1e-4)  # latents up to ~60: float noise of a batch
    assert torch.allclose(batch.latents[1], related[0], atol=1e-4)
    assert not torch.allclose(boxed, pipe.run(pipe.make_spec(prompts[0], seed=4, **base), decode=False,
                                              progress=False).latents, atol=1e-5)  # the boxes did act
    with pytest.raises(ValueError, match="layout='many' reads each prompt .* cannot read 'a red blob'"):
        pipe.make_spec("a red blob", layout="many")
    with pytest.raises(ValueError, match="region_layout must be None or 'auto'"):
        pipe.make_spec("two red circles", region_layout="many")
    # a model whose t2ikit.json defaults to it: free text passes unboxed, "none" turns it off
    folder = tmp_path / "many"
    __import__("shutil").copytree(pipe.path, folder)
    config = json.loads((folder / "t2ikit.json").read_text())
    (folder / "t2ikit.json").write_text(json.dumps({**config, "defaults": {"layout": "many"}}))
    many = T2IPipeline.from_folder(folder)
    assert many.make_spec("two red circles").layout == "many"
    assert many.make_spec("two red circles", layout="none").layout is None
    assert many.make_spec("two red circles", boxes=["0,0,8,8:red circles"]).layout is None  # boxes replace it
    blob = many.run(many.make_spec("a red blob", seed=1, steps=2), decode=False, progress=False).latents
    assert torch.equal(blob, pipe.run(pipe.make_spec("a red blob", seed=1, steps=2), decode=False,
                                      progress=False).latents)


def test_layout_many_relations_also_boxes_the_prompts_stating_a_relation_and_keeps_their_relation_guidance(pipe):
    from t2ikit.control.layout import boxed

    parser = get_parser("shapes-world")
    prompts = ["a red circle above a blue square", "a red circle and a blue square", "two red circles"]
    assert [boxed(parser.parse(p), "many+relations") for p in prompts] == [True, False, True]
    assert [boxed(parser.parse(p), "many") for p in prompts] == [False, False, True]
    with pytest.raises(ValueError, match="got 'auto'"):
        boxed(parser.parse(prompts[0]), "auto")
    base = dict(steps=3, relation_guidance=200.0, box_guidance=200.0)
    batch = pipe.run(pipe.make_spec(prompts[:2], seed=4, layout="many+relations", **base), decode=False,
                     progress=False)
    assert batch.spec.settings()["Layout"] == "many+relations"
    # the first image as layout="auto" with relation guidance on, the second as without a layout; a batch = its items
    boxed_rg = pipe.run(pipe.make_spec(prompts[0], seed=4, layout="auto", **base), decode=False,
                        progress=False).latents
    plain = pipe.run(pipe.make_spec(prompts[1], seed=5, **base), decode=False, progress=False).latents
    assert torch.allclose(batch.latents[0], boxed_rg[0], atol=1e-4)
    assert torch.allclose(batch.latents[1], plain[0], atol=1e-4)
    boxes_alone = pipe.run(pipe.make_spec(prompts[0], seed=4, layout="auto", **{**base, "relation_guidance": 0.0}),
                           decode=False, progress=False).latents
    assert not torch.allclose(boxed_rg, boxes_alone, atol=1e-5)  # relation guidance did act beside the boxes
    with pytest.raises(ValueError, match="layout='many\\+relations' reads each prompt .* cannot read 'a red blob'"):
        pipe.make_spec("a red blob", layout="many+relations")
    from t2ikit.cli import build_parser
    from t2ikit.control.layout import LAYOUTS

    for layout in ("none", *LAYOUTS[1:]):  # the CLI offers every layout
        assert build_parser().parse_args(["generate", "two red circles", "--layout", layout]).layout == layout


def test_cli_layout_many_is_recorded_and_a_png_without_it_reruns_without_the_models_default(pipe, tmp_path, capsys):
    folder = tmp_path / "many"
    __import__("shutil").copytree(pipe.path, folder)
    config = json.loads((folder / "t2ikit.json").read_text())
    (folder / "t2ikit.json").write_text(json.dumps({**config, "defaults": {"layout": "many"}}))
    common = ["--model", str(folder), "--steps", "2", "--seed", "1", "--quiet"]
    made, off = tmp_path / "m.png", tmp_path / "off.png"
    assert main(["generate", "three red circles", *common, "--out", str(made)]) == 0
    assert main(["generate", "three red circles", *common, "--layout", "none", "--out", str(off)]) == 0
    capsys.readouterr()
    assert main(["info", str(made)]) == 0 and "Layout: many" in capsys.readouterr().out
    assert main(["info", str(off)]) == 0 and "Layout" not in capsys.readouterr().out
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(off), "--model", str(folder), "--out", str(again), "--quiet"]) == 0
    image = __import__("PIL.Image").Image
    assert np.array_equal(np.asarray(image.open(off)), np.asarray(image.open(again)))
    assert not np.array_equal(np.asarray(image.open(off)), np.asarray(image.open(made)))


def test_layout_many_picks_exactly_the_counting_and_complex_items_of_compbench():
    """docs/BOXES.md: on CompBench's usual suite and the fresh one its test ran on, names_many picks the counting and
    complex items and no other (so "many" is the default everywhere else)."""
    from t2ikit.bench import compbench as cb
    from t2ikit.control.layout import names_many

    parser = get_parser("shapes-world")
    for bench_seed in (cb.BENCH_SEED, 0x5EED26):
        for split in cb.SPLITS:
            suite = cb.make_suite(split, 100, 1, bench_seed=bench_seed)
            picked = {(it.category, names_many(parser.parse(it.prompt))) for it in suite.items}
            assert picked == {(c, c in ("counting", "complex")) for c in cb.CATEGORIES}
