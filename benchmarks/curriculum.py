"""Curricula and loss weighting: CompBench accuracy and oracle check rates against training compute.

Variants (all from one shared, pre-trained VAE; same steps and batch; each run for every --seeds value):
  baseline       plain diffusion loss (min-SNR), no curriculum
  resolution     [curriculum] resolution: half the steps at half the side, then full
  complexity     [curriculum] complexity: 1 object, then <= 2, then <= 4 (thirds of the run)
  multi-fixed    L_rec + 0.1 L_align + 0.1 L_quality, fixed weights
  uncertainty    the same terms, uncertainty weighting (Kendall et al. 2018)
  gradnorm       the same terms, GradNorm (Chen et al. 2018)
Compute is counted as image pixels processed by the UNet stage (sum over steps of batch * side^2), the
FLOPs of a conv UNet being proportional to it. With the resolution curriculum a run of n steps costs as
much as 5n/8 baseline steps: evaluate the others at 5n/8 too (--eval-at) to compare at equal compute.

Every evaluation generates the CompBench train suite (--n-prompts per category, one image each) from the
EMA weights and scores each image with the oracle. Reported, each with a 95% Wilson interval: the share of
images passing all their checks (CompBench accuracy), the same for category "single", and the pass rate of
the individual checks, pooled and per kind (present, colour, size, count, relation). Checks of one image
are correlated, so the pooled rate also gets a bootstrap interval over images; the spread between training
seeds is the bar for a difference between variants.

Each run writes OUT/seed<s>/<variant>/result.json when it ends, and the shared VAE is saved to OUT/vae.safetensors:
a rerun with the same OUT skips what is done (--fresh starts over), so runs can be split across processes
(--seeds, --only) and tabulated together with --report. The numbers in docs/results/training.md:
  python benchmarks/curriculum.py --size xs --resolution 32 --steps 800 --vae-steps 600 --batch 16 \\
      --eval-at 400,500,800 --n-prompts 12 --seeds 0,1 --out /tmp/bc3 --json /tmp/bc3/result.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("baseline", "resolution", "complexity", "multi-fixed", "uncertainty", "gradnorm")
KINDS = ("present", "colour", "size", "count", "relation")  # the oracle's object checks (t2ikit.world.oracle)
BOOTSTRAP = 2000  # resamples of the images for the pooled-check interval
EVAL_BATCH = 16  # images per pipeline call when evaluating


def make_config(args, variant: str, seed: int, eval_every: int = 0):
    from t2ikit.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.seed, cfg.run.device, cfg.run.progress, cfg.run.log_every = seed, args.device, False, 10
    cfg.model.size, cfg.model.vae, cfg.model.resolution, cfg.model.max_tokens = args.size, args.vae, args.resolution, 48
    cfg.vae_train.steps, cfg.vae_train.batch_size, cfg.vae_train.warmup_steps = args.vae_steps, args.batch, 20
    u = cfg.unet_train
    u.steps, u.batch_size, u.lr, u.warmup_steps, u.ema_decay = args.steps, args.batch, args.lr, args.steps // 10, 0.99
    cfg.checkpoint.every, cfg.checkpoint.keep, cfg.export.at_end = 10**9, 1, False
    # Evaluation is our own hook (oracle_hook), which keeps every check; the built-in one keeps two numbers.
    cfg.eval.every, cfg.eval.compbench, cfg.eval.n_prompts, cfg.eval.steps = eval_every, False, args.n_prompts, 20
    n = args.steps
    if variant == "resolution":
        cfg.curriculum.resolution = [[0, args.resolution // 2], [n // 2, args.resolution]]
    elif variant == "complexity":
        cfg.curriculum.complexity = [[0, 1], [n // 3, 2], [2 * n // 3, 4]]
    elif variant in ("multi-fixed", "uncertainty", "gradnorm"):
        cfg.losses.text_alignment, cfg.losses.image_quality = 0.1, 0.1
        cfg.losses.weighting = {"multi-fixed": "fixed"}.get(variant, variant)
    return cfg.validate()


def pixels_until(cfg, step: int) -> float:
    """UNet-stage compute up to `step`: Mpx processed (batch * side^2 summed over steps)."""
    from t2ikit.train.curriculum import curriculum_from_config

    cur = curriculum_from_config(cfg)
    return sum(cfg.unet_train.batch_size * cur.resolution_at(s) ** 2 for s in range(step)) / 1e6


# ----------------------------------------------------------------------------------------------------
# Evaluation: every oracle check of every image
# ----------------------------------------------------------------------------------------------------


def oracle_hook(suite, eval_steps: set[int]):
    """A Trainer eval hook: at the steps in `eval_steps`, the EMA pipeline draws every item of `suite` and the
    oracle scores it; returns {"oracle": [[category, all_passed, [[kind, passed], ...]], ...]}, else {}."""
    from t2ikit.world.oracle import score

    def hook(trainer, step: int) -> dict:
        if step not in eval_steps:
            return {}
        e = trainer.cfg.eval
        pipe = trainer.pipeline(ema=True).to(trainer.device)
        pipe.set_progress_bar_config(disable=True)
        items = []
        for start in range(0, len(suite.items), EVAL_BATCH):
            batch = suite.items[start:start + EVAL_BATCH]
            generators = [torch.Generator(trainer.device).manual_seed(it.seed) for it in batch]
            images = pipe([it.prompt for it in batch], num_inference_steps=e.steps, guidance_scale=e.guidance,
                          generator=generators, output_type="np").images  # (B, H, W, 3) in [0, 1]
            for it, image in zip(batch, images):
                s = score(image, it.spec)
                items.append([it.category, s.all_passed, [[c.kind, c.passed] for c in s.checks]])
        return {"oracle": items}

    return hook


def rate(passed: int, n: int) -> dict:
    from t2ikit.bench.stats import wilson_interval

    lo, hi = wilson_interval(passed, n)
    return {"passed": passed, "n": n, "rate": passed / n if n else float("nan"), "ci95": [lo, hi]}


def summarise_items(items: list) -> dict:
    """Rates with 95% Wilson intervals: all-checks accuracy, category "single", checks pooled and per kind;
    the pooled check rate also with a bootstrap interval over images (its checks are not independent).
    "per_image" keeps each image's [passed, n] of all checks and of "present", for paired comparisons."""
    from t2ikit.bench.compbench import CHECK_KINDS

    out = {"all": rate(sum(bool(p) for _, p, _ in items), len(items))}
    single = [p for c, p, _ in items if c == "single"]
    out["single"] = rate(sum(bool(p) for p in single), len(single))
    out["per_image"] = {
        "checks": [[sum(bool(ok) for _, ok in checks), len(checks)] for _, _, checks in items],
        "present": [[sum(bool(ok) for k, ok in checks if k == "present"), sum(k == "present" for k, _ in checks)]
                    for _, _, checks in items],
    }
    per_image = np.array(out["per_image"]["checks"], dtype=float)  # (images, [passed, n])
    out["checks"] = rate(int(per_image[:, 0].sum()), int(per_image[:, 1].sum()))
    draws = np.random.default_rng(0).integers(0, len(items), size=(BOOTSTRAP, len(items)))
    boot = per_image[draws, 0].sum(1) / per_image[draws, 1].sum(1)
    out["checks"]["boot95"] = [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]
    for kind in CHECK_KINDS:  # KINDS, then background and fill (in the JSON, not the tables)
        hits = [bool(ok) for _, _, checks in items for k, ok in checks if k == kind]
        out[kind] = rate(sum(hits), len(hits))
    return out


