"""Adapter runs from TOML configs, their checkpoints and exact resume, and the attention-fusion reference adapter."""

import numpy as np
import pytest
import torch

from tiny import make_tiny_sd_folder
from t2ikit.control.adapters import load_adapter
from tiny import generate_with
from t2ikit.control.reference import ReferenceAdapter, load_reference_adapter, save_reference_adapter
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline
from t2ikit.train.adapter import AdapterTrainConfig, load_adapter_config, make_adapter, sketch_consistency_loss
from t2ikit.world.conditions import shapes_batch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_sd_folder(tmp_path_factory.mktemp("m") / "tiny")


def _write(path, body: str):
    path.write_text(body)
    return path


def test_adapter_config_is_checked(tmp_path):
    good = _write(tmp_path / "a.toml", '[adapter]\nmodality = "depth"\nsteps = 3\n')
    cfg = load_adapter_config(good, {"out": "somewhere"})
    assert (cfg.modality, cfg.steps, cfg.out) == ("depth", 3, "somewhere")
    for body, message in [
        ('[adapter]\nmodality = "depth"\nstep = 3\n', "unknown config key 'adapter.step'"),
        ('[adapter]\nmodality = "edges"\n', "unknown condition 'edges'"),
        ('[adapter]\ncaption_dropout = 1.0\n', "caption_dropout must be in"),
        ('[adapter]\nmodality = "depth"\nconsistency_weight = 0.1\n', "defined for sketch only"),
        ('[adapter]\nsteps = "many"\n', "must be int"),
        ('[adapter]\n[run]\nout = "x"\n', "exactly one table"),
        ('[adapter]\nmodality = "depth"\ntokens = 4\n', "are for the reference modality"),
        ('[adapter]\nmodality = "reference"\ndistill_steps = 2\nsteps = 3\n', "needs adapter.tokens"),
        ('[adapter]\nmodality = "reference"\ntokens = 4\ndistill_steps = -1\n', "must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_adapter_config(_write(tmp_path / "b.toml", body))


def _run(tmp_path, tiny, name, steps, resume=False, modality="sketch", extra="", rc=0):
    from t2ikit.cli import main

    config = _write(tmp_path / f"{name}.toml", f'[adapter]\nmodality = "{modality}"\nsteps = {steps}\nbatch_size = 2\n'
                    f'hidden = 8\ncheckpoint_every = 2\nmodel = "{tiny}"\n{extra}')
    argv = ["train", "--config", str(config), "--out", str(tmp_path / name)] + (["--resume"] if resume else [])
    assert main(argv) == rc
    return tmp_path / name


@pytest.mark.parametrize("modality, extra", [("sketch", ""), ("reference", "caption_dropout = 0.5\n"),
                                             ("sketch", "consistency_weight = 0.5\nconsistency_max_t = 1000\n"),
                                             ("reference", 'fusion = "concat"\ntokens = 16\ndistill_steps = 3\n')])
def test_adapter_run_resumes_exactly(tmp_path, tiny, modality, extra, capsys):
    from safetensors.torch import load_file

    straight = _run(tmp_path, tiny, "straight", 4, modality=modality, extra=extra)
    _run(tmp_path, tiny, "split", 2, modality=modality, extra=extra)  # stops at step 2 with a checkpoint
    split = _run(tmp_path, tiny, "split", 4, resume=True, modality=modality, extra=extra)
    a, b = load_file(straight / "adapter.safetensors"), load_file(split / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(tmp_path / "split" / "checkpoints" / "ckpt-0-adapter-000000002" / "tensors.safetensors")
    assert any(not torch.equal(first[f"model.{k}"], a[k]) for k in a)  # steps 3-4 changed the weights
    from t2ikit.cli import main

    argv = ["train", "--config", str(tmp_path / "straight.toml"), "--out", str(straight)]
    assert main(argv + ["--export-only", str(tmp_path / "exported"), "--fp16"]) == 0
    half = load_file(tmp_path / "exported" / "adapter.safetensors")
    assert all(half[k].dtype == torch.float16 and torch.allclose(half[k].float(), a[k], rtol=1e-3, atol=1e-4)
               for k in a)
    capsys.readouterr()
    _run(tmp_path, tiny, "split", 6, resume=True, modality=modality, extra=extra + "lr = 0.5\n", rc=2)
    assert "not a checkpoint of this adapter run (differs in ['lr'])" in capsys.readouterr().err


def test_reference_adapter_fuses_through_attention(tmp_path, tiny):
    pipe = T2IPipeline.from_folder(tiny)
    adapter = ReferenceAdapter(pipe.unet)
    reference = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))[0].numpy()
    plain = generate_with(pipe, "a red circle", steps=2, seed=3).images
    untrained = generate_with(pipe, "a red circle", steps=2, seed=3, reference=reference,
                                    adapters={"reference": adapter}).images
    assert np.array_equal(plain, untrained)  # zero-initialised gates: a fresh adapter changes nothing
    for p in adapter.encoder.parameters():
        torch.nn.init.normal_(p, std=0.5)
    for gate in adapter.gates.values():
        torch.nn.init.constant_(gate, 1.0)
    save_reference_adapter(adapter, tmp_path / "ref")
    again = load_reference_adapter(tmp_path / "ref", pipe.unet)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adapter.hook(image).tokens, again.hook(image).tokens)
    with pytest.raises(ValueError, match="attention .reference. adapter"):
        load_adapter(tmp_path / "ref")
    fused = generate_with(pipe, "a red circle", steps=2, seed=3, reference=reference,
                                adapters={"reference": tmp_path / "ref"}).images
    off = generate_with(pipe, "a red circle", steps=2, seed=3, reference=reference,
                              adapters={"reference": tmp_path / "ref"}, scales={"reference": 0.0}).images
    assert not np.allclose(plain, fused)
    assert np.array_equal(plain, off)  # scale 0: the branch is skipped
    batch = generate_with(pipe, ["a red circle", "a blue square"], steps=2, seed=3, reference=reference,
                                adapters={"reference": again}).images
    assert np.allclose(batch[0], fused[0], atol=1e-5)  # a batch equals its items one by one
    # a reference adapter built for another UNet (the shipped model's) is refused with a sentence
    shipped = T2IPipeline.from_folder(shipped_model_path())
    with pytest.raises(ValueError, match="wide|does not fit"):
        load_reference_adapter(tmp_path / "ref", shipped.unet)


