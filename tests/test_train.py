"""The trainer on the tiny config: configs, data stream, checkpoints (atomic, exact resume after SIGKILL,
bad input refused) and the exported diffusers folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from t2ikit.train import checkpoint as ckpt
from t2ikit.train.config import OptimConfig, load_config
from t2ikit.train.data import ShapesBatches, make_loader, to_model_input
from t2ikit.train.trainer import Trainer, lr_at

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.toml"
MINI = ROOT / "configs" / "mini.toml"


def tiny_config(tmp_path: Path, extra: str = "", name: str = "run.toml", base: Path = TINY) -> Path:
    """`base` (configs/tiny.toml) with `extra` TOML lines merged in (later keys of a table win by rewriting it)."""
    text = base.read_text()
    for line in extra.strip().splitlines():
        section, assignment = line.split(" ", 1)  # "[table] key = value"
        key = assignment.split("=")[0].strip()
        head, sep, rest = text.partition(section + "\n")
        kept = [ln for ln in rest.splitlines() if not ln.split("=")[0].strip() == key]
        text = head + sep + assignment + "\n" + "\n".join(kept) + "\n"
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


def test_shipped_configs_load():
    cfg = load_config(TINY)
    assert cfg.model.size == "xs" and cfg.unet_train.steps > 0
    load_config(ROOT / "configs" / "shapes-v1.toml")
    assert load_config(MINI).model.size == "mini-m"  # a size of models.sizes.MINI_SIZES, no import needed


def test_the_mini_config_trains_from_the_cli(tmp_path):
    """`t2ikit train --config configs/mini.toml` (the report's mini protocol) runs as it is, steps cut short."""
    from t2ikit.cli import main

    extra = ("[vae_train] steps = 1\n[vae_train] batch_size = 2\n[vae_train] calibration_batches = 1\n"
             "[unet_train] steps = 1\n[unet_train] batch_size = 2\n[unet_train] warmup_steps = 1")
    config, out = tiny_config(tmp_path, extra, base=MINI), tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    assert ckpt.list_checkpoints(out / "checkpoints")[-1].name == "ckpt-2-unet-000000001"
    trained = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {(r["stage"], r["step"]) for r in trained if r.get("event") == "train"} == {("vae", 1), ("unet", 1)}
    assert json.loads((out / "config.json").read_text())["model"]["size"] == "mini-m"


def test_unknown_key_is_named(tmp_path):
    path = tiny_config(tmp_path, "[unet_train] snr_gama = 5.0")
    with pytest.raises(ValueError, match="unet_train.snr_gama"):
        load_config(path)
    (tmp_path / "t.toml").write_text("[trainer]\nsteps = 1\n")
    with pytest.raises(ValueError, match="'trainer'"):
        load_config(tmp_path / "t.toml")


@pytest.mark.parametrize(
    "extra,match",
    [
        ('[model] size = "xxl"', "unknown model size 'xxl'"),
        ('[model] vae = "f16"', "unknown VAE size"),
        ("[unet_train] steps = \"ten\"", "unet_train.steps"),
        ("[vae_train] grad_accum = 3", "grad_accum"),
        ('[diffusion] prediction_type = "sample"', "prediction_type"),
        ("[unet_train] snr_floor = -1.0", "snr_floor must be in"),
        ("[unet_train] snr_floor = 6.0\n[unet_train] snr_gamma = 5.0", "snr_floor must be in"),
        ('[unet_train] snr_floor = 1.0\n[diffusion] prediction_type = "epsilon"', "snr_floor needs"),
        ("[unet_train] timestep_range = [300, 100]", "unet_train.timestep range must be integers"),
        ("[unet_train] timestep_range = [0, 2000]", "unet_train.timestep range must be integers"),
        ("[export] defaults = { cfg_scale = 5.0 }", "export.defaults: unknown default"),
        ('[export] defaults = { layout = "grid" }', "export.defaults: default layout must be one of"),
        ("[export] layout_sides = { tiny = 0.1 }", "export.layout_sides: unknown size class 'tiny'"),
        ("[export] layout_gap = 0.7", "export.layout_gap must be a fraction of the image side in \\[0, 0.5\\)"),
    ],
)
def test_bad_values_are_errors(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        load_config(tiny_config(tmp_path, extra))


def test_the_low_noise_fine_tune_config_trains_only_its_band_with_the_text_encoder_frozen():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "shapes-v6b-lowt.toml")
    assert cfg.unet_train.timestep_range == [0, 300] and cfg.unet_train.text_lr_scale == 0.0
    assert cfg.unet_train.snr_gamma == 0.0 and cfg.export.defaults["guidance"] == 2.0


def test_lr_warmup_then_cosine_to_floor():
    o = OptimConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, o) == pytest.approx(0.1) and lr_at(9, o) == pytest.approx(1.0)
    assert lr_at(10, o) == pytest.approx(1.0) and lr_at(100, o) == pytest.approx(0.1)
    assert all(lr_at(t, o) >= lr_at(t + 1, o) for t in range(10, 100))


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def test_stream_is_deterministic_and_workers_agree():
    from t2ikit.train.trainer import build_tokenizer

    tok = build_tokenizer(48)
    ds = ShapesBatches(seed=5, batch_size=3, length=4, resolution=32, tokenizer=tok, caption_dropout=0.5)
    a, b = ds[2], ShapesBatches(5, 3, 4, 32, tok, 0.5)[2]
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert a["pixels"].shape == (3, 3, 32, 32) and a["pixels"].dtype == torch.uint8
    x = to_model_input(a["pixels"], "cpu")
    assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1 and x.max() > 0.9
    multi = [item["input_ids"] for item in make_loader(ds, start=1, workers=2, prefetch=1, pin_memory=False)]
    assert len(multi) == 3 and all(torch.equal(m, ds[i + 1]["input_ids"]) for i, m in enumerate(multi))


