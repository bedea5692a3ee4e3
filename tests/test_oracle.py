"""The oracle: reads rendered scenes right (clean, noisy, blurred, any resolution and format), fails
images of other scenes and random pixels, and rejects bad input with a sentence."""

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.bench.oracle_bench import degrade
from t2ikit.world.categories import CATEGORIES
from t2ikit.world.oracle import detect, relation_holds, score
from t2ikit.world.render import render_rgb, to_uint8
from t2ikit.world.scene import Group, Obj, Relation, Scene, Spec, Style, sample_scene, with_style

N_SCENES = 30  # per category and condition: a few hundred scenes in all


@pytest.mark.parametrize("category", CATEGORIES)
def test_reads_renders_clean_noisy_and_blurred(category):
    rng = np.random.default_rng(CATEGORIES.index(category))
    for condition in ("clean", "noise", "blur"):
        checks = passed = images = images_passed = 0
        for i in range(N_SCENES):
            scene = sample_scene(77, i, category=category, reference=False)
            s = score(degrade(render_rgb(scene), condition, rng), scene.spec)
            checks += len(s.checks)
            passed += s.n_passed
            images += 1
            images_passed += s.all_passed
        assert passed / checks >= 0.99, (category, condition, passed, checks)
        assert images_passed / images >= 0.95, (category, condition, images_passed)


def _scene(objects, background="white", fill="filled"):
    groups = tuple(Group(o.colour, o.shape, o.size) for o in objects)
    spec = Spec(groups, (), Style(background, fill))
    objs = tuple(Obj(o.colour, o.shape, o.size, o.extent, o.x0, o.y0, 0.5, k) for k, o in enumerate(objects))
    return Scene(spec, objs, background, fill)


def test_detections_name_colour_shape_size_position_and_fill():
    objs = [Obj("red", "circle", "large", 20, 4, 4, 0.5, 0), Obj("blue", "triangle", "small", 12, 40, 10, 0.5, 1),
            Obj("yellow", "diamond", "large", 22, 30, 36, 0.5, 2), Obj("pink", "square", "small", 10, 6, 44, 0.5, 3)]
    for fill in ("filled", "outlined"):
        scene = _scene(objs, background="gray", fill=fill)
        reading = detect(render_rgb(scene))
        assert reading.background == "gray"
        found = {(t.colour, t.shape, t.size) for t in reading.detections}
        assert found == {(o.colour, o.shape, o.size) for o in objs}
        for o in objs:
            t = next(t for t in reading.detections if t.colour == o.colour)
            assert abs(t.centre[0] - o.centre[0]) < 1.0 and abs(t.centre[1] - o.centre[1]) < 1.0, (t, o)
            assert abs(t.extent - o.extent) < 2.0, (t, o)
            if o.shape == "triangle" and o.extent == 12:
                assert t.fill is None or t.fill == fill  # an outline leaves a 12-px triangle almost no inside
            else:
                assert t.fill == fill, (t, fill)


@pytest.mark.parametrize("resolution", [32, 48, 128, 200])
def test_any_resolution_and_format(resolution):
    for i in range(12):
        scene = sample_scene(5, i, category="complex", reference=False)
        rgb = render_rgb(scene, resolution) if resolution % 16 == 0 else \
            np.asarray(Image.fromarray(to_uint8(render_rgb(scene, 64))).resize((resolution,) * 2, Image.NEAREST)) / 255.0
        u8 = to_uint8(rgb)
        forms = [rgb, u8, Image.fromarray(u8), torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))]
        results = [score(f, scene.spec).all_passed for f in forms]
        assert len(set(results)) == 1, results
        if resolution >= 48:
            assert results[0], score(rgb, scene.spec).failures()


def test_fails_images_of_other_scenes_and_random_pixels():
    rng = np.random.default_rng(0)
    wrong = noise = n = 0
    for category in CATEGORIES:
        for i in range(15):
            a = sample_scene(9, i, category=category, reference=False)
            b = sample_scene(9, i + 100, category=category, reference=False)
            wrong += score(render_rgb(b), a.spec).all_passed
            noise += score(rng.random((64, 64, 3)), a.spec).all_passed
            n += 1
    assert wrong / n <= 0.05, wrong
    assert noise == 0


