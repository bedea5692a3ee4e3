"""The measuring parts of benchmarks/ scripts that carry their own logic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from t2ikit.world.caption import parse_caption
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import RELATION_AXES, make_scene
from t2ikit.world.vocab import COLOURS

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pure_noise_unmixing_reads_the_order_of_two_colours():
    unmixed_order = _script("pure_noise").unmixed_order
    white = (1.0, 1.0, 1.0)
    for caption in ("a red circle to the left of a pink square", "a blue triangle above an orange diamond",
                    "a green square below a cyan circle", "a yellow circle to the right of a purple square"):
        spec = parse_caption(caption)
        rel = spec.relations[0]
        axis, sign = RELATION_AXES[rel.relation]
        a, b = COLOURS[spec.groups[rel.subject].colour], COLOURS[spec.groups[rel.object].colour]
        for seed in range(3):
            image = render_rgb(make_scene(spec, np.random.default_rng(seed), reference=False), 64)
            assert unmixed_order(image, white, a, b, axis, sign) > 4, (caption, seed)
            flipped = image[:, ::-1] if axis == 0 else image[::-1]
            assert unmixed_order(flipped, white, a, b, axis, sign) < -4, (caption, seed)
            # a pale, blurred mean image (what a model should predict from pure noise) keeps its order
            pale = 1 - 0.2 * (1 - image)
            assert unmixed_order(pale, white, a, b, axis, sign) > 4, (caption, seed)
    blank = np.ones((64, 64, 3))
    assert unmixed_order(blank, white, COLOURS["red"], COLOURS["blue"], 0, 1) is None


def test_style_breakdown_reads_the_stated_style_from_the_spec_whatever_the_wording(capsys, tmp_path):
    mod = _script("style_breakdown")
    items = [["style", "an outlined red circle on a black background", 1, False, ["fill: no object seen"]],
             ["style", "a red circle, drawn in outline, against a black background", 2, True],
             ["style", "a filled blue square with a grey background", 3, True],
             ["spatial", "a red circle left of a blue square", 4, True]]
    counts = mod.breakdown({"items": items})
    assert counts == {("outlined", "black"): [1, 2], ("filled", "gray"): [1, 1]}
    import json

    path = tmp_path / "compbench.json"
    path.write_text(json.dumps({"items": items}))
    assert mod.main([f"a={path}"]) == 0
    assert "| outlined | black | 1/2 |" in capsys.readouterr().out


def test_style_misses_sort_failed_items_by_what_the_oracle_saw():
    import torch

    from t2ikit.world.oracle import score

    miss_kind = _script("style_breakdown").miss_kind

    def failures(drawn: str, stated: str) -> list[str]:  # the oracle's messages as CompBench records them
        image = render_rgb(make_scene(parse_caption(drawn), np.random.default_rng(0), reference=False), 64)
        s = score(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float(), parse_caption(stated))
        return [f"{c.name}: {c.detail}" for c in s.failures()]

    assert miss_kind(failures("a filled red square on a black background", "an outlined red square on a black "
                              "background")) == "outlined drawn filled"
    assert miss_kind(failures("a red circle", "a red diamond")) == "diamond read as circle"
    assert miss_kind(failures("a red circle", "a red square")) == "square read as circle"
    assert miss_kind(failures("a blue square", "a red triangle")) == "other"
    # a blob's message (the oracle's words for a shape it could not read), first or after another object
    assert miss_kind(["group 0 colour: yellow diamond: 0 found; seen small yellow blob at (55, 8)"]) == "small blob"
    assert miss_kind(["group 0 colour: purple diamond: 0 found; seen large blue triangle at (33, 34); small purple "
                      "blob at (35, 53)"]) == "small blob"
    assert miss_kind(["group 0 colour: purple circle: 0 found; seen large purple blob at (34, 22)"]) == "large blob"
    assert miss_kind(["group 0 colour: purple diamond: 0 found; seen no objects"]) == "no objects"


def test_filtered_finetune_keeps_passing_images_capped_or_weighted_by_advantage(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    load_kept = _script("filtered_finetune").load_kept
    # prompt 0 passed 1 of 4 images, prompt 1 all 4
    passed = {0: [True, False, False, False], 1: [True, True, True, True]}
    records = [{"prompt_index": p, "category": "style" if p == 0 else "single", "caption": f"caption {p}",
                "seed": j, "all_passed": ok} for p, oks in passed.items() for j, ok in enumerate(oks)]
    (tmp_path / "shard-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    latents = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 4, 2, 2).contiguous()
    save_file({"latents": latents}, str(tmp_path / "shard-0.safetensors"))
    captions, kept, weights, stats = load_kept(tmp_path, per_prompt=2, weighting="cap")
    assert captions == ["caption 0", "caption 1", "caption 1"]
    assert kept[:, 0, 0, 0].tolist() == [0.0, 4.0, 5.0]  # each kept latent is its own image's
    assert weights.tolist() == [1.0, 1.0, 1.0]
    assert stats == {"style": [4, 1, 1], "single": [4, 4, 2]}
    captions, kept, weights, _ = load_kept(tmp_path, per_prompt=2, weighting="advantage")
    assert len(captions) == 5  # every passing image, the hard prompt's weighted up
    assert weights.tolist() == pytest.approx([0.85, 0.1, 0.1, 0.1, 0.1])


def test_merge_models_averages_unet_and_text_encoder_and_refuses_what_cannot_be_averaged(folder, tmp_path):
    import shutil

    import pytest
    import torch
    from safetensors.torch import load_file, save_file

    merge = _script("merge_models").merge
    unet, text = "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"
    b = tmp_path / "b"
    shutil.copytree(folder, b)
    for rel in (unet, text):
        save_file({k: v * 3 + 1 for k, v in load_file(b / rel).items()}, b / rel)
    out = merge(folder, b, 0.25, tmp_path / "m")
    for rel in (unet, text):
        a, m = load_file(folder / rel), load_file(out / rel)
        assert m.keys() == a.keys()
        for k in a:  # a + 0.25 * ((3a + 1) - a)
            torch.testing.assert_close(m[k], a[k] + 0.25 * (2 * a[k] + 1), rtol=1e-5, atol=1e-6)
    assert load_file(out / "vae/diffusion_pytorch_model.safetensors").keys()
    with pytest.raises(ValueError, match="alpha"):
        merge(folder, b, 1.5, tmp_path / "m2")
    with pytest.raises(ValueError, match="exists"):
        merge(folder, b, 0.5, out)
    vae = b / "vae/diffusion_pytorch_model.safetensors"
    save_file({k: v + 1 for k, v in load_file(vae).items()}, vae)
    with pytest.raises(ValueError, match="different vae"):
        merge(folder, b, 0.5, tmp_path / "m3")
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


def test_renoise_truth_starts_the_last_steps_from_the_noised_truth(pipe):
    import torch

    from t2ikit.bench.compbench import ground_truth_generator

    make = _script("renoise_truth").renoise_generator
    prompts, seeds = ["a red circle", "a small blue square above a green triangle"], [3, 4]
    side = pipe.default_size[0]
    truth = torch.from_numpy(np.stack(ground_truth_generator(side)(prompts, seeds))).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        copy = pipe.decode(pipe.vae.encode(truth).latent_dist.mode() * pipe.vae.config.scaling_factor)
    np.testing.assert_allclose(np.stack(make(pipe, 0.0)(prompts, seeds)), copy.permute(0, 2, 3, 1).numpy())
    kw = {"steps": 8, "sampler": "dpmpp_2m"}  # a multistep solver: its history of the discarded steps is cleared
    late, early = (np.stack(make(pipe, s, **kw)(prompts, seeds)) for s in (0.25, 0.75))
    assert late.shape == (2, side, side, 3)
    np.testing.assert_array_equal(late, np.stack(make(pipe, 0.25, **kw)(prompts, seeds)))  # same seed, same image
    assert not np.allclose(late, early)

    def disturb(i, t, latents, scheduler):  # the steps before the restart take another path
        return latents * 0.5 if i < 6 else latents

    # nothing of the discarded steps reaches the image: not their latents, nor the multistep solver's history
    np.testing.assert_array_equal(late, np.stack(make(pipe, 0.25, before=disturb, **kw)(prompts, seeds)))
    assert not np.allclose(early, np.stack(make(pipe, 0.75, before=disturb, **kw)(prompts, seeds)))
