"""The parallelism cost model on hand-computed cases, the best-layout choice, bad input and the `plan` verb."""

from __future__ import annotations

import json

import pytest

from t2ikit.cli import main
from t2ikit.scaling.parallel import (
    PRECISIONS,
    Hardware,
    Layout,
    bubble_fraction,
    enumerate_layouts,
    memory_per_device,
    plan,
    ring_allreduce_seconds,
    spec_from_numbers,
    step_seconds,
)

MIXED = PRECISIONS["mixed"]


def toy_spec(params=1e9, flops=1e12):
    return spec_from_numbers(params, flops, layers=8, hidden=1024, seq=256)


# ----------------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------------


def test_ring_allreduce_time():
    # 4 ranks, 1 GB at 10 GB/s: 2 * 3/4 * 0.1 s = 0.15 s; one rank communicates nothing.
    assert ring_allreduce_seconds(1e9, 4, 10e9) == pytest.approx(0.15)
    assert ring_allreduce_seconds(1e9, 1, 10e9) == 0.0


def test_bubble_fraction():
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert bubble_fraction(1, 8) == 0.0


def test_memory_per_zero_stage():
    # 1e9 params, 4 replicas, mixed precision: ZeRO Fig. 1 (2 + 2 + 12 bytes per parameter).
    spec, g = toy_spec(), 1e9
    expect = {0: 16 * g, 1: 4 * g + 12 * g / 4, 2: 2 * g + 14 * g / 4, 3: 16 * g / 4}
    for zero, total in expect.items():
        mem = memory_per_device(spec, Layout(4, 1, 1, zero), MIXED, micro_batch=1, micro_batches=1)
        assert mem["weights"] + mem["gradients"] + mem["optimizer"] == pytest.approx(total)


def test_activation_memory_sharded_by_tensor_and_held_by_pipeline():
    spec = toy_spec()
    one = memory_per_device(spec, Layout(1, 1, 1), MIXED, micro_batch=2, micro_batches=8)["activations"]
    assert one == pytest.approx(spec.activation_elems_per_sample * 2 * 2)  # 2 samples x 2 bytes
    tp = memory_per_device(spec, Layout(1, 4, 1), MIXED, micro_batch=2, micro_batches=8)["activations"]
    assert tp == pytest.approx(one / 4)
    pp = memory_per_device(spec, Layout(1, 1, 4), MIXED, micro_batch=2, micro_batches=8)["activations"]
    assert pp == pytest.approx(one)  # 1F1B: p micro-batches in flight, each over L/p layers


def test_step_time_data_parallel_by_hand():
    spec = toy_spec(params=1e9, flops=1e12)
    hw = Hardware(devices=4, device_flops=1e12, memory_bytes=1e12, bandwidth_bytes=10e9, efficiency=0.5)
    t = step_seconds(spec, Layout(4, 1, 1), hw, MIXED, global_batch=8, micro_batch=2)
    assert t["compute"] == pytest.approx(2.0)  # 8 samples x 1e12 FLOP / 4 devices / 1e12 FLOP/s
    assert t["data_comm"] == pytest.approx(2 * 3 / 4 * 2e9 / 10e9)  # ring all-reduce of 2-byte gradients
    assert t["total"] == pytest.approx((2.0 + 0.3) / 0.5)


def test_step_time_tensor_and_pipeline_by_hand():
    spec = toy_spec(params=1e9, flops=1e12)
    hw = Hardware(devices=2, device_flops=1e12, memory_bytes=1e12, bandwidth_bytes=10e9)
    tp = step_seconds(spec, Layout(1, 2, 1), hw, MIXED, global_batch=2, micro_batch=1)
    # 2 micro-batches x 4 all-reduces x 8 layers of (256 x 1024) 2-byte activations over 2 ranks.
    assert tp["tensor_comm"] == pytest.approx(2 * 4 * ring_allreduce_seconds(8 * 256 * 1024 * 2, 2, 10e9))
    pp = step_seconds(spec, Layout(1, 1, 2), hw, MIXED, global_batch=2, micro_batch=1)
    per_mb = 0.5 + 2 * 256 * 1024 * 2 / 10e9  # half the FLOPs + send activation, receive its gradient
    assert pp["bubble"] == pytest.approx(per_mb)
    assert pp["total"] == pytest.approx(3 * per_mb)  # m + p - 1 = 3 slots
    assert pp["bubble_fraction"] == pytest.approx(1 / 3)


