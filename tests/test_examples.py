"""The scripts in examples/ run on the shipped model and write what they say they write.

The default test runs every example once, at 2 steps, in one subprocess (one interpreter start and one set of
imports for all of them, so the suite stays fast); the slow test runs each as its own process, as a user would.
Torch runs on one thread: on a busy 2-core machine two threads are slower than one for a 64x64 model.
"""

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# example -> its arguments for a quick run (OUT is replaced by the output folder)
RUNS = {
    "generate": ["--steps", "2", "--out", "OUT"],
    "weighting": ["--steps", "2", "--out", "OUT"],
    "regions": ["--steps", "2", "--out", "OUT"],
    "conditions": ["--steps", "2", "--out", "OUT"],
    "explain": ["--steps", "2", "--out", "OUT"],
    "edit": ["--steps", "2", "--out", "OUT"],
    "bench": ["--steps", "2", "--categories", "single,spatial", "--out", "OUT"],
    "train": ["--out", "OUT/train"],
}
DRIVER = """
import runpy, sys
for name, args in {runs!r}.items():
    sys.argv = [name + ".py", *args]
    runpy.run_path({examples!r} + "/" + name + ".py", run_name="__main__")
    print("== done", name, flush=True)
"""


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _args(name: str, out: Path) -> list[str]:
    return [a.replace("OUT", str(out)) for a in RUNS[name]]


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()  # a complete, valid PNG
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255


def _check_outputs(out: Path, stdout: str) -> None:
    """What each example writes, and something measurable about it."""
    from t2ikit.cli.info import PNG_KEY, parse_parameters

    # generate: two 64x64 images, each recording its own seed and the steps it was made with
    for k in range(2):
        assert _rgb(out / f"generate-{k}.png").shape == (64, 64, 3)
        with Image.open(out / f"generate-{k}.png") as im:
            settings = parse_parameters(im.text[PNG_KEY])["settings"]
        assert settings["Seed"] == 3 + k and settings["Steps"] == 2
    # weighting: the same seed, so the images differ only by the weights, and they do differ
    plain = _rgb(out / "weighting-plain.png")
    for name in ("a1111", "compel"):
        assert np.abs(_rgb(out / f"weighting-{name}.png") - plain).max() > 0
    # regions, conditions: images at the model's size; the sketch example also writes its sketch
    assert _rgb(out / "regions.png").shape == (64, 64, 3)
    assert _rgb(out / "conditions.png").shape == (64, 64, 3)
    sketch = _rgb(out / "conditions-sketch.png")
    assert 0 < sketch.mean() < 0.2  # thin white outlines on black
    # explain: the image and one map tile per word, side by side
    sheet = _rgb(out / "explain.png")
    words = len("a red circle left of a blue square".split())
    assert sheet.shape[1] == (words + 1) * 128
    # edit: the edited image differs from its source
    assert np.abs(_rgb(out / "edit.png") - _rgb(out / "edit-source.png")).mean() > 0.001
    # bench: the bars as PNG and well-formed SVG; the table printed
    _rgb(out / "compbench.png")
    ET.parse(out / "compbench.svg")
    assert "| **all** | 2 |" in stdout
    # train: a model folder, a log with a record per step, the loss curves
    assert (out / "train" / "model" / "model_index.json").is_file()
    records = [json.loads(line) for line in (out / "train" / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records if r["event"] == "train"} == {"vae", "unet"}
    _rgb(out / "train" / "loss.png")
    assert "the trained model generates 32x32 images" in stdout


def test_every_example_runs_and_writes_its_files(tmp_path):
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(RUNS), "an example without a test run"
    runs = {name: _args(name, tmp_path) for name in RUNS}
    driver = DRIVER.format(runs=runs, examples=str(EXAMPLES))
    proc = subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("== done") == len(RUNS)
    _check_outputs(tmp_path, proc.stdout)


@pytest.mark.slow
def test_each_example_runs_as_a_script(tmp_path):
    stdout = ""
    for name in RUNS:
        proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *_args(name, tmp_path)], cwd=tmp_path,
                              env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        stdout += proc.stdout
    _check_outputs(tmp_path, stdout)


def test_api_guide_snippets_parse_and_import_what_exists():
    """docs/API.md's Python blocks are valid Python whose `from X import Y` names exist (the blocks themselves
    run at 20 steps; the examples above run the same calls)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "API.md").read_text(), re.S)
    assert len(blocks) >= 8
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names
                           if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
                assert not missing, f"docs/API.md imports {missing} from {node.module}, which has no such name"
