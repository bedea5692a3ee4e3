"""t2ikit.control on tiny components: guidance math, regions, adapters, reference hook, conditions, consistency."""

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import make_tiny_sd_folder
from t2ikit.diffusion import guidance as G
from t2ikit.control.adapters import ConditionAdapter, HierarchicalAdapter, adapter_config_for, adapter_loss, \
    load_adapter, save_adapter
from t2ikit.bench.consistency import consistency, consistency_loss, edge_f1, weighted_consistency_loss
from t2ikit.control.encoders import CONDITIONS, MASK_PALETTE, load_condition
from tiny import generate_with

from t2ikit.control.compose import parse_scales
from t2ikit.control.reference import ReferenceAttentionHook, ReferenceEncoder
from t2ikit.control.regions import Region, RegionAttentionHook, check_regions, parse_region
from t2ikit.diffusion.guidance import cfg
from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_denoiser
from t2ikit.diffusion.loop import initial_noise, sample
from t2ikit.diffusion.samplers import make_scheduler
from t2ikit.pipeline import T2IPipeline
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.train.adapter import model_label
from t2ikit.world import vocab
from t2ikit.world.conditions import from_modalities
from t2ikit.world.render import class_colour_map, render, to_uint8
from t2ikit.world.scene import sample_scene


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return T2IPipeline.from_folder(make_tiny_sd_folder(tmp_path_factory.mktemp("m") / "tiny"))


def _eps(seed, shape=(2, 4, 4, 4)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- guidance -----------------------------------------------------------------------------------------


def test_composed_and_nested_formulas():
    u, a, b = _eps(0), _eps(1), _eps(2)
    assert torch.allclose(G.composed_guidance(u, [a], [3.0]), cfg(u, a, 3.0))
    assert torch.allclose(G.composed_guidance(u, [a, b], [2.0, 0.5]), u + 2 * (a - u) + 0.5 * (b - u))
    ab = _eps(3)
    assert torch.allclose(G.nested_guidance([u, a, ab], [1.5, 7.0]), u + 1.5 * (a - u) + 7.0 * (ab - a))
    with pytest.raises(ValueError, match="len\\(scales\\) \\+ 1"):
        G.nested_guidance([u, a], [1.0, 2.0])


def test_masks_blend_in_noise_space_and_priorities_share_overlaps():
    u, a, b = _eps(0), _eps(1), _eps(2)
    m = torch.zeros(1, 1, 4, 4)
    m[..., :2] = 1
    assert torch.allclose(G.masked_blend([a, b], [m, 1 - m]), m * a + (1 - m) * b)
    # composed guidance with complementary masks = MultiDiffusion blend of each guided prediction
    conds = [G.Condition(None, 4.0, mask=m[0, 0], name="a"), G.Condition(None, 2.0, mask=1 - m[0, 0], name="b")]
    out = G.combine(u, [a, b], conds, 0, 10)
    assert torch.allclose(out, m * cfg(u, a, 4.0) + (1 - m) * cfg(u, b, 2.0), atol=1e-6)
    w = G.priority_weights([torch.ones(1, 1, 2, 2)] * 2, [3.0, 1.0])
    assert torch.allclose(w[0], torch.full((1, 1, 2, 2), 0.75))
    with pytest.raises(ValueError, match="do not sum to a positive"):
        G.check_conditions([G.Condition(None, 1, mask=torch.ones(4, 4), priority=1.0),
                            G.Condition(None, 1, mask=torch.ones(4, 4), priority=-1.0)], (4, 4))
    with pytest.raises(ValueError, match="start < end"):
        G.check_conditions([G.Condition(None, 1, start=0.5, end=0.5)], (4, 4))


def test_step_ranges_switch_conditions():
    u, a, b = _eps(0), _eps(1), _eps(2)
    conds = [G.Condition(None, 2.0, end=0.5), G.Condition(None, 3.0, start=0.5)]
    assert torch.allclose(G.combine(u, [a], conds, 0, 10), cfg(u, a, 2.0))
    assert torch.allclose(G.combine(u, [b], conds, 7, 10), cfg(u, b, 3.0))


def test_one_condition_is_classifier_free_guidance_as_diffusers_runs_it(pipe):
    """The one loop with one text condition equals a hand-written diffusers-style CFG loop, bitwise."""
    gens = [torch.Generator().manual_seed(5)]
    noise = initial_noise((1, 4, 8, 8), gens, "cpu", torch.float32)
    c, u = pipe.encode_text(["a red circle"]), pipe.encode_text([""])
    sched = make_scheduler("ddim", pipe.scheduler_config)
    sched.set_timesteps(3)
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            eps_u, eps_c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([u, c])).sample.chunk(2)
            x = sched.step(eps_u + 4.0 * (eps_c - eps_u), t, x).prev_sample
    sched = make_scheduler("ddim", pipe.scheduler_config)
    sched.set_timesteps(3)
    got = sample(unet_denoiser(pipe.unet), sched, noise, Conditioning([G.Condition(c, 4.0)], u), progress=False)
    assert torch.equal(x, got)
    gen = generate_with(pipe, "a red circle", steps=3, guidance=4.0, seed=5, sampler="ddim", decode=False)
    assert torch.allclose(gen.latents, pipe.run(pipe.make_spec("a red circle", steps=3, guidance=4.0, seed=5,
                                                               sampler="ddim"), decode=False, progress=False).latents)


