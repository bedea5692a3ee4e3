"""T2IPipeline: loading folders, validation before compute, batch == singles, defaults."""

import json
import shutil

import pytest
import torch

from t2ikit.pipeline import T2IPipeline, write_model_defaults
from t2ikit.text import PromptWarning


def test_generate_returns_pil_images_of_the_default_size(pipe):
    images = pipe.generate("a red circle", steps=2, n=2, progress=False)
    assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "RGB"
    assert pipe.default_size == (16, 16) and pipe.vae_scale_factor == 2
    assert pipe.defaults["guidance"] == 4.0  # word-level model default


def test_same_seed_same_image_other_seed_other_image(pipe):
    run = lambda seed: pipe.run(pipe.make_spec("a blue square", steps=2, seed=seed), progress=False).latents  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_a"])  # euler_a also draws step noise
def test_batch_equals_items_one_by_one(pipe, sampler):
    prompts = ["a red circle", "two small blue squares"]
    batch = pipe.run(pipe.make_spec(prompts, "green", steps=3, seed=10, n=2, sampler=sampler), progress=False)
    assert batch.seeds == [10, 11, 12, 13] and batch.latents.shape[0] == 4
    for k, prompt in enumerate([p for p in prompts for _ in range(2)]):
        single = pipe.run(pipe.make_spec(prompt, "green", steps=3, seed=10 + k, sampler=sampler), progress=False)
        torch.testing.assert_close(batch.latents[k : k + 1], single.latents, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batch.images[k : k + 1], single.images, atol=1e-5, rtol=1e-5)


def test_negative_prompt_and_guidance_change_the_result(pipe):
    run = lambda **kw: pipe.run(pipe.make_spec("a red circle", steps=2, **kw), progress=False).latents  # noqa: E731
    assert not torch.allclose(run(guidance=5.0), run(guidance=5.0, negative_prompt="blue"))
    assert not torch.allclose(run(guidance=5.0), run(guidance=1.0))
    assert run(guidance=0.0).isfinite().all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "plms_fancy"}, "unknown sampler 'plms_fancy'"),
        ({"size": (15, 16)}, "multiples of 2"),
        ({"size": (16,)}, "size must be"),
        ({"steps": 0}, "steps must be an int >= 1; got 0"),
        ({"guidance": -1.0}, "guidance must be a finite number >= 0"),
        ({"guidance": float("nan")}, "guidance"),
        ({"n": 0}, "n \\(images per prompt\\)"),
        ({"seed": -1}, "seed"),
        ({"prompt": []}, "prompt must be"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "3 entries for 2 prompts"),
    ],
)
def test_bad_input_raises_before_compute(pipe, kwargs, message, monkeypatch):
    monkeypatch.setattr(pipe, "encode_text", lambda *a: pytest.fail("computed before validating"))
    kwargs = {"prompt": "a red circle", **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe.generate(**kwargs, progress=False)


def test_prompt_warnings_reach_the_caller(pipe):
    with pytest.warns(PromptWarning, match="zebra"):
        pipe.generate("a zebra", steps=1, progress=False)
    with pytest.warns(PromptWarning, match="unconditionally"):
        pipe.generate("", steps=1, progress=False)


def test_missing_folder_and_missing_parts(tmp_path, folder):
    with pytest.raises(ValueError, match="does not exist"):
        T2IPipeline.from_folder(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "vae")
    (broken / "model_index.json").unlink()
    with pytest.raises(ValueError, match="missing: model_index.json, vae/config.json, vae/\\*.safetensors"):
        T2IPipeline.from_folder(broken)


def test_pickle_weights_are_refused(tmp_path, folder):
    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match="pickle-format weights \\(unet/diffusion_pytorch_model.bin\\)"):
        T2IPipeline.from_folder(pickled)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80")
    with pytest.raises(ValueError, match="single-file checkpoint"):
        T2IPipeline.from_folder(ckpt)


def test_corrupt_folder_is_a_value_error(tmp_path, folder):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(folder, corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="could not be loaded"):
        T2IPipeline.from_folder(corrupt)
    (corrupt / "model_index.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt JSON"):
        T2IPipeline.from_folder(corrupt)


def test_folder_defaults_are_read(tmp_path, folder):
    own = tmp_path / "own"
    shutil.copytree(folder, own)
    write_model_defaults(own, guidance=2.5, steps=3, sampler="ddim")
    assert json.loads((own / "t2ikit.json").read_text())["defaults"]["guidance"] == 2.5
    spec = T2IPipeline.from_folder(own).make_spec("a red circle")
    assert (spec.guidance, spec.steps, spec.sampler) == (2.5, 3, "ddim")
    with pytest.raises(ValueError, match="unknown default"):
        write_model_defaults(own, cfg=1)
    (own / "t2ikit.json").write_text(json.dumps({"defaults": {"cfg_scale": 3}}))
    with pytest.raises(ValueError, match="unknown default\\(s\\) \\['cfg_scale'\\]"):
        T2IPipeline.from_folder(own)
    (own / "t2ikit.json").write_text("{}")
    write_model_defaults(own, {"small": 0.2}, layout="many")  # a layout and the planner's box sides
    assert T2IPipeline.from_folder(own).make_spec("two red circles").layout == "many"
    assert json.loads((own / "t2ikit.json").read_text())["layout_sides"] == {"small": 0.2}
    with pytest.raises(ValueError, match=r"layout must be one of none, auto, many, many\+relations; got 'grid'"):
        write_model_defaults(own, layout="grid")
    (own / "t2ikit.json").write_text(json.dumps({"defaults": {"layout": "grid"}}))
    with pytest.raises(ValueError, match="t2ikit.json: default layout must be one of"):
        T2IPipeline.from_folder(own)
    (own / "t2ikit.json").write_text("{}")
    write_model_defaults(own, guidance_rescale=0.7)  # a model may ask for guidance rescale; a call's value wins
    rescaled = T2IPipeline.from_folder(own)
    assert rescaled.make_spec("a red circle").settings()["Guidance rescale"] == 0.7
    assert "Guidance rescale" not in rescaled.make_spec("a red circle", guidance_rescale=0).settings()
    with pytest.raises(ValueError, match=r"model defaults: default guidance_rescale must be a number in \[0, 1\]"):
        write_model_defaults(own, guidance_rescale=2)
    (own / "t2ikit.json").write_text(json.dumps({"defaults": {"guidance_rescale": -1}}))
    with pytest.raises(ValueError, match="t2ikit.json: default guidance_rescale must be"):
        T2IPipeline.from_folder(own)
