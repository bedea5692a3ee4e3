"""The fast path on a tiny model: feature caching (t2ikit.diffusion.cache), fast=True, `t2ikit generate --fast`."""

import pytest
import torch

from tiny import generate_with, tiny_components
from t2ikit.attention.capture import AttentionStore
from t2ikit.diffusion.cache import BRANCHES, FeatureCache, cached_denoiser
from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_denoiser
from t2ikit.diffusion.loop import sample
from t2ikit.diffusion.samplers import make_scheduler
from t2ikit.pipeline import FAST_SETTINGS

PROMPT = "a red circle to the left of a blue square"
FAST_INTERVAL = "{:g},{:g}".format(*FAST_SETTINGS["guidance_interval"])  # as the PNG records it


@pytest.mark.parametrize("branch", BRANCHES)
def test_shallow_branch_on_fresh_features_is_the_full_unet(branch):
    """On the input that produced the cached deep features, the shallow branch reproduces the whole UNet:
    the skip connections, time embedding and output head are wired as the UNet wires them."""
    unet = tiny_components()["unet"]
    x, e, t = torch.randn(3, 4, 8, 8), torch.randn(3, 16, 32), torch.tensor(700)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=e, return_dict=False)[0]
        cache = FeatureCache(unet, branch)
        full = cache(x, t, encoder_hidden_states=e)[0]
        cache.full = False
        shallow = cache(x, t, encoder_hidden_states=e)[0]
        other = cache(x + 0.5, t, encoder_hidden_states=e)[0]  # reuses the deep features of x
    assert cache.shallow_calls == 2
    torch.testing.assert_close(full, ref, rtol=0, atol=0)
    torch.testing.assert_close(shallow, ref, rtol=1e-5, atol=1e-6)
    fresh = unet(x + 0.5, t, encoder_hidden_states=e, return_dict=False)[0]
    assert not torch.allclose(other, fresh, atol=1e-4)  # the deep branch was not recomputed


def test_cache_runs_full_when_the_batch_changes():
    unet = tiny_components()["unet"]
    cache = FeatureCache(unet)
    with torch.no_grad():
        cache(torch.randn(2, 4, 8, 8), 500, encoder_hidden_states=torch.randn(2, 16, 32))
        cache.full = False
        x, e = torch.randn(4, 4, 8, 8), torch.randn(4, 16, 32)
        out = cache(x, 500, encoder_hidden_states=e)[0]
    assert cache.shallow_calls == 0
    torch.testing.assert_close(out, unet(x, 500, encoder_hidden_states=e, return_dict=False)[0])


def test_cached_denoiser_counts_and_bounded_difference(pipe):
    cond, uncond = pipe.encode_text([PROMPT]), pipe.encode_text([""])
    c = Conditioning.text(cond, uncond, guidance=4.0)  # CFG: rows [uncond; cond] cached as one batch
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(denoiser):
        scheduler = make_scheduler("dpmpp_2m", pipe.scheduler_config)
        scheduler.set_timesteps(6)
        return sample(denoiser, scheduler, noise, c, progress=False)

    plain = run(unet_denoiser(pipe.unet))
    cached = cached_denoiser(pipe.unet, 2)
    out = run(cached)
    assert cached.cache.shallow_calls == 3  # steps 1, 3, 5 of 6
    assert torch.isfinite(out).all()
    rel = (out - plain).norm() / plain.norm()
    assert 0 < rel < 0.5, rel
    again = run(cached)  # a fresh generation starts with a full step: same result
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_interval_one_is_the_plain_path_bit_for_bit(pipe):
    a = generate_with(pipe, PROMPT, decode=False, steps=4, seed=3, n=2).latents
    b = generate_with(pipe, PROMPT, decode=False, steps=4, seed=3, n=2, cache_interval=1).latents
    assert torch.equal(a, b)
    c = generate_with(pipe, PROMPT, decode=False, steps=4, seed=3, n=2, cache_interval=2).latents
    assert not torch.equal(a, c)


