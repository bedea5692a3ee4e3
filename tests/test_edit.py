"""Editing: instructions, Prompt-to-Prompt alignment and injection, masks that keep, the bench's scoring, CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.attention.p2p import PromptToPromptHook, align, resolve_steps
from t2ikit.attention.processor import AttentionContext
from t2ikit.diffusion.edit import (
    EditWarning,
    check_source,
    edit,
    instruction_prompts,
    parse_instruction,
)
from t2ikit.world.scene import Group


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
    assert main(args + ["--instruction", "change the red circle to a glowing square", "--out",
                        str(tmp_path / "x.png")]) == 2
    assert "cannot read 'glowing'" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert main(["edit", str(tmp_path / "bad.png"), "--source", "a", "--target", "b", "--out",
                 str(tmp_path / "y.png")]) == 2
    assert "cannot be read as an image" in capsys.readouterr().err
    assert main(["invert", str(tmp_path / "in.png"), "--model", str(folder), "--prompt", "a red circle", "--steps",
                 "3", "--quiet", "--out", str(tmp_path / "lat.safetensors")]) == 0
    assert (tmp_path / "lat.safetensors").is_file()
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
