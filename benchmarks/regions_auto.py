"""Regions from the prompt's phrases against plain generation and the planned layout, on the shipped model.

    python benchmarks/regions_auto.py [--n-prompts 20] [--seeds 1] [--category spatial] [--threads 1]

Variants, all with relation guidance off (the shipped model's default is 200): "plain"; "regions-auto"
(`region_layout="auto"`: a region per object phrase, its prompt the phrase, placed by the layout planner);
"regions-auto-noise" (the same regions blended in noise space); "layout" (`layout="auto"`: the same planned boxes
as box guidance); "layout+regions-auto" (both, on one plan per image). Each item is generated once per variant,
one image at a time and the variants interleaved item by item (so the machine's load falls on all alike), then
the CompBench oracle scores every image (t2ikit.bench.compbench). Prints per variant the accuracy with its Wilson 95% interval, the share of relation
checks passed, and the median ms/image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from t2ikit.bench import compbench as cb
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import PLAIN, T2IPipeline

VARIANTS = {"plain": {}, "regions-auto": {"region_layout": "auto"},
            "regions-auto-noise": {"region_layout": "auto", "region_mode": "noise"}, "layout": {"layout": "auto"},
            "layout+regions-auto": {"layout": "auto", "region_layout": "auto"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-prompts", type=int, default=20, help="prompts of the category (default: 20)")
    ap.add_argument("--seeds", type=int, default=1, help="images per prompt (default: 1)")
    ap.add_argument("--category", default="spatial", help="CompBench category (default: spatial, two objects)")
    ap.add_argument("--split", default="train", choices=cb.SPLITS)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; allowed: {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    pipe = T2IPipeline.from_folder(shipped_model_path())
    suite = cb.make_suite(args.split, args.n_prompts, args.seeds, [args.category])
    images = {v: {} for v in variants}
    ms = {v: [] for v in variants}
    for item in suite.items:
        for v in variants:
            t0 = time.perf_counter()
            images[v][item.prompt, item.seed] = pipe.generate(item.prompt, seed=item.seed, progress=False,
                                                              **{**PLAIN, **VARIANTS[v]})[0]
            ms[v].append(1000 * (time.perf_counter() - t0))
    print(f"{args.category} ({args.split}), {args.n_prompts} prompts x {args.seeds} seed(s), shipped model "
          f"{pipe.name}, {torch.get_num_threads()} thread(s), relation guidance off")
    print("| variant | accuracy [95% Wilson] | relation checks passed | ms/image (median) |")
    print("| --- | --- | --- | --- |")
    for v in variants:
        stored = images[v]
        result = cb.run(suite, lambda prompts, seeds, stored=stored: [stored[p, s] for p, s in zip(prompts, seeds)],
                        generator_name=v)
        o = result["overall"]
        lo, hi = o["ci95"]
        relation = o["checks"].get("relation")
        relation = "-" if relation is None else f"{100 * relation:.0f}%"
        print(f"| {v} | {100 * o['accuracy']:.0f}% ({o['passed']}/{o['n']}) [{100 * lo:.0f}, {100 * hi:.0f}] | "
              f"{relation} | {statistics.median(ms[v]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
