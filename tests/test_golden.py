"""Every single technique on the tiny SD folder equals its output from before the generation core, bitwise.

Null-text inversion ("invert") optimises inside the one loop (a before-step update) and takes its guided step
with separate unconditional and conditional UNet calls (`Conditioning.batch_rows=False`), as the old per-step
loop did: a batched call sums in another order, which the per-step Adam optimisation amplified to 2.2e-5.
`python benchmarks/golden.py compare tests/golden --models tiny` prints `bitwise` for every case on this model (the
shipped goldens were recorded with an earlier shipped model and its defaults, and differ since the model changed).
"Bitwise" holds for one instruction set: the goldens were recorded on an AVX2 CPU, and on an AVX-512 one every case
differed until the kernels were pinned to AVX2 (benchmarks/golden.py's ISA_PINS, which the cases run under here).

tests/golden/tiny.safetensors was recorded by `python benchmarks/golden.py record` at commit 5bbc832, through
the entry points of that time. The one
deliberate change since: "invert" was re-recorded (`python benchmarks/golden.py record tests/golden --only
invert`) when null-text inversion stopped returning one shared tensor for every step's embedding (Adam updated
it in place, so a reconstruction used the last step's embedding throughout; the old code had the same bug).
And "ddim" was re-recorded (`python benchmarks/golden.py record tests/golden --models tiny --only ddim`) when DDIM
stopped clipping its x0 estimate to [-1, 1] for folders whose scheduler config does not ask for it (the tiny folder
here has a DPM++ config, as the shipped model has; clipped, the shipped model drew noise with DDIM).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import golden  # noqa: E402

GOLDEN = load_file(str(Path(__file__).parent / "golden" / "tiny.safetensors"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Every case's output today, computed by `golden.py record` in a subprocess: the kernels' instruction set is
    pinned to the goldens' AVX2 there (golden.ISA_PINS; this process has picked its kernels already)."""
    out = tmp_path_factory.mktemp("golden")
    done = subprocess.run([sys.executable, golden.__file__, "record", str(out), "--models", "tiny"],
                          env={**os.environ, **golden.ISA_PINS}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return load_file(str(out / "tiny.safetensors"))


def test_every_golden_case_is_still_run(cases):
    assert set(cases) == set(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_output_is_unchanged(cases, name):
    got = cases[name]
    assert got.shape == GOLDEN[name].shape
    assert torch.equal(got, GOLDEN[name]), f"{name} differs from its golden output"
