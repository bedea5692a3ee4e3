"""Explain: per-word cross-attention maps (DAAM-style) of a generation, overlaid on the image.

    python examples/explain.py --steps 2 --out /tmp/ex

`explain` generates the prompt with its attention captured and returns the image and one (H, W) map per
word; `overlay` draws the image and each word's map over it in one sheet.
"""

import argparse
from pathlib import Path

from t2ikit import T2IPipeline, shipped_model_path
from t2ikit.analysis.attribution import explain, overlay


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())
    attr = explain(pipe, "a red circle left of a blue square", seed=args.seed, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overlay(attr).save(out / "explain.png")
    for word, m in attr.maps.items():
        y, x = divmod(int(m.argmax()), m.shape[1])
        print(f"{word:8s} attention peaks at x={x:2d}, y={y:2d}")
    print(f"wrote {out / 'explain.png'}")


if __name__ == "__main__":
    main()
