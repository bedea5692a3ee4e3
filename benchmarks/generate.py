"""Speed of `T2IPipeline.generate` against diffusers' StableDiffusionPipeline on the same folder.

Both run in ONE process on the same components' files, the same sampler (a fresh scheduler per call for
both), steps, guidance and seeds, interleaved (the order alternates every repeat) so that machine noise
hits both alike. Prints ms/image for each and the wall-time ratio ours/diffusers (median and range over
repeats) at each batch size, then the wall time of a cold `t2ikit generate` subprocess to a saved PNG.
The side-by-side runs switch relation guidance off (diffusers has none); when the model's default turns it
on (the shipped model), its cost is timed as well, ours guided against ours plain, and the cold run uses the
default, as a user gets it.

    python benchmarks/generate.py [--model DIR] [--json] [--repeats 5] [--batches 1,16] [--steps 20]

Without --model: the shipped model if installed, else a tiny random folder (tests/tiny.py) whose UNet
is so small that the ratio measures per-step overhead, the worst case for a wrapper.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red circle to the left of a blue square"


def pick_model(arg: str | None, workdir: Path) -> tuple[Path, str]:
    from t2ikit.models.registry import shipped_model_path

    if arg:
        return Path(arg), "given"
    if (shipped_model_path() / "model_index.json").is_file():
        return shipped_model_path(), "shipped"
    sys.path.insert(0, str(REPO / "tests"))
    from tiny import make_tiny_sd_folder

    return make_tiny_sd_folder(workdir / "tiny-sd"), "tiny (built)"


def time_pair(ours, ref, batch: int, args, config: dict) -> tuple[float, float]:
    """(our seconds, diffusers seconds) for one batch; the caller alternates the order."""
    import torch

    from t2ikit.diffusion.samplers import make_scheduler
    from t2ikit.pipeline import PLAIN

    sync = torch.cuda.synchronize if str(args.device).startswith("cuda") else (lambda: None)

    def run_ours():
        ours.generate(PROMPT, steps=args.steps, guidance=args.guidance, seed=0, n=batch, sampler=args.sampler,
                      progress=False, **PLAIN)

    def run_ref():
        ref.scheduler = make_scheduler(args.sampler, config)
        gens = [torch.Generator().manual_seed(k) for k in range(batch)]
        ref(PROMPT, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gens,
            num_images_per_prompt=batch, output_type="pil")

    out = {}
    for name, fn in (("ours", run_ours), ("ref", run_ref)) if args._order else (("ref", run_ref), ("ours", run_ours)):
        sync()
        start = time.perf_counter()
        fn()  # both end in PIL images, i.e. on the host: the clock covers the whole generation
        sync()
        out[name] = time.perf_counter() - start
    return out["ours"], out["ref"]


def time_guided(ours, batch: int, args) -> tuple[float, float]:
    """(seconds with the model's default relation guidance, seconds without) for one batch, ours only."""
    out = []
    for rg in (None, 0):
        start = time.perf_counter()
        ours.generate(PROMPT, steps=args.steps, guidance=args.guidance, seed=0, n=batch, sampler=args.sampler,
                      progress=False, relation_guidance=rg)
        out.append(time.perf_counter() - start)
    return out[0], out[1]


def cold_cli(model: Path, args, workdir: Path) -> float:
    out = workdir / "cold.png"
    cmd = [sys.executable, "-m", "t2ikit", "generate", PROMPT, "--model", str(model), "--steps", str(args.steps),
           "--sampler", args.sampler, "--out", str(out), "--quiet"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--device", args.device]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if not out.is_file():
        raise RuntimeError("t2ikit generate did not write its PNG")
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="diffusers folder (default: shipped model, else tiny)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per batch size (after a warm-up)")
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device for both pipelines")
    args = parser.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as dl
    from transformers.utils import logging as tl

    from t2ikit.pipeline import T2IPipeline

    dl.disable_progress_bar()
    tl.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, source = pick_model(args.model, workdir)
        ours = T2IPipeline.from_folder(model, device=args.device)
        ref = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, use_safetensors=True,
                                                      safety_checker=None, requires_safety_checker=False)
        ref.to(args.device)
        ref.set_progress_bar_config(disable=True)
        args.guidance = ours.defaults["guidance"] if args.guidance is None else args.guidance
        config = ours.scheduler_config
        results = {
            "model": str(model), "model_source": source, "sampler": args.sampler, "steps": args.steps,
            "guidance": args.guidance, "size": list(ours.default_size), "threads": torch.get_num_threads(),
            "device": args.device,
            "repeats": args.repeats, "batches": {},
        }
        for batch in batches:
            args._order = True
            time_pair(ours, ref, batch, args, config)  # warm-up: allocator, lazy inits
            ours_t, ref_t = [], []
            for r in range(args.repeats):
                args._order = r % 2 == 0
                a, b = time_pair(ours, ref, batch, args, config)
                ours_t.append(a)
                ref_t.append(b)
            ratios = [a / b for a, b in zip(ours_t, ref_t)]
            results["batches"][str(batch)] = {
                "ours_ms_per_image": 1000 * statistics.median(ours_t) / batch,
                "diffusers_ms_per_image": 1000 * statistics.median(ref_t) / batch,
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "ratio_of_totals": sum(ours_t) / sum(ref_t),
            }
            if ours.defaults["relation_guidance"] > 0:
                pairs = [time_guided(ours, batch, args) for _ in range(max(1, args.repeats // 2))]
                results["batches"][str(batch)].update(
                    ours_guided_ms_per_image=1000 * statistics.median(g for g, _ in pairs) / batch,
                    guided_over_plain=statistics.median(g / p for g, p in pairs))
        results["relation_guidance_default"] = ours.defaults["relation_guidance"]
        results["cold_cli_s"] = cold_cli(model, args, workdir)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"model {results['model']} ({source}) on {args.device}; {args.sampler}, {args.steps} steps, guidance {args.guidance}, "
          f"size {results['size'][1]}x{results['size'][0]}, {results['threads']} threads, {args.repeats} repeats")
    print(f"{'batch':>5} {'ours ms/img':>12} {'diffusers ms/img':>17} {'ratio (median)':>15} {'range':>15}")
    for batch, r in results["batches"].items():
        print(f"{batch:>5} {r['ours_ms_per_image']:>12.1f} {r['diffusers_ms_per_image']:>17.1f} "
              f"{r['ratio_median']:>15.3f} {r['ratio_min']:>7.3f}-{r['ratio_max']:.3f}")
    for batch, r in results["batches"].items():
        if "guided_over_plain" in r:
            print(f"batch {batch}: with the model's relation guidance ({results['relation_guidance_default']:g}) "
                  f"{r['ours_guided_ms_per_image']:.1f} ms/img, {r['guided_over_plain']:.2f}x ours without it")
    print(f"cold `t2ikit generate` to PNG: {results['cold_cli_s']:.2f} s"
          + (" (the model's relation guidance on)" if results["relation_guidance_default"] > 0 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