def test_cache_batch_equals_items(pipe):
    both = generate_with(pipe, [PROMPT, "a green triangle"], decode=False, steps=4, seed=5, cache_interval=2).latents
    one = generate_with(pipe, PROMPT, decode=False, steps=4, seed=5, cache_interval=2).latents
    two = generate_with(pipe, "a green triangle", decode=False, steps=4, seed=6, cache_interval=2).latents
    torch.testing.assert_close(both, torch.cat([one, two]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("branch", BRANCHES)
def test_cache_composes_with_regions_and_hooks(pipe, branch):
    store = AttentionStore()
    out = generate_with(pipe, PROMPT, decode=False, steps=4, cache_interval=2, cache_branch=branch, hooks=[store],
                        regions=["0,0,8,16:a red circle"])
    assert torch.isfinite(out.latents).all()

    def calls(prefix):
        return {n for layer, n in store.counts.items() if layer.startswith(prefix)}

    # the hook runs in the layers that run: shallow ones on every step, deep ones on the 2 full steps of 4
    assert calls("mid_block") == {2}
    if branch == "block":
        assert calls("down_blocks.0.") == {4} and calls("up_blocks.1.") == {4}
    else:  # only the last layer of the last up block
        assert calls("down_blocks.0.") == {2} and calls("up_blocks.1.attentions.0.") == {2}
        assert calls("up_blocks.1.attentions.1.") == {4}


def test_fast_fills_only_what_is_not_given(pipe):
    spec = pipe.make_spec(PROMPT, fast=True)
    assert all(getattr(spec, k) == v for k, v in FAST_SETTINGS.items())
    assert spec.settings()["Fast"] is True and spec.settings()["Guidance interval"] == FAST_INTERVAL
    spec = pipe.make_spec(PROMPT, fast=True, steps=7, guidance_interval=(0, 1), cache_interval=2)
    assert (spec.steps, spec.guidance_interval, spec.cache_interval) == (7, (0.0, 1.0), 2)
    plain = pipe.make_spec(PROMPT).settings()
    assert "Fast" not in plain and "Guidance interval" not in plain and "Cache interval" not in plain


def test_the_shared_pass_of_boxes_alone_changes_the_image_and_is_recorded(pipe):
    """Boxes without relation guidance take the shared pass too, so the PNG's settings must say so for --from."""
    kw = dict(seed=2, steps=3, relation_guidance=0, boxes=["0,0,8,16:a red circle"])
    shared = pipe.make_spec(PROMPT, latent_pass="shared", **kw)
    assert shared.settings()["Latent pass"] == "shared"
    assert "Latent pass" not in pipe.make_spec(PROMPT, **kw).settings()
    assert not torch.equal(pipe.run(shared, decode=False, progress=False).latents,
                           pipe.run(pipe.make_spec(PROMPT, **kw), decode=False, progress=False).latents)


@pytest.mark.parametrize("bad", [{"cache_interval": 0}, {"cache_interval": 1.5}, {"fast": "yes"},
                                 {"latent_steps": -1}, {"cache_branch": "deep"}, {"latent_layers": "decoder"}])
def test_bad_fast_settings_are_clear_errors(pipe, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        pipe.make_spec(PROMPT, **bad)


def test_cli_fast_is_recorded_in_the_png(folder, tmp_path, monkeypatch):
    from t2ikit.cli import main
    from t2ikit.cli.info import parse_parameters, read_parameters

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "fast.png"
    assert main(["generate", PROMPT, "--model", str(folder), "--fast", "--steps", "3", "--seed", "1",
                 "--out", str(out), "--quiet"]) == 0
    settings = parse_parameters(read_parameters(out))["settings"]
    assert str(settings["Fast"]) == "True" and settings["Guidance interval"] == FAST_INTERVAL
    assert settings["Steps"] == 3
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--model", str(folder), "--out", str(again), "--quiet"]) == 0
    assert parse_parameters(read_parameters(again))["settings"] == settings
    layers = tmp_path / "layers.png"  # the truncated guidance pass is recorded and re-run the same
    assert main(["generate", PROMPT, "--model", str(folder), "--relation-guidance", "50", "--latent-layers", "encoder",
                 "--steps", "3", "--seed", "1", "--out", str(layers), "--quiet"]) == 0
    settings = parse_parameters(read_parameters(layers))["settings"]
    assert settings["Latent layers"] == "encoder"
    again = tmp_path / "layers_again.png"
    assert main(["generate", "--from", str(layers), "--model", str(folder), "--out", str(again), "--quiet"]) == 0
    assert parse_parameters(read_parameters(again))["settings"] == settings
    assert main(["generate", PROMPT, "--model", str(folder), "--cache-interval", "0", "--out",
                 str(tmp_path / "bad.png"), "--quiet"]) == 2


def test_the_web_ui_backend_reaches_fast_and_the_cheaper_guidance(folder, tmp_path):
    pytest.importorskip("gradio")  # the backend is plain Python; the UI extra is installed with the tests in CI
    from t2ikit.ui.backend import Backend, GenerateRequest

    backend = Backend(str(folder), outdir=tmp_path)
    spec, _ = backend.make_spec(GenerateRequest(PROMPT, seed=1, steps=2, fast=True, latent_layers="encoder"))
    assert spec.fast and spec.guidance_interval == FAST_SETTINGS["guidance_interval"]
    assert spec.latent_layers == "encoder"
    plain, _ = backend.make_spec(GenerateRequest(PROMPT, seed=1, steps=2))
    assert not plain.fast and plain.cache_interval == 1 and plain.latent_layers == "all" and not plain.compile
    assert backend.make_spec(GenerateRequest(PROMPT, seed=1, steps=2, compile=True))[0].compile
    cut, _ = backend.make_spec(GenerateRequest(PROMPT, seed=1, steps=2, guidance_interval=(0.0, 0.6)))
    assert cut.guidance_interval == (0.0, 0.6) and plain.guidance_interval == (0.0, 1.0)


@pytest.mark.slow  # inductor compiles even the tiny UNet for about a minute on 2 cores
def test_compile_denoises_as_eager_does_and_composes_with_regions(pipe):
    """compile=True runs the denoising calls through torch.compile's UNet: the same image as eager up to the compiled
    sums' rounding, with regions' attention hooks acting inside it."""
    kw = dict(seed=3, steps=3, regions=["0,0,8,16:a red circle"])
    eager = pipe.run(pipe.make_spec(PROMPT, **kw), decode=False, progress=False).latents
    compiled = pipe.run(pipe.make_spec(PROMPT, compile=True, **kw), decode=False, progress=False)
    assert torch.allclose(compiled.latents, eager, atol=1e-4) and compiled.spec.settings()["Compile"] is True
    assert pipe.compiled_unet() is pipe.compiled_unet()  # compiled once, kept


@pytest.mark.slow  # inductor compiles the tiny UNet for each batch shape (two rows, then one)
def test_compile_with_a_guidance_interval_denoises_as_eager_does(pipe):
    """fast's guidance interval changes the UNet's batch from [uncond; cond] to [cond] halfway: the compiled UNet
    takes both shapes and gives eager's image up to the compiled sums' rounding."""
    kw = dict(seed=5, steps=4, guidance_interval=(0, 0.5))
    eager = pipe.run(pipe.make_spec(PROMPT, **kw), decode=False, progress=False).latents
    compiled = pipe.run(pipe.make_spec(PROMPT, compile=True, **kw), decode=False, progress=False).latents
    assert torch.allclose(compiled, eager, atol=1e-4)


def test_compile_is_recorded_and_refused_with_the_cache(pipe):
    assert pipe.make_spec(PROMPT, compile=True).settings()["Compile"] is True
    assert "Compile" not in pipe.make_spec(PROMPT).settings()
    both = pipe.make_spec(PROMPT, fast=True, compile=True)  # fast's guidance interval and compile combine
    assert both.compile and both.fast and both.guidance_interval == FAST_SETTINGS["guidance_interval"]
    with pytest.raises(ValueError, match="compile and cache_interval > 1 do not combine"):
        pipe.make_spec(PROMPT, compile=True, cache_interval=2)
    with pytest.raises(ValueError, match="compile must be True or False"):
        pipe.make_spec(PROMPT, compile="yes")


def test_a_guidance_interval_guides_inside_it_and_runs_the_prompt_alone_outside(pipe):
    """Steps inside [start, end) of the steps run [uncond; cond] and combine them; outside, the prompt's prediction
    alone, one UNet row, as cfg at scale 1 would give it."""
    cond, uncond = pipe.encode_text([PROMPT]), pipe.encode_text([""])
    rows, unet = [], pipe.unet

    def counting(x, t, encoder_hidden_states, **kw):
        rows.append(x.shape[0])
        return unet(x, t, encoder_hidden_states=encoder_hidden_states, **kw)

    denoise = unet_denoiser(counting)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    c = Conditioning.text(cond, uncond, guidance=4.0, guidance_interval=(0.25, 0.5)).check((8, 8))
    with torch.no_grad():
        out = [denoise(x, 500, c, step, 8) for step in range(8)]
        alone = unet(x, 500, encoder_hidden_states=cond, return_dict=False)[0]
        guided = denoise(x, 500, Conditioning.text(cond, uncond, guidance=4.0), 0, 8)
    assert rows == [1, 1, 2, 2, 1, 1, 1, 1, 2]  # steps 2 and 3 of 8 guided; the last call: the plain CFG
    for step in (0, 1, 4, 7):
        torch.testing.assert_close(out[step], alone, rtol=0, atol=0)
    torch.testing.assert_close(out[2], guided, rtol=0, atol=0)
    assert not torch.allclose(out[2], alone, atol=1e-4)


def test_a_guidance_interval_is_recorded_rerun_and_composes_with_relation_guidance_and_the_cache(pipe, folder, tmp_path):
    from t2ikit.cli import main
    from t2ikit.cli.info import parse_parameters, read_parameters

    kw = dict(seed=2, steps=4, relation_guidance=50.0, cache_interval=2)
    whole = pipe.run(pipe.make_spec(PROMPT, **kw), decode=False, progress=False).latents
    cut = pipe.run(pipe.make_spec(PROMPT, guidance_interval=(0, 0.5), **kw), decode=False, progress=False)
    assert cut.spec.settings()["Guidance interval"] == "0,0.5" and "Guidance interval" not in pipe.make_spec(
        PROMPT).settings()
    assert not torch.allclose(cut.latents, whole)  # the last two steps ran without the unconditional half
    batch = pipe.run(pipe.make_spec([PROMPT, "a green triangle"], guidance_interval=(0, 0.5), **kw), decode=False,
                     progress=False).latents
    torch.testing.assert_close(batch[:1], cut.latents, rtol=1e-4, atol=1e-5)  # a batch equals its items
    out = tmp_path / "cut.png"
    assert main(["generate", PROMPT, "--model", str(folder), "--guidance-interval", "0,0.5", "--steps", "3",
                 "--seed", "1", "--out", str(out), "--quiet"]) == 0
    settings = parse_parameters(read_parameters(out))["settings"]
    assert settings["Guidance interval"] == "0,0.5"
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--model", str(folder), "--out", str(again), "--quiet"]) == 0
    assert parse_parameters(read_parameters(again))["settings"] == settings
    from PIL import Image
    import numpy as np
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))  # same seed, same image


@pytest.mark.parametrize("bad", [(0.5, 0.5), (-0.1, 1), (0, 1.2), (0.3,), "late"])
def test_a_bad_guidance_interval_is_a_clear_error_before_compute(pipe, bad):
    with pytest.raises(ValueError, match="guidance_interval"):
        pipe.make_spec(PROMPT, guidance_interval=bad)


def test_a_guidance_interval_is_refused_with_regions_and_on_the_command_line_when_malformed(pipe, folder, tmp_path):
    from t2ikit.cli import main

    region = ["0,0,8,16:a red circle"]
    with pytest.raises(ValueError, match="one unmasked text condition"):  # MultiDiffusion: a masked condition each
        pipe.run(pipe.make_spec(PROMPT, steps=2, guidance_interval=(0, 0.5), regions=region, region_mode="noise"),
                 progress=False)
    kw = dict(seed=1, steps=2, regions=region)  # attention regions act through hooks on the one text condition
    cut = pipe.run(pipe.make_spec(PROMPT, guidance_interval=(0, 0.5), **kw), decode=False, progress=False).latents
    assert not torch.allclose(cut, pipe.run(pipe.make_spec(PROMPT, **kw), decode=False, progress=False).latents)
    for bad in ("0.5", "0,x", "0.6,0.2"):
        assert main(["generate", PROMPT, "--model", str(folder), "--guidance-interval", bad, "--out",
                     str(tmp_path / "bad.png"), "--quiet"]) == 2
    assert not (tmp_path / "bad.png").exists()


def _unet_rows(unet):
    """A counter of the rows every UNet call of `unet` runs on, and the hook handle that feeds it."""
    rows = []
    handle = unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    return rows, handle


def _separate_and_shared(pipe, **settings):
    """The latents and the UNet calls' rows of `settings` with latent_pass "separate", then "shared"."""
    rows, handle = _unet_rows(pipe.unet)
    try:
        separate = generate_with(pipe, PROMPT, **settings).latents
        separate_rows, rows[:] = list(rows), []
        shared = generate_with(pipe, PROMPT, latent_pass="shared", **settings).latents
    finally:
        handle.remove()
    return separate, separate_rows, shared, rows


def test_a_shared_pass_serves_the_step_from_the_guidance_pass(pipe):
    """latent_pass="shared": a guided step runs the guidance's conditional pass and the unconditional row, not
    the conditional row again; unguided steps are untouched; the result stays close to the separate pass's."""
    separate, separate_rows, shared, rows = _separate_and_shared(
        pipe, decode=False, steps=4, seed=3, n=2, relation_guidance=500.0, latent_steps=2, latent_iterations=1)
    # 2 images: steps 0-1 guided (a 2-row guidance pass), CFG on every step (4 rows, or 2 when shared)
    assert separate_rows == [2, 4, 2, 4, 4, 4]
    assert rows == [2, 2, 2, 2, 4, 4]
    assert not torch.equal(shared, separate)
    assert (shared - separate).norm() / separate.norm() < 0.2


def test_the_shared_prediction_is_the_condition_s_prediction_before_the_last_gradient_step(pipe):
    from t2ikit.diffusion.denoisers import unet_call
    from t2ikit.diffusion.latent_guidance import ExciteConfig, LatentGuidance

    cond, uncond = pipe.encode_text([PROMPT]), pipe.encode_text([""])
    c = Conditioning.text(cond, uncond, guidance=4.0)
    guidance = LatentGuidance(pipe.unet, pipe.tokenizer, pipe.parser, [PROMPT], cond,
                              ExciteConfig(objective="relation", step_size=500.0, iterations=1, shared=True)).share(c)
    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[0]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    moved = guidance(0, t, latents, scheduler)
    assert not torch.equal(moved, latents) and c.shared[0] == 0
    with torch.no_grad():
        expected = unet_call(pipe.unet, scheduler.scale_model_input(latents, t), t, cond)
    torch.testing.assert_close(c.shared[1], expected, rtol=1e-4, atol=1e-5)
    assert c.take_shared(1) is None and c.shared is None  # another step's prediction is never served; used once
    with pytest.raises(ValueError, match="one text condition"):
        LatentGuidance(pipe.unet, pipe.tokenizer, pipe.parser, [PROMPT], pipe.encode_text([PROMPT]),
                       ExciteConfig(objective="relation", shared=True)).share(c)  # other states than the step's
    with pytest.raises(ValueError, match="whole UNet"):
        ExciteConfig(shared=True, layers="encoder").validate()


def test_one_shared_pass_serves_relation_guidance_and_boxes_at_once(pipe):
    """latent_pass="shared" with relation guidance and boxes: one conditional pass per gradient step for both, its
    prediction serving the step; separate, each update runs its own pass beside the step's two rows."""
    separate, separate_rows, shared, rows = _separate_and_shared(
        pipe, decode=False, steps=4, seed=3, n=2, relation_guidance=500.0, latent_steps=2, latent_iterations=1,
        boxes=["0,0,8,16:red circle", "8,0,16,16:blue square"], box_guidance=200.0)
    # 2 images; relation guidance on steps 0-1, boxes on all 4 (their default 5 steps): separate, a relation pass and
    # a box pass (2 rows each) then CFG (4 rows); shared, one joint pass and the unconditional row
    assert separate_rows == [2, 2, 4, 2, 2, 4, 2, 4, 2, 4]
    assert rows == [2, 2] * 4
    assert torch.isfinite(shared).all() and not torch.equal(shared, separate)


def test_a_joint_pass_steps_on_the_sum_of_its_parts_and_drops_those_that_are_done(pipe):
    from t2ikit.control.boxes import Box, BoxGuidance
    from t2ikit.diffusion.latent_guidance import ExciteConfig, JointGuidance, LatentGuidance

    cond = pipe.encode_text([PROMPT])

    def relation(iterations):
        return LatentGuidance(pipe.unet, pipe.tokenizer, pipe.parser, [PROMPT], cond,
                              ExciteConfig(objective="relation", step_size=500.0, iterations=iterations))

    box = BoxGuidance(pipe.unet, pipe.tokenizer, [PROMPT], cond, [Box(0, 0, 8, 16, "red circle")], (16, 16), 200.0)
    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    scheduler.set_timesteps(4)
    t = scheduler.timesteps[0]
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    moved = JointGuidance([relation(2), box])(0, t, latents, scheduler)
    # gradient step 1: both updates' steps from the same latent, added; step 2: relation guidance's alone
    first = relation(1)(0, t, latents, scheduler) + box(0, t, latents, scheduler) - latents
    torch.testing.assert_close(moved, relation(1)(0, t, first, scheduler), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first, relation(1)(0, t, latents, scheduler), atol=1e-5)  # the box's step counted
    assert torch.equal(JointGuidance([relation(0), box])(box.steps, t, latents, scheduler), latents)  # none left
    with pytest.raises(ValueError, match="one text condition"):
        JointGuidance([relation(1), BoxGuidance(pipe.unet, pipe.tokenizer, [PROMPT], pipe.encode_text([PROMPT]),
                                                [Box(0, 0, 8, 16, "red circle")], (16, 16))])


@pytest.mark.parametrize("bad, words", [({"latent_pass": "both"}, "latent_pass must be one of"),
                                        ({"latent_layers": "encoder"}, "truncated pass"),
                                        ({"cache_interval": 2}, "cache needs every step"),
                                        ({"regions": ["0,0,8,16:a red circle"]}, "regions")])
def test_a_shared_pass_refuses_what_it_cannot_serve_before_compute(pipe, bad, words):
    settings = {"relation_guidance": 500.0, "latent_pass": "shared", **bad}
    with pytest.raises(ValueError, match=words):
        pipe.make_spec(PROMPT, **settings)


def test_cli_and_ui_reach_the_shared_pass(folder, tmp_path, monkeypatch):
    from t2ikit.cli import main
    from t2ikit.cli.info import parse_parameters, read_parameters

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "shared.png"
    assert main(["generate", PROMPT, "--model", str(folder), "--relation-guidance", "50", "--latent-pass", "shared",
                 "--steps", "3", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    settings = parse_parameters(read_parameters(out))["settings"]
    assert settings["Latent pass"] == "shared"
    again = tmp_path / "again.png"
    assert main(["generate", "--from", str(out), "--model", str(folder), "--out", str(again), "--quiet"]) == 0
    assert parse_parameters(read_parameters(again))["settings"] == settings
    assert main(["generate", PROMPT, "--model", str(folder), "--relation-guidance", "50", "--latent-pass", "shared",
                 "--cache-interval", "2", "--out", str(tmp_path / "bad.png"), "--quiet"]) == 2
    pytest.importorskip("gradio")
    from t2ikit.ui.backend import Backend, GenerateRequest

    spec, _ = Backend(str(folder), outdir=tmp_path).make_spec(GenerateRequest(PROMPT, seed=1, steps=2,
                                                                             relation_guidance=50.0,
                                                                             latent_pass="shared"))
    assert spec.latent_pass == "shared" and spec.settings().get("Latent pass") == "shared"
