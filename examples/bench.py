"""Bench: CompBench on the shipped model, a small suite, with the accuracy bars as PNG and SVG.

    python examples/bench.py --steps 2 --out /tmp/ex          # one prompt per category
    t2ikit bench compbench --out DIR                          # the full suite (400 images) from the CLI

The oracle reads each image (objects, colours, sizes, positions) and checks it against the prompt; an image
passes when every check passes. Intervals are 95% Wilson intervals.
"""

import argparse
from pathlib import Path

from t2ikit import T2IPipeline, shipped_model_path
from t2ikit.bench import compbench
from t2ikit.bench.plots import plot_compbench
from t2ikit.world.categories import CATEGORIES


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--n-prompts", type=int, default=1, help="prompts per category")
    parser.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated categories")
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())
    result = compbench.evaluate(pipe, n_prompts=args.n_prompts, seeds=1, steps=args.steps,
                                categories=args.categories.split(","), progress=True)
    print(compbench.markdown(result))
    paths = plot_compbench(result, Path(args.out) / "compbench.png", title=f"CompBench, {args.steps} steps")
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