def test_bench_control_consistency_pairs_and_conflict(tmp_path, tiny):
    from t2ikit.bench import control as bc
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for, save_adapter
    from t2ikit.control.encoders import CONDITIONS

    pipe = T2IPipeline.from_folder(tiny)
    adapters = {}
    for name in ("sketch", "depth"):
        cfg = adapter_config_for(pipe.unet, pipe.vae_scale_factor, name, CONDITIONS[name], hidden=8)
        adapters[name] = save_adapter(ConditionAdapter(cfg), tmp_path / name)
    ref = ReferenceAdapter(pipe.unet)
    adapters["reference"] = save_reference_adapter(ref, tmp_path / "reference")
    result = bc.run(pipe, ("consistency", "conflict"), n=2, steps=1, adapters=adapters)
    rows = result["consistency"]
    assert set(rows) == {"ground-truth", "text only", "text + sketch", "text + depth", "text + reference",
                         "text + sketch + depth", "text + sketch + reference", "text + sketch + depth (0.5 each)",
                         "text + sketch + reference (0.5 each)", "empty prompt",
                         "empty prompt + reference"}
    assert rows["ground-truth"]["text"]["mean"] == 1.0  # renders satisfy their own captions
    # zero-initialised additive adapters change nothing: the same images as the caption alone
    assert rows["text + sketch"]["sketch"]["mean"] == rows["text only"]["sketch"]["mean"]
    conflict = result["conflict"]
    assert len(conflict) == len(bc.CONFLICT) and all(r["square (text wins)"]["n"] == 2 for r in conflict.values())
    assert "circle sketch, caption says square" in bc.markdown(result)
    with pytest.raises(ValueError, match="needs a sketch adapter"):
        bc.run(pipe, ("conflict",), n=2, steps=1, adapters={})


