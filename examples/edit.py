"""Edit: generate an image, then change one word of its prompt with Prompt-to-Prompt on the DDIM inversion.

    python examples/edit.py --steps 2 --out /tmp/ex

`edit(pipe, image, source, target, method=...)` inverts `image` under the source prompt and denoises it
under the target; "p2p" keeps the source's attention maps (the layout), "blend" changes only a masked
region (mask="auto": DiffEdit's mask). Any image works, not only generated ones.
"""

import argparse
from pathlib import Path

import numpy as np

from t2ikit import T2IPipeline, shipped_model_path
from t2ikit.edit import edit

SOURCE, TARGET = "a red circle", "a blue circle"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="steps of generation, inversion and edit")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--method", default="p2p", choices=["p2p", "swap", "blend"])
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())
    source = pipe.generate(SOURCE, steps=args.steps, seed=args.seed, relation_guidance=0, progress=False)[0]
    result = edit(pipe, source, SOURCE, TARGET, method=args.method, steps=args.steps)
    edited = result.pil()[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source.save(out / "edit-source.png")
    edited.save(out / "edit.png")
    for name, image in (("source", source), ("edited", edited)):
        rgb = np.asarray(image, dtype=np.float64) / 255
        print(f"{name:7s} mean red - blue {(rgb[..., 0] - rgb[..., 2]).mean():+.3f}")
    print(f"wrote {out / 'edit-source.png'} and {out / 'edit.png'}")


if __name__ == "__main__":
    main()
