"""Paired CompBench comparisons: two generators on the same suite items (same prompts, same seeds)."""

from __future__ import annotations

import numpy as np

from t2ikit.bench.compbench import make_suite
from t2ikit.bench.stats import bootstrap_interval, wilson_interval
from t2ikit.world.oracle import score


def paired_compbench(plain, treated, n_prompts: int = 20, seeds: int = 2,
                     categories=("colour_binding", "spatial", "complex"), split: str = "train",
                     batch_size: int = 32) -> dict:
    """Score `plain` and `treated` ((prompts, seeds) -> images) on one CompBench subset.

    Per category and overall: all-checks accuracy with Wilson 95% intervals, mean share of checks passed,
    and the paired difference (treated - plain) of both with a 95% bootstrap interval over items.
    """
    suite = make_suite(split, n_prompts, seeds, tuple(categories))
    prompts = [it.prompt for it in suite.items]
    item_seeds = [int(it.seed) for it in suite.items]
    rows = {}
    for name, gen in (("plain", plain), ("weighted", treated)):
        out = []
        for start in range(0, len(prompts), batch_size):
            images = gen(prompts[start:start + batch_size], item_seeds[start:start + batch_size])
            for it, im in zip(suite.items[start:start + batch_size], images):
                sc = score(im, it.spec)
                out.append((it.category, float(sc.all_passed), sc.n_passed / len(sc.checks)))
        rows[name] = out
    rng = np.random.default_rng(0)
    result = {"config": {"n_prompts": n_prompts, "seeds": seeds, "categories": list(categories), "split": split}}
    for cat in [*categories, "all"]:
        idx = [k for k, r in enumerate(rows["plain"]) if cat == "all" or r[0] == cat]
        block = {}
        for name in ("plain", "weighted"):
            passed = int(sum(rows[name][k][1] for k in idx))
            block[name] = {"accuracy": passed / len(idx), "ci95": [round(x, 4) for x in wilson_interval(passed, len(idx))],
                           "checks_passed": float(np.mean([rows[name][k][2] for k in idx]))}
        for j, key in ((1, "accuracy"), (2, "checks_passed")):
            d = np.array([rows["weighted"][k][j] - rows["plain"][k][j] for k in idx])
            block[f"diff_{key}"] = {"mean": float(d.mean()), "ci95": bootstrap_interval(d, rng, 2000)}
        block["n"] = len(idx)
        result[cat] = block
    return result


def markdown_table(result: dict, title: str) -> str:
    c = result["config"]
    lines = [title, "",
             "| category | n | plain acc [95%] | weighted acc [95%] | diff acc [95% boot] | plain checks | weighted checks | diff checks [95% boot] |",
             "|---|---|---|---|---|---|---|---|"]
    for cat in [*c["categories"], "all"]:
        b = result[cat]
        pl, we, da, dc = b["plain"], b["weighted"], b["diff_accuracy"], b["diff_checks_passed"]
        lines.append(f"| {cat} | {b['n']} | {pl['accuracy']:.3f} [{pl['ci95'][0]:.3f}, {pl['ci95'][1]:.3f}] | "
                     f"{we['accuracy']:.3f} [{we['ci95'][0]:.3f}, {we['ci95'][1]:.3f}] | "
                     f"{da['mean']:+.3f} [{da['ci95'][0]:+.3f}, {da['ci95'][1]:+.3f}] | {pl['checks_passed']:.3f} | "
                     f"{we['checks_passed']:.3f} | {dc['mean']:+.3f} [{dc['ci95'][0]:+.3f}, {dc['ci95'][1]:+.3f}] |")
    return "\n".join(lines)
