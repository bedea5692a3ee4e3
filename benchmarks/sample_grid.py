"""A captioned grid of a model's images for CompBench prompts (one per category and split), for people.

    python benchmarks/sample_grid.py [--model DIR] [--out docs/img/shapes-v1-samples.png] [--seed 0]

Each tile is scored by the oracle: the caption ends with PASS or the names of the failed checks.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from t2ikit.bench.compbench import make_suite
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline
from t2ikit.world.grid import captioned_grid
from t2ikit.world.oracle import score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_model_path()))
    parser.add_argument("--out", default="docs/img/shapes-v1-samples.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = T2IPipeline.from_folder(args.model)
    items = []
    for split in ("train", "heldout"):
        suite = make_suite(split, n_prompts=args.per_category, seeds=1)
        items += [(split, it) for it in suite.items]
    prompts = [it.prompt for _, it in items]
    images = pipe.generate(prompts, seed=args.seed, progress=False)
    tiles, captions = [], []
    for (split, item), image in zip(items, images):
        s = score(image, item.spec)
        verdict = "PASS" if s.all_passed else "fail: " + ", ".join(c.name for c in s.failures())
        tiles.append(np.asarray(image))
        captions.append(f"[{split}/{item.category}] {item.prompt} -> {verdict}")
    captioned_grid(tiles, captions, columns=4, text_lines=6).save(args.out)
    passed = sum(c.endswith("PASS") for c in captions)
    print(f"wrote {args.out}: {len(tiles)} images, {passed} pass every oracle check")


if __name__ == "__main__":
    main()
