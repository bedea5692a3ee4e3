"""Data-parallel training: 2 gloo processes on localhost give the weights of 1 process with the same global
batch, resume across world sizes, and refuse a world size that does not divide the batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2ikit.train import checkpoint as ckpt
from t2ikit.train.config import load_config
from t2ikit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_config  # noqa: E402

# Short stages; the VAE stage keeps tiny's grad_accum = 2 (micro-batch 2 -> 1 image per rank). lr 1e-4: Adam's
# first steps move a weight by ~lr * g / |g| whatever |g| is, so the float32 rounding of a near-zero gradient
# summed in another order (1e-7 relative) moves weights by up to ~lr * 1e-3; at lr 1e-3 that is 1.6e-6.
EXTRA = (
    "[vae_train] steps = 2\n[vae_train] lr = 1e-4\n[unet_train] steps = 3\n[unet_train] lr = 1e-4\n"
    "[checkpoint] every = 2\n[export] at_end = false"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, out: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={_free_port()}", "-m", "t2ikit", "train", "--config", str(config), "--out", str(out),
           "--quiet", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    tensors, state, _ = ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))}, state


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_gloo_ranks_equal_one_process_and_resume_across_world_sizes(tmp_path):
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, EXTRA)
    single = tmp_path / "single"
    Trainer(load_config(config), out=single).run()
    ddp = tmp_path / "ddp"
    proc = _torchrun(config, ddp, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (a, _), (b, state) = _weights(single), _weights(ddp)
    assert state["world_size"] == 2 and state["step"] == 3
    assert _max_diff(a, b) < 1e-6
    # One log, written by rank 0, with the global-batch loss.
    assert sum(1 for line in (ddp / "log.jsonl").read_text().splitlines() if '"event": "train"' in line) == 5
    # Resume the 2-process run's step-2 checkpoint in 1 process: the same weights again.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    src = ckpt.list_checkpoints(ddp / "checkpoints")[0]
    assert src.name == "ckpt-2-unet-000000002"
    os.symlink(src.resolve(), resumed / "checkpoints" / src.name)
    Trainer(load_config(config), out=resumed).run(resume=str(src))
    assert _max_diff(a, _weights(resumed)[0]) < 1e-6


def _as_rank_of_two(monkeypatch) -> None:
    """Make a Trainer believe it is rank 0 of 2 (its checks of the config run before any process group is used)."""
    from t2ikit.train import distributed

    monkeypatch.setattr("t2ikit.train.trainer.distributed.init_from_env",
                        lambda device_type: distributed.DistInfo(0, 2, 0))


def test_world_size_must_divide_the_micro_batch(tmp_path, monkeypatch):
    # Checked in the Trainer's constructor, before compute: no processes need to be started to see it.
    _as_rank_of_two(monkeypatch)
    config = tiny_config(tmp_path, "[unet_train] batch_size = 3\n" + EXTRA)
    with pytest.raises(ValueError, match="world size 2 does not divide the micro-batch"):
        Trainer(load_config(config), out=tmp_path / "bad")


# ----------------------------------------------------------------------------------------------------
# FSDP (run.parallel = "fsdp"): the same weights, checkpoints and export as one process
# ----------------------------------------------------------------------------------------------------


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _fsdp_run(tmp_path):
    """One process and two FSDP ranks on the same config: (config, single-process folder, FSDP folder)."""
    torch.set_num_threads(1)
    config = tiny_config(tmp_path, EXTRA + '\n[export] at_end = true\n[run] parallel = "fsdp"')
    single = tmp_path / "single"
    Trainer(load_config(config), out=single).run()  # 1 process: run.parallel is not used
    fsdp = tmp_path / "fsdp"
    proc = _torchrun(config, fsdp, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, single, fsdp


def test_fsdp_two_gloo_ranks_equal_one_process_and_export(tmp_path):
    _, single, fsdp = _fsdp_run(tmp_path)
    (a, _), (b, state) = _weights(single), _weights(fsdp)
    assert state["world_size"] == 2 and state["step"] == 3
    assert _max_diff(a, b) < 1e-6  # whole tensors gathered from the shards: model, EMA
    # Adam moments too, gathered into the same per-index layout as one process writes.
    opt = [{k: v for k, v in ckpt.load_checkpoint(ckpt.list_checkpoints(out / "checkpoints")[-1])[0].items()
            if k.startswith("optim.")} for out in (single, fsdp)]
    assert _max_diff(*opt) < 1e-6
    # The export (rank 0, EMA weights) matches too.
    unet = "model/unet/diffusion_pytorch_model.safetensors"
    assert _max_diff(_safetensors(single / unet), _safetensors(fsdp / unet)) < 1e-6


@pytest.mark.slow  # a second 2-rank launch on top of the run above; the FSDP equality stays in the default suite
def test_an_fsdp_checkpoint_resumes_under_fsdp_and_in_one_process(tmp_path):
    config, single, fsdp = _fsdp_run(tmp_path)
    a = _weights(single)[0]
    # Resume the FSDP step-2 checkpoint under FSDP (whole tensors cut into shards again, optimizer included).
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    src = ckpt.list_checkpoints(fsdp / "checkpoints")[0]
    assert src.name == "ckpt-2-unet-000000002"
    os.symlink(src.resolve(), resumed / "checkpoints" / src.name)
    proc = _torchrun(config, resumed, 2, "--resume", str(src))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(a, _weights(resumed)[0]) < 1e-6
    # ... and in 1 process: an FSDP checkpoint holds whole tensors, like any other.
    alone = tmp_path / "alone"
    (alone / "checkpoints").mkdir(parents=True)
    os.symlink(src.resolve(), alone / "checkpoints" / src.name)
    Trainer(load_config(config), out=alone).run(resume=str(src))
    assert _max_diff(a, _weights(alone)[0]) < 1e-6


def _with_losses(config: Path, weighting: str) -> Path:
    """configs/tiny.toml has no [losses] table (tiny_config edits existing tables only): append one."""
    config.write_text(config.read_text() + f'\n[losses]\nimage_quality = 0.1\nweighting = "{weighting}"\n')
    return config


@pytest.mark.slow  # ~35 s of 2-process training on 2 cores; FSDP equality stays in the default suite above
def test_fsdp_shards_the_loss_heads_and_evaluates_whole_weights(tmp_path):
    # The uncertainty weighting's log-variances (in the "aux" module) are sharded with the UNet; the Sobel
    # image-quality term is a per-image mean, so the global batch gives the same loss however it is split.
    # CompBench every 2 steps runs on rank 0 over whole copies gathered from the shards.
    extra = EXTRA + ('\n[run] parallel = "fsdp"\n[eval] every = 2\n[eval] compbench = true\n[eval] n_prompts = 1'
                     "\n[eval] steps = 2")
    config = _with_losses(tiny_config(tmp_path, extra), "uncertainty")
    single = tmp_path / "single"
    Trainer(load_config(config), out=single).run()
    fsdp = tmp_path / "fsdp"
    proc = _torchrun(config, fsdp, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (a, _), (b, _) = _weights(single), _weights(fsdp)
    assert any(k.startswith("model.aux.log_vars") for k in a)
    assert _max_diff(a, b) < 1e-6
    evals = [json.loads(line) for line in (fsdp / "log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == [2]
    assert 0.0 <= evals[0]["compbench_overall"] <= 1.0


def test_fsdp_refuses_gradnorm(tmp_path, monkeypatch):
    _as_rank_of_two(monkeypatch)
    config = _with_losses(tiny_config(tmp_path, EXTRA + '\n[run] parallel = "fsdp"'), "gradnorm")
    with pytest.raises(ValueError, match=r"losses.weighting='gradnorm' does not work with run.parallel='fsdp'"):
        Trainer(load_config(config), out=tmp_path / "bad")
