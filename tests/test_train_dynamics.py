"""Training dynamics on the tiny config: multi-loss terms and weightings logged per step, curricula that the
data stream honours per step, and bad [losses]/[curriculum] values refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from t2ikit.train.config import load_config
from t2ikit.train.curriculum import curriculum_from_config
from t2ikit.train.data import ShapesBatches
from t2ikit.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_config  # noqa: E402

SHORT = "[vae_train] steps = 1\n[unet_train] steps = 3\n[checkpoint] every = 3\n[export] at_end = false"


def dyn_config(tmp_path: Path, extra: str = "", **tables: dict) -> Path:
    """tiny_config plus new tables ([losses], [curriculum]) that configs/tiny.toml does not have."""
    path = tiny_config(tmp_path, extra) if extra else tiny_config(tmp_path)
    text = path.read_text()
    for name, values in tables.items():
        text += f"\n[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path.write_text(text)
    return path


def _train_records(out: Path) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "train" and r["stage"] == "unet"]


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "gradnorm"])
def test_multi_loss_logs_every_term_and_weight(tmp_path, weighting):
    torch.set_num_threads(1)
    losses = {"text_alignment": 0.5, "image_quality": 0.2, "weighting": weighting}
    trainer = Trainer(load_config(dyn_config(tmp_path, SHORT, losses=losses)), out=tmp_path / "run")
    trainer.run()
    records = _train_records(tmp_path / "run")
    assert len(records) == 3
    for r in records:
        for term in ("reconstruction", "text_alignment", "image_quality"):
            assert r[f"loss_{term}"] > 0 and r[f"weight_{term}"] > 0
    first, last = records[0], records[-1]
    if weighting == "fixed":
        assert (last["weight_text_alignment"], last["weight_image_quality"]) == pytest.approx((0.5, 0.2))
        total = sum(first[f"loss_{t}"] * first[f"weight_{t}"] for t in ("reconstruction", "text_alignment", "image_quality"))
        assert first["loss"] == pytest.approx(total, rel=1e-5)
    else:  # adaptive: the weights moved, GradNorm keeps their sum
        assert last["weight_text_alignment"] != 0.5 or last["weight_image_quality"] != 0.2
    if weighting == "gradnorm":
        assert sum(last[f"weight_{t}"] for t in ("reconstruction", "text_alignment", "image_quality")) == pytest.approx(1.7)
    assert trainer.multiloss.names == ["reconstruction", "text_alignment", "image_quality"]


def test_default_config_is_plain_diffusion_loss(tmp_path):
    trainer = Trainer(load_config(tiny_config(tmp_path, SHORT)), out=tmp_path / "run")
    assert trainer.multiloss is None


def test_curriculum_is_a_pure_function_of_the_step(tmp_path):
    curriculum = {"resolution": [[0, 16], [2, 32]], "complexity": [[0, 1], [2, 4]]}
    cfg = load_config(dyn_config(tmp_path, curriculum=curriculum))
    cur = curriculum_from_config(cfg)
    assert [cur.resolution_at(s) for s in range(4)] == [16, 16, 32, 32]
    assert [cur.max_objects_at(s) for s in range(4)] == [1, 1, 4, 4]
    data = ShapesBatches(seed=1, batch_size=2, length=8, resolution=32, curriculum=cur, items_per_step=2)
    assert [tuple(data[i]["pixels"].shape[-2:]) for i in (0, 3, 4)] == [(16, 16), (16, 16), (32, 32)]
    # one object per scene early on: each caption names a single thing
    assert all(" and " not in c for i in (0, 1, 2, 3) for c in data[i]["captions"])
    assert torch.equal(data[1]["pixels"], data[1]["pixels"])
    again = ShapesBatches(seed=1, batch_size=2, length=8, resolution=32, curriculum=cur, items_per_step=2)
    assert torch.equal(again[3]["pixels"], data[3]["pixels"])


def _with_mix(tmp_path: Path, mix: str) -> Path:
    path = tiny_config(tmp_path)
    path.write_text(path.read_text() + f"\n[curriculum]\nmix = {mix}\n")
    return path


def test_category_mix_reweights_the_stream(tmp_path):
    from t2ikit.world.dataset import make_batch
    from t2ikit.world.scene import sample_scene

    cur = curriculum_from_config(load_config(_with_mix(tmp_path, "{ spatial = 1, complex = 0 }")))
    assert cur.active() and cur.mix == (("spatial", 1.0), ("complex", 0.0))
    # every scene of a spatial-only mix states a relation; the default mix has scenes that do not
    assert all(sample_scene(3, i, reference=False, mix={"spatial": 1.0}).spec.relations for i in range(40))
    assert not all(sample_scene(3, i, reference=False).spec.relations for i in range(40))
    data = ShapesBatches(seed=1, batch_size=4, length=2, resolution=32, curriculum=cur)
    assert data[1]["captions"] == make_batch(1, 1, 4, resolution=32, mix={"spatial": 1.0})["captions"]
    assert data[1]["captions"] != make_batch(1, 1, 4, resolution=32)["captions"]


@pytest.mark.parametrize(
    "mix, match",
    [("{ spatail = 1 }", "unknown mix categories \\['spatail'\\]"), ("{ spatial = -1 }", ">= 0"),
     ("{ spatial = 0 }", "all be 0"), ('{ spatial = "a lot" }', ">= 0")],
)
def test_bad_category_mix_is_an_error(tmp_path, mix, match):
    with pytest.raises(ValueError, match="curriculum.mix: .*" + match):
        load_config(_with_mix(tmp_path, mix))


def test_resolution_curriculum_trains(tmp_path):
    torch.set_num_threads(1)
    curriculum = {"resolution": [[0, 16], [2, 32]], "complexity": [[0, 1], [1, 2]]}
    Trainer(load_config(dyn_config(tmp_path, SHORT, curriculum=curriculum)), out=tmp_path / "run").run()
    assert len(_train_records(tmp_path / "run")) == 3


@pytest.mark.parametrize(
    "tables, match",
    [
        ({"losses": {"weighting": "magic"}}, "losses.weighting"),
        ({"losses": {"text_alignment": -1.0}}, "must be >= 0"),
        ({"losses": {"alignment": 1.0}}, "unknown config key 'losses.alignment'"),
        ({"curriculum": {"resolution": [[0, 18]]}}, "divisible by"),
        ({"curriculum": {"resolution": [[0, 64]]}}, "model.resolution"),
        ({"curriculum": {"resolution": [[5, 16]]}}, "start at 0"),
        ({"curriculum": {"complexity": [[0, 5]]}}, "1..4"),
        ({"curriculum": {"complexity": [[0, 1], [0, 2]]}}, "strictly increase"),
    ],
)
def test_bad_dynamics_values_are_errors(tmp_path, tables, match):
    with pytest.raises(ValueError, match=match):
        load_config(dyn_config(tmp_path, **tables))


def test_bad_parallel_value_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="run.parallel"):
        load_config(tiny_config(tmp_path, '[run] parallel = "zero"'))
