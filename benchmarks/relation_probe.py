"""Does the model's layout follow the relation word? Each CompBench spatial prompt is generated twice with the
same seed: as CompBench writes it ("A left of B") and with the relation inverted ("A right of B", in the
canonical wording, so a pair may also differ in wording: "under" vs "above"). A model that reads the
relation swaps the objects' order along the relation's axis between the two images; one that ignores it draws
(nearly) the same image twice.

    python benchmarks/relation_probe.py [--model DIR] [--n-prompts 50] [--seeds 1] [--threads 1] [--json]

prints, over pairs where the oracle finds both objects in both images: how often the order along the axis
flips (with a Wilson interval), the relation check's pass rate for each prompt, and the mean absolute pixel
difference within a pair against that between two seeds of one prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

import numpy as np

from t2ikit.world.scene import RELATION_AXES


def _order(reading, spec, relation) -> float | None:
    """Offset subject - object along the relation's axis, or None if either group is not found once."""
    axis = RELATION_AXES[relation][0]
    found = []
    for g in (spec.groups[spec.relations[0].subject], spec.groups[spec.relations[0].object]):
        hits = [d for d in reading.detections if d.colour == g.colour and d.shape == g.shape]
        if len(hits) != 1:
            return None
        found.append(hits[0].centre[axis])
    return found[0] - found[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--n-prompts", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.n_prompts < 1 or args.seeds < 1 or args.threads < 1:
        raise SystemExit("--n-prompts, --seeds and --threads must be >= 1")
    import torch

    from t2ikit.bench import compbench as cb
    from t2ikit.bench.stats import wilson_interval
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.world import vocab
    from t2ikit.world.caption import write_caption
    from t2ikit.world.oracle import detect, score_reading
    from t2ikit.world.scene import Relation, Spec

    from t2ikit.pipeline import T2IPipeline

    torch.set_num_threads(args.threads)
    suite = cb.make_suite("train", args.n_prompts, args.seeds, ("spatial",))
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    gen = cb.pipeline_generator(pipe, steps=20)  # what `t2ikit bench compbench --generator model` runs
    items = suite.items
    flipped = []
    for it in items:
        r = it.spec.relations[0]
        flipped.append(Spec(it.spec.groups, (Relation(r.subject, vocab.INVERSE_RELATION[r.relation], r.object),),
                            it.spec.style))
    seeds = [int(it.seed) for it in items]

    def images(prompts, seeds_):  # -> float (H, W, 3) in [0, 1]
        return [np.asarray(x, dtype=np.float64) / 255.0 for x in gen(prompts, seeds_)]

    a = images([it.prompt for it in items], seeds)
    b = images([write_caption(s) for s in flipped], seeds)
    other = images([it.prompt for it in items], [s + 7919 for s in seeds])

    def state_change(x: str, y: str) -> float:
        ids = [pipe.tokenizer([t]).input_ids[0] for t in (x, y)]
        if len(ids[0]) != len(ids[1]):
            return float("nan")  # wordings of unequal length ("to the left of" vs "above") are not compared
        first = next(i for i, (u, v) in enumerate(zip(*ids)) if u != v)
        with torch.no_grad():
            hx, hy = (pipe.encode_text([t])[0, first:len(ids[0])] for t in (x, y))
        return float(((hx - hy).norm(dim=-1) / hx.norm(dim=-1)).mean())

    def recoloured(spec):
        o = spec.relations[0].object
        used = {g.colour for g in spec.groups}
        colour = next(c for c in vocab.COLOURS if c not in used)
        groups = tuple(replace(g, colour=colour) if i == o else g for i, g in enumerate(spec.groups))
        return Spec(groups, spec.relations, spec.style)

    rel_change = [state_change(write_caption(it.spec), write_caption(fs)) for it, fs in zip(items, flipped)]
    col_change = [state_change(write_caption(it.spec), write_caption(recoloured(it.spec))) for it in items]
    flips, pass_a, pass_b = [], [], []
    for it, fs, ia, ib in zip(items, flipped, a, b):
        ra, rb = detect(ia), detect(ib)  # one reading per image, for the relation check and the order
        pass_a.append(all(c.passed for c in score_reading(ra, it.spec) if c.kind == "relation"))
        pass_b.append(all(c.passed for c in score_reading(rb, fs) if c.kind == "relation"))
        oa = _order(ra, it.spec, it.spec.relations[0].relation)
        ob = _order(rb, it.spec, it.spec.relations[0].relation)
        if oa is not None and ob is not None:
            flips.append(bool(np.sign(oa) != np.sign(ob)))
    k, n = int(sum(flips)), len(flips)
    result = {
        "pairs": len(items), "pairs_with_both_objects": n, "order_flipped": k / n if n else None,
        "order_flipped_ci95": list(wilson_interval(k, n)) if n else None,
        "relation_pass_as_written": float(np.mean(pass_a)), "relation_pass_inverted": float(np.mean(pass_b)),
        "mean_abs_diff_within_pair": float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b)])),
        "mean_abs_diff_other_seed": float(np.mean([np.abs(x - y).mean() for x, y in zip(a, other)])),
        "text_state_change_relation_inverted": float(np.nanmean(rel_change)),
        "text_state_change_object_recoloured": float(np.nanmean(col_change)),
        "model": str(args.model or shipped_model_path()),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        lo, hi = result["order_flipped_ci95"] or (0, 0)
        print(f"{result['model']}: {len(items)} spatial prompts, each also with its relation inverted (same seed)")
        print(f"order along the axis flips in {k}/{n} pairs with both objects found: {100 * k / max(n, 1):.0f}% "
              f"[{100 * lo:.0f}, {100 * hi:.0f}]")
        print(f"relation check: {100 * result['relation_pass_as_written']:.0f}% as written, "
              f"{100 * result['relation_pass_inverted']:.0f}% inverted")
        print(f"mean |pixel difference|: {result['mean_abs_diff_within_pair']:.4f} within a pair, "
              f"{result['mean_abs_diff_other_seed']:.4f} between two seeds of one prompt")
        print(f"text encoder, relative state change from the first differing token: relation inverted "
              f"{result['text_state_change_relation_inverted']:.3f}, object recoloured (control) "
              f"{result['text_state_change_object_recoloured']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