def paired_difference(runs: list[dict], base: list[dict], key: str) -> tuple[float, float, float]:
    """Mean over `runs` minus mean over `base` of the pooled `key` rate ("checks" or "present"), with a 95%
    bootstrap interval that resamples the suite's images, the same images for every run (every run draws the
    same prompts with the same image seeds). It holds the noise of the suite, not that of the training seed."""
    arrays = [np.array(e["per_image"][key], dtype=float) for e in runs + base]  # each (images, [passed, n])
    n_images = len(arrays[0])
    draws = np.random.default_rng(0).integers(0, n_images, size=(BOOTSTRAP, n_images))

    def diff(index):
        rates = [a[index, 0].sum(-1) / a[index, 1].sum(-1) for a in arrays]
        return np.mean(rates[:len(runs)], axis=0) - np.mean(rates[len(runs):], axis=0)

    boot = diff(draws)
    return float(diff(np.arange(n_images))), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


# ----------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------


def shared_vae(args, out: Path, seed: int):
    """The one VAE of every run: trained once (seed `seed`), then read back from OUT/vae.safetensors."""
    import json

    from safetensors.torch import load_file, safe_open, save_file

    from t2ikit.train.trainer import Trainer

    path = out / "vae.safetensors"
    made_with = {"vae": args.vae, "resolution": args.resolution, "vae_steps": args.vae_steps, "batch": args.batch,
                 "seed": seed}
    if path.exists():
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        saved_with = json.loads(meta.get("made_with", "null"))
        if saved_with != made_with:
            raise SystemExit(f"{path} was trained with {saved_with}, this run asks for {made_with}; "
                             "use another --out or --fresh")
        return load_file(path), float(meta["scaling_factor"])
    t0 = time.perf_counter()
    cfg = make_config(args, "baseline", seed)
    cfg.unet_train.steps = 0
    trainer = Trainer(cfg, out=out / "vae")
    trainer.run()
    state, factor = trainer.vae.state_dict(), float(trainer.vae.config.scaling_factor)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path,
              metadata={"made_with": json.dumps(made_with), "scaling_factor": repr(factor)})  # no pickle
    print(f"# shared VAE: {args.vae_steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return state, factor


def run_variant(args, variant: str, seed: int, vae, suite, eval_steps: set[int], run_dir: Path) -> dict:
    from t2ikit.train.trainer import Trainer

    cfg = make_config(args, variant, seed, eval_every=math.gcd(*eval_steps))
    if (run_dir / "log.jsonl").exists():
        (run_dir / "log.jsonl").unlink()
    trainer = Trainer(cfg, out=run_dir, eval_hooks=(oracle_hook(suite, eval_steps),))
    trainer.vae.load_state_dict(vae[0])
    trainer.vae.register_to_config(scaling_factor=vae[1])
    trainer.stage, trainer.step = "unet", 0
    t1 = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - t1
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train" and r["stage"] == "unet"]
    evals = [r for r in records if r["event"] == "eval" and "oracle" in r]
    return {
        "variant": variant, "seed": seed, "seconds": seconds,
        "load": _load(),
        "curve": [{k: r[k] for k in r if k.startswith(("loss", "weight_")) or k == "step"} for r in train],
        "evals": [{"step": r["step"], "mpx": pixels_until(cfg, r["step"]), **summarise_items(r["oracle"])}
                  for r in evals],
        "mpx_total": pixels_until(cfg, cfg.unet_train.steps),
        "config": cfg.to_dict(),
    }


def _load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="xs")
    p.add_argument("--vae", default="xs")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=200, help="UNet-stage optimizer steps per variant")
    p.add_argument("--vae-steps", type=int, default=150, help="steps of the one shared VAE")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100, help="evaluate every this many steps (unless --eval-at)")
    p.add_argument("--eval-at", default=None, help="comma-separated UNet steps to evaluate at instead")
    p.add_argument("--n-prompts", type=int, default=2, help="CompBench prompts per category (one image each)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds; the VAE uses the first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--out", default="runs/bench-curriculum")
    p.add_argument("--fresh", action="store_true", help="retrain everything, ignoring finished runs in --out")
    p.add_argument("--report", action="store_true", help="train nothing: tabulate the finished runs found in --out")
    p.add_argument("--json", default=None, help="write all results here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from t2ikit.bench.compbench import make_suite

    variants = [v for v in args.only.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--only: unknown variants {bad}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not seeds:
        raise SystemExit("--seeds: give at least one training seed, e.g. --seeds 0,1")
    if args.eval_at:
        eval_steps = {int(s) for s in args.eval_at.split(",") if s}
    else:
        eval_steps = set(range(args.eval_every, args.steps + 1, args.eval_every)) if args.eval_every > 0 else set()
    outside = sorted(s for s in eval_steps if not 1 <= s <= args.steps)
    if outside:
        raise SystemExit(f"--eval-at: steps {outside} are outside 1..{args.steps}")
    out = Path(args.out)
    if args.fresh and (out / "vae.safetensors").exists():
        (out / "vae.safetensors").unlink()
    suite = make_suite("train", args.n_prompts, 1)
    vae = None  # trained (or read) when the first run needs it
    results = []
    for seed in seeds:
        for v in variants:
            run_dir = out / f"seed{seed}" / v
            done = run_dir / "result.json"
            if done.exists() and not args.fresh:
                finished = json.loads(done.read_text())
                wanted = json.loads(json.dumps(make_config(args, v, seed, math.gcd(*eval_steps)).to_dict()))
                if finished["config"] != wanted:
                    raise SystemExit(f"{done} was run with another config than this command's; use another --out "
                                     "or --fresh")
                results.append(finished)
                print(f"# {v} seed {seed}: read {done}", file=sys.stderr)
                continue
            if args.report:
                continue
            vae = vae or shared_vae(args, out, seeds[0])
            r = run_variant(args, v, seed, vae, suite, eval_steps, run_dir)
            done.write_text(json.dumps(r, indent=1))
            results.append(r)
            print(f"# {v} seed {seed}: {r['seconds']:.0f} s, load {r['load']}", file=sys.stderr)
    print(render(args, results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------


def _cell(r: dict, interval: str = "ci95") -> str:
    lo, hi = r[interval]
    return f"{r['rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def _count(r: dict) -> str:
    return f"{r['passed']}/{r['n']}"


def render(args, results: list[dict]) -> str:
    n_images = results[0]["evals"][0]["all"]["n"] if results and results[0]["evals"] else 0
    lines = [
        f"size {args.size}, {args.resolution} px, {args.steps} UNet steps x batch {args.batch}, seeds {args.seeds}, "
        f"{n_images} images per evaluation ({args.n_prompts} prompts/category, train split)",
        "",
        "Every evaluation (rate [95% Wilson]; pooled checks also [bootstrap over images]):",
        "",
        "| variant | seed | step | UNet Mpx | all checks (images) | single | checks pooled | boot 95% | "
        + " | ".join(KINDS) + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | " + " | ".join("---" for _ in KINDS) + " |",
    ]
    for r in results:
        for e in r["evals"]:
            kinds = " | ".join(_cell(e[k]) if e[k]["n"] else "-" for k in KINDS)
            lo, hi = e["checks"]["boot95"]
            lines.append(f"| {r['variant']} | {r['seed']} | {e['step']} | {e['mpx']:.2f} | {_count(e['all'])} | "
                         f"{_count(e['single'])} | {_cell(e['checks'])} | [{lo:.2f}, {hi:.2f}] | {kinds} |")
    lines += ["", "Each variant against baseline, at the same step and at the same UNet Mpx: pooled check rate and "
              "'present' rate per seed, the difference of seed means [95% paired bootstrap over images], and whether "
              "every seed of the variant lies on one side of every baseline seed (pooled checks). A difference counts as outside the "
              "noise only when its interval excludes 0 and the seeds separate.", "",
              "| variant | step (Mpx) | baseline step (Mpx) | checks per seed | baseline per seed | difference "
              "| present per seed | baseline per seed | difference | seeds separate | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    table = _by_variant(results)
    base = table.get("baseline", {})
    for v, steps in table.items():
        if v == "baseline":
            continue
        for step, (mpx, evs) in sorted(steps.items()):
            same_mpx = [s for s, (b_mpx, _) in base.items() if s != step and abs(b_mpx - mpx) <= 0.005 * mpx]
            for b_step in ([step] if step in base else []) + same_mpx:
                b_mpx, b_evs = base[b_step]
                cells = []
                for key in ("checks", "present"):
                    mine, theirs = [e[key]["rate"] for e in evs], [e[key]["rate"] for e in b_evs]
                    d, lo, hi = paired_difference(evs, b_evs, key)
                    cells += [" / ".join(f"{x:.3f}" for x in mine), " / ".join(f"{x:.3f}" for x in theirs),
                              f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"]
                    if key == "checks":
                        outside = lo > 0 or hi < 0
                        separate = max(mine) < min(theirs) or min(mine) > max(theirs)
                verdict = "outside the noise" if outside and separate else "within the noise"
                lines.append(f"| {v} | {step} ({mpx:.2f}) | {b_step} ({b_mpx:.2f}) | " + " | ".join(cells)
                             + f" | {'yes' if separate else 'no'} | {verdict} |")
    lines += ["", "| variant | seed | wall s | load | L_rec at 25/50/75/100% | final terms (loss/weight) |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        c = r["curve"]
        rec = [x.get("loss_reconstruction", x["loss"]) for x in c]
        quarts = " / ".join(f"{rec[max(0, round(len(rec) * q) - 1)]:.4f}" for q in (0.25, 0.5, 0.75, 1.0)) if rec else "n/a"
        extra = ", ".join(f"{k[5:]}={c[-1][k]:.3f}/{c[-1].get('weight_' + k[5:], float('nan')):.2f}"
                          for k in sorted(c[-1]) if k.startswith("loss_")) if c else ""
        load = f"{r['load']:.1f}" if r.get("load") is not None else "?"
        lines.append(f"| {r['variant']} | {r['seed']} | {r['seconds']:.0f} | {load} | {quarts} | {extra or '-'} |")
    return "\n".join(lines)


def _by_variant(results: list[dict]) -> dict:
    """{variant: {step: (mpx, [eval of each seed])}}."""
    table: dict = {}
    for r in results:
        for e in r["evals"]:
            table.setdefault(r["variant"], {}).setdefault(e["step"], (e["mpx"], []))[1].append(e)
    return table


if __name__ == "__main__":
    sys.exit(main())
