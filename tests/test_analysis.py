"""Attribution maps, sensitivity/interactions/information, decomposition weighting, and their CLI verbs."""

import json
import math

import numpy as np
import pytest
import torch

from t2ikit.analysis import runner
from t2ikit.analysis.attribution import explain, overlay, word_labels
from t2ikit.analysis.decomposition import (
    ComponentWeighting,
    LinearSchedule,
    check_linear_text_projections,
    generate_decomposed,
    token_components,
)
from t2ikit.analysis.sensitivity import analyze, check_lambda, drop_words, mutual_information, write_report
from t2ikit.text.spans import word_token_spans


# --- attribution ------------------------------------------------------------------------------------


def test_explain_gives_one_normalisable_map_per_word(pipe):
    attr = explain(pipe, "a red circle and a (blue:1.3) square", seed=1, steps=2)
    assert list(attr.maps) == ["a", "red", "circle", "and", "a#2", "blue", "square"]
    H, W = attr.image.shape[-2:]
    assert all(m.shape == (H, W) and torch.all(m >= 0) and m.sum() > 0 for m in attr.maps.values())
    assert overlay(attr, tile=32).size == (32 * 8, 32 + 14)
    with pytest.raises(ValueError, match="no words"):
        explain(pipe, "  ", steps=2)


def test_word_labels_are_unique():
    assert word_labels([type("S", (), {"word": w}) for w in ["a", "b", "a", "a"]]) == ["a", "b", "a#2", "a#3"]


# --- sensitivity --------------------------------------------------------------------------------------


def test_drop_words_and_lambda_checks(pipe):
    prompt = "a red circle above a blue square"
    spans = word_token_spans(pipe.tokenizer, prompt)
    assert drop_words(prompt, spans, [1]) == "a circle above a blue square"
    assert drop_words(prompt, spans, [0, 6]) == "red circle above a blue"
    for bad in (-0.1, math.inf, "1", True):
        with pytest.raises(ValueError, match="lambda"):
            check_lambda(bad)
    assert check_lambda(0) == 0.0


def test_mutual_information_estimator():
    independent = mutual_information({"x": ["a", "b"] * 4, "y": ["a", "b"] * 4})
    assert independent["bits_plugin"] == pytest.approx(0.0)
    determined = mutual_information({"x": ["a"] * 8, "y": ["b"] * 8})
    assert determined["bits_plugin"] == pytest.approx(1.0) and determined["upper_bound_bits"] == 1.0
    assert determined["bits_miller_madow"] == pytest.approx(1.0 + 1 / (2 * 16 * math.log(2)))


def test_analyze_batches_per_seed_and_matches_direct_differences(pipe, monkeypatch, tmp_path):
    from t2ikit import pipeline

    calls = []
    real, real_sample = runner.sample_embeds, pipeline.sample

    def counting(denoiser, scheduler, noise, *a, **k):
        calls.append(len(noise))
        return real_sample(denoiser, scheduler, noise, *a, **k)

    monkeypatch.setattr(pipeline, "sample", counting)
    prompt = "a red circle"
    report = analyze(pipe, prompt, seeds=[0, 1], steps=2, lam=0.5, size=(32, 32))
    assert report["words"] == ["a", "red", "circle"]
    # all variants of one seed share one batch: 2 seeds -> 2 UNet batches (+ the length curve's extra texts)
    n_variants = 2 + 3 + 3 + 7 + 3  # full, "", drop-1, drop-2, red's and circle's substitutes
    assert calls[:2] == [n_variants, n_variants] and len(calls) <= 4
    # S(red) equals the pixel difference computed directly with the same seeds
    e = pipe.encode_text([prompt, "a circle"])
    direct = [float(((im[0] - im[1]) ** 2).mean()) for im in
              (real(pipe, e, [s, s], 2, report["config"]["guidance"], "dpmpp_2m", size=(32, 32)) for s in (0, 1))]
    assert report["sensitivity"][1]["pixel"]["mean"] == pytest.approx(np.mean(direct), rel=1e-5)
    m = np.array(report["interactions"]["pixel"])
    assert m.shape == (3, 3) and np.allclose(m, m.T) and np.all(np.diag(m) == 0) and m[0, 1] > 0
    assert report["information"]["a"] is None and report["information"]["red"]["values"] == 8
    assert [c["L"] for c in report["length_curve"]] == [0, 1, 2, 3]
    best = max(report["length_curve"], key=lambda c: c["objective"])
    assert report["best_length"] == best["L"]
    paths = write_report(report, tmp_path / "rep")
    assert {p.name for p in paths} == {"report.json", "report.md", "interactions_pixel.png", "interactions_oracle.png"}


def test_analyze_rejects_bad_input_before_compute(pipe, monkeypatch):
    monkeypatch.setattr(runner, "sample_embeds", lambda *a, **k: pytest.fail("generated before checking"))
    with pytest.raises(ValueError, match="no words"):
        analyze(pipe, "", seeds=[0])
    with pytest.raises(ValueError, match="lambda"):
        analyze(pipe, "a red circle", lam=-1)
    with pytest.raises(ValueError, match="seeds"):
        analyze(pipe, "a red circle", seeds=[0, 0])


