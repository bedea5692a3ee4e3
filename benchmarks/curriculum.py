"""Curricula and loss weighting at equal steps: CompBench accuracy against training compute, and loss curves.

Variants (all from one shared, pre-trained VAE, same seed, same steps and batch):
  baseline       plain diffusion loss (min-SNR), no curriculum
  resolution     [curriculum] resolution: half the steps at half the side, then full
  complexity     [curriculum] complexity: 1 object, then <= 2, then <= 4 (thirds of the run)
  multi-fixed    L_rec + 0.1 L_align + 0.1 L_quality, fixed weights
  uncertainty    the same terms, uncertainty weighting (Kendall et al. 2018)
  gradnorm       the same terms, GradNorm (Chen et al. 2018)
Compute is counted as image pixels processed by the UNet stage (sum over steps of batch * side^2), the
FLOPs of a conv UNet being proportional to it. CPU budget (the numbers in docs/results/training.md):
  python benchmarks/curriculum.py --size xs --resolution 32 --steps 200 --batch 16 --eval-every 100
A GPU session can rerun it bigger, e.g. --size s --resolution 64 --steps 3000 --batch 128 --device cuda.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

VARIANTS = ("baseline", "resolution", "complexity", "multi-fixed", "uncertainty", "gradnorm")


def make_config(args, variant: str):
    from t2ikit.train.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.seed, cfg.run.device, cfg.run.progress, cfg.run.log_every = args.seed, args.device, False, 10
    cfg.model.size, cfg.model.vae, cfg.model.resolution, cfg.model.max_tokens = args.size, args.vae, args.resolution, 48
    cfg.vae_train.steps, cfg.vae_train.batch_size, cfg.vae_train.warmup_steps = args.vae_steps, args.batch, 20
    u = cfg.unet_train
    u.steps, u.batch_size, u.lr, u.warmup_steps, u.ema_decay = args.steps, args.batch, args.lr, args.steps // 10, 0.99
    cfg.checkpoint.every, cfg.checkpoint.keep, cfg.export.at_end = 10**9, 1, False
    cfg.eval.every, cfg.eval.compbench, cfg.eval.n_prompts, cfg.eval.steps = args.eval_every, True, args.n_prompts, 20
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="xs")
    p.add_argument("--vae", default="xs")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=200, help="UNet-stage optimizer steps per variant")
    p.add_argument("--vae-steps", type=int, default=150, help="steps of the one shared VAE")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--n-prompts", type=int, default=2, help="CompBench prompts per category")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--out", default="runs/bench-curriculum")
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from t2ikit.train.trainer import Trainer

    out = Path(args.out)
    variants = [v for v in args.only.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")
    # One VAE for every variant, so the comparison is about the UNet stage only.
    t0 = time.perf_counter()
    base_cfg = make_config(args, "baseline")
    base_cfg.unet_train.steps = 0
    vae_trainer = Trainer(base_cfg, out=out / "vae")
    vae_trainer.run()
    vae_state, factor = vae_trainer.vae.state_dict(), float(vae_trainer.vae.config.scaling_factor)
    print(f"# shared VAE: {args.vae_steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = {}
    for v in variants:
        cfg = make_config(args, v)
        run_dir = out / v
        if (run_dir / "log.jsonl").exists():
            (run_dir / "log.jsonl").unlink()
        trainer = Trainer(cfg, out=run_dir)
        trainer.vae.load_state_dict(vae_state)
        trainer.vae.register_to_config(scaling_factor=factor)
        trainer.stage, trainer.step = "unet", 0
        t1 = time.perf_counter()
        trainer.run()
        seconds = time.perf_counter() - t1
        records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        train = [r for r in records if r["event"] == "train" and r["stage"] == "unet"]
        evals = [r for r in records if r["event"] == "eval"]
        results[v] = {
            "seconds": seconds,
            "curve": [{k: r[k] for k in r if k.startswith(("loss", "weight_")) or k == "step"} for r in train],
            "compbench": [{"step": r["step"], "mpx": pixels_until(cfg, r["step"]),
                           "overall": r.get("compbench_overall"), "mean_category": r.get("compbench_mean_category")}
                          for r in evals],
            "mpx_total": pixels_until(cfg, cfg.unet_train.steps),
        }
        print(f"# {v}: {seconds:.0f} s", file=sys.stderr)
    print(render(args, results))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


def render(args, results: dict) -> str:
    lines = [
        f"size {args.size}, {args.resolution} px, {args.steps} UNet steps x batch {args.batch}, seed {args.seed}, "
        f"CompBench {args.n_prompts} prompts/category",
        "",
        "| variant | UNet Mpx | wall s | CompBench overall @ step (Mpx) | loss (first log -> last) | L_rec at 25/50/75/100% "
        "| final terms / weights |",
        "| --- | ---: | ---: | --- | --- | --- | --- |",
    ]
    for v, r in results.items():
        cb = ", ".join(f"{e['overall']:.3f} @ {e['step']} ({e['mpx']:.2f})" if e["overall"] is not None else "n/a"
                       for e in r["compbench"])
        c = r["curve"]
        loss = f"{c[0]['loss']:.4f} -> {c[-1]['loss']:.4f}" if c else "n/a"
        extra = ", ".join(f"{k[5:]}={c[-1][k]:.3f}/{c[-1].get('weight_' + k[5:], float('nan')):.2f}"
                          for k in sorted(c[-1]) if k.startswith("loss_")) if c else ""
        rec = [x.get("loss_reconstruction", x["loss"]) for x in c]
        quarts = " / ".join(f"{rec[max(0, round(len(rec) * q) - 1)]:.4f}" for q in (0.25, 0.5, 0.75, 1.0)) if rec else "n/a"
        lines.append(f"| {v} | {r['mpx_total']:.2f} | {r['seconds']:.0f} | {cb} | {loss} | {quarts} | {extra or '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