# --- regions ------------------------------------------------------------------------------------------


class _Ctx:
    cross, query_hw = True, (4, 4)


def test_region_hook_hides_a_region_prompt_outside_its_region():
    mask = np.zeros((16, 16), np.float32)
    mask[:, :8] = 1  # left half
    hook = RegionAttentionHook(mask[None], [1.0], tokens_per_prompt=3)
    probs = torch.full((1, 1, 16, 6), 1 / 6)
    out = hook.on_probs(_Ctx(), probs).view(1, 1, 4, 4, 6)
    assert torch.allclose(out.sum(-1), torch.ones(1, 1, 4, 4))
    assert out[..., :, 2:, 3:].abs().max() == 0  # right half: no region tokens
    assert out[..., :, :2, :3].abs().max() == 0  # left half: no base tokens


def test_region_input_errors():
    with pytest.raises(ValueError, match="not inside"):
        parse_region("0,0,80,10:a red circle", (64, 64))
    with pytest.raises(ValueError, match="x0,y0,x1,y1:prompt"):
        parse_region("0,0,8,8", (64, 64))
    with pytest.raises(ValueError, match="positive"):
        check_regions([Region("a", box=(0, 0, 8, 8), weight=1.0), Region("b", box=(4, 4, 12, 12), weight=-1.0)],
                      (16, 16))


@pytest.mark.parametrize("mode", ["attention", "noise"])
def test_regions_generate_on_tiny_model(pipe, mode):
    gen = generate_with(pipe, "a red circle and a blue square", regions=["0,0,8,16:a red circle",
                              "8,0,16,16:a blue square"], region_mode=mode, steps=2, seed=1, n=2,
                              bootstrap=0.5 if mode == "noise" else 0.0)
    assert gen.images.shape == (2, 3, 16, 16) and torch.isfinite(gen.images).all()
    with pytest.raises(ValueError, match="not inside"):
        generate_with(pipe, "a", regions=["0,0,17,16:a red circle"], steps=2)


# --- adapters -----------------------------------------------------------------------------------------


def test_adapter_starts_neutral_trains_alone_and_round_trips(pipe, tmp_path):
    cfg_ = adapter_config_for(pipe.unet, pipe.vae_scale_factor, "sketch", 1, hidden=8)
    adapter = ConditionAdapter(cfg_)
    cond = torch.rand(2, 1, 16, 16)
    res = adapter(cond)
    assert [r.shape[1] for r in res] == list(pipe.unet.config.block_out_channels)
    x, t, text = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), pipe.encode_text(["a", "b"])
    plain = pipe.unet(x, t, encoder_hidden_states=text).sample
    with_adapter = pipe.unet(x, t, encoder_hidden_states=text, down_intrablock_additional_residuals=res).sample
    assert torch.equal(plain, with_adapter)  # zero-initialised outputs
    ns = training_scheduler(pipe.scheduler_config)
    loss = adapter_loss(pipe.unet, adapter, torch.randn(2, 4, 8, 8), text, cond, ns, torch.Generator().manual_seed(0))
    loss.backward()
    assert adapter.outs[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in pipe.unet.parameters())
    torch.nn.init.normal_(adapter.outs[0].weight)
    save_adapter(adapter, tmp_path / "a")
    again = load_adapter(tmp_path / "a")
    assert all(torch.equal(a, b) for a, b in zip(adapter(cond), again(cond)))
    low = HierarchicalAdapter([load_adapter(tmp_path / "a")])
    low.adapters[0].config.levels = (1,)
    assert low({"sketch": cond})[0].abs().sum() == 0
    # through generate_controlled, with a per-condition scale; a tiny adapter does not fit shipped weights
    gen = generate_with(pipe, "a red circle", sketch=np.zeros((16, 16)), adapters={"sketch": tmp_path / "a"},
                              scales={"sketch": 0.5}, steps=2)
    assert gen.images.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="does not fit this model|no trained depth"):
        generate_with(pipe, "a red circle", depth=np.zeros((16, 16)), steps=2)


def test_reference_hook_adds_a_trainable_branch(pipe):
    from t2ikit.attention.processor import AttentionController

    hook = ReferenceAttentionHook(pipe.unet, scale=1.0)
    enc = ReferenceEncoder(pipe.unet.config.cross_attention_dim)
    x, t, text = torch.randn(1, 4, 8, 8), torch.tensor([100]), pipe.encode_text(["a red circle"])
    plain = pipe.unet(x, t, encoder_hidden_states=text).sample
    with AttentionController([hook.set_tokens(enc(torch.rand(1, 3, 16, 16)))]).install(pipe.unet):
        out = pipe.unet(x, t, encoder_hidden_states=text).sample
        out.sum().backward()
    assert not torch.allclose(plain, out)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in hook.projections.parameters())
    hook.scale = 0.0
    with AttentionController([hook]).install(pipe.unet):
        assert torch.allclose(pipe.unet(x, t, encoder_hidden_states=text).sample, plain, atol=1e-6)


