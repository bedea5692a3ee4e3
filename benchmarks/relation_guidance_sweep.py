"""Relation guidance's step size against spatial accuracy, each paired with the plain sampler.

    python benchmarks/relation_guidance_sweep.py [--model DIR] [--step-sizes 25,50,100,200,400]
        [--n-prompts 25] [--seeds 2] [--split train] [--categories spatial] [--json]

For each step size S: `t2ikit.analysis.excite.compare_binding` with `ExciteConfig(objective="relation",
step_size=S)` (what `t2ikit bench binding --objective relation --step-size S` runs) on the chosen CompBench
categories; prints the plain and guided accuracy, the guided Wilson interval and the paired difference with
its bootstrap interval. One thread (the fast setting for these small models on a shared CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--step-sizes", default="25,50,100,200,400")
    ap.add_argument("--n-prompts", type=int, default=25)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--split", default="train", choices=("train", "heldout"))
    ap.add_argument("--categories", default="spatial")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        sizes = [float(x) for x in args.step_sizes.split(",")]
    except ValueError:
        raise SystemExit(f"--step-sizes must be comma-separated numbers, got {args.step_sizes!r}") from None
    import torch

    from t2ikit.analysis.excite import ExciteConfig, compare_binding
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.pipeline import T2IPipeline

    configs = [ExciteConfig(objective="relation", step_size=s).validate() for s in sizes]  # bad sizes: before loading
    torch.set_num_threads(1)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    rows = []
    for size, config in zip(sizes, configs):
        start = time.perf_counter()
        r = compare_binding(pipe, args.n_prompts, args.seeds, tuple(args.categories.split(",")), config=config,
                            split=args.split)["all"]
        rows.append({"step_size": size, "plain": r["plain"]["accuracy"], "guided": r["weighted"]["accuracy"],
                     "guided_ci95": r["weighted"]["ci95"], "diff": r["diff_accuracy"]["mean"],
                     "diff_ci95": r["diff_accuracy"]["ci95"], "n": r["n"], "seconds": time.perf_counter() - start})
    if args.json:
        print(json.dumps({"model": str(pipe.path), "split": args.split, "categories": args.categories, "rows": rows},
                         indent=2))
        return 0
    print(f"{pipe.path}: relation guidance on {args.categories} ({args.split}), {args.n_prompts} prompts x {args.seeds} seeds")
    print(f"{'step':>6} {'plain':>7} {'guided':>7} {'guided 95%':>16} {'diff [95% paired bootstrap]':>30} {'s':>5}")
    for r in rows:
        print(f"{r['step_size']:>6g} {r['plain']:>7.1%} {r['guided']:>7.1%} "
              f"[{r['guided_ci95'][0]:.1%}, {r['guided_ci95'][1]:.1%}] {r['diff']:>+9.1%} "
              f"[{r['diff_ci95'][0]:+.1%}, {r['diff_ci95'][1]:+.1%}] {r['seconds']:>5.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
