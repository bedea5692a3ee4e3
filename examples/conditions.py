"""Conditions: generate from a caption and a sketch drawn by hand (here with PIL), through the shipped adapter.

    python examples/conditions.py --steps 2 --out /tmp/ex

A sketch is a white-on-black outline image at the model's size. `scales` sets how strongly each condition
(and the text, "text") acts; depth, mask and reference images are passed the same way (depth=, mask=,
reference=), each through its shipped adapter unless `adapters` names another.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from t2ikit import T2IPipeline, shipped_model_path


def draw_sketch(width: int, height: int) -> Image.Image:
    """A circle outline on the left and a square outline on the right, one pixel wide."""
    sketch = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(sketch)
    s = width // 4
    draw.ellipse([s // 2, height // 2 - s // 2, s // 2 + s, height // 2 + s // 2], outline=255)
    draw.rectangle([width - s // 2 - s, height // 2 - s // 2, width - s // 2, height // 2 + s // 2], outline=255)
    return sketch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="scale of the sketch adapter")
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())
    height, width = pipe.default_size
    sketch = draw_sketch(width, height)
    image = pipe.generate("a red circle and a blue square", steps=args.steps, seed=args.seed, sketch=sketch,
                          scales={"sketch": args.scale}, progress=False)[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sketch.save(out / "conditions-sketch.png")
    image.save(out / "conditions.png")
    ink = np.asarray(image.convert("L"), dtype=np.float64) < 200  # non-white pixels: drawn objects
    print(f"non-background pixels: {ink.mean():.1%} of the image")
    print(f"wrote {out / 'conditions-sketch.png'} and {out / 'conditions.png'}")


if __name__ == "__main__":
    main()