# --- condition input ----------------------------------------------------------------------------------


def test_condition_images_are_checked(tmp_path):
    m = render(sample_scene(3, 0), 64)
    Image.fromarray(to_uint8(class_colour_map(m.classes))).save(tmp_path / "mask.png")
    assert np.array_equal(load_condition(tmp_path / "mask.png", "mask", (64, 64)), from_modalities(m, "mask"))
    Image.fromarray(to_uint8(m.sketch)).save(tmp_path / "s.png")
    assert np.array_equal(load_condition(tmp_path / "s.png", "sketch", (64, 64)), m.sketch[None])
    with pytest.raises(ValueError, match="images to generate are 32x32"):
        load_condition(tmp_path / "s.png", "sketch", (32, 32))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="could not be read"):
        load_condition(tmp_path / "bad.png", "sketch", (64, 64))
    with pytest.raises(ValueError, match="unknown condition"):
        load_condition(tmp_path / "s.png", "edges", (64, 64))
    with pytest.raises(ValueError, match="unknown condition 'foo' in --scale"):
        parse_scales(["foo=1"])
    with pytest.raises(ValueError, match="must be a number"):
        parse_scales(["sketch=x"])
    assert set(CONDITIONS) == {"sketch", "depth", "mask", "reference"}


def test_core_mask_constants_are_shapes_worlds():
    """control.encoders keeps Shapes World's mask classes and colours as constants (the core does not import
    the world): they must stay what world.vocab and world.render use."""
    k = len(vocab.SHAPES)
    assert CONDITIONS["mask"] == k and MASK_PALETTE.shape == (k + 1, 3)
    one_class_per_pixel = np.eye(k, dtype=bool)[:, None, :]  # (K, 1, K): pixel j shows class j
    assert np.array_equal(class_colour_map(one_class_per_pixel)[0], MASK_PALETTE[1:])
    assert np.array_equal(class_colour_map(np.zeros((k, 1, 1), bool))[0, 0], MASK_PALETTE[0])  # background


def test_cli_generate_control_errors(tmp_path, monkeypatch, capsys):
    from t2ikit.cli import main

    folder = make_tiny_sd_folder(tmp_path / "tiny")
    sk = tmp_path / "s.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(sk)
    base = ["generate", "a red circle", "--model", str(folder), "--steps", "2", "--out", str(tmp_path / "o.png"),
            "--quiet"]
    assert main(base + ["--scale", "edges=2"]) == 2
    assert "unknown condition 'edges'" in capsys.readouterr().err
    assert main(base + ["--sketch", str(sk)]) == 2
    assert "8x8 px" in capsys.readouterr().err
    assert main(base + ["--region", "0,0,99,4:a red circle"]) == 2
    assert "not inside" in capsys.readouterr().err
    assert main(base + ["--region", "0,0,8,16:a red circle", "--scale", "regions=3"]) == 0


# --- consistency --------------------------------------------------------------------------------------


def test_consistency_metrics_and_loss():
    scene = sample_scene(11, 0, category="colour_binding")
    m = render(scene, 64)
    exact = consistency(m.rgb, scene, m)
    assert exact["text"] == 1 and exact["sketch"] > 0.95 and exact["depth"] > 0.95 and exact["reference"] == 1
    blank = consistency(np.ones((64, 64, 3), np.float32), scene, m)
    assert blank["sketch"] == 0 and blank["mask"] == 0
    assert weighted_consistency_loss(exact) < weighted_consistency_loss(blank)
    assert weighted_consistency_loss({"sketch": 0.5}, {"sketch": 2.0}) == 1.0
    e = np.zeros((8, 8), bool)
    e[4, 2:6] = True
    assert edge_f1(np.roll(e, 1, 0), e) == 1.0 and edge_f1(np.roll(e, 3, 0), e) == 0.0
    img = torch.from_numpy(m.rgb).permute(2, 0, 1)[None].requires_grad_(True)
    target = {"sketch": torch.from_numpy(m.sketch)[None, None], "depth": torch.from_numpy(m.depth)[None, None]}
    good = consistency_loss({"image": img, "depth": target["depth"]}, target)
    bad = consistency_loss({"image": torch.ones_like(img), "depth": torch.rand(1, 1, 64, 64)}, target)
    good.backward()
    assert good < bad and img.grad is not None


def test_adapter_records_name_a_packaged_base_model_portably(tmp_path):
    assert model_label(shipped_model_path()) == shipped_model_path().name  # "shapes-v6b": a name --model takes
    assert model_label(tmp_path) == str(tmp_path.resolve())
