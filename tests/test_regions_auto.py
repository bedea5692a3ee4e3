"""Regional prompts from the prompt's own phrases (region_layout="auto", `--region-layout auto`): a region per
object phrase the model's parser reads, placed by the layout planner, on the tiny model and on a tiny SD folder
with the real CLIP BPE tokenizer."""

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.cli import main
from t2ikit.control.regions import Region, batch_regions, layout_regions

PROMPT = "a small red circle to the left of a blue square"
KW = dict(steps=2, guidance=3.0, seed=7, relation_guidance=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _latents(pipe, prompt, **settings):
    return pipe.run(pipe.make_spec(prompt, **{**KW, **settings}), decode=False, progress=False).latents


def test_planned_regions_are_the_object_phrases_in_their_layout_boxes(pipe):
    """Each region is one object phrase the parser reads, its mask the union of the boxes `layout="auto"` plans
    for its instances with the image's seed; generating with them equals generating with those regions given."""
    size = pipe.default_size
    boxes = pipe.plan_boxes(["two red circles left of a blue square"], size, [7])[0]
    regions = layout_regions(boxes, size)
    assert [r.prompt for r in regions] == ["two red circles", "a blue square"]
    two = [b for b in boxes if b.phrase == "two red circles"]
    assert len(two) == 2 and regions[0].mask.sum() == sum((b.x1 - b.x0) * (b.y1 - b.y0) for b in two)
    for mode in ("attention", "noise"):
        boxes = pipe.plan_boxes([PROMPT], size, [7])[0]
        given = [Region(r.prompt, mask=r.mask) for r in layout_regions(boxes, size)]
        auto = _latents(pipe, PROMPT, region_layout="auto", region_mode=mode)
        torch.testing.assert_close(auto, _latents(pipe, PROMPT, regions=given, region_mode=mode), rtol=0, atol=1e-6)
        assert not torch.equal(auto, _latents(pipe, PROMPT))  # the regions act


def test_each_image_gets_its_own_plan_and_a_batch_equals_its_images(pipe):
    prompts = [PROMPT, "a big green triangle"]  # two regions and one: the second image's second region is empty
    batch = batch_regions([], pipe.default_size, 2, [layout_regions(pipe.plan_boxes([p], pipe.default_size, [s])[0],
                                                                    pipe.default_size) for p, s in zip(prompts, (7, 8))])
    assert batch.prompts == [["a small red circle", "a big green triangle"], ["a blue square", ""]]
    assert batch.masks.shape == (2, 2, 16, 16) and batch.masks[1, 1].sum() == 0
    for mode in ("attention", "noise"):
        both = _latents(pipe, prompts, n=2, region_layout="auto", region_mode=mode)
        for k, (prompt, seed) in enumerate([(PROMPT, 7), (PROMPT, 8), (prompts[1], 9), (prompts[1], 10)]):
            one = _latents(pipe, prompt, region_layout="auto", region_mode=mode, seed=seed)
            torch.testing.assert_close(both[k:k + 1], one, rtol=0, atol=1e-4)
        assert not torch.equal(both[0], both[1])  # seeds 7 and 8 plan different layouts


def test_settings_errors_and_the_cli_round_trip(pipe, tmp_path, capsys):
    spec = pipe.make_spec(PROMPT, **KW, region_layout="auto", regions=["0,0,8,8:a green triangle"], bootstrap=0.5)
    settings = spec.settings()
    assert settings["Region layout"] == "auto" and settings["Region mode"] == "attention" and "Regions" in settings
    assert pipe.run(spec, decode=False, progress=False).latents.isfinite().all()  # given + planned + bootstrap
    with pytest.raises(ValueError, match="region_layout must be None or .auto.; got .manual."):
        pipe.make_spec(PROMPT, region_layout="manual")
    with pytest.raises(ValueError, match="region_layout='auto' reads the prompt with the shapes-world parser, "
                                         "which cannot read 'a red blob'"):
        pipe.run(pipe.make_spec("a red blob", **KW, region_layout="auto"), progress=False)
    model, out, again = str(pipe.path), tmp_path / "r.png", tmp_path / "again.png"
    assert main(["generate", PROMPT, "--model", model, "--steps", "2", "--seed", "3", "--region-layout", "auto",
                 "--region-mode", "noise", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "Region layout: auto" in info and "Region mode: noise" in info
    assert main(["generate", "--from", str(out), "--model", model, "--out", str(again), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))  # --from re-runs the plan
    assert main(["generate", "a red blob", "--model", model, "--region-layout", "auto", "--out",
                 str(tmp_path / "x.png"), "--quiet"]) == 2
    assert "cannot read 'a red blob'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bpe_pipe(tmp_path_factory):
    """A tiny SD 1.x folder with the real CLIP BPE tokenizer and no "parser" key: it reads English."""
    from families import make_family_folder

    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(make_family_folder(tmp_path_factory.mktemp("bpe") / "m", "sd1", max_length=32))


def test_english_object_phrases_become_regions_on_an_sd_folder_with_clip_bpe(bpe_pipe):
    prompt = "a red cat to the left of a small blue dog in the style of an oil painting"
    boxes = bpe_pipe.plan_boxes([prompt], bpe_pipe.default_size, [7])[0]
    assert [r.prompt for r in layout_regions(boxes, bpe_pipe.default_size)] == ["a red cat", "a small blue dog"]
    cat, dog = boxes
    assert cat.x0 + cat.x1 < dog.x0 + dog.x1  # the cat's region is left of the dog's
    for mode in ("attention", "noise"):
        auto = _latents(bpe_pipe, prompt, region_layout="auto", region_mode=mode)
        assert auto.isfinite().all() and not torch.equal(auto, _latents(bpe_pipe, prompt))
    with pytest.raises(ValueError, match="english parser, which cannot read 'a cat to the left of': the relation "
                                         "'to the left of' has no object phrase after it"):
        bpe_pipe.run(bpe_pipe.make_spec("a cat to the left of", **KW, region_layout="auto"), progress=False)


def test_the_web_ui_backend_reaches_planned_regions(pipe, tmp_path):
    pytest.importorskip("gradio")  # the backend is plain Python; the UI extra is installed with the tests in CI
    from t2ikit.ui.backend import Backend, GenerateRequest

    backend = Backend(str(pipe.path), outdir=tmp_path)
    spec, _ = backend.make_spec(GenerateRequest(PROMPT, seed=1, steps=2, region_layout=True, region_mode="noise"))
    assert spec.region_layout == "auto" and spec.settings()["Region mode"] == "noise"


def test_layout_many_relations_reads_english_on_an_sd_folder_with_clip_bpe(bpe_pipe):
    """layout="many+relations" boxes the English prompt that states a relation and leaves the one that does not."""
    prompts = ["a red cat to the left of a small blue dog", "a red cat and a blue dog"]
    kw = dict(steps=2, guidance=3.0, relation_guidance=0.0, box_guidance=200.0)
    assert bpe_pipe.boxed_prompts(prompts, "many+relations") == [True, False]
    batch = bpe_pipe.run(bpe_pipe.make_spec(prompts, seed=7, layout="many+relations", **kw), decode=False,
                         progress=False).latents
    boxed = bpe_pipe.run(bpe_pipe.make_spec(prompts[0], seed=7, layout="auto", **kw), decode=False,
                         progress=False).latents
    unboxed = bpe_pipe.run(bpe_pipe.make_spec(prompts[1], seed=8, **kw), decode=False, progress=False).latents
    assert torch.allclose(batch[0], boxed[0], atol=1e-4) and torch.allclose(batch[1], unboxed[0], atol=1e-4)
    assert not torch.allclose(boxed, bpe_pipe.run(bpe_pipe.make_spec(prompts[0], seed=7, **kw), decode=False,
                                                  progress=False).latents, atol=1e-5)  # the boxes did act
