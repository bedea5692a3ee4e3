"""Fusion blocks, retrofit, gate recording and the fusion bench, on tiny models (seconds on a CPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from t2ikit.attention.capture import AttentionStore
from t2ikit.attention.processor import AttentionController
from t2ikit.models.fusion import FusionBlock, Gate, GateRecorder, parse_fusion, plot_gates
from t2ikit.models.retrofit import fusion_parameters, fusion_plan, resolutions, retrofit

STRATEGIES = ["sequential", "parallel", "interleaved", "gated", "hierarchical:8=gated,4=interleaved"]


@pytest.fixture
def unet(pipe):
    """A fresh copy of the tiny folder's UNet (down 1, mid 1, up 2 transformer blocks at 8 and 4)."""
    return copy.deepcopy(pipe.unet).requires_grad_(True)


def _inputs(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    text = torch.randn(2, 16, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([10, 700]), text


def _out(unet, x, t, text):
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=text).sample


# ---------------------------------------------------------------------------------------------------
# Parsing and bad input
# ---------------------------------------------------------------------------------------------------


def test_parse_names_and_maps():
    assert parse_fusion("gated").default == "gated"
    spec = parse_fusion("hierarchical:8=gated, 4=sequential")
    assert spec.per_resolution == {8: "gated", 4: "sequential"} and spec.strategy_at(16) == "sequential"
    assert parse_fusion({8: "parallel"}).name == "hierarchical:8=parallel"


@pytest.mark.parametrize("bad, match", [
    ("attention", "unknown fusion strategy 'attention'"),
    ("hierarchical", "needs a map"),
    ("hierarchical:8=fancy", "unknown fusion strategy 'fancy' at resolution 8"),
    ("hierarchical:eight=gated", "RESOLUTION=STRATEGY"),
    ("gated:8=sequential", "only 'hierarchical'"),
])
def test_bad_strategy_names(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_fusion(bad)


def test_bad_input_fails_before_compute(unet, pipe):
    before = copy.deepcopy(unet.state_dict())
    with pytest.raises(ValueError, match=r"resolution\(s\) \[16\].*\[8, 4\]"):
        retrofit(unet, "hierarchical:16=gated")
    with pytest.raises(TypeError, match="UNet2DConditionModel, got AutoencoderKL"):
        retrofit(pipe.vae, "gated")
    with pytest.raises(ValueError, match="parallel fusion cannot start equal"):
        retrofit(unet, "parallel")
    assert not any(isinstance(m, FusionBlock) for m in unet.modules())  # nothing was replaced
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    retrofit(unet, "gated")
    with pytest.raises(ValueError, match="already has fusion blocks"):
        retrofit(unet, "gated")


def test_plan_resolutions_match_the_forward_pass(unet):
    assert resolutions(unet) == [8, 4]
    seen = {}

    def hook(path):
        def record(module, inputs, output):  # (B, N, C) tokens: N = side ** 2
            seen[path] = int(round(inputs[0].shape[1] ** 0.5))
        return record

    hooks = [m.register_forward_hook(hook(p)) for p, m in unet.named_modules() if p.endswith("transformer_blocks.0")]
    _out(unet, *_inputs(unet))
    for h in hooks:
        h.remove()
    plan = {path: res for path, res, _ in fusion_plan(unet, "hierarchical:8=gated")}
    assert seen == plan


# ---------------------------------------------------------------------------------------------------
# Retrofit: equal at the start, on a saved model
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "parallel"])
def test_retrofit_of_saved_model_starts_equal(pipe, strategy):
    unet = copy.deepcopy(pipe.unet)
    x, t, text = _inputs(unet)
    ref = _out(unet, x, t, text)
    retrofit(unet, strategy)
    assert sum(isinstance(m, FusionBlock) for m in unet.modules()) == 4  # down 1, mid 1, up 2
    assert (_out(unet, x, t, text) - ref).abs().max().item() < 1e-5
    # the pretrained weights keep their names: the original state dict loads into the retrofitted model
    missing, unexpected = unet.load_state_dict(pipe.unet.state_dict(), strict=False)
    assert not unexpected and all(any(s in k for s in (".gate.", ".extra.")) for k in missing)


def test_new_parameters_train_and_change_the_output(pipe):
    for strategy in ("gated", "interleaved"):
        unet = retrofit(copy.deepcopy(pipe.unet), strategy)
        x, t, text = _inputs(unet)
        ref = _out(unet, x, t, text)
        params = fusion_parameters(unet)
        assert params
        unet.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=1.0)
        unet(x, t, encoder_hidden_states=text).sample.pow(2).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        opt.step()
        assert (_out(unet, x, t, text) - ref).abs().max().item() > 1e-6


def test_parallel_from_scratch_has_learnable_alpha_beta(unet):
    unet = retrofit(unet, "parallel", from_scratch=True)
    blocks = [m for m in unet.modules() if isinstance(m, FusionBlock)]
    assert all(b.alpha.requires_grad and b.beta.requires_grad and b.alpha.item() == 1.0 for b in blocks)
    x, t, text = _inputs(unet)
    unet(x, t, encoder_hidden_states=text).sample.sum().backward()
    assert all(b.alpha.grad is not None and b.beta.grad is not None for b in blocks)


