"""Golden outputs: every single technique's latents (or images) on the shipped model and a tiny SD folder.

    python benchmarks/golden.py record DIR     # before moving code: one safetensors file per model
    python benchmarks/golden.py compare DIR    # after: max |difference| per technique, bitwise or not

The cases call the public Python API; a case prints `bitwise` when the tensors are equal, else the largest
absolute difference, and the command exits 1 when any case exceeds `--tol` (1e-6). Both pin the kernels'
instruction set to AVX2 (ISA_PINS), the one the goldens were recorded with. tests/golden/ was recorded at commit
5bbc832, before the generation core, through the entry points of that time
(`generate_controlled`, `generate_weighted`, `pipe.run`); where those dropped the model's relation guidance
(a condition image, a region, a weighted prompt), the cases here turn it off too.
"invert" was re-recorded after the null-text fix that gives each step its own embedding (see
tests/test_golden.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The goldens were recorded on an AVX2 CPU, and the kernels that torch, MKL and oneDNN pick for a wider instruction
# set (AVX-512) sum floats in another order: bitwise comparison needs the same ones. They read these variables
# once, when first used, so a process that has imported torch already runs this script in a subprocess with them.
ISA_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if __name__ == "__main__":
    for _name, _value in ISA_PINS.items():
        os.environ.setdefault(_name, _value)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PROMPT = "a small red circle to the left of a big blue square"
STEPS = 6


def _gen(pipe, prompt=PROMPT, **settings):
    """Latents of one generate call (n=2, seed 3, 6 steps): `pipe.make_spec` takes every technique's settings."""
    settings = {"steps": STEPS, "seed": 3, "n": 2, **settings}
    return pipe.run(pipe.make_spec(prompt, **settings), decode=False, progress=False).latents


def cases(pipe, tiny: bool) -> dict:
    """name -> zero-argument callable returning a tensor."""
    from t2ikit.attention.variants import hooks_from_spec
    from t2ikit.diffusion.inversion import invert, reconstruct

    out = {
        "plain": lambda: _gen(pipe),
        "plain_guidance1": lambda: _gen(pipe, guidance=1.0),
        "negative": lambda: _gen(pipe, negative_prompt="a green triangle"),
        "ddim": lambda: _gen(pipe, sampler="ddim"),
        "euler_a": lambda: _gen(pipe, sampler="euler_a"),
        "relation": lambda: _gen(pipe, relation_guidance=200.0),
        "topk": lambda: _gen(pipe, attention="topk:2"),
        "weighted": lambda: _gen(pipe, "a small (red:1.4) circle to the left of a big (blue:0.8) square",
                                 relation_guidance=0.0),
        # before the core, a condition image or a region dropped the model's relation guidance: off here too
        "regions_attention": lambda: _gen(pipe, "a white image", regions=_regions(pipe), relation_guidance=0.0),
        "regions_noise": lambda: _gen(pipe, "a white image", regions=_regions(pipe), region_mode="noise",
                                      relation_guidance=0.0),
        "text_scale": lambda: _gen(pipe, scales={"text": 3.0}, relation_guidance=0.0),
        "excite": lambda: _excite(pipe),
        "invert": lambda: _invert(pipe, invert, reconstruct),
        "edit_p2p": lambda: _edit(pipe, method="p2p", guidance=3.0),
        "edit_blend": lambda: _edit(pipe, method="blend", guidance=3.0, mask="auto", mask_samples=2),
    }
    for name in ("sketch", "depth", "mask", "reference"):
        if _adapter_fits(pipe, name, tiny):
            out[name] = lambda name=name: _gen(pipe, **{name: _condition(pipe, name)},
                                               adapters=_adapters(pipe, name, tiny), relation_guidance=0.0)
    return out


def _regions(pipe):
    h, w = pipe.default_size
    return [f"0,0,{w // 2},{h}:a red circle", f"{w // 2},0,{w},{h}:a blue square"]


