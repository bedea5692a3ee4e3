"""Prompt optimisation by discrete search over paraphrases (part 5, minimal).

For a Shapes World statement, the caption grammar can say the same spec many ways (synonyms: big/large,
over/above, solid/filled; relation and style phrasings; group order). `optimize_caption` generates each
candidate wording on `search_seeds`, scores it with the oracle against the statement's spec (share of
checks passed) and keeps the best; `compare_optimized` then measures plain vs chosen wording on
*different* seeds, so the selection is not scored on the images that chose it.

    python -m t2ikit.analysis.optimize --n-prompts 10 --candidates 4

Gradient-based prompt optimisation (soft prompts by textual inversion, hard prompts by PEZ projection) is in
`t2ikit.analysis.soft_prompt`; a sampling-time binding fix (Attend-and-Excite) in `t2ikit.analysis.excite`.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from t2ikit.analysis.paired import markdown_table, paired_compbench
from t2ikit.bench.compbench import make_suite
from t2ikit.models.registry import shipped_model_path
from t2ikit.world.caption import parse_caption, write_caption
from t2ikit.world.oracle import score


def paraphrases(caption: str, k: int, seed: int = 0) -> list[str]:
    """`caption` and up to k - 1 other distinct wordings of its spec (ValueError if not a caption)."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"candidates must be an int >= 1, got {k!r}")
    spec = parse_caption(caption)
    out = [caption]
    rng = np.random.default_rng(seed)
    for _ in range(20 * k):
        if len(out) >= k:
            break
        text = write_caption(spec, rng)
        if text not in out:
            out.append(text)
    return out


def optimize_captions(pipe, captions: list[str], candidates: int = 4, search_seeds=(100, 101), steps: int = 20) -> list[dict]:
    """For each caption: its paraphrases, their mean share of checks passed on `search_seeds`, the best."""
    from t2ikit.analysis.runner import sample_prompts

    cands = [paraphrases(c, candidates) for c in captions]  # all checked before any compute
    specs = [parse_caption(c) for c in captions]
    spec = pipe.make_spec("x", None, steps, None, 0, 1, None, None)
    flat = [(i, t, s) for i, ts in enumerate(cands) for t in ts for s in search_seeds]
    images = []
    for start in range(0, len(flat), 32):
        chunk = flat[start:start + 32]
        images += list(sample_prompts(pipe, [t for _, t, _ in chunk], [s for _, _, s in chunk], spec.steps,
                                      spec.guidance, spec.sampler))
    scores: dict[tuple[int, str], list[float]] = {}
    for (i, t, _), im in zip(flat, images):
        sc = score(im, specs[i])
        scores.setdefault((i, t), []).append(sc.n_passed / len(sc.checks))
    out = []
    for i, ts in enumerate(cands):
        means = {t: float(np.mean(scores[i, t])) for t in ts}
        best = max(ts, key=lambda t: (means[t], t == captions[i]))  # ties keep the original
        out.append({"caption": captions[i], "candidates": means, "best": best})
    return out


def main(argv=None) -> int:
    import torch

    from t2ikit.analysis.decomposition import plain_generator
    from t2ikit.pipeline import T2IPipeline

    p = argparse.ArgumentParser(prog="python -m t2ikit.analysis.optimize", description=__doc__)
    p.add_argument("--model", default=None)
    p.add_argument("--n-prompts", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2, help="evaluation seeds per prompt (CompBench's)")
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--search-seeds", default="100,101", help="seeds used to choose, disjoint from CompBench's")
    p.add_argument("--categories", default="colour_binding,spatial")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    search = [int(s) for s in args.search_seeds.split(",")]
    categories = tuple(args.categories.split(","))
    suite = make_suite("train", args.n_prompts, args.seeds, categories)
    if set(search) & {int(it.seed) for it in suite.items}:
        raise ValueError("--search-seeds must be disjoint from the evaluation seeds")
    torch.set_num_threads(1)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    captions = list(dict.fromkeys(it.prompt for it in suite.items))
    chosen = {r["caption"]: r["best"] for r in optimize_captions(pipe, captions, args.candidates, search, args.steps)}
    plain = plain_generator(pipe, args.steps)

    def optimized(prompts, seeds):
        return plain([chosen[q] for q in prompts], seeds)

    result = paired_compbench(plain, optimized, args.n_prompts, args.seeds, categories)
    changed = sum(chosen[c] != c for c in captions)
    result["config"].update({"candidates": args.candidates, "search_seeds": search, "steps": args.steps,
                             "changed_wordings": changed, "prompts": len(captions)})
    print(json.dumps(result, indent=2) if args.json else markdown_table(
        result, f"paraphrase search ({args.candidates} candidates, search seeds {search}; {changed} of {len(captions)} "
                f"wordings changed) vs the suite's wording, {args.n_prompts} prompts x {args.seeds} seeds per category"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