def test_recolour_holds_a_layout_condition_and_keeps_the_outside(tmp_path, tiny):
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for, save_adapter
    from t2ikit.control.attributes import recolour

    pipe = T2IPipeline.from_folder(tiny)
    adapter = ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, "sketch", 1, hidden=8))
    for conv in adapter.outs:
        torch.nn.init.normal_(conv.weight, std=0.5)
    folder = save_adapter(adapter, tmp_path / "sketch")
    sketch = np.zeros((16, 16), np.float32)
    sketch[4:12, 4] = sketch[4:12, 11] = sketch[4, 4:12] = sketch[11, 4:12] = 1.0
    box = (0, 0, 8, 16)  # the left half may change
    src, edit = recolour(pipe, "a red square", "a blue square", box, "a blue square", steps=3,
                         hold={"sketch": sketch}, adapters={"sketch": folder})
    free, _ = recolour(pipe, "a red square", "a blue square", box, "a blue square", steps=3)
    right = (slice(None), slice(None), slice(None), slice(4, 8))  # latent columns outside the box (VAE factor 2)
    assert torch.equal(src.latents[right], edit.latents[right])
    assert not torch.allclose(src.latents, free.latents)  # the held sketch shaped the source run
    with pytest.raises(ValueError, match="no trained depth adapter|does not fit"):
        recolour(pipe, "a red square", "a blue square", box, "a blue square", steps=3, hold={"depth": sketch})


def test_sketch_consistency_term_reaches_the_adapter(tiny):
    pipe = T2IPipeline.from_folder(tiny)
    adapter = make_adapter(pipe, AdapterTrainConfig(hidden=8))
    ns = training_scheduler(pipe.scheduler_config)
    latents, text = torch.randn(2, 4, 8, 8), pipe.encode_text(["a red circle", "a blue square"])
    sketch = (torch.rand(2, 1, 16, 16) > 0.8).float()
    losses = [sketch_consistency_loss(pipe, adapter, latents, text, sketch, ns, torch.Generator().manual_seed(0),
                                      weight, 1000) for weight in (0.0, 1.0)]
    assert losses[1] > losses[0]  # the Dice term adds a positive amount on the same draws
    losses[1].backward()
    assert adapter.outs[0].weight.grad.abs().sum() > 0  # zero-init outputs still get the term's gradient
    assert all(p.grad is None for p in pipe.vae.parameters())  # the VAE is only a path for gradients


def test_concat_reference_adapter_appends_tokens(tmp_path, tiny):
    from t2ikit.control.reference import ReferenceConfig

    pipe = T2IPipeline.from_folder(tiny)
    adapter = ReferenceAdapter(pipe.unet, ReferenceConfig(token_dim=pipe.unet.config.cross_attention_dim, grid=2,
                                                          fusion="concat"))
    assert not hasattr(adapter, "projections")  # the frozen text K/V read the tokens
    text = pipe.encode_text(["a red circle", "a blue square"])
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ctx = adapter.context(text, image)
    assert ctx.shape == (2, text.shape[1] + 4, text.shape[2]) and torch.equal(ctx[:, :text.shape[1]], text)
    with pytest.raises(ValueError, match="decoupled fusion"):
        adapter.hook(image)
    empty = pipe.encode_text([""])
    null = adapter.null_context(text, empty)  # the unconditional branch: the empty caption's states, no image
    assert null.shape == ctx.shape and torch.equal(null[:, text.shape[1]:], empty[:, :4].expand(2, -1, -1))
    folder = save_reference_adapter(adapter, tmp_path / "concat")
    reference = image[0].numpy()
    plain = generate_with(pipe, "a red circle", steps=2, seed=3).images
    fused = generate_with(pipe, "a red circle", steps=2, seed=3, reference=reference,
                                adapters={"reference": folder}).images
    assert not np.allclose(plain, fused)
    from t2ikit.bench.control import adapter_heldout_loss

    loss = adapter_heldout_loss(pipe, folder, batches=1, batch_size=2)
    assert loss["difference"]["n"] == 2 and loss["difference"]["mean"] != 0  # the tokens reach the UNet
    with pytest.raises(ValueError, match="use a reference or regions"):
        generate_with(pipe, "a red circle", steps=2, reference=reference, adapters={"reference": folder},
                            regions=["0,0,8,16:a red circle"])
    with pytest.raises(ValueError, match="adapter.fusion must be one of"):
        load_adapter_config(_write(tmp_path / "f.toml", '[adapter]\nmodality = "reference"\nfusion = "sum"\n'))


