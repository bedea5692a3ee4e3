"""Memory estimates (t2ikit.models.memory) against measured peaks, refusals before compute, output-path checks."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from t2ikit.cli import main
from t2ikit.cli.paths import check_output, input_image_size
from t2ikit.models import memory
from t2ikit.models.memory import available_bytes, check_memory, estimate_bytes

# Peak resident memory of real generations, each in a forked child of a process that has loaded the model and run
# once at 16x16 (and once more in the child, so that the library code it touches is resident before the baseline).
# The peak is VmHWM after resetting it through /proc/self/clear_refs, over VmRSS just before the run; torch's CPU
# allocations are invisible to tracemalloc and resource.getrusage has no reset.
MEASURE = r"""
import json, os, sys
import torch
from t2ikit.attention.processor import AttentionHook
from t2ikit.models.memory import check_memory
from t2ikit.pipeline import T2IPipeline

torch.set_num_threads(1)


class SelfProbs(AttentionHook):  # reads self-attention probabilities, as Prompt-to-Prompt does
    needs_probs = True

    def applies(self, ctx):
        return not ctx.cross


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


pipe = T2IPipeline.from_folder(sys.argv[1])
for hooks in (None, [SelfProbs()]):
    pipe.run(pipe.make_spec("a red circle", steps=1, n=2, size=(16, 16)), progress=False, hooks=hooks)