def test_batch_equals_single(unet):
    unet = retrofit(unet, "hierarchical:8=gated,4=parallel", from_scratch=True)
    x, t, text = _inputs(unet)
    both = _out(unet, x, t, text)
    one = _out(unet, x[1:], t[1:], text[1:])
    assert torch.allclose(both[1:], one, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Hooks and capture still work in every strategy
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hooked_processor_and_capture_in_every_strategy(unet, strategy):
    unet = retrofit(unet, strategy, from_scratch=True)
    x, t, text = _inputs(unet)
    ref = _out(unet, x, t, text)
    store = AttentionStore()
    with AttentionController([store]).install(unet):
        out = _out(unet, x, t, text)
    assert torch.allclose(out, ref, atol=1e-5)
    cross_layers = [name for name in unet.attn_processors if ".attn2." in name]
    extra = {"interleaved": 4, "hierarchical:8=gated,4=interleaved": 1}.get(strategy, 0)  # one more per block
    assert len(cross_layers) == 4 + extra
    assert sorted(store.sums) == sorted(cross_layers)  # every cross-attention layer was captured


# ---------------------------------------------------------------------------------------------------
# Gate behaviour
# ---------------------------------------------------------------------------------------------------


def test_gate_recorder_records_per_layer_and_step(pipe, tmp_path):
    from t2ikit.pipeline import T2IPipeline

    unet = retrofit(copy.deepcopy(pipe.unet), "gated")
    p = T2IPipeline(unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler_config)
    rec = GateRecorder(unet)
    p.generate(["a red circle", "a blue square"], steps=3, guidance=4.0, progress=False, hooks=[rec.clock])
    rec.remove()
    layers, steps, grid = rec.table()
    assert len(layers) == 4 and steps == [0, 1, 2]
    assert all(abs(v - 0.5) < 1e-6 for row in grid for v in row)  # zero-init gates are exactly 1/2
    plot_gates(layers, steps, grid, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no gated fusion blocks"):
        GateRecorder(pipe.unet)


def test_gate_is_per_token_and_channel():
    gate = Gate(8)
    torch.nn.init.normal_(gate.proj.weight)
    g = gate(torch.randn(2, 5, 8), torch.randn(2, 5, 8))
    assert g.shape == (2, 5, 8) and 0 < g.min() and g.max() < 1 and g.std() > 0


# ---------------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------------


def test_bench_fusion_on_tiny_model(pipe):
    from t2ikit.bench.fusion import Budget, compare, markdown

    b = Budget(steps=2, batch_size=2, size="xs", n_prompts=1, seeds=1, sample_steps=2, image_size=32, timing_rounds=1)
    report = compare(["sequential", "gated"], b, base=pipe, log=lambda m: None)
    rows = report["rows"]
    assert [r["strategy"] for r in rows] == ["sequential", "gated"]
    assert rows[1]["unet_params"] > rows[0]["unet_params"]
    assert all(r["step_s"] > 0 and r["unet_call_s"] > 0 and r["step_s_training_phase"] > 0 for r in rows)
    assert rows[1]["gflops_per_call"] > rows[0]["gflops_per_call"] > 0
    assert "| gated |" in markdown(report)
    from t2ikit.bench.fusion import retrofit_equality

    check = retrofit_equality(base=pipe, strategies=("gated", "interleaved"), batch=1)
    assert all(v["max_abs_diff"] < 1e-5 and v["added_params"] > 0 for v in check.values())
    with pytest.raises(ValueError, match="resolution"):
        compare(["hierarchical:2=gated"], b, base=pipe)
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        compare(["fancy"], b, base=pipe)


# ---------------------------------------------------------------------------------------------------
# Chosen by config: the trainer builds, trains and exports a fused UNet
# ---------------------------------------------------------------------------------------------------


def test_trainer_config_fusion_round_trip(tmp_path):
    from pathlib import Path

    from t2ikit.models.retrofit import load_fused_unet
    from t2ikit.train.config import load_config
    from t2ikit.train.trainer import Trainer

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "tiny.toml")
    cfg.model.fusion = "hierarchical:16=gated"
    cfg.vae_train.steps, cfg.unet_train.steps, cfg.checkpoint.every = 1, 2, 100
    trainer = Trainer(cfg, out=tmp_path / "run")
    assert sum(isinstance(m, FusionBlock) and m.strategy == "gated" for m in trainer.unet.modules()) == 3  # down 1, up 2
    folder = trainer.run()
    unet = load_fused_unet(folder)
    x, t, text = _inputs(unet)
    x = torch.randn(2, 4, 16, 16)
    ema = trainer.pipeline(ema=True).unet
    assert torch.allclose(_out(unet, x, t, text), _out(ema, x, t, text), atol=1e-6)
    from t2ikit.pipeline import T2IPipeline  # the pipeline loads the fused UNet, gates included

    loaded = T2IPipeline.from_folder(folder).unet
    assert sum(isinstance(m, FusionBlock) for m in loaded.modules()) > 0
    assert torch.allclose(_out(loaded, x, t, text), _out(ema, x, t, text), atol=1e-6)
    cfg.model.fusion = "fancy"
    with pytest.raises(ValueError, match="unknown fusion strategy 'fancy'"):
        cfg.validate()
