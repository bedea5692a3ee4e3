"""Prompt weighting: the same seed with and without a weight on one word, in both syntaxes t2ikit reads.

    python examples/weighting.py --steps 2 --out /tmp/ex

A1111 syntax `(word:1.5)` and compel syntax `word++` (each + multiplies the weight by 1.1) scale how
strongly the text encoder's states for that word act; the unweighted image is the baseline.
"""

import argparse
from pathlib import Path

import numpy as np

from t2ikit import T2IPipeline, shipped_model_path

PROMPTS = {
    "plain": ("a red circle and a blue square", "a1111"),
    "a1111": ("a (red:1.5) circle and a blue square", "a1111"),
    "compel": ("a red++++ circle and a blue square", "compel"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = {}
    for name, (prompt, syntax) in PROMPTS.items():
        image = pipe.generate(prompt, steps=args.steps, seed=args.seed, weighting=syntax, progress=False)[0]
        image.save(out / f"weighting-{name}.png")
        pixels[name] = np.asarray(image, dtype=np.float64) / 255
    for name in ("a1111", "compel"):
        change = np.abs(pixels[name] - pixels["plain"]).mean()
        print(f"{name}: {PROMPTS[name][0]!r}: mean |pixel change| vs unweighted {change:.4f}")
    print(f"wrote {out}/weighting-{{plain,a1111,compel}}.png")


if __name__ == "__main__":
    main()