# --- decomposition ------------------------------------------------------------------------------------


def test_token_components_follow_the_caption(pipe):
    tc = token_components(pipe.tokenizer, "a red circle above a blue square on a black background")
    assert tc["object"] == [1, 2, 3, 5, 6, 7] and tc["relation"] == [4] and tc["style"] == [8, 9, 10, 11]
    assert 0 not in tc["global"] and 12 in tc["global"]  # EOS/padding are global, BOS is nobody's
    fallback = token_components(pipe.tokenizer, "circle circle red")  # not a caption: all global
    assert fallback["object"] == [] and {1, 2, 3} <= set(fallback["global"])


def test_schedule_shape_and_checks():
    s = LinearSchedule(0.3)
    assert s("global", 0.0) == pytest.approx(1.3) and s("object", 0.0) == pytest.approx(0.7)
    assert s("style", 1.0) == pytest.approx(0.7) and s("relation", 1.0) == pytest.approx(1.3)
    with pytest.raises(ValueError, match="amplitude"):
        LinearSchedule(1.0)
    with pytest.raises(ValueError, match="unknown component"):
        ComponentWeighting([{"colour": [1]}])


def test_weighting_hook_is_embedding_scaling(pipe):
    prompts = ["a red circle above a blue square", "a green triangle"]
    plain = runner.sample_prompts(pipe, prompts, [3, 4], 2, 4.0, "dpmpp_2m")
    assert torch.equal(generate_decomposed(pipe, prompts, [3, 4], LinearSchedule(0.0), steps=2, guidance=4.0), plain)
    const = generate_decomposed(pipe, prompts, [3, 4], lambda c, s: 1.7, steps=2, guidance=4.0)
    e = pipe.encode_text(prompts)
    e[:, 1:] *= 1.7  # every row but BOS
    assert torch.allclose(const, runner.sample_embeds(pipe, e, [3, 4], 2, 4.0, "dpmpp_2m"), atol=1e-4)
    assert not torch.allclose(const, plain, atol=1e-3)


def test_projection_check_refuses_biased_keys(pipe):
    import copy

    unet = copy.deepcopy(pipe.unet)
    attn = next(m for n, m in unet.named_modules() if n.endswith("attn2"))
    attn.to_k = torch.nn.Linear(attn.to_k.in_features, attn.to_k.out_features, bias=True)
    with pytest.raises(ValueError, match="bias-free"):
        check_linear_text_projections(unet)
    check_linear_text_projections(pipe.unet)


# --- CLI ------------------------------------------------------------------------------------------------


def test_cli_explain_and_analyze(folder, tmp_path, capsys):
    from t2ikit.cli import main

    out = tmp_path / "maps.png"
    assert main(["explain", "a (red:1.2) circle", "--model", str(folder), "--steps", "2", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["analyze", "red circle", "--model", str(folder), "--steps", "2", "--seeds", "2", "--json",
                 "--no-interactions",
                 "--out", str(tmp_path / "rep")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["words"] == ["red", "circle"] and report["interactions"] is None
    assert report["sensitivity"][0]["oracle"] is None  # 16-px tiny images: below the oracle's resolution
    assert main(["analyze", "a red circle", "--model", str(folder), "--lam", "-2"]) == 2
    assert main(["explain", "a (red:1.2 circle", "--model", str(folder)]) == 2
    assert "character 7" in capsys.readouterr().err


# --- weighting benchmark helpers ------------------------------------------------------------------------


def test_emphasize_wraps_words_of_the_kinds_and_escapes_the_rest():
    from t2ikit.analysis.weighting_bench import emphasize
    from t2ikit.text.weighting import parse_weighted

    text = emphasize("a red circle left of (x)", ["colour", "relation"], 1.5)
    assert text == r"a (red:1.5) circle (left:1.5) of \(x\)"
    assert parse_weighted(text).plain == "a red circle left of (x)"
    with pytest.raises(ValueError, match="unknown word kinds"):
        emphasize("a red circle", ["texture"], 1.5)


def test_paired_compbench_sees_a_real_difference():
    from t2ikit.analysis.paired import paired_compbench
    from t2ikit.bench.compbench import ground_truth_generator, noise_generator

    r = paired_compbench(noise_generator(), ground_truth_generator(), n_prompts=3, seeds=1, categories=("single",))
    assert r["all"]["plain"]["accuracy"] == 0.0 and r["all"]["weighted"]["accuracy"] == 1.0
    assert r["all"]["diff_accuracy"]["ci95"][0] > 0


def test_paraphrases_say_the_same_spec_differently():
    from t2ikit.analysis.optimize import paraphrases
    from t2ikit.world.caption import parse_caption

    caption = "a red circle to the left of a blue square"
    out = paraphrases(caption, 4)
    assert out[0] == caption and len(set(out)) == 4
    assert all(parse_caption(t) == parse_caption(caption) for t in out)
    with pytest.raises(ValueError):
        paraphrases("a zebra", 3)
    with pytest.raises(ValueError, match="candidates"):
        paraphrases(caption, 0)
