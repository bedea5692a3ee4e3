"""Generate images with the shipped model and save them with their settings (what `t2ikit info` reads).

    python examples/generate.py                  # 20 steps, writes outputs/examples/generate-0.png, -1.png
    python examples/generate.py --steps 2 --out /tmp/ex
"""

import argparse
from pathlib import Path

from PIL.PngImagePlugin import PngInfo

from t2ikit import T2IPipeline, shipped_model_path
from t2ikit.cli.info import PNG_KEY, format_parameters

PROMPT = "a red circle above a blue square"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="denoising steps")
    parser.add_argument("--seed", type=int, default=3, help="seed of the first image; image k uses seed + k")
    parser.add_argument("--out", default="outputs/examples", help="output folder")
    args = parser.parse_args(argv)

    pipe = T2IPipeline.from_folder(shipped_model_path())  # 64x64 Shapes World model, runs on a CPU
    # make_spec checks every setting before any compute; run() samples; the spec's settings() is what
    # the `t2ikit generate` command writes into each PNG (AUTOMATIC1111's "parameters" text).
    spec = pipe.make_spec(PROMPT, steps=args.steps, seed=args.seed, n=2)
    result = pipe.run(spec, progress=False)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(result.pil()):
        info = PngInfo()
        info.add_text(PNG_KEY, format_parameters(PROMPT, None, {**spec.settings(), "Seed": args.seed + k}))
        path = out / f"generate-{k}.png"
        image.save(path, pnginfo=info)
        print(f"wrote {path} ({image.width}x{image.height}, seed {args.seed + k})")


if __name__ == "__main__":
    main()
