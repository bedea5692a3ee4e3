"""Progress and summaries on stderr (off with --quiet), matplotlib figures as PNG and SVG, SSIM next to PSNR,
BLAS threads limited by threadpoolctl during scaling fits. Fast: no model is loaded."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from t2ikit.bench import compbench as cb
from t2ikit.bench.metrics import ssim
from t2ikit.bench.oracle_bench import oracle_accuracy
from t2ikit.bench.plots import plot_compbench, plot_gates
from t2ikit.cli import main
from t2ikit.diffusion.inversion import psnr
from t2ikit.train.plots import plot_losses, plot_run, read_log


def _svg_text(path) -> str:
    """Every text of an SVG (matplotlib writes labels as <text> or as glyph paths with the text in a comment)."""
    raw = path.read_text()
    ET.fromstring(raw)  # well-formed XML
    return raw


def _check_png(path, min_size=(200, 150)):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # something is drawn, not a blank canvas


# ---------------------------------------------------------------- progress


def test_compbench_shows_progress_and_a_summary_only_when_asked(capsys):
    suite = cb.make_suite("train", 2, 1, ("single", "counting"))
    quiet = cb.run(suite, cb.make_generator("ground-truth"), batch_size=3)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    loud = cb.run(suite, cb.make_generator("ground-truth"), batch_size=3, progress=True)
    err = capsys.readouterr().err
    assert "compbench: 4 images of 2 categories" in err and "100.0% passed" in err
    assert loud["overall"] == quiet["overall"]  # progress changes nothing measured


def test_cli_bench_oracle_quiet(capsys):
    args = ["bench", "oracle", "--n", "2", "--categories", "single", "--conditions", "clean", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "oracle: 2 images scored" in captured.err
    assert json.loads(captured.out)["overall"]["clean"]["images"] == 2
    assert main(args + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_oracle_progress_counts_every_scene(capsys):
    oracle_accuracy(3, categories=("single", "size"), conditions=("clean", "noise"), progress=True)
    assert "oracle: 12 images scored" in capsys.readouterr().err  # 3 scenes x 2 categories x 2 conditions


# ---------------------------------------------------------------- figures


def test_compbench_bars_png_and_svg(tmp_path):
    suite = cb.make_suite("train", 2, 1, ("single", "spatial"))
    result = cb.run(suite, cb.make_generator("noise"))
    paths = plot_compbench(result, tmp_path / "compbench.png")
    assert [p.name for p in paths] == ["compbench.png", "compbench.svg"]
    _check_png(paths[0])
    svg = _svg_text(paths[1])
    for label in ("images passing every oracle check (%)", "CompBench category", "95% Wilson interval"):
        assert label in svg


def test_gate_heat_map(tmp_path):
    layers = ["down_blocks.0.attentions.0.transformer_blocks.0.gate", "up_blocks.1.attentions.0.transformer_blocks.0.gate"]
    grid = np.linspace(0.0, 0.01, 2 * 5).reshape(2, 5)
    png, svg = plot_gates(layers, list(range(5)), grid, tmp_path / "gates.png", title="gates under test")
    _check_png(png, (300, 100))
    text = _svg_text(svg)
    assert "sampling step (0 = noisiest)" in text and "mean gate g" in text and "down0.att0.tb0.gate" in text


def _write_log(path, stages=("vae", "unet"), steps=(10, 20, 30)):
    lines = [json.dumps({"event": "checkpoint", "stage": "vae", "step": 10})]
    for stage in stages:
        for k, step in enumerate(steps):
            lines.append(json.dumps({"event": "train", "stage": stage, "step": step, "loss": 1.0 / (k + 1),
                                     "lr": 1e-4, "loss_relation": 0.5 / (k + 1)}))
    path.write_text("\n".join(lines) + "\n")


def test_loss_curves_from_a_training_log(tmp_path):
    log = tmp_path / "log.jsonl"
    _write_log(log)
    assert [r["step"] for r in read_log(log)["unet"]] == [10, 20, 30]
    png, svg = plot_losses(log, tmp_path / "loss.png")
    _check_png(png, (400, 150))
    text = _svg_text(svg)
    assert "optimizer step" in text and "VAE stage" in text and "UNet stage" in text and "relation term" in text
    (tmp_path / "empty").mkdir()
    assert plot_run(tmp_path / "empty") == []  # a run that logged nothing yet has no curve
    with pytest.raises(ValueError, match="no training log"):
        read_log(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- metrics and threads


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    noisier = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert (ssim(a, noisy) > ssim(a, noisier)).all()
    everywhere = torch.ones(32, 32, dtype=torch.bool)
    assert ssim(a, noisy, everywhere).tolist() == pytest.approx(ssim(a, noisy).tolist(), abs=1e-6)
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[:, :16] = True
    b = noisy.clone()
    b[..., 20:] = a[..., 20:]  # the right part kept
    assert (ssim(a, b, ~left) > ssim(a, b, left)).all()
    hwc = a[0].permute(1, 2, 0).numpy()
    assert float(ssim(hwc, hwc)[0]) == pytest.approx(1.0, abs=1e-5)  # (H, W, 3) arrays as the edit bench has them
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, a[:, :, :16])


def test_psnr_agrees_with_torchmetrics():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 16, 16, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    ours = psnr(a, b)
    theirs = peak_signal_noise_ratio(b, a, data_range=1.0, reduction="none", dim=(1, 2, 3))
    assert ours.tolist() == pytest.approx(theirs.tolist(), abs=1e-4)


def test_scaling_fit_runs_blas_on_one_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    from t2ikit.scaling import fit

    seen = []

    def record(*args):
        seen.append({i["internal_api"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        raise ValueError("stop here")

    monkeypatch.setattr(fit, "_minimise_each", record)
    with pytest.raises(ValueError, match="stop here"):
        fit._minimise(np.zeros((1, 5)), np.zeros((2, 3)), np.zeros(3), True, 0.1)
    assert seen and seen[0] and all(n == 1 for n in seen[0].values())


def test_edit_bench_reports_ssim_next_to_psnr(capsys):
    from t2ikit.bench import edit as eb

    result = eb.run(None, ("colour",), ("ground-truth",), n=2, progress=True)
    s = result["results"]["ground-truth"]["colour"]
    assert s["psnr_outside"]["mean"] == 60.0  # the target render keeps every pixel outside the region
    assert 0.9 < s["ssim_outside"]["mean"] < 1.0  # SSIM's window near the region still sees the recoloured object
    assert s["ssim"]["mean"] < s["ssim_outside"]["mean"]
    assert "SSIM outside" in eb.markdown(result)
    assert "bench edit: 1 kinds x 1 methods x 2 edits" in capsys.readouterr().err