results = []
for size, n, self_probs in json.loads(sys.argv[2]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        hooks = [SelfProbs()] if self_probs else None
        spec = pipe.make_spec("a red circle", steps=1, n=n, size=(size, size))
        est = check_memory(pipe, n, spec.size, rows_per_image=2 if spec.guidance != 1 else 1, hooks=hooks)
        pipe.run(pipe.make_spec("a red circle", steps=1, n=n, size=(16, 16)), progress=False, hooks=hooks)
        base = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        pipe.run(spec, progress=False, hooks=hooks)
        os.write(w, json.dumps({"measured": status("VmHWM") - base, "estimate": est["total"]}).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    results.append(json.loads(os.read(r, 10000)))
print(json.dumps(results))
"""


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_reset_peak(),
                    reason="needs Linux /proc/self/clear_refs to reset the peak resident memory")
def test_estimate_tracks_measured_peak(folder):
    """Estimate against the measured peak on the tiny SD folder (1 step, guidance 4 = 2 UNet rows per image).

    Measured with torch 2.13 on CPU (MB, measured / estimated):
        64x64, 2 images:   14.9 / 12.2      128x128, 2 images: 39.4 / 48.8  (growth 24.5 / 36.6)
        64x64, 1 image with a hook reading self-attention probabilities (scores materialised): 73.7 / 73.2
    So the estimate is within 0.8x-1.5x of the measured peak, and grows 1.5x as fast; asserted: 0.6x-2.5x for
    the requests of tens of MB. The smallest one is allocator noise as much as tensors: a clean-clone CI run
    measured 25.4 MB where this machine measured 14.9 MB for the same 12.2 MB estimate, so it is held to an
    absolute 16 MB instead.
    """
    cases = [[64, 2, False], [128, 2, False], [64, 1, True]]
    paths = [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(folder), json.dumps(cases)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    small, large, probs = json.loads(out.stdout.strip().splitlines()[-1])
    for r in (large, probs):
        assert 0.6 < r["estimate"] / r["measured"] < 2.5, (small, large, probs)
    assert abs(small["estimate"] - small["measured"]) < 16e6, small
    growth = (large["estimate"] - small["estimate"]) / (large["measured"] - small["measured"])
    assert 0.6 < growth < 2.5, (small, large)
    assert probs["measured"] > 50e6 and probs["estimate"] > 50e6  # the (hw)^2 scores dominate and are counted


def test_huge_request_is_refused_fast_without_allocating(pipe):
    def peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
        return 0

    before, t0 = peak(), time.perf_counter()
    with pytest.raises(ValueError) as err:
        check_memory(pipe, 1, (100000, 100000))
    assert time.perf_counter() - t0 < 1.0
    assert peak() - before < 50e6
    message = str(err.value)
    assert message.startswith("generate: 1 image of 100000x100000 needs about ")
    assert " TB (" in message and "VAE decode" in message and "is free on cpu; use a smaller --size or --n" in message
    assert "\n" not in message


def test_generate_refuses_a_huge_size_before_compute(folder, tmp_path, capsys):
    out = tmp_path / "huge.png"
    t0 = time.perf_counter()
    assert main(["generate", "a red circle", "--model", str(folder), "--size", "100000x100000", "--out", str(out),
                 "--quiet"]) == 2
    assert time.perf_counter() - t0 < 60  # model load included; an attempt would allocate for hours, or die
    assert "generate: 1 image of 100000x100000 needs about" in capsys.readouterr().err
    assert not out.exists()


def test_probs_read_follows_the_hooks(pipe):
    from t2ikit.attention.capture import AttentionStore
    from t2ikit.models.memory import probs_read

    assert probs_read(pipe.unet, None) == (False, False)
    assert probs_read(pipe.unet, [AttentionStore()]) == (True, False)
    assert probs_read(pipe.unet, [AttentionStore(cross=False)]) == (False, True)
    late = AttentionStore(layers=lambda name: not name.startswith("down_blocks.0."))  # not the first layer
    assert probs_read(pipe.unet, [late]) == (True, False)


def test_estimate_parts_scale_and_small_requests_pass(pipe):
    unet, vae = pipe.unet.config, pipe.vae.config
    one = estimate_bytes(unet, vae, 16, 1, (64, 64))
    two = estimate_bytes(unet, vae, 16, 2, (64, 64))
    assert set(one) == {"latents", "unet", "attention", "vae", "maps", "total"}
    assert two["unet"] == 2 * one["unet"] and two["vae"] == 2 * one["vae"]
    big = estimate_bytes(unet, vae, 16, 1, (128, 128))
    assert 3.5 < big["vae"] / one["vae"] < 4.5  # the decoder's activations are proportional to the pixels
    assert one["attention"] == 0 < estimate_bytes(unet, vae, 16, 1, (64, 64), fused_attention=False)["attention"]
    maps = estimate_bytes(unet, vae, 16, 1, (64, 64), attention_maps=True)
    assert maps["maps"] > 0 and maps["total"] > one["total"]
    assert estimate_bytes(unet, vae, 16, 1, (64, 64), grad=True)["unet"] > one["unet"]
    est = check_memory(pipe, 1, (16, 16))
    assert 0 < est["total"] < est["available"] <= available_bytes("cpu") * 1.1


def test_available_bytes_cpu_is_below_total():
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemTotal:")) if Path("/proc/meminfo").exists() else float("inf")
    assert 0 < available_bytes("cpu") <= total


# ----------------------------------------------------------------------------------------------------
# Output paths


def test_check_output(tmp_path):
    assert check_output(tmp_path / "new" / "deeper" / "a.png", (".png",), "--out") == tmp_path / "new/deeper/a.png"
    assert check_output(tmp_path / "A.PNG", (".png",)) == tmp_path / "A.PNG"
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    for path, suffixes, message in [
        (tmp_path / "a.jpg", (".png",), "--out must end in .png"),
        (tmp_path / "A.SAFETENSORS", (".safetensors",), "must end in .safetensors"),
        (tmp_path / "dir.png", (".png",), "is an existing directory"),
        (tmp_path / "file.txt" / "a.png", (".png",), "is a file, not a folder"),
        (tmp_path / "file.txt" / "sub" / "a.png", (".png",), "is a file, not a folder"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_output(path, suffixes, "--out", case_sensitive=path.name.startswith("A."))
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="is not writable"):
            check_output(locked / "a.png", (".png",), "--out")
    finally:
        locked.chmod(0o700)


def test_input_image_size_reads_the_header(tmp_path):
    Image.new("RGB", (24, 8)).save(tmp_path / "a.png")
    assert input_image_size(tmp_path / "a.png") == (8, 24)
    (tmp_path / "b.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot be read as an image"):
        input_image_size(tmp_path / "b.png")
    with pytest.raises(ValueError, match="does not exist"):
        input_image_size(tmp_path / "c.png")


# ----------------------------------------------------------------------------------------------------
# The verbs refuse before compute


@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGB", (16, 16), "red").save(path)
    return path


@pytest.mark.parametrize("verb", ["edit", "invert", "explain", "analyze"])
def test_verbs_refuse_what_does_not_fit(verb, folder, image, tmp_path, little_memory, capsys):
    out = tmp_path / "out" / ("x.safetensors" if verb == "invert" else "x.png")
    argv = {
        "edit": ["edit", str(image), "--source", "a red circle", "--target", "a blue circle", "--out", str(out)],
        "invert": ["invert", str(image), "--prompt", "a red circle", "--out", str(out)],
        "explain": ["explain", "a red circle", "--out", str(out)],
        "analyze": ["analyze", "a red circle", "--out", str(tmp_path / "out")],
    }[verb]
    assert main([*argv, "--model", str(folder), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"t2ikit {verb}: error: {verb}: " in err and "needs about" in err and "but only 1.0 kB is free" in err
    assert not (tmp_path / "out").exists()


def test_verbs_refuse_unwritable_outputs_before_loading(folder, image, tmp_path, capsys, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("t2ikit.cli.models.load_pipeline", no_model)
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.png").mkdir()
    for argv, message in [
        (["edit", str(image), "--source", "a red circle", "--target", "a blue circle", "--out",
          str(tmp_path / "dir.png")], "is an existing directory"),
        (["edit", str(image), "--source", "a red circle", "--target", "a blue circle", "--out",
          str(tmp_path / "x.png"), "--save-mask", str(tmp_path / "file" / "m.png")], "is a file, not a folder"),
        (["invert", str(image), "--prompt", "a red circle", "--out", str(tmp_path / "x.pt")],
         "must end in .safetensors"),
        (["invert", str(tmp_path / "file"), "--prompt", "a red circle", "--out", str(tmp_path / "x.safetensors")],
         "cannot be read as an image"),
        (["explain", "a red circle", "--out", str(tmp_path / "file" / "x.png")], "is a file, not a folder"),
        (["analyze", "a red circle", "--out", str(tmp_path / "file")], "is a file, not a folder"),
    ]:
        assert main([*argv, "--model", str(folder)]) == 2
        assert message in capsys.readouterr().err