def _condition(pipe, name):
    """A Shapes World scene's condition map of the model's image size."""
    from t2ikit.world.conditions import from_modalities
    from t2ikit.world.render import render
    from t2ikit.world.scene import sample_scene

    scene = sample_scene(5, 0, reference=name == "reference")
    return from_modalities(render(scene, pipe.default_size[0], reference=name == "reference"), name)


def _adapter_fits(pipe, name, tiny):
    if tiny:
        return name != "reference"
    from t2ikit.control.compose import shipped_adapter

    return shipped_adapter(name) is not None


def _adapters(pipe, name, tiny):
    if not tiny:
        return None
    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for
    from t2ikit.control.encoders import CONDITIONS

    torch.manual_seed(11)
    adapter = ConditionAdapter(adapter_config_for(pipe.unet, pipe.vae_scale_factor, name, CONDITIONS[name]))
    for p in adapter.parameters():  # zero-init outputs would make a random adapter a no-op
        torch.nn.init.normal_(p, std=0.05)
    return {name: adapter}


def _excite(pipe):
    from t2ikit.analysis.excite import ExciteConfig, sample_excite

    return sample_excite(pipe, [PROMPT, "a red circle and a blue square"], [3, 4], steps=STEPS,
                         config=ExciteConfig(objective="excite", step_size=20.0))


def _invert(pipe, invert, reconstruct):
    torch.manual_seed(0)
    image = pipe.decode(_gen(pipe))[:1]
    inv = invert(pipe, image, PROMPT, steps=STEPS, guidance=3.0, uncond="null-text", null_text_iters=2)
    return torch.cat([inv.trajectory.flatten(0, 1), reconstruct(pipe, inv, decode=False)])


def _edit(pipe, **options):
    from t2ikit.edit import edit

    torch.manual_seed(0)
    image = pipe.decode(_gen(pipe))[:1]
    return edit(pipe, image, PROMPT, PROMPT.replace("red", "green"), steps=STEPS, **options).images


def load(which: str, root: Path):
    from t2ikit.pipeline import T2IPipeline

    if which == "shipped":
        from t2ikit.models.registry import shipped_model_path

        return T2IPipeline.from_folder(shipped_model_path()), False
    from tiny import make_tiny_sd_folder

    return T2IPipeline.from_folder(make_tiny_sd_folder(root / "tiny", scheduler="dpmpp_2m")), True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("dir")
    parser.add_argument("--models", default="tiny,shipped")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)  # the goldens were recorded on one thread (float sums depend on the split)
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.models.split(","):
            pipe, tiny = load(which, Path(tmp))
            path = out_dir / f"{which}.safetensors"
            known = load_file(str(path)) if path.is_file() else {}
            results = {}
            for name, run in cases(pipe, tiny).items():
                if args.only and name not in args.only.split(","):
                    continue
                try:
                    value = run().detach().float().cpu().contiguous()
                except Exception as err:  # a case the API cannot run is reported, not fatal
                    print(f"{which:8s} {name:18s} ERROR {type(err).__name__}: {err}")
                    worst = float("inf")
                    continue
                if args.action == "record":
                    results[name] = value
                    print(f"{which:8s} {name:18s} recorded {tuple(value.shape)}")
                elif name not in known:
                    print(f"{which:8s} {name:18s} no golden")
                else:
                    ref = known[name]
                    if ref.shape != value.shape:
                        print(f"{which:8s} {name:18s} SHAPE {tuple(ref.shape)} != {tuple(value.shape)}")
                        worst = float("inf")
                        continue
                    diff = float((ref - value).abs().max())
                    worst = max(worst, diff)
                    print(f"{which:8s} {name:18s} {'bitwise' if torch.equal(ref, value) else f'max|diff| {diff:.3g}'}")
            if args.action == "record":
                save_file({**known, **results}, str(path))
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