def test_cli_png_records_conditions(tmp_path, tiny, capsys):
    from PIL import Image

    from t2ikit.cli import main
    from t2ikit.cli.info import PNG_KEY, parse_parameters
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for, save_adapter

    sketch = tmp_path / "s.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(sketch)
    pipe = T2IPipeline.from_folder(tiny)
    save_adapter(ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, "sketch", 1, hidden=8)),
                 tmp_path / "a")
    out = tmp_path / "o.png"
    base = ["generate", "a red circle", "--model", str(tiny), "--steps", "2", "--out", str(out), "--quiet", "--overwrite"]
    assert main(base + ["--region", "0,0,8,16:a red circle", "--scale", "regions=3"]) == 0
    settings = parse_parameters(Image.open(out).text[PNG_KEY])["settings"]
    assert settings["Regions"] == "0,0,8,16:a red circle" and settings["Condition scales"] == "regions=3"
    assert settings["Region mode"] == "attention"
    assert main(base + ["--sketch", str(sketch), "--adapter", f"sketch={tmp_path / 'a'}", "--scale", "sketch=0.5"]) == 0
    settings = parse_parameters(Image.open(out).text[PNG_KEY])["settings"]
    assert settings["Sketch image"] == str(sketch) and settings["Sketch adapter"] == str(tmp_path / "a")
    capsys.readouterr()
    assert main(base + ["--adapter", f"sketch={tmp_path / 'a'}"]) == 2
    assert "given without --sketch" in capsys.readouterr().err
    assert main(base + ["--sketch", str(sketch), "--adapter", f"edges={tmp_path / 'a'}"]) == 2
    assert "--adapter must be CONDITION=DIR" in capsys.readouterr().err


def test_distillation_aligns_resampler_tokens_with_the_text_states(tmp_path, tiny, capsys):
    """distill_steps train the resampler's tokens towards the text encoder's states of the reference's caption
    (the loss falls), the tokens then feed the UNet like words; a token count that is not the context length
    is refused before any step."""
    from t2ikit.control.reference import load_reference_adapter, reference_distill_loss

    pipe = T2IPipeline.from_folder(tiny)
    batch = shapes_batch(99, 0, 8, 16, names=("reference",))
    target = pipe.encode_text(batch["reference_captions"])  # (8, 16, D)
    extra = 'fusion = "concat"\ntokens = 16\ndistill_steps = 40\nlr = 3e-3\n'
    folder = _run(tmp_path, tiny, "distill", 40, modality="reference", extra=extra)
    untrained = ReferenceAdapter(pipe.unet, load_reference_adapter(folder, pipe.unet).config)
    trained = load_reference_adapter(folder, pipe.unet)
    with torch.no_grad():
        before = reference_distill_loss(untrained, batch["reference"], target).item()
        after = reference_distill_loss(trained, batch["reference"], target).item()
    assert after < 0.5 * before, (before, after)
    reference = batch["reference"][0].numpy()
    fused, off = (generate_with(pipe, "", steps=2, seed=3, reference=reference, adapters={"reference": folder},
                                      scales={"reference": s}).images for s in (1.0, 0.0))
    assert not np.array_equal(np.asarray(fused), np.asarray(off))  # the tokens reach the UNet
    capsys.readouterr()
    _run(tmp_path, tiny, "wrong", 2, modality="reference", extra='tokens = 8\ndistill_steps = 1\n', rc=2)
    assert "text context is 16 states long" in capsys.readouterr().err


def test_shipped_reference_adapter_reaches_the_shipped_model():
    """reference-v1 ships (a concat, distilled adapter): `reference=` alone uses it, and it changes the image."""
    from t2ikit.control.compose import shipped_adapter
    from t2ikit.world.render import render
    from t2ikit.world.scene import sample_scene

    assert shipped_adapter("reference") is not None
    pipe = T2IPipeline.from_folder(shipped_model_path())
    reference = render(sample_scene(5, 0), 64).reference.transpose(2, 0, 1)  # (3, H, W) in [0, 1]
    on, off = (np.asarray(generate_with(pipe, "", steps=2, seed=0, reference=reference,
                                              scales={"reference": s}).images) for s in (1.0, 0.0))
    assert np.abs(on - off).mean() > 1e-3