def test_each_kind_of_wrong_statement_fails():
    scene = sample_scene(1, 0, category="spatial", reference=False)
    image = render_rgb(scene)
    spec = scene.spec
    assert score(image, spec).all_passed
    r = spec.relations[0]
    flipped = Spec(spec.groups, (Relation(r.subject, {"left of": "right of", "right of": "left of", "above": "below",
                                                      "below": "above"}[r.relation], r.object),))
    s = score(image, flipped)
    assert not s.all_passed and [c.kind for c in s.failures()] == ["relation"]
    g0, g1 = spec.groups
    swapped = Spec((Group(g1.colour, g0.shape, g0.size), Group(g0.colour, g1.shape, g1.size)))
    assert "colour" in {c.kind for c in score(image, swapped).failures()}
    counted = Spec((Group(g0.colour, g0.shape, g0.size, 2), g1))
    assert {c.kind for c in score(image, counted).failures()} == {"count"}
    size = scene.objects[0].size
    other = {"small": "large", "large": "small"}[size]
    assert {c.kind for c in score(image, Spec((Group(g0.colour, g0.shape, other),))).failures()} == {"size"}
    assert {c.kind for c in score(image, with_style(spec, background="black")).failures()} == {"background"}
    big = _scene([Obj("green", "square", "large", 20, 10, 10, 0.5, 0)])
    assert {c.kind for c in score(render_rgb(big), with_style(big.spec, fill="outlined")).failures()} == {"fill"}


def test_relation_rule():
    assert relation_holds((10, 30), "left of", (30, 32))
    assert not relation_holds((10, 30), "right of", (30, 32))
    assert not relation_holds((10, 10), "left of", (30, 40))  # the vertical offset dominates
    assert not relation_holds((10, 30), "left of", (11, 30))  # under the margin
    assert relation_holds((30, 50), "below", (32, 10)) and relation_holds((32, 10), "above", (30, 50))


def test_speed():
    import time

    images = [render_rgb(sample_scene(3, i, category="complex", reference=False)) for i in range(20)]
    t0 = time.perf_counter()
    for im in images:
        detect(im)
    assert (time.perf_counter() - t0) / len(images) < 0.05  # a few ms on an idle core; loose for busy CI


@pytest.mark.parametrize("image, match", [
    (np.zeros((64, 64), np.float32), "HxWx3"),
    (np.zeros((64, 64, 4), np.float32), "HxWx3"),
    (np.zeros((64, 48, 3), np.float32), "square"),
    (np.zeros((16, 16, 3), np.float32), "minimum"),
    (np.zeros((64, 64, 3), np.int32), "dtype"),
    (np.full((64, 64, 3), 255.0, np.float32), "divide by 255"),
    (np.full((64, 64, 3), -1.0, np.float32), r"\[-1, 1\]"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    (torch.zeros(1, 3, 64, 64), "CHW"),
    (torch.zeros(64, 64, 3), "CHW"),
    (Image.new("RGBA", (64, 64)), "convert"),
])
def test_bad_images_are_named(image, match):
    spec = Spec((Group("red", "circle"),))
    with pytest.raises(ValueError, match=match):
        score(image, spec)


def test_bad_arguments():
    image = render_rgb(sample_scene(0, 0, reference=False))
    with pytest.raises(TypeError, match="numpy array"):
        score([[0.0]], Spec((Group("red", "circle"),)))
    with pytest.raises(TypeError, match="Spec"):
        score(image, "a red circle")
    with pytest.raises(ValueError, match="unknown colour 'mauve'"):
        score(image, Spec((Group("mauve", "circle"),)))
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        score(image, Spec((Group("red", "star"),)))


def test_world_score_cli_checks_a_file_against_a_given_or_stored_prompt(tmp_path, capsys):
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from t2ikit.cli import main
    from t2ikit.cli.info import PNG_KEY, format_parameters
    from t2ikit.world.caption import parse_caption
    from t2ikit.world.render import render_rgb
    from t2ikit.world.scene import make_scene

    prompt = "a small red circle to the left of a large blue square"
    rgb = render_rgb(make_scene(parse_caption(prompt), np.random.default_rng(0), reference=False), 64)
    pixels = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    info = PngInfo()
    info.add_text(PNG_KEY, format_parameters("a small (red:1.3) circle to the left of a large blue square", None,
                                             {"Steps": 20, "Seed": 0}))
    good, mirrored, bare = tmp_path / "good.png", tmp_path / "mirrored.png", tmp_path / "bare.png"
    Image.fromarray(pixels).save(good, pnginfo=info)
    Image.fromarray(pixels[:, ::-1].copy()).save(mirrored)
    Image.fromarray(pixels).save(bare)

    assert main(["world", "score", str(good), "--json"]) == 0  # the stored prompt, weights read as plain text
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == prompt and out["passed"] and {c["kind"] for c in out["checks"]} >= {"relation", "size"}
    assert main(["world", "score", str(mirrored), "--prompt", prompt]) == 1  # a check failed
    text = capsys.readouterr().out
    assert "FAIL" in text and "MISS relation 0" in text and "ok   group 1 size" in text

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    Image.fromarray(pixels[:, :40].copy()).save(tmp_path / "narrow.png")
    for argv, message in [([str(bare)], "stores none"),
                          ([str(bad), "--prompt", prompt], "cannot be read as an image"),
                          ([str(tmp_path / "missing.png"), "--prompt", prompt], "does not exist"),
                          ([str(tmp_path / "narrow.png"), "--prompt", prompt], "square"),
                          ([str(good), "--prompt", "a red blob"], "a shape")]:
        assert main(["world", "score", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
