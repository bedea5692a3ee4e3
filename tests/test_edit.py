"""Editing: instructions, Prompt-to-Prompt alignment and injection, masks that keep, the bench's scoring, CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.attention.p2p import PromptToPromptHook, align, resolve_steps
from t2ikit.attention.processor import AttentionContext
from t2ikit.edit import EditWarning, edit
from t2ikit.world.edit_objects import check_source
from t2ikit.world.instructions import instruction_prompts, parse_instruction
from t2ikit.world.scene import Group, Obj


IMAGE = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# --- instructions ----------------------------------------------------------------------------------------


def test_instructions_are_read_into_source_and_target_objects():
    ins = parse_instruction("change the red circle to a blue square")
    assert ins.source == Group("red", "circle") and ins.target == Group("blue", "square")
    assert parse_instruction("make the small red circle blue").target == Group("blue", "circle", "small")
    assert parse_instruction("turn the red circles into triangles").target == Group("red", "triangle", None, 2)
    assert instruction_prompts(ins) == ("a red circle", "a blue square")
    assert instruction_prompts("change the red circle to a green triangle", "a red circle left of a blue square") \
        == ("a red circle left of a blue square", "a green triangle left of a blue square")


@pytest.mark.parametrize("text, part", [
    ("paint the red circle blue", "must start with a verb"),
    ("change the red blob to a blue square", "source part 'the red blob'"),
    ("change the red circle to a shiny square", "cannot read 'shiny' in the target part"),
    ("change the red circle to a red circle", "changes nothing"),
])
def test_unreadable_instructions_name_the_part(text, part):
    with pytest.raises(ValueError, match=part):
        parse_instruction(text)


def test_instruction_object_missing_from_the_source_prompt_is_an_error():
    with pytest.raises(ValueError, match="not in the source prompt"):
        instruction_prompts("change the green circle to a blue square", "a red circle and a blue square")


def test_oracle_disagreeing_with_the_source_prompt_warns():
    from t2ikit.world.render import render_rgb
    from t2ikit.world.scene import Spec, make_scene

    scene = make_scene(Spec((Group("red", "circle", "large"),)), np.random.default_rng(0))
    image = torch.from_numpy(render_rgb(scene)).permute(2, 0, 1)[None]
    assert check_source(image, ["a red circle"]) == []
    with pytest.warns(EditWarning, match="may not describe image 0"):
        check_source(image, ["a blue square"])


# --- Prompt-to-Prompt --------------------------------------------------------------------------------------


def test_alignment_replace_refine_and_reweight(pipe):
    tok = pipe.tokenizer
    a = align(tok, "a red circle", "a blue circle", "replace")
    assert a.index.tolist() == list(range(len(a.index))) and bool((a.alpha == 1).all())
    with pytest.raises(ValueError, match="use mode 'refine'"):
        align(tok, "a red circle", "a small red circle", "replace")
    r = align(tok, "a red circle", "a small red circle", "refine")
    # target: BOS a small red circle EOS -> source: BOS a red circle EOS
    assert r.index[:6].tolist() == [0, 1, 0, 2, 3, 4] and r.alpha[:6].tolist() == [1, 1, 0, 1, 1, 1]
    w = align(tok, "a red circle", "a red circle", "reweight", {"red": 3.0})
    assert w.scale[2] == 3.0 and float(w.scale.sum()) == len(w.scale) + 2.0
    with pytest.raises(ValueError, match="needs reweight"):
        align(tok, "a red circle", "a red circle", "reweight")
    assert resolve_steps(None, 20, 0.8, "x") == 16 and resolve_steps(0.25, 20, 0.8, "x") == 5
    with pytest.raises(ValueError, match="between 0 and the 20"):
        resolve_steps(21, 20, 0.8, "cross_steps")


def test_hook_injects_source_maps_into_the_conditional_target_rows_only(pipe):
    hook = PromptToPromptHook([align(pipe.tokenizer, "a red circle", "a blue circle", "replace")], 3, 1)
    probs = torch.rand(4, 2, 16, 16).softmax(-1)  # [uncond src, uncond tgt, cond src, cond tgt]
    ctx = AttentionContext("x.attn2.processor", True, 0, 10, 900.0, 16, (4, 4), guided=True)
    out = hook.on_probs(ctx, probs)
    torch.testing.assert_close(out[3], probs[2])
    torch.testing.assert_close(out[:3], probs[:3])
    assert hook.applies(ctx) and not hook.applies(AttentionContext("x.attn2.processor", True, 3, 10, 1.0, 16, (4, 4)))
    assert not hook.applies(AttentionContext("x.attn1.processor", False, 1, 10, 1.0, 16, (4, 4)))


def test_full_injection_gives_the_target_the_source_attention_in_every_layer(pipe):
    from t2ikit.attention.capture import AttentionStore
    from t2ikit.attention.processor import AttentionController
    from t2ikit.diffusion.inversion import ddim_denoise, ddim_schedule

    hook = PromptToPromptHook([align(pipe.tokenizer, "a red circle", "a blue square", "replace")], 4, 4)
    store = AttentionStore()
    cond = pipe.encode_text(["a red circle", "a blue square"])
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    with AttentionController([hook, store]).install(pipe.unet) as c:
        z = ddim_denoise(pipe.unet, ddim_schedule(pipe.scheduler_config, 4), noise, cond, controller=c)
    assert store.sums and all(torch.allclose(s[0], s[1]) for s in store.sums.values())
    assert not torch.allclose(z[0], z[1])  # the values still come from each prompt


# --- edits and masks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["swap", "p2p"])
def test_edit_changes_the_image_and_an_empty_mask_keeps_it_exactly(pipe, method):
    edited = edit(pipe, IMAGE, "a red circle", "a blue circle", method=method, steps=4)
    assert edited.images.shape == IMAGE.shape and not torch.allclose(edited.images, IMAGE, atol=1e-2)
    kept = edit(pipe, IMAGE, "a red circle", "a blue circle", method=method, steps=4, mask=np.zeros((16, 16)))
    torch.testing.assert_close(kept.images, IMAGE)


def test_auto_mask_is_binary_of_the_image_size_and_outside_is_kept(pipe):
    r = edit(pipe, IMAGE, "a red circle", "a blue square", method="swap", steps=4, mask="auto", mask_threshold=0.9)
    assert r.mask.shape == (1, 1, 16, 16) and set(r.mask.unique().tolist()) <= {0.0, 1.0}
    outside = r.mask == 0
    assert outside.any() and (~outside).any() and torch.equal(r.images[outside.expand_as(r.images)], IMAGE[outside.expand_as(IMAGE)])


def test_edit_bad_input_is_refused_before_compute(pipe, tmp_path):
    with pytest.raises(ValueError, match="must be 16x16 pixels"):
        edit(pipe, IMAGE, "a red circle", "a blue circle", mask=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="method must be one of"):
        edit(pipe, IMAGE, "a red circle", "a blue circle", method="sdedit")
    with pytest.raises(ValueError, match="Prompt-to-Prompt options"):
        edit(pipe, IMAGE, "a red circle", "a blue circle", method="swap", reweight={"blue": 2.0})
    with pytest.raises(ValueError, match="source and target prompts, or an instruction"):
        edit(pipe, IMAGE, "a red circle")
    with pytest.raises(ValueError, match="cannot be read"):
        edit(pipe, IMAGE, "a red circle", "a blue circle", mask=str(tmp_path / "none.png"))


def test_without_a_scene_support_the_core_edits_the_same_and_refuses_what_needs_one(pipe, monkeypatch):
    import t2ikit.edit.run as edit_module
    import t2ikit.edit.support as support_module
    from t2ikit.edit import EditOptions, get_scene_support

    assert get_scene_support() is not None and get_scene_support("shapes-world").name == "shapes-world"
    with pytest.raises(ValueError, match="unknown scene support 'nope'; registered: shapes-world"):
        EditOptions(support="nope").check()
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:] = 1
    runs = [dict(method="blend", guidance=3.0, steps=2, mask="attention"), dict(method="p2p", steps=2, mask="auto"),
            dict(method="swap", steps=2, mask=mask)]
    with_world = [edit(pipe, IMAGE, "a red circle", "a blue circle", **kw).images for kw in runs]
    monkeypatch.setattr(support_module, "_SUPPORTS", {})
    assert get_scene_support() is None
    for kw, images in zip(runs, with_world):
        torch.testing.assert_close(edit(pipe, IMAGE, "a red circle", "a blue circle", **kw).images, images,
                                   rtol=0, atol=0)

    def no_compute(*a, **k):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(edit_module, "invert", no_compute)
    blend = dict(method="blend", mask="auto")
    for kwargs, what in [(dict(instruction="change the red circle to a blue square"), "an instruction"),
                         (dict(target="a blue circle", method="blend", mask="detect"), "mask='detect'"),
                         (dict(target="a red square", shape_mask=1.0, **blend), "shape_mask"),
                         (dict(target="a red square", local_prompt=True, **blend), "local_prompt")]:
        with pytest.raises(ValueError, match=f"^{what} needs a scene support .* and none is registered$"):
            edit(pipe, IMAGE, "a red circle", **kwargs)


# --- the bench's scoring ----------------------------------------------------------------------------------


def test_bench_scores_ground_truth_edits_perfect_and_no_edit_as_failure():
    from t2ikit.bench.edit import KINDS, make_cases, score_edit

    for kind in KINDS:
        cases = make_cases(kind, 3)
        assert make_cases(kind, 3)[2].target_prompt == cases[2].target_prompt  # deterministic
        for c in cases:
            assert c.source_prompt != c.target_prompt
            truth, none = score_edit(c, c.target_image), score_edit(c, c.source_image)
            assert truth["success"] and truth["preserved"] in (True, None)
            assert not none["success"] and none["preserved"] in (True, None)
            assert (truth["psnr_outside"] is None) == (kind == "relation")
            if kind != "relation":
                assert truth["psnr_outside"] == 60.0


# --- command line -------------------------------------------------------------------------------------------


def test_cli_edit_invert_and_bench(folder, tmp_path, capsys):
    from t2ikit.cli import main

    Image.fromarray((IMAGE[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    args = ["edit", str(tmp_path / "in.png"), "--model", str(folder), "--steps", "3", "--quiet"]
    assert main(args + ["--source", "a red circle", "--target", "a blue circle", "--mask", "auto",
                        "--out", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (16, 16)
    assert main(args + ["--instruction", "change the red circle to a blue square", "--method", "swap",
                        "--out", str(tmp_path / "out2.png")]) == 0
    assert main(args + ["--source", "a red circle", "--target", "a blue circle", "--method", "blend", "--guidance", "4",
                        "--mask", "attention", "--mask-snap", "1", "--strength", "0.7", "--out",
                        str(tmp_path / "out3.png"), "--save-mask", str(tmp_path / "m.png")]) == 0
    assert Image.open(tmp_path / "out3.png").size == (16, 16) and Image.open(tmp_path / "m.png").size == (16, 16)
    recorded = Image.open(tmp_path / "out3.png").text["parameters"]  # the edit's parameters, as generate's
    assert recorded.startswith("a blue circle\n") and "Edit method: blend" in recorded and "CFG scale: 4.0" in recorded
    assert "Edit source: a red circle" in recorded and "Edit strength: 0.7" in recorded and "Steps: 3" in recorded
    assert main(args + ["--source", "a red circle", "--target", "a blue circle", "--strength", "0.7", "--out",
                        str(tmp_path / "x.png")]) == 2
    assert "blend options" in capsys.readouterr().err
    assert main(args + ["--instruction", "change the red circle to a glowing square", "--out",
                        str(tmp_path / "x.png")]) == 2
    assert "cannot read 'glowing'" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert main(["edit", str(tmp_path / "bad.png"), "--source", "a", "--target", "b", "--out",
                 str(tmp_path / "y.png")]) == 2
    assert "cannot be read as an image" in capsys.readouterr().err
    assert main(["invert", str(tmp_path / "in.png"), "--model", str(folder), "--prompt", "a red circle", "--steps",
                 "3", "--quiet", "--out", str(tmp_path / "lat.safetensors")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lat.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["prompts"] == "a red circle" and meta["steps"] == "3" and meta["uncond"] == "null-text"
    capsys.readouterr()
    assert main(["bench", "edit", "--methods", "ground-truth", "--n", "2", "--kinds", "colour,relation", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["results"]["ground-truth"]["colour"]["success"]["rate"] == 1.0


def test_p2p_without_injection_is_the_prompt_swap_and_injection_steps_and_reweight_matter(pipe):
    run = lambda **kw: edit(pipe, IMAGE, "a red circle", "a blue circle", steps=4, **kw).images  # noqa: E731
    swap = run(method="swap")
    torch.testing.assert_close(run(method="p2p", cross_steps=0, self_steps=0), swap, atol=1e-5, rtol=0)
    full = run(method="p2p", cross_steps=4, self_steps=4)
    assert not torch.allclose(full, swap, atol=1e-4)
    assert not torch.allclose(run(method="p2p", cross_steps=4, self_steps=4, reweight={"blue": 3.0}), full, atol=1e-4)


# --- blend: SDEdit + Blended Latent Diffusion, sketches, attention / detector masks -----------------------


def _scene_image(groups, seed=0):
    from t2ikit.world.render import render
    from t2ikit.world.scene import Spec, make_scene

    scene = make_scene(Spec(tuple(groups)), np.random.default_rng(seed), reference=False)
    m = render(scene, 64, reference=False)
    return scene, m, torch.from_numpy(m.rgb).permute(2, 0, 1)[None]


@pytest.mark.parametrize("fill", ["filled", "outlined"])
def test_image_sketch_is_shapes_worlds_sketch(fill):
    from dataclasses import replace

    from t2ikit.edit.outlines import image_sketch
    from t2ikit.world.render import render

    for seed in range(3):
        scene, _, _ = _scene_image([Group("red", "circle", "large"), Group("blue", "triangle", "large")], seed)
        m = render(replace(scene, fill=fill), 64, reference=False)
        sketch = image_sketch(torch.from_numpy(m.rgb).permute(2, 0, 1)[None])
        assert sketch.shape == (1, 1, 64, 64) and np.array_equal(sketch[0, 0].numpy(), m.sketch)


def test_changed_words_and_which_outlines_a_sketch_keeps():
    from t2ikit.edit.changes import changed_words, outlines_kept
    from t2ikit.edit.outlines import sketch_for_edit
    from t2ikit.world.vocab import COLOURS

    assert changed_words("a green circle and a red square", "an orange circle and a red square") == (["green"], ["orange"])
    assert outlines_kept("a red circle", "a blue circle", COLOURS) and not outlines_kept("a red circle", "a red square", COLOURS)
    assert not outlines_kept("a red circle", "a blue circle", ())  # no colour words known: any edit may change an outline
    _, m, image = _scene_image([Group("red", "circle", "large"), Group("blue", "square", "large")])
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32] = 1
    colour = sketch_for_edit(image, mask, ["a red circle and a blue square"], ["a green circle and a blue square"], COLOURS)
    shape = sketch_for_edit(image, mask, ["a red circle and a blue square"], ["a red triangle and a blue square"], COLOURS)
    assert np.array_equal(colour[0, 0].numpy(), m.sketch)  # a colour edit keeps every outline
    assert shape[..., :32].sum() == 0 and torch.equal(shape[..., 32:], colour[..., 32:])


def test_snap_mask_takes_the_object_the_rough_mask_covers_and_not_the_other():
    from scipy import ndimage

    from t2ikit.edit.outlines import foreground, snap_mask

    _, m, image = _scene_image([Group("red", "circle", "large"), Group("blue", "square", "large")])
    labels, count = ndimage.label(foreground(image[0]))
    assert count == 2
    rough = torch.zeros(1, 1, 64, 64)
    ys, xs = np.nonzero(labels == 1)
    rough[0, 0, ys[len(ys) // 2], xs[len(xs) // 2]] = 1  # one pixel inside object 1
    snapped = snap_mask(rough, image, pad=2)[0, 0].numpy() > 0
    assert snapped[labels == 1].all() and not snapped[labels == 2].any()
    y0, x0 = max(0, ys.min() - 2), max(0, xs.min() - 2)
    assert snapped.sum() == (min(64, ys.max() + 3) - y0) * (min(64, xs.max() + 3) - x0)  # the box grown by 2 px


def test_blended_denoise_keeps_the_trajectory_outside_and_starts_at_the_strength(pipe):
    from t2ikit.edit.blend import blended_denoise, start_level
    from t2ikit.diffusion.inversion import invert

    assert start_level(20, 0.8) == 4 and start_level(20, 1.0) == 0 and start_level(20, 0.01) == 19
    with pytest.raises(ValueError, match="strength must be"):
        start_level(20, 0.0)
    inv = invert(pipe, IMAGE, "a red circle", steps=4)
    cond, neg = pipe.encode_text(["a blue square"]), inv.cond
    kept = blended_denoise(pipe.unet, inv.schedule, inv.trajectory, cond, neg, 3.0, torch.zeros(1, 1, 8, 8), 0.5)
    torch.testing.assert_close(kept, inv.trajectory[-1], rtol=0, atol=0)  # nothing inside: x_0 of the trajectory
    full = blended_denoise(pipe.unet, inv.schedule, inv.trajectory, cond, neg, 3.0, None, 0.5)
    half = torch.zeros(1, 1, 8, 8)
    half[..., 4:] = 1
    part = blended_denoise(pipe.unet, inv.schedule, inv.trajectory, cond, neg, 3.0, half, 0.5)
    assert not torch.allclose(full, inv.trajectory[-1], atol=1e-3)
    torch.testing.assert_close(part[..., :4], inv.trajectory[-1][..., :4], rtol=0, atol=0)
    assert not torch.allclose(part[..., 4:], inv.trajectory[-1][..., 4:], atol=1e-3)
    noised = blended_denoise(pipe.unet, inv.schedule, inv.trajectory, cond, neg, 3.0, None, 0.5, "noise", seed=0)
    assert not torch.allclose(noised, full, atol=1e-3)


def test_a_batch_edit_equals_its_items_edited_one_by_one_with_seed_plus_index(pipe):
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    src, tgt = ["a red circle", "a blue square"], ["a green circle", "a blue circle"]
    for kw in (dict(method="blend", guidance=3.0, steps=3, start="noise", strength=1.0, mask="auto", seed=7),
               dict(method="p2p", steps=3, mask="auto", seed=7)):
        both = edit(pipe, images, src, tgt, **kw)
        for b in range(2):
            alone = edit(pipe, images[b:b + 1], src[b], tgt[b], **{**kw, "seed": 7 + b})
            torch.testing.assert_close(alone.mask, both.mask[b:b + 1], rtol=0, atol=0)
            torch.testing.assert_close(alone.images, both.images[b:b + 1], rtol=1e-4, atol=1e-5)


def test_unet_call_adds_adapter_residuals_to_every_cfg_row(pipe):
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for
    from t2ikit.diffusion.denoisers import unet_call

    adapter = ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, "sketch", 1, hidden=8))
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor(500)
    states = pipe.encode_text(["", "a red circle"])
    cond = torch.zeros(1, 1, 16, 16)
    with torch.no_grad():
        plain = pipe.unet(x, t, encoder_hidden_states=states, return_dict=False)[0]
        torch.testing.assert_close(unet_call(pipe.unet, x, t, states, adapter(cond)), plain)  # zero-init: nothing
        for conv in adapter.outs:
            torch.nn.init.normal_(conv.weight, std=0.1)
        res = adapter(cond)
        both = unet_call(pipe.unet, x, t, states, res)
        one = pipe.unet(x[1:], t, encoder_hidden_states=states[1:], down_intrablock_additional_residuals=res,
                        return_dict=False)[0]
    assert not torch.allclose(both, plain, atol=1e-4)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)


def test_blend_edit_keeps_outside_the_mask_exactly_and_changes_inside(pipe):
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :, 8:] = 1
    r = edit(pipe, IMAGE, "a red circle", "a blue square", method="blend", guidance=4.0, steps=4, mask=mask)
    torch.testing.assert_close(r.images[..., :8], IMAGE[..., :8], rtol=0, atol=0)
    assert not torch.allclose(r.images[..., 8:], IMAGE[..., 8:], atol=1e-2)
    again = edit(pipe, IMAGE, "a red circle", "a blue square", method="blend", guidance=4.0, steps=4, mask=mask)
    torch.testing.assert_close(again.images, r.images, rtol=0, atol=0)  # deterministic
    att = edit(pipe, IMAGE, "a red circle", "a blue square", method="blend", guidance=4.0, steps=4,
               mask="attention", mask_dilate=0)
    assert att.mask.shape == (1, 1, 16, 16) and set(att.mask.unique().tolist()) <= {0.0, 1.0}
    outside = (att.mask == 0).expand_as(IMAGE)
    assert outside.any() and torch.equal(att.images[outside], IMAGE[outside])


def test_detect_mask_boxes_the_edited_object_only_and_the_rest_is_kept(pipe):
    scene, m, image = _scene_image([Group("red", "circle", "large"), Group("blue", "square", "large")])
    r = edit(pipe, image, "a red circle and a blue square", "a green circle and a blue square", method="blend",
             guidance=4.0, steps=3, mask="detect")
    red = (m.instances == 1 + [o.colour for o in scene.objects].index("red"))
    blue = (m.instances == 1 + [o.colour for o in scene.objects].index("blue"))
    mask = r.mask[0, 0].numpy() > 0
    assert mask[red].all() and not mask[blue].any()
    keep = torch.from_numpy(~mask)[None, None].expand_as(image)
    assert torch.equal(r.images[keep], image[keep])
    with pytest.warns(EditWarning, match="no green triangle found"):
        edit(pipe, image, "a green triangle and a blue square", "a red triangle and a blue square", method="blend",
             guidance=4.0, steps=2, mask="detect")


def test_blend_samples_against_the_empty_prompt_unless_the_source_is_asked_for(pipe, monkeypatch):
    import t2ikit.edit.run as run_module
    from t2ikit.edit import EditOptions

    assert EditOptions(method="blend").check().uncond == "none"
    assert EditOptions(method="p2p").check().uncond == "negative-prompt"  # swap/p2p: the inversion that keeps guidance exact
    seen = []
    real = run_module.blended_denoise

    def recording(unet, schedule, trajectory, cond, uncond, *a, **k):
        seen.append((cond, uncond))
        return real(unet, schedule, trajectory, cond, uncond, *a, **k)

    monkeypatch.setattr(run_module, "blended_denoise", recording)
    _, _, image, _ = _red_circle_scene()
    src, tgt = "a red circle and a blue square", "an orange circle and a blue square"
    kw = dict(method="blend", guidance=4.0, steps=2, mask="detect")
    edit(pipe, image, src, tgt, **kw)
    torch.testing.assert_close(seen[-1][1], pipe._encode_each([""]), rtol=0, atol=0)
    edit(pipe, image, src, tgt, uncond="negative-prompt", **kw)
    torch.testing.assert_close(seen[-1][1], pipe._encode_each([src]), rtol=0, atol=0)
    edit(pipe, image, src, tgt, uncond="negative-prompt", local_prompt=True, **kw)
    torch.testing.assert_close(seen[-1][0], pipe._encode_each(["an orange circle"]), rtol=0, atol=0)
    torch.testing.assert_close(seen[-1][1], pipe._encode_each(["a red circle"]), rtol=0, atol=0)


def test_blend_bad_input_is_refused_before_compute(pipe, monkeypatch):
    import t2ikit.edit.run as edit_module

    def no_compute(*a, **k):
        raise AssertionError("computed before refusing bad input")

    monkeypatch.setattr(edit_module, "invert", no_compute)
    cases = [
        (dict(method="swap", strength=0.5), "blend options"),
        (dict(method="blend", strength=0.0), "strength must be"),
        (dict(method="blend", start="random"), "start must be one of"),
        (dict(method="blend", uncond="null-text"), "null-text inversion is for swap and p2p"),
        (dict(method="blend", uncond="source"), "uncond must be one of"),
        (dict(method="blend", mode="refine"), "Prompt-to-Prompt option"),
        (dict(method="blend", mask_snap=-1), "mask_snap must be"),
        (dict(method="blend", sketch=1.0), "does not fit this model"),  # the shipped adapter is the shipped model's
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            edit(pipe, IMAGE, "a red circle", "a blue circle", **kwargs)
    with pytest.raises(ValueError, match="only adds words"):
        edit(pipe, IMAGE, "a circle", "a red circle", method="blend", mask="attention")
    with pytest.raises(ValueError, match="changes 2 noun phrases"):
        edit(pipe, IMAGE, "a red circle and a blue square", "a green circle and a red square", method="blend",
             mask="detect")


def test_relation_instructions_are_read_and_bad_ones_name_the_part():
    ins = parse_instruction("move the red circle to the left of the blue square")
    assert (ins.source, ins.relation, ins.other) == (Group("red", "circle"), "left of", Group("blue", "square"))
    assert instruction_prompts(ins) == ("a red circle and a blue square", "a red circle to the left of a blue square")
    assert instruction_prompts("put the red circle above the blue square", "a red circle below a blue square") \
        == ("a red circle below a blue square", "a red circle above a blue square")
    for text, part in [("move the red circle", "expected a relation"),
                       ("move the red circle above", "no object after 'above'"),
                       ("move the red blob above the blue square", "source part 'the red blob'"),
                       ("place the red circle below the blue cloud", "reference object part 'the blue cloud'")]:
        with pytest.raises(ValueError, match=part):
            parse_instruction(text)
    with pytest.raises(ValueError, match="not in the source prompt"):
        instruction_prompts("move the red circle above the green square", "a red circle below a blue square")
    with pytest.raises(ValueError, match="already has"):
        instruction_prompts("move the red circle above the blue square", "a red circle above a blue square")


# --- target outlines and class masks for shape and size edits (t2ikit.world.outlines) ---------------------


def _red_circle_scene():
    scene, m, image = _scene_image([Group("red", "circle", "large"), Group("blue", "square", "large")])
    red = next(o for o in scene.objects if o.colour == "red")
    return scene, m, image, red


def _detect(image, source, target):
    from t2ikit.world.edit_objects import detect_mask, edited_group

    return detect_mask(image, [edited_group(source, target)], 2)[0]


def test_target_outline_is_the_target_shape_rendered_in_the_object_box():
    from dataclasses import replace

    from t2ikit.edit.outlines import image_sketch
    from t2ikit.world.outlines import target_conditions
    from t2ikit.world import vocab
    from t2ikit.world.render import render

    scene, m, image, red = _red_circle_scene()
    src, tgt = "a red circle and a blue square", "a red triangle and a blue square"
    mask = _detect(image, src, tgt)
    made = target_conditions(image, mask, [src], [tgt])
    assert made.missing == [] and torch.equal(made.mask, mask)  # same extent: the mask needs no growing
    # the target scene (the circle redrawn as a triangle in its box) has exactly this sketch
    truth = render(replace(scene, objects=tuple(replace(o, shape="triangle") if o is red else o
                                                for o in scene.objects)), 64, reference=False)
    assert np.array_equal(made.sketch[0, 0].numpy(), truth.sketch)
    assert not np.array_equal(made.sketch[0, 0].numpy(), image_sketch(image)[0, 0].numpy())
    tri = vocab.SHAPES.index("triangle")
    assert np.array_equal(made.classes[0, tri].numpy() > 0, truth.classes[tri] & (truth.instances > 0)
                          & (mask[0, 0].numpy() > 0))
    assert made.classes[0].sum() == made.classes[0, tri].sum()  # only the target's channel, only in its box


@pytest.mark.parametrize("before, after", [("large", "small"), ("small", "large")])
def test_size_edit_draws_the_target_size_and_grows_the_mask_to_hold_it(before, after):
    from t2ikit.world.outlines import target_conditions
    from t2ikit.world import vocab

    _, _, image = _scene_image([Group("red", "circle", before), Group("blue", "square", "small")], seed=3)
    src, tgt = f"a {before} red circle and a small blue square", f"a {after} red circle and a small blue square"
    mask = _detect(image, src, tgt)
    made = target_conditions(image, mask, [src], [tgt])
    drawn = made.classes[0, vocab.SHAPES.index("circle")].numpy() > 0
    ys, xs = np.nonzero(drawn)
    lo, hi = vocab.SIZES[after]
    assert max(np.ptp(ys), np.ptp(xs)) + 1 == (lo + hi) // 2  # the vocabulary's extent for the target size
    assert (made.mask[0, 0].numpy()[drawn] > 0).all() and (made.mask >= mask).all()
    assert (made.mask.sum() > mask.sum()) == (after == "large")


def test_detect_mask_finds_the_object_whose_size_word_changes():
    from t2ikit.world.edit_objects import edited_group, edited_groups

    src, tgt = "a large red triangle and a large purple diamond", "a small red triangle and a large purple diamond"
    assert edited_group(src, tgt) == Group("red", "triangle", "large")  # "large" is in both phrases
    assert edited_groups(src, tgt) == (Group("red", "triangle", "large"), Group("red", "triangle", "small"))


def test_blend_with_target_outline_shape_mask_and_local_prompt_uses_them_and_keeps_the_rest(pipe, monkeypatch):
    from t2ikit.control import compose
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for
    from t2ikit.world.outlines import target_conditions

    seen = {}

    class Recording(ConditionAdapter):
        def forward(self, cond, scale=1.0):
            seen[self.config.modality] = (cond.clone(), scale)
            return super().forward(cond, scale)

    def tiny_adapter(pipe_, name, given):
        a = Recording(adapter_config_for(pipe_.unet, pipe_.vae_scale_factor, name, {"sketch": 1, "mask": 4}[name], hidden=8))
        for conv in a.outs:
            torch.nn.init.normal_(conv.weight, std=0.2, generator=torch.Generator().manual_seed(1))
        return a

    monkeypatch.setattr(compose, "resolve_adapter", tiny_adapter)
    _, _, image, _ = _red_circle_scene()
    src, tgt = "a red circle and a blue square", "a red triangle and a blue square"
    kw = dict(method="blend", guidance=4.0, steps=3, mask="detect")
    r = edit(pipe, image, src, tgt, sketch=1.0, target_outline=True, shape_mask=0.5, local_prompt=True, **kw)
    made = target_conditions(image, _detect(image, src, tgt), [src], [tgt])
    assert torch.equal(seen["sketch"][0], made.sketch) and torch.equal(seen["mask"][0], made.classes)
    assert seen["mask"][1] == 0.5
    keep = (r.mask == 0).expand_as(image)
    assert keep.any() and torch.equal(r.images[keep], image[keep])
    plain = edit(pipe, image, src, tgt, **kw)
    assert torch.equal(plain.mask, r.mask) and not torch.allclose(plain.images, r.images, atol=1e-3)
    local = edit(pipe, image, src, tgt, local_prompt=True, **kw)
    assert not torch.allclose(plain.images, local.images, atol=1e-3)  # another prompt and negative


def test_target_outline_bad_input_is_refused_before_compute(pipe, monkeypatch):
    import t2ikit.edit.run as edit_module

    def no_compute(*a, **k):
        raise AssertionError("computed before refusing bad input")

    monkeypatch.setattr(edit_module, "invert", no_compute)
    src, tgt = "a red circle and a blue square", "a red triangle and a blue square"
    cases = [
        (dict(method="swap", shape_mask=1.0), "blend options"),
        (dict(method="p2p", local_prompt=True), "blend options"),
        (dict(method="blend", mask="detect", target_outline=True), "give sketch > 0"),
        (dict(method="blend", sketch=1.0, target_outline=True), "give a mask"),
        (dict(method="blend", mask="detect", shape_mask=-1.0), "shape_mask must be an adapter scale"),
        (dict(method="blend", mask="detect", local_prompt="yes"), "local_prompt must be True or False"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            edit(pipe, IMAGE, src, tgt, **kwargs)
    with pytest.raises(ValueError, match="changes 2 noun phrases"):
        edit(pipe, IMAGE, src, "a green triangle and a red square", method="blend", mask="detect", local_prompt=True)


def test_bench_suite_seed_gives_another_suite_and_is_checked(capsys):
    from t2ikit.bench.edit import make_cases, run
    from t2ikit.cli import main

    assert [c.source_prompt for c in make_cases("shape", 3, seed=1)] != [c.source_prompt for c in make_cases("shape", 3)]
    with pytest.raises(ValueError, match="seed .* must be an int"):
        run(None, ("colour",), ("ground-truth",), n=1, seed=-1)
    assert main(["bench", "edit", "--methods", "ground-truth", "--n", "2", "--kinds", "shape", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["seed"] == 1 and result["results"]["ground-truth"]["shape"]["success"]["rate"] == 1.0


def test_cli_edit_target_outline_options(folder, tmp_path, capsys):
    from t2ikit.cli import main

    Image.fromarray((IMAGE[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    args = ["edit", str(tmp_path / "in.png"), "--model", str(folder), "--steps", "2", "--quiet", "--source",
            "a red circle", "--target", "a red square", "--out", str(tmp_path / "o.png")]
    assert main(args + ["--method", "blend", "--mask", "detect", "--target-outline"]) == 2
    assert "give sketch > 0" in capsys.readouterr().err
    assert main(args + ["--shape-mask", "1"]) == 2
    assert "blend options" in capsys.readouterr().err
    assert main(args + ["--method", "blend", "--guidance", "3", "--mask", "auto", "--mask-snap", "1",
                        "--local-prompt"]) == 0
    assert Image.open(tmp_path / "o.png").size == (16, 16)


# --- relation edits with blend: the object moves ---------------------------------------------------------


def _two_objects(a: Obj, b: Obj) -> torch.Tensor:
    from t2ikit.world.render import render_rgb
    from t2ikit.world.scene import Scene, Spec

    spec = Spec((Group(a.colour, a.shape), Group(b.colour, b.shape)))
    scene = Scene(spec, (a, b), "white", "filled")
    return torch.from_numpy(render_rgb(scene, 64)).permute(2, 0, 1)[None]


def test_relation_move_reads_the_move_and_nothing_else():
    from t2ikit.world.moves import Move, relation_move

    red, blue = Group("red", "circle"), Group("blue", "square")
    assert relation_move("a red circle to the left of a blue square", "a red circle to the right of a blue square") \
        == Move(red, blue, "right of")
    assert relation_move("a red circle and a blue square", "a blue square above a red circle") == Move(blue, red, "above")
    assert relation_move("a red circle and a blue square", "a green circle and a blue square") is None
    assert relation_move("a red circle above a blue square", "a red circle above a blue square") is None
    assert relation_move("a red circle and a blue square", "a red circle above a green square") is None


@pytest.mark.parametrize("subject_x, other_x, mover", [(6, 26, "subject"), (26, 48, "other"), (6, 48, "trade")])
def test_planned_moves_make_the_target_relation_hold(subject_x, other_x, mover):
    from scipy import ndimage

    from t2ikit.world.moves import Move, placement_conditions, plan_move
    from t2ikit.world.oracle import relation_holds

    a = Obj("red", "circle", "large", 14, subject_x, 25, 1.0, 0)
    b = Obj("blue", "square", "large", 14, other_x, 25, 1.0, 1)
    image = _two_objects(a, b)  # red left of blue; the edit asks for red right of blue
    red, blue = Group("red", "circle"), Group("blue", "square")
    plan = plan_move(image[0], Move(red, blue, "right of"))
    made = placement_conditions(image.expand(len(plan), -1, -1, -1), plan)
    places = {p.group: (p.cx, p.cy) for p in plan}
    after = {red: places.get(red, a.centre), blue: places.get(blue, b.centre)}
    assert relation_holds(after[red], "right of", after[blue])
    assert [p.group for p in plan] == {"subject": [red], "other": [blue], "trade": [red, blue]}[mover]
    assert made.prompts == [{red: "a red circle", blue: "a blue square"}[p.group] for p in plan]
    for k, p in enumerate(plan):
        drawn = made.classes[k].amax(0).numpy() > 0
        cy, cx = ndimage.center_of_mass(drawn)
        assert abs(cx + 0.5 - p.cx) < 1.5 and abs(cy + 0.5 - p.cy) < 1.5  # the silhouette sits at the new place
        mask = made.mask[k, 0].numpy() > 0
        x0, y0, x1, y1 = (int(v) for v in p.replaces)
        assert mask[y0:y1, x0:x1].all() and not drawn[~mask].any()  # the replaced box and the new one are edited
    assert plan_move(image[0], Move(Group("green", "circle"), blue, "right of")) is None  # no green circle there


def test_blend_relation_edit_moves_inside_its_mask_and_refuses_what_it_cannot_do(pipe, monkeypatch):
    from t2ikit.control import compose
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for

    def tiny_adapter(pipe_, name, given):  # the same random weights at every call
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return ConditionAdapter(adapter_config_for(pipe_.unet, pipe_.vae_scale_factor, name, 4, hidden=8)).eval()

    monkeypatch.setattr(compose, "resolve_adapter", tiny_adapter)
    image = _two_objects(Obj("red", "circle", "large", 14, 6, 25, 1.0, 0), Obj("blue", "square", "large", 14, 26, 25, 1.0, 1))
    src, tgt = "a red circle to the left of a blue square", "a red circle to the right of a blue square"
    kw = dict(method="blend", guidance=3.0, steps=2, mask="detect", shape_mask=1.0, local_prompt=True)
    r = edit(pipe, image, src, tgt, **kw)
    keep = (r.mask == 0).expand_as(image)
    assert r.mask[0, 0, 25:39, 6:20].all() and r.mask[0, 0].sum() < 64 * 64 / 2
    assert torch.equal(r.images[keep], image[keep])
    far = _two_objects(Obj("red", "circle", "large", 14, 6, 25, 1.0, 0), Obj("blue", "square", "large", 14, 48, 25, 1.0, 1))
    both = edit(pipe, torch.cat([image, far]), [src, src], [tgt, tgt], **kw)  # a move and a trade in one batch
    torch.testing.assert_close(both.mask[:1], r.mask, rtol=0, atol=0)
    fresh = dict(kw, strength=1.0, start="noise", seed=3)  # fresh noise: item b draws with seed + b
    pair = edit(pipe, torch.cat([image, far]), [src, src], [tgt, tgt], **fresh)
    alone = edit(pipe, far, src, tgt, **dict(fresh, seed=4))
    torch.testing.assert_close(pair.images[1:], alone.images, rtol=0, atol=2e-2)
    assert not torch.allclose(pair.images[1:], edit(pipe, far, src, tgt, **fresh).images, atol=2e-2)
    # batch vs alone differs by float rounding (2e-6 after the VAE), which this random tiny model's 2-step
    # inversion amplifies to ~5e-3; a wrong partner's placement or mask would differ by far more
    torch.testing.assert_close(both.images[:1], r.images, rtol=0, atol=2e-2)
    assert both.mask[1, 0, 25:39, 6:20].all() and both.mask[1, 0, 25:39, 48:62].all()
    keep = (both.mask[1:] == 0).expand_as(far)
    assert torch.equal(both.images[1:][keep], far[keep])
    for bad, message in [(dict(mask="auto"), "give mask='detect'"), (dict(shape_mask=0.0), "shape_mask > 0")]:
        with pytest.raises(ValueError, match=message):
            edit(pipe, image, src, tgt, **{**kw, **bad})
    with pytest.raises(ValueError, match="mixes relation edits"):
        edit(pipe, torch.cat([image, image]), [src, src], [tgt, "a green circle to the left of a blue square"], **kw)


def test_the_shapes_world_preset_is_the_measured_recipe_and_flags_override_it(folder, tmp_path, monkeypatch):
    import t2ikit.edit as edit_module
    from t2ikit.cli import main
    from t2ikit.edit import EditOptions

    o = EditOptions.preset("shapes-world")
    assert (o.method, o.guidance, o.mask, o.mask_snap, o.shape_mask, o.local_prompt, o.uncond, o.start) == \
        ("blend", 5.0, "detect", 2, 1.0, True, "none", "inverted")
    r = EditOptions.preset("shapes-world", kind="relation", guidance=3.0)
    assert (r.strength, r.start, r.guidance) == (1.0, "noise", 3.0)
    assert EditOptions.preset("shapes-world", kind="size").start == "noise"
    with pytest.raises(ValueError, match="unknown edit preset 'best'; presets: shapes-world"):
        EditOptions.preset("best")
    with pytest.raises(ValueError, match="kind must be one of object, size, relation"):
        EditOptions.preset("shapes-world", kind="colour")
    from t2ikit.world.edit_support import edit_kind

    src = "a small red circle and a blue square"
    assert edit_kind(src, "a large red circle and a blue square") == "size"
    assert edit_kind(src, "a small green circle and a blue square") == "object"
    assert edit_kind(src, "a small red circle above a blue square") == "relation"
    seen = []

    def fake_edit(pipe, image, source, target, instruction=None, options=None, progress=False):
        seen.append(options)
        raise ValueError("stop after reading the options")

    monkeypatch.setattr(edit_module, "edit", fake_edit)
    Image.fromarray((IMAGE[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    args = ["edit", str(tmp_path / "in.png"), "--model", str(folder), "--quiet", "--out", str(tmp_path / "o.png"),
            "--preset", "shapes-world"]
    main(args + ["--instruction", "move the red circle to the left of the blue square"])
    main(args + ["--source", "a red circle", "--target", "a blue circle", "--guidance", "7", "--start", "noise"])
    main(args + ["--instruction", "make the small red circle large"])
    main(["edit", str(tmp_path / "in.png"), "--model", str(folder), "--quiet", "--out", str(tmp_path / "o.png"),
          "--source", "a red circle", "--target", "a blue circle"])
    assert (seen[0].method, seen[0].strength, seen[0].start) == ("blend", 1.0, "noise")  # a relation edit
    assert (seen[1].method, seen[1].guidance, seen[1].start, seen[1].shape_mask) == ("blend", 7.0, "noise", 1.0)
    assert (seen[2].method, seen[2].start) == ("blend", "noise")  # a size change
    assert (seen[3].method, seen[3].guidance, seen[3].shape_mask) == ("p2p", 1.0, 0.0)  # no preset: the defaults


def test_bench_edit_refuses_pairs_that_cannot_run_before_compute(capsys):
    from t2ikit.bench import edit as eb
    from t2ikit.cli import main

    assert all(eb.runs(k, m) for k in eb.KINDS for m in eb.DEFAULT_METHODS)  # the default set runs
    assert not eb.runs("relation", "blend+mask") and eb.runs("colour", "blend+mask")
    assert main(["bench", "edit", "--kinds", "colour,relation", "--methods", "p2p,blend+mask", "--json"]) == 2
    assert "blend+mask on relation edits" in capsys.readouterr().err


# --- prompt weighting in edits ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["swap", "p2p"])
def test_weighted_prompts_edit_with_their_weights_and_align_their_plain_text(pipe, method):
    plain = edit(pipe, IMAGE, "a red circle", "a blue circle", method=method, steps=4)
    unit = edit(pipe, IMAGE, "a (red:1) circle", "a (blue:1) circle", method=method, steps=4)
    torch.testing.assert_close(unit.images, plain.images, atol=0, rtol=0)  # weight 1 is the plain text, bitwise
    weighted = edit(pipe, IMAGE, "a red circle", "a (blue:1.5) circle", method=method, steps=4)
    assert not torch.allclose(weighted.images, plain.images, atol=1e-4)
    assert weighted.target_prompts == ["a (blue:1.5) circle"]  # the result names the prompts as given
    none = edit(pipe, IMAGE, "a red circle", "a (blue:1.5) circle", method="swap", steps=4, weighting="none")
    assert not torch.allclose(none.images, weighted.images, atol=1e-4) if method == "swap" else True
    compel = edit(pipe, IMAGE, "a red circle", "a blue+ circle", method=method, steps=4, weighting="compel")
    assert not torch.allclose(compel.images, plain.images, atol=1e-4)


def test_weighted_edit_bad_input_is_refused_before_compute(pipe, monkeypatch):
    import t2ikit.edit.run as edit_module

    monkeypatch.setattr(edit_module, "invert", lambda *a, **k: pytest.fail("computed before refusing"))
    with pytest.raises(ValueError, match="unbalanced|closing|never closed|'\\('"):
        edit(pipe, IMAGE, "a red circle", "a (blue circle", steps=4)
    with pytest.raises(ValueError, match="BREAK"):  # one chunk on a word-level tokenizer; on BPE ones, edits read one
        edit(pipe, IMAGE, "a red circle", "a blue circle BREAK a green square", steps=4)
    with pytest.raises(ValueError, match="weighting must be one of"):
        edit(pipe, IMAGE, "a red circle", "a blue circle", steps=4, weighting="A1111")
    with pytest.raises(ValueError, match="an instruction reads the source prompt as plain text"):
        edit(pipe, IMAGE, "a (red:1.2) circle", instruction="change the red circle to a blue circle", steps=4)
    with pytest.raises(ValueError, match="local_prompt .* weights would be lost"):
        edit(pipe, IMAGE, "a red circle", "a (blue:1.3) circle", method="blend", guidance=5.0, mask="detect",
             local_prompt=True, steps=4)


def test_weighted_edits_on_a_bpe_tokenizer_align_tokens_or_say_why(pipe, tmp_path):
    from test_text_tokenizer import _bpe_tokenizer

    from t2ikit.pipeline import T2IPipeline
    from t2ikit.text import text_encoder_for

    tokenizer = _bpe_tokenizer(tmp_path)
    torch.manual_seed(0)
    encoder = text_encoder_for(tokenizer, hidden_size=pipe.unet.config.cross_attention_dim, layers=2, heads=4).eval()
    bpe = T2IPipeline(pipe.unet, pipe.vae, encoder, tokenizer, pipe.scheduler_config, parser="shapes-world")
    plain = edit(bpe, IMAGE, "a red circle", "a blue circle", method="p2p", steps=3)
    weighted = edit(bpe, IMAGE, "a red circle", "a (blue:1.4) circle", method="p2p", steps=3)
    assert not torch.allclose(weighted.images, plain.images, atol=1e-4)
    with pytest.raises(ValueError, match="several chunks"):
        edit(bpe, IMAGE, "a red circle", "a blue circle BREAK a green square", steps=3)
    with pytest.raises(ValueError, match="weight boundary splits the word 'abluecircle'"):
        edit(bpe, IMAGE, "a red circle", "a(blue:1.3)circle", steps=3)