# ----------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        ckpt.resolve_checkpoint(tmp_path / "checkpoints", "latest")
    with pytest.raises(ValueError, match="does not exist"):
        ckpt.resolve_checkpoint(tmp_path, str(tmp_path / "ckpt-nope"))


def test_pickle_checkpoints_are_refused(tmp_path):
    with pytest.raises(ValueError, match="refusing pickle"):
        ckpt.resolve_checkpoint(tmp_path, str(tmp_path / "model.pt"))
    folder = tmp_path / "ckpt-1-vae-000000001"
    folder.mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "optimizer.bin")
    with pytest.raises(ValueError, match="never unpickles"):
        ckpt.load_checkpoint(folder)


def test_atomic_save_keeps_last_k_and_detects_corruption(tmp_path):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    tensors, meta = ckpt.optimizer_to_flat(opt)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, ckpt.checkpoint_name(1, "vae", step), tensors, {"optimizer": meta}, "{}", keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-1-vae-000000002", "ckpt-1-vae-000000003"]
    assert not list(tmp_path.glob(".tmp-*"))
    loaded, state, _ = ckpt.load_checkpoint(tmp_path / "ckpt-1-vae-000000003")
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))])
    ckpt.optimizer_from_flat(opt2, loaded, state["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    blob = tmp_path / "ckpt-1-vae-000000003" / ckpt.TENSORS
    blob.write_bytes(blob.read_bytes()[:40])
    with pytest.raises(ValueError, match="is corrupt"):
        ckpt.load_checkpoint(blob.parent)
    (tmp_path / "ckpt-1-vae-000000002" / ckpt.STATE).unlink()
    with pytest.raises(ValueError, match="incomplete"):
        ckpt.load_checkpoint(tmp_path / "ckpt-1-vae-000000002")


def _final_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors, state, _ = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
    assert state["stage"] == "unet"
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    extra = "[unet_train] steps = 10\n[export] at_end = false"
    config = tiny_config(tmp_path, extra)
    # The killed run: a real `t2ikit train` process, SIGKILLed once it has written a UNet checkpoint.
    killed = tmp_path / "killed"
    # Same intra-op thread count as this process (which finishes both runs): float sums are only
    # bit-reproducible for a fixed number of threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t2ikit", "train", "--config", str(config), "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "ckpt-2-unet-000000002").exists():
        if proc.poll() is not None:
            pytest.fail(f"train exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_done = max(int(p.name.rsplit("-", 1)[1]) for p in ckpt.list_checkpoints(killed / "checkpoints"))
    assert steps_done < 10, "the run finished before it was killed; make it longer"
    Trainer(load_config(config), out=killed).run(resume="latest")
    # The straight run, in this process.
    straight = tmp_path / "straight"
    Trainer(load_config(config), out=straight).run()
    a, b = _final_tensors(straight), _final_tensors(killed)
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ after resume, e.g. {different[:3]}"


def test_resume_refuses_a_different_model(tmp_path):
    out = tmp_path / "run"
    Trainer(load_config(tiny_config(tmp_path, "[unet_train] steps = 2\n[export] at_end = false")), out=out).run()
    other = load_config(tiny_config(tmp_path, "[diffusion] prediction_type = \"epsilon\"", name="eps.toml"))
    with pytest.raises(ValueError, match=r"different \[diffusion\] config"):
        Trainer(other, out=out).run(resume="latest")


# ----------------------------------------------------------------------------------------------------
# Export and CLI
# ----------------------------------------------------------------------------------------------------


def test_export_loads_in_diffusers_and_generates(tmp_path):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from t2ikit.cli import main

    out = tmp_path / "run"
    assert main(["train", "--config", str(TINY), "--out", str(out), "--quiet"]) == 0
    assert (out / "model" / "model_index.json").is_file()
    assert (ckpt.list_checkpoints(out / "checkpoints")[-1] / ckpt.CONFIG).is_file()
    pipe = StableDiffusionPipeline.from_pretrained(out / "model")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae.config.scaling_factor != 1.0  # calibrated from the data
    image = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3)
    # EMA weights, not the raw ones, are exported.
    tensors, _, _ = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
    assert torch.equal(pipe.unet.conv_in.weight, tensors["ema.unet.conv_in.weight"])
    assert not torch.equal(pipe.unet.conv_in.weight, tensors["model.unet.conv_in.weight"])
    # On-demand fp16 export from the newest checkpoint.
    half = tmp_path / "half"
    assert main(["train", "--config", str(TINY), "--out", str(out), "--export-only", str(half), "--fp16"]) == 0
    from safetensors.torch import load_file

    weights = load_file(next((half / "unet").glob("*.safetensors")))
    assert all(v.dtype == torch.float16 for v in weights.values())
    loaded = StableDiffusionPipeline.from_pretrained(half)  # one dtype for every part, no dtype= needed
    loaded("a red circle", num_inference_steps=1, height=32, width=32, output_type="np")
    # [export] defaults land in the folder's t2ikit.json, which t2ikit reads and diffusers ignores
    from t2ikit.pipeline import T2IPipeline

    config = tiny_config(tmp_path, "[export] defaults = { relation_guidance = 7.0 }\n[export] layout_gap = 0.1",
                         name="defaults.toml")
    assert main(["train", "--config", str(config), "--out", str(out), "--export-only", str(tmp_path / "d")]) == 0
    exported = T2IPipeline.from_folder(tmp_path / "d")
    assert exported.defaults["relation_guidance"] == 7.0 and exported.layout_gap == 0.1
    StableDiffusionPipeline.from_pretrained(tmp_path / "d")


def test_cli_reports_bad_input_as_a_sentence(tmp_path, capsys):
    from t2ikit.cli import main

    assert main(["train", "--config", str(tiny_config(tmp_path, "[run] sed = 1"))]) == 2
    assert "unknown config key 'run.sed'" in capsys.readouterr().err
    assert main(["train", "--config", str(TINY), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_eval_hooks_run_every_n_steps_and_compbench_plugs_in(tmp_path):
    extra = "[unet_train] steps = 2\n[export] at_end = false\n[eval] every = 1\n[eval] compbench = true\n" \
            "[eval] n_prompts = 1\n[eval] steps = 2"
    calls = []
    out = tmp_path / "run"
    trainer = Trainer(load_config(tiny_config(tmp_path, extra)), out=out,
                      eval_hooks=(lambda t, step: calls.append(step) or {"mine": step},))
    trainer.run()
    assert calls == [1, 2]
    import json

    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["mine"] for e in evals] == [1, 2]
    assert all(0.0 <= e["compbench_overall"] <= 1.0 for e in evals)


def test_fusion_option_retrofits_the_unet(tmp_path):
    with pytest.raises(ValueError):
        load_config(tiny_config(tmp_path, '[model] fusion = "telepathy"'))
    trainer = Trainer(load_config(tiny_config(tmp_path, '[model] fusion = "gated"', name="g.toml")), out=tmp_path)
    assert "Fusion" in type(trainer.unet.down_blocks[0].attentions[0].transformer_blocks[0]).__name__


def test_time_limit_checkpoints_and_resume_finishes(tmp_path):
    from t2ikit.cli import main

    config, out = tiny_config(tmp_path, "[export] at_end = false"), tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--time-limit", "1e-9"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["ckpt-1-vae-000000001"]
    assert '"time_limit"' in (out / "log.jsonl").read_text()
    assert main(["train", "--config", str(config), "--out", str(out), "--resume"]) == 0
    assert ckpt.list_checkpoints(out / "checkpoints")[-1].name == "ckpt-2-unet-000000006"


def test_init_fine_tunes_an_exported_model_and_keeps_its_vae(tmp_path):
    """model.init starts from an exported folder: step 0 equals it, its VAE scaling factor is kept (no
    recalibration when vae_train.steps = 0), and training moves the UNet; bad folders fail before compute."""
    base = Trainer(load_config(tiny_config(tmp_path, "[unet_train] steps = 2", name="base.toml")), out=tmp_path / "base")
    folder = base.run()
    from diffusers import UNet2DConditionModel

    exported = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    extra = f'[model] init = "{folder}"\n[vae_train] steps = 0\n[unet_train] steps = 2\n[checkpoint] every = 1'
    ft = Trainer(load_config(tiny_config(tmp_path, extra, name="ft.toml")), out=tmp_path / "ft")
    assert torch.equal(ft.unet.conv_in.weight, exported.conv_in.weight)
    assert torch.equal(ft.ema_unet.shadow["conv_in.weight"], exported.conv_in.weight)
    factor = base.vae.config.scaling_factor
    assert ft.vae.config.scaling_factor == factor != 1.0
    tuned = ft.run()
    assert ft.vae.config.scaling_factor == factor
    assert not torch.equal(UNet2DConditionModel.from_pretrained(tuned, subfolder="unet").conv_in.weight,
                           exported.conv_in.weight)

    with pytest.raises(ValueError, match="not a model folder"):
        load_config(tiny_config(tmp_path, f'[model] init = "{tmp_path}"', name="none.toml"))
    with pytest.raises(ValueError, match="does not fit model.size='s'"):
        Trainer(load_config(tiny_config(tmp_path, f'[model] init = "{folder}"\n[model] size = "s"', name="s.toml")),
                out=tmp_path / "s")


def test_style_share_mixes_style_scenes_into_the_vae_stream_only(tmp_path):
    """vae_train.style_share draws that share of the VAE's scenes from the style category (per scene, so a
    shard's one-scene batches equal the whole batch); 0 leaves the stream exactly as it was."""
    from t2ikit.train.data import style_mixed_batch
    from t2ikit.world.dataset import make_batch

    whole = style_mixed_batch(3, 5, 8, 32, "train", style_share=0.5)
    parts = [style_mixed_batch(3, 5 * 8 + j, 1, 32, "train", style_share=0.5) for j in range(8)]
    assert np.array_equal(whole["rgb"], np.concatenate([p["rgb"] for p in parts]))
    assert whole["captions"] == [c for p in parts for c in p["captions"]]
    def not_white(images) -> int:  # the corner pixel is the background
        return sum(bool((img[0, 0] < 0.99).any()) for img in images)

    mixed, plain = style_mixed_batch(0, 0, 200, 16, "train", style_share=0.5), make_batch(0, 0, 200, 16)
    assert not_white(mixed["rgb"]) > not_white(plain["rgb"]) + 20, (not_white(mixed["rgb"]), not_white(plain["rgb"]))
    none = style_mixed_batch(0, 0, 4, 16, "train", style_share=0.0)
    assert np.array_equal(none["rgb"], np.concatenate([make_batch(0, j, 1, 16)["rgb"] for j in range(4)]))
    trainer = Trainer(load_config(tiny_config(tmp_path, "[vae_train] style_share = 0.5")), out=tmp_path / "run")
    vae_item = trainer._dataset("vae", 8, 1, tokenizer=None)[0]
    expected = style_mixed_batch(trainer.cfg.run.seed * 3, 0, 8, trainer.cfg.model.resolution, "train", 0.5)
    assert vae_item["captions"] == expected["captions"]
    unet_item = trainer._dataset("unet", 8, 1, tokenizer=None)[0]
    assert unet_item["captions"] == make_batch(trainer.cfg.run.seed * 3 + 1, 0, 8, trainer.cfg.model.resolution)["captions"]
    with pytest.raises(ValueError, match="style_share"):
        load_config(tiny_config(tmp_path, "[vae_train] style_share = 2.0", name="bad.toml"))


def test_stop_at_stops_where_the_full_schedule_would_be_and_resume_continues(tmp_path, capsys):
    """`--stop-at N` ends the UNet stage at step N with the lr schedule of the whole run (a time-limited run's stop,
    written down so that a rerun reproduces it); its checkpoint equals step N of the uninterrupted run."""
    from t2ikit.cli import main

    extra = "[export] at_end = false\n[checkpoint] every = 1\n[checkpoint] keep = 20"
    config = tiny_config(tmp_path, extra)
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "--config", str(config), "--out", str(full)]) == 0
    assert main(["train", "--config", str(config), "--out", str(part), "--stop-at", "3"]) == 0
    assert ckpt.list_checkpoints(part / "checkpoints")[-1].name == "ckpt-2-unet-000000003"
    assert '"stop_at"' in (part / "log.jsonl").read_text()


    def trained(path: Path) -> dict[str, torch.Tensor]:  # weights, EMA, optimizer (not the process's global RNG)
        return {k: v for k, v in ckpt.load_checkpoint(path)[0].items() if not k.startswith("rng.")}

    stopped, same_step = trained(ckpt.list_checkpoints(part / "checkpoints")[-1]), trained(
        full / "checkpoints" / "ckpt-2-unet-000000003")
    assert stopped.keys() == same_step.keys() and any(k.startswith("optim.") for k in stopped)
    assert all(torch.equal(stopped[k], same_step[k]) for k in stopped)
    assert main(["train", "--config", str(config), "--out", str(part), "--resume"]) == 0
    assert ckpt.list_checkpoints(part / "checkpoints")[-1].name == "ckpt-2-unet-000000006"
    end, full_end = (trained(ckpt.list_checkpoints(d / "checkpoints")[-1]) for d in (part, full))
    assert all(torch.equal(end[k], full_end[k]) for k in end)
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "bad"), "--stop-at", "7"]) == 2
    assert "run.stop_at must be in [0, unet_train.steps = 6]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
