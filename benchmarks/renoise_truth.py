"""Where in the schedule are CompBench items lost? The ground truth through the model's VAE, re-noised to a fraction
of the schedule and denoised by the model from there.

    python benchmarks/renoise_truth.py OUT --split heldout --bench-seed 0x7E57 --categories style \
        --strengths 0,0.15,0.3 [--model DIR] [--guidance G] [--sampler S] [--only outlined,black] [--threads 1]

For each strength S, every item's truth (the world's render of its prompt with its seed, encoded to the VAE's latent
mean) is noised to the timestep where the last S of the model's steps begin, with the item's own noise, and the
model's default generation runs those steps (a latent update replaces the latent before that step; the steps before
it run and are discarded). S = 0 is the VAE's copy of the truth (`t2ikit bench compbench --generator vae`). If an
item passes at S = 0 and fails at S = 0.15, the model's last steps lost it although its layout, shapes and colours
were given. `--only WORDS`: the items whose prompt contains every word (say outlined objects on black). Writes
OUT/renoise_S.json (CompBench results with per-item records, for `benchmarks/style_breakdown.py` and
`benchmarks/compbench_paired.py`), resumable per strength.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from t2ikit.bench import compbench as cb
from t2ikit.diffusion.samplers import make_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline


def one_call_per_step(sampler: str, config: dict, steps: int) -> None:
    """ValueError for a sampler whose steps take two model calls (Heun, DPM++ SDE): the loop's step index, which the
    restart counts, is then not the schedule's step."""
    scheduler = make_scheduler(sampler, config)
    scheduler.set_timesteps(steps)
    if len(scheduler.timesteps) != steps:
        raise ValueError(f"renoise_truth needs a sampler with one model call per step; {sampler!r} makes "
                         f"{len(scheduler.timesteps)} for {steps} steps")


def renoise_generator(pipe: T2IPipeline, strength: float, before=None, **generate_kwargs):
    """A CompBench generator: each item's truth through the VAE, re-noised and denoised by `pipe` over the last
    `strength` of its steps (module docstring). `before`: an extra latent update that runs first at every step
    (tests use it to disturb the discarded steps)."""
    check = pipe.make_spec("", **generate_kwargs)  # the sampler and steps every item gets: refused now if unfit
    one_call_per_step(check.sampler, pipe.scheduler_config, check.steps)
    truth = cb.ground_truth_generator(pipe.default_size[0])  # the world renders square scenes

    @torch.no_grad()
    def encode(prompts, seeds):
        x = torch.from_numpy(np.stack(truth(prompts, seeds))).permute(0, 3, 1, 2) * 2 - 1
        return pipe.vae.encode(x.to(pipe.device, pipe.vae.dtype)).latent_dist.mode() * pipe.vae.config.scaling_factor

    def generate(prompts, seeds):
        z0 = encode(prompts, seeds)
        if strength == 0:
            return list(pipe.decode(z0).permute(0, 2, 3, 1).numpy())
        images = []
        for j, (prompt, seed) in enumerate(zip(prompts, seeds)):
            spec = pipe.make_spec(prompt, seed=seed, **generate_kwargs)
            start = int(round(spec.steps * (1 - strength)))

            def restart(i, t, latents, scheduler, z=z0[j:j + 1], seed=seed):
                if i != start:
                    return latents
                noise = torch.randn(z.shape, generator=torch.Generator("cpu").manual_seed(seed)).to(z)
                if hasattr(scheduler, "model_outputs"):  # multistep solvers: forget the discarded steps, so the
                    scheduler.model_outputs = [None] * len(scheduler.model_outputs)  # restart is first order, as
                    scheduler.lower_order_nums = 0  # a sampling run's first step is
                return scheduler.add_noise(z, noise, t.reshape(1))

            updates = [u for u in (before, restart) if u]
            images.append(pipe.run(spec, progress=False, updates=updates).images[0].permute(1, 2, 0).numpy())
        return images

    return generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder for renoise_S.json")
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--bench-seed", type=lambda s: int(s, 0), default=cb.BENCH_SEED)
    ap.add_argument("--n-prompts", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--categories", default="style")
    ap.add_argument("--strengths", default="0,0.15,0.3", help="fractions of the steps in [0, 1), comma-separated")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale of the denoising (default: the model's)")
    ap.add_argument("--sampler", default=None, help="sampler of the denoising (default: the model's)")
    ap.add_argument("--only", default="", help="comma-separated words every kept prompt contains")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        strengths = [float(s) for s in args.strengths.split(",")]
    except ValueError:
        ap.error(f"--strengths must be numbers; got {args.strengths!r}")
    if not all(0 <= s < 1 for s in strengths):
        ap.error(f"--strengths must lie in [0, 1); got {args.strengths!r}")
    torch.set_num_threads(args.threads)
    suite = cb.make_suite(args.split, args.n_prompts, args.seeds, args.categories.split(","), args.bench_seed)
    words = [w for w in args.only.split(",") if w]
    if words:
        suite = dataclasses.replace(suite, items=tuple(it for it in suite.items if all(w in it.prompt for w in words)))
        if not suite.items:
            ap.error(f"no item's prompt contains all of {words}")
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in (("guidance", args.guidance), ("sampler", args.sampler)) if v is not None}
    try:  # a bad sampler or scale is refused before any image is made
        generators = {s: renoise_generator(pipe, s, **kwargs) for s in strengths}
    except ValueError as err:
        ap.error(str(err))
    for s in strengths:
        path = out / f"renoise_{s:g}.json"
        if path.exists():
            result = json.loads(path.read_text())
        else:
            result = cb.run(suite, generators[s], generator_name=f"renoise {s:g}",
                            journal=out / f"renoise_{s:g}.journal.jsonl")
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, path)
            (out / f"renoise_{s:g}.journal.jsonl").unlink()
        print(f"strength {s:g}: {len(suite.items)} items, all checks {100 * result['overall']['accuracy']:.1f}% "
              f"[{100 * result['overall']['ci95'][0]:.1f}, {100 * result['overall']['ci95'][1]:.1f}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