def test_layouts_cover_factorisations():
    shapes = {(l.data, l.tensor, l.pipeline) for l in enumerate_layouts(8)}
    assert len(shapes) == 10  # ordered factorisations of 8 into 3 factors
    assert all(l.data * l.tensor * l.pipeline == 8 for l in enumerate_layouts(8))
    assert {l.name for l in enumerate_layouts(4)} >= {"dp", "zero1", "zero2", "zero3/fsdp", "tp", "pp"}
    assert [l.name for l in enumerate_layouts(1)] == ["single"]


# ----------------------------------------------------------------------------------------------------
# Best layout
# ----------------------------------------------------------------------------------------------------


def test_small_model_prefers_data_parallel():
    hw = Hardware(devices=4, device_flops=1e14, memory_bytes=80e9, bandwidth_bytes=100e9)
    best = plan(toy_spec(params=1e8, flops=1e12), hw, global_batch=64, micro_batch=4).best
    assert best["layout"] in ("dp", "zero1")


def test_model_too_big_for_one_device_gets_sharded():
    # 1e9 params x 16 bytes = 16 GB of states on a 12 GB device: plain DP cannot hold it.
    hw = Hardware(devices=4, device_flops=1e14, memory_bytes=12e9, bandwidth_bytes=100e9)
    result = plan(toy_spec(), hw, global_batch=16, micro_batch=1)
    rows = {r["layout"]: r for r in result.rows}
    assert not rows["dp"]["fits"]
    assert result.best is not None and result.best["zero"] + result.best["tensor"] + result.best["pipeline"] > 2
    assert result.best["memory"]["total"] <= 12e9


def test_nothing_fits():
    hw = Hardware(devices=2, device_flops=1e14, memory_bytes=1e9, bandwidth_bytes=100e9)
    assert plan(toy_spec(), hw, global_batch=2).best is None


# ----------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hw, batch, match",
    [
        (Hardware(0, 1e12, 1e9, 1e9), 4, "devices"),
        (Hardware(2, 0.0, 1e9, 1e9), 4, "device_flops"),
        (Hardware(2, 1e12, -1.0, 1e9), 4, "memory"),
        (Hardware(2, 1e12, 1e9, 0), 4, "bandwidth"),
        (Hardware(4, 1e12, 1e9, 1e9), 6, "not divisible by the world size 4"),
        (Hardware(2, 1e12, 1e9, 1e9, efficiency=1.5), 4, "efficiency"),
    ],
)
def test_bad_hardware_or_batch(hw, batch, match):
    with pytest.raises(ValueError, match=match):
        plan(toy_spec(), hw, global_batch=batch)


def test_bad_model_numbers():
    with pytest.raises(ValueError, match="params"):
        spec_from_numbers(-5, 1e12)
    with pytest.raises(ValueError, match="flops_per_sample"):
        spec_from_numbers(1e9, 0)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------

HW_ARGS = ["--device-flops", "3e14", "--memory", "16e9", "--bandwidth", "1e11"]


def test_cli_raw_params_json(capsys):
    argv = ["plan", "--model-size", "1e9", "--flops-per-sample", "1e13", "--devices", "4", *HW_ARGS,
            "--global-batch", "16", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"]["layout"] != "dp" and out["best"]["fits"]


def test_cli_unknown_size_lists_valid(capsys):
    assert main(["plan", "--model-size", "huge", "--devices", "2", *HW_ARGS]) == 2
    err = capsys.readouterr().err
    assert "huge" in err and "xs" in err


def test_cli_raw_params_need_flops(capsys):
    assert main(["plan", "--model-size", "1e9", "--devices", "2", *HW_ARGS]) == 2
    assert "--flops-per-sample" in capsys.readouterr().err


def test_cli_rejects_before_tracing(capsys, monkeypatch):
    import t2ikit.scaling.parallel as parallel

    monkeypatch.setattr(parallel, "spec_from_size", lambda *a, **k: pytest.fail("traced the model"))
    assert main(["plan", "--model-size", "xs", "--devices", "3", *HW_ARGS, "--global-batch", "4"]) == 2
    assert "world size 3" in capsys.readouterr().err


def test_cli_named_size(capsys):
    assert main(["plan", "--model-size", "xs", "--devices", "2", *HW_ARGS, "--global-batch", "4"]) == 0
    assert "best:" in capsys.readouterr().out
