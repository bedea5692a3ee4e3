"""CompBench of the layout path against the shipped model's default generation, paired on the same items.

    python benchmarks/layout_compbench.py OUT_DIR [--model DIR] [--split train] [--n-prompts 25] [--seeds 2]
        [--categories counting,complex,spatial,style] [--variants default,layout,layout+rg] [--bench-seed N]
    python benchmarks/layout_compbench.py OUT_DIR --timing 3   # cost: plain, default, layout interleaved

Each variant's result is written to OUT_DIR/VARIANT.json when it finishes and read back when that file exists (a
result of another suite is refused); while a variant runs, OUT_DIR/VARIANT.journal.jsonl keeps its finished
batches, so a stopped run resumes inside the variant it was on. Variants: "default" (the model's defaults:
relation guidance 200, and layout="many" since it ships), "rg" (relation guidance 200 alone, the earlier default),
"layout" (boxes planned from the prompt, `layout="auto"`, relation guidance off), "layout+rg" (both),
"layout_shared" and "layout+rg_shared" (the same two with latent_pass="shared": one guidance pass per gradient step
that also gives the step's prediction), "many" (`layout="many"`: boxes, without relation guidance, only for the
prompts that name several objects; the default for the others), "many_fast" (that with `fast=True`), "many_rel"
(`layout="many+relations"`: boxes also for the prompts that state a relation, with relation guidance on them too),
"many_bg20", "many_bg80" and "many_mask30" (that with box guidance 20 or 80, or the boxes' attention mask on the
first 30% of the steps), "many_rel_dom1", "many_rel_dom15" and "many_rel_dom2" ("many_rel" with the planner's
relations 1, 1.5 (the planner's default) or 2 times as long along their axis as across it,
`control.layout.DOMINANCE`), "many_rel_gap0", "many_rel_gap05" and
"many_rel_gap10" (boxes at least 0, 5% or 10% of the side apart: the pipeline's `layout_gap`, a model's "layout_gap"),
"many_rel_gap10_regions" (that with regional prompts from the phrases in the boxes, `region_layout="auto"`),
"cfg3", "cfg2", "cfg15" and "cfg1" (the model's defaults at CFG scale 3, 2, 1.5 or 1; the shipped model's scale was 4
and is 2 since the cfg2 test, docs/MODEL_CARD.md), "rescale05", "rescale07" and "rescale1" (guidance rescale 0.5, 0.7
or 1 at the model's scale), "gi07", "gi05" (CFG on the first 70% or 50% of the steps), "gi_late10", "gi_late",
"gi_late30" (CFG from 10%, 20% or 30% of the steps on), "steps40", "karras" and "sde" (40 steps; DPM++ 2M Karras; DPM++
2M SDE), "shared" (the default with `latent_pass="shared"`). `--bench-seed` draws another suite of the same kinds (a
fresh test of a rule found on the usual one). Prints per category the paired difference to "default" with its 95%
bootstrap interval (t2ikit.bench.compbench.paired_difference) and each variant's seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from t2ikit.bench import compbench as cb
from t2ikit.control import layout
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import PLAIN, T2IPipeline

VARIANTS = {"default": {}, "layout": {"layout": "auto", "relation_guidance": 0.0}, "layout+rg": {"layout": "auto"},
            "plain": PLAIN,
            "rg": {"layout": "none"},  # relation guidance alone: the shipped model's default before layout="many"
            # the boxes' pass (and relation guidance's, in layout+rg) also gives the step's prediction
            "layout_shared": {"layout": "auto", "relation_guidance": 0.0, "latent_pass": "shared"},
            "layout+rg_shared": {"layout": "auto", "latent_pass": "shared"},
            "many": {"layout": "many"},
            "many_fast": {"layout": "many", "fast": True},  # fast (CFG on the first 70% of the steps) on top
            # boxes also for the prompts stating a relation, relation guidance on wherever one is stated
            "many_rel": {"layout": "many+relations"},
            # the boxes' two knobs, for prompts naming several objects (docs/BOXES.md: a tuning look at counting)
            "many_bg20": {"layout": "many", "box_guidance": 20.0},
            "many_bg80": {"layout": "many", "box_guidance": 80.0},
            "many_mask30": {"layout": "many", "box_mask": 0.3},
            # the planner's dominant-axis factor (control.layout.DOMINANCE) at 1, 1.5 (its default) and 2
            "many_rel_dom1": {"layout": "many+relations"}, "many_rel_dom15": {"layout": "many+relations"},
            "many_rel_dom2": {"layout": "many+relations"},
            # the planner's gap between boxes (the model's layout_gap, control.layout.check_gap) at 0, 5% and 10% of
            # the side
            "many_rel_gap0": {"layout": "many+relations"}, "many_rel_gap05": {"layout": "many+relations"},
            "many_rel_gap10": {"layout": "many+relations"},
            # that with regional prompts from the prompt's phrases in the same boxes (region_layout="auto")
            "many_rel_gap10_regions": {"layout": "many+relations", "region_layout": "auto"},
            # CFG scales below the shipped model's 4 of the time (objects drawn on black backgrounds came out dark at
            # 4; 2 ships since), and 1: no CFG, one UNet row per step instead of two
            "cfg3": {"guidance": 3.0}, "cfg2": {"guidance": 2.0}, "cfg15": {"guidance": 1.5}, "cfg1": {"guidance": 1.0},
            # guidance rescale (Lin et al. 2024) at the model's scale
            "rescale05": {"guidance_rescale": 0.5}, "rescale07": {"guidance_rescale": 0.7},
            "rescale1": {"guidance_rescale": 1.0},
            # CFG on a part of the steps only (Kynkaenniemi et al. 2024; fast's guidance interval is (0, 0.7)), more
            # steps, other solvers: sampling settings looked at for the outlines that fade on dark backgrounds
            "gi07": {"guidance_interval": (0.0, 0.7)}, "gi05": {"guidance_interval": (0.0, 0.5)},
            "gi_late": {"guidance_interval": (0.2, 1.0)}, "gi_late10": {"guidance_interval": (0.1, 1.0)},
            "gi_late30": {"guidance_interval": (0.3, 1.0)}, "steps40": {"steps": 40},
            "karras": {"sampler": "dpmpp_2m_karras"}, "sde": {"sampler": "dpmpp_2m_sde"},
            # the default with one guidance pass per gradient step for boxes and relation guidance together, whose
            # prediction also serves the step (latent_pass="shared"; tested as fast's setting, docs/FAST.md)
            "shared": {"latent_pass": "shared"}}
# planner constants (control.layout) and pipeline attributes a variant sets while it runs
PLANNER = {"many_rel_dom1": {"DOMINANCE": 1.0}, "many_rel_dom15": {"DOMINANCE": 1.5},
           "many_rel_dom2": {"DOMINANCE": 2.0}}
PIPELINE = {"many_rel_gap0": {"layout_gap": 0.0}, "many_rel_gap05": {"layout_gap": 0.05},
            "many_rel_gap10": {"layout_gap": 0.10}, "many_rel_gap10_regions": {"layout_gap": 0.10}}


def timing(pipe, suite, variants: list[str], repeats: int) -> dict:
    """Median ms/image of each variant, the variants interleaved item by item (batch 1) so that the machine's
    load falls on all of them alike; the ratio of each to "plain"."""
    import statistics
    import time

    ms = {v: [] for v in variants}
    for _ in range(repeats):
        for item in suite.items:
            for v in variants:
                t0 = time.perf_counter()
                pipe.generate(item.prompt, seed=item.seed, progress=False, **VARIANTS[v])
                ms[v].append(1000 * (time.perf_counter() - t0))
    med = {v: statistics.median(x) for v, x in ms.items()}
    return {v: {"ms_per_image": med[v], "vs_plain": med[v] / med["plain"]} for v in variants}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for VARIANT.json results")
    ap.add_argument("--model", default=None, help="model folder (default the shipped one); a result file does not "
                    "record the model, so give each model its own OUT_DIR")
    ap.add_argument("--split", default="train", choices=cb.SPLITS)
    ap.add_argument("--n-prompts", type=int, default=25)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--categories", default="counting,complex,spatial,style")
    ap.add_argument("--variants", default="default,layout,layout+rg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench-seed", type=lambda v: int(v, 0), default=cb.BENCH_SEED,
                    help=f"world seed of the suite (default {cb.BENCH_SEED:#x}, the usual one; 0x... allowed)")
    ap.add_argument("--timing", type=int, default=0, metavar="N",
                    help="instead: time plain, default and layout on N prompts per category (1 seed), interleaved, "
                         "twice; print median ms/image and the ratio to plain")
    args = ap.parse_args(argv)
    model = args.model or shipped_model_path()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "default" not in variants:
        ap.error(f"variants must include default and come from {', '.join(VARIANTS)}; got {args.variants}")
    if args.timing:
        torch.set_num_threads(args.threads)
        pipe = T2IPipeline.from_folder(model)
        suite = cb.make_suite(args.split, args.timing, 1, args.categories.split(","))
        names = ["plain", *[v for v in args.variants.split(",") if v != "plain"]]
        for v, r in timing(pipe, suite, names, 2).items():
            print(f"{v}: {r['ms_per_image']:.0f} ms/image, x{r['vs_plain']:.2f} plain")
        return 0
    suite = cb.make_suite(args.split, args.n_prompts, args.seeds, args.categories.split(","), args.bench_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = T2IPipeline.from_folder(model)
    results = {}
    for name in variants:
        path, journal = out / f"{name}.json", out / f"{name}.journal.jsonl"
        if path.exists():
            results[name] = cb.read_result(path, suite)
            continue
        sets = [(layout, PLANNER.get(name, {})), (pipe, PIPELINE.get(name, {}))]
        saved = [(obj, {k: getattr(obj, k) for k in values}) for obj, values in sets]
        for obj, values in sets:
            for key, value in values.items():
                setattr(obj, key, value)
        try:
            result = cb.run(suite, cb.pipeline_generator(pipe, **VARIANTS[name]), generator_name=name, progress=True,
                            journal=journal)  # a stopped variant resumes after its last finished batch
        finally:
            for obj, values in saved:
                for key, value in values.items():
                    setattr(obj, key, value)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)  # a finished variant is never half-written
        journal.unlink()
        results[name] = result
    images = len(suite.items)
    for name, r in results.items():
        print(f"{name}: overall {100 * r['overall']['accuracy']:.1f}%, {r['seconds']['generate'] / images:.2f} s/image")
    for name in variants[1:]:
        print(f"\n{name} - default ({args.split}, {args.n_prompts} prompts x {args.seeds} seeds per category)")
        print("| category | n | default | variant | difference [95% paired bootstrap] | McNemar p |")
        print("| --- | --- | --- | --- | --- | --- |")
        for cat, d in cb.paired_difference(results["default"], results[name]).items():
            lo, hi = d["ci95"]
            print(f"| {cat} | {d['n']} | {100 * d['a']:.1f}% | {100 * d['b']:.1f}% | {100 * d['diff']:+.1f} "
                  f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {d['mcnemar_p']:.3g} |")
        cost = results[name]["seconds"]["generate"] / results["default"]["seconds"]["generate"]
        print(f"cost vs default: x{cost:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
