"""Train: the smallest complete run (configs/tiny.toml: VAE then UNet, a few steps each) and its loss curves.

    python examples/train.py --out /tmp/ex/run

A run folder holds config.json, log.jsonl (one JSON line per logged step), checkpoints/ and, at the end,
model/: a diffusers folder `T2IPipeline.from_folder` loads. `t2ikit train --config FILE.toml` does the same
from the command line, with a progress bar.
"""

import argparse
from pathlib import Path

from t2ikit import T2IPipeline
from t2ikit.train.config import load_config
from t2ikit.train.plots import plot_run
from t2ikit.train.trainer import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG), help="run config (TOML)")
    parser.add_argument("--out", default="outputs/examples/train", help="run folder")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    model = Trainer(config, out=args.out, device="cpu").run()  # the exported model folder
    print(f"trained; model at {model}")
    for path in plot_run(args.out):
        print(f"wrote {path}")
    image = T2IPipeline.from_folder(model).generate("a red circle", steps=2, progress=False)[0]
    print(f"the trained model generates {image.width}x{image.height} images")


if __name__ == "__main__":
    main()
