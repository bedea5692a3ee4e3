"""Scaling sweep: config errors, a 2x2 grid of tiny runs writes the run table, a restarted sweep skips done runs."""

import csv
import json
from pathlib import Path

import pytest
import torch

from t2ikit.scaling.fit import RUN_COLUMNS, read_runs
from t2ikit.scaling.sweep import DONE, EXTRA_COLUMNS, final_loss, load_sweep_config, run_sweep, training_wall_s

ROOT = Path(__file__).resolve().parents[1]

TINY_SIZE = """
[sizes.xs-tiny]
block_out_channels = [4, 8]
layers_per_block = 1
head_dim = 4
norm_num_groups = 2
text_hidden = 8
text_layers = 1
text_heads = 2
"""


SWEEP = {
    "base": f'"{ROOT / "configs" / "tiny.toml"}"', "sizes": '["xs-tiny", "xs"]', "budgets": "[2, 3]",
    "budget_unit": '"steps"', "batch_size": "2", "resolution": "16", "warmup_steps": "1", "checkpoint_every": "2",
}


def write_config(tmp_path: Path, sweep: str = "", extra: str = "") -> Path:
    """A 2x2 sweep config; `sweep` = extra lines of [sweep] (a key given there replaces its default)."""
    given = dict(line.split(" = ", 1) for line in sweep.splitlines() if line)
    lines = "\n".join(f"{k} = {v}" for k, v in {**SWEEP, **given}.items())
    path = tmp_path / "sweep.toml"
    path.write_text(f"""
[sweep]
out = "{tmp_path / 'out'}"
{lines}

[vae]
size = "xs"
steps = 1
batch_size = 2

[eval]
compbench = false
{TINY_SIZE}
{extra}
""")
    return path


# ----------------------------------------------------------------------------------------------------
# Config errors
# ----------------------------------------------------------------------------------------------------


def test_shipped_config_loads():
    cfg = load_sweep_config(ROOT / "configs" / "sweep-cpu.toml")
    assert len(cfg.sweep.sizes) >= 4 and len(cfg.sweep.budgets) >= 3
    assert [cfg.steps(b) for b in cfg.sweep.budgets] == [b // cfg.sweep.batch_size for b in cfg.sweep.budgets]


@pytest.mark.parametrize("sweep, extra, message", [
    ("colour = 1", "", "unknown config key 'sweep.colour'"),
    ('sizes = ["xs", "huge"]', "", "unknown size(s) 'huge'; valid sizes: xs, s, m, l"),
    ('budget_unit = "epochs"', "", "budget_unit must be one of samples, steps"),
    ('budget_unit = "samples"\nbudgets = [3, 4]', "", "not multiples of sweep.batch_size=2"),
    ("budgets = []", "", "non-empty list of positive integers"),
    ("loss_window = 0", "", "loss_window must be in (0, 1]"),
    ("resolution = 15", "", "not divisible by the VAE factor 2"),
    ("", "[sizes.s]\nblock_out_channels = [4]", "shadows the named size 's'"),
    ("", "[sizes.odd]\nblock_out_channels = [4]\nwidth = 2", "unknown key(s) ['width']"),
])
def test_config_errors(tmp_path, sweep, extra, message):
    with pytest.raises(ValueError) as err:
        load_sweep_config(write_config(tmp_path, sweep, extra))
    assert message in str(err.value)


def test_missing_config_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_sweep_config(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------


def test_final_loss_counts_a_redone_step_once_and_wall_sums_attempts(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"event": "sweep_start", "time": 0}] + [
        {"event": "train", "stage": "unet", "step": s, "loss": float(s), "time": s} for s in (1, 2, 3)
    ] + [{"event": "sweep_start", "time": 100}, {"event": "train", "stage": "unet", "step": 3, "loss": 9.0,
                                                 "time": 101}, {"event": "train", "stage": "unet", "step": 4,
                                                                "loss": 5.0, "time": 102}]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert final_loss(log, 4, 0.5) == pytest.approx((9.0 + 5.0) / 2)
    assert training_wall_s(log) == pytest.approx(3 + 2)
    with pytest.raises(ValueError, match="one UNet train record per step"):
        final_loss(log, 6, 0.5)


# ----------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------


def test_sweep_writes_rows_and_restart_skips_done_runs(tmp_path, capsys):
    torch.set_num_threads(1)
    config = write_config(tmp_path)
    cfg = load_sweep_config(config)
    out = tmp_path / "out"
    path = run_sweep(cfg, echo=lambda *_: None)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and list(rows[0]) == [*RUN_COLUMNS, *EXTRA_COLUMNS]
    assert [(r["size"], int(r["steps"])) for r in rows] == [("xs-tiny", 2), ("xs-tiny", 3), ("xs", 2), ("xs", 3)]
    runs = read_runs(path)  # what `t2ikit scaling fit` reads
    assert list(runs.samples) == [4, 6, 4, 6]
    assert runs.params[0] < runs.params[2]  # xs-tiny is smaller than xs
    assert all(runs.flops / (runs.params * runs.samples) > 0)
    ratio = runs.flops / runs.samples
    assert ratio[0] == ratio[1] and ratio[2] == ratio[3]  # C = 3 x forward FLOPs x D, per size

    # Restart through the command line: nothing left to train; every run keeps its single training attempt.
    from t2ikit.cli import main

    capsys.readouterr()
    assert main(["scaling", "sweep", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 done, 0 to train" in printed and f"wrote {path}" in printed
    starts = lambda run: sum('"sweep_start"' in line for line in (out / run / "log.jsonl").read_text().splitlines())
    assert starts("xs-3s") == 1

    # Delete one marker: exactly that run trains again (resuming its final checkpoint) and its row is back.
    (out / "xs-3s" / DONE).unlink()
    messages = []
    run_sweep(cfg, echo=messages.append)
    assert "3 done, 1 to train" in messages[0]
    assert starts("xs-3s") == 2 and starts("xs-2s") == 1
    with path.open() as f:
        again = list(csv.DictReader(f))
    assert len(again) == 4 and again[3]["loss"] == rows[3]["loss"]


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    """A run stopped after a checkpoint, with no done marker, resumes from that checkpoint."""
    torch.set_num_threads(1)
    cfg = load_sweep_config(write_config(tmp_path))
    cfg.sweep.sizes, cfg.sweep.budgets = ["xs"], [4]
    out = tmp_path / "out"
    from t2ikit.scaling.sweep import registered_sizes, shared_vae, train_config
    from t2ikit.train.trainer import Trainer

    with registered_sizes(cfg):
        vae = shared_vae(cfg, out, echo=lambda *_: None)
        tcfg = train_config(cfg, "xs", 4)
        tcfg.unet_train.steps = 4
        trainer = Trainer(tcfg, out=out / "xs-4s", device="cpu")
        trainer.vae.load_state_dict(vae)
        # stop (with a checkpoint) after the first step, as a kill after a checkpoint would
        tcfg.run.time_limit_min = 1e-9
        trainer.run()
    log = (out / "xs-4s" / "log.jsonl").read_text()
    assert '"time_limit"' in log
    run_sweep(cfg, echo=lambda *_: None)
    log = (out / "xs-4s" / "log.jsonl").read_text()
    assert '"event": "resume"' in log
    assert (out / "xs-4s" / DONE).is_file()
