"""Average two model folders' weights (a "model soup"): (1 - alpha) * A + alpha * B for the UNet and the text
encoder, everything else (VAE, tokenizer, scheduler, t2ikit.json) copied from A.

    python benchmarks/merge_models.py A_DIR B_DIR --alpha 0.5 --out DIR

Both folders must be fine-tunes of one another on the same latent space: same architecture and keys, and a
byte-identical VAE (averaging two VAEs would mix two latent spaces; the UNet reads only one). Used for the
shapes-v5 / shapes-v6 average of docs/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PARTS = {"unet": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors"}


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def merge(a: Path, b: Path, alpha: float, out: Path) -> Path:
    """Write the average into `out` (refused if it exists); ValueError before any writing for bad input."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {alpha}")
    for folder in (a, b):
        missing = [f"{part}/{name}" for part, name in PARTS.items() if not (folder / part / name).is_file()]
        if not (folder / "model_index.json").is_file() or missing:
            raise ValueError(f"{folder} is not a model folder with {', '.join(f'{p}/{n}' for p, n in PARTS.items())}")
    if out.exists():
        raise ValueError(f"--out {out} exists; give a new folder")
    for part in ("vae", "tokenizer"):
        if _digest(a / part) != _digest(b / part):
            raise ValueError(f"{a} and {b} have different {part} folders: their weights do not share one latent "
                             "space and vocabulary, so they cannot be averaged")
    merged = {}
    for part, name in PARTS.items():
        if json.loads((a / part / "config.json").read_text()) != json.loads((b / part / "config.json").read_text()):
            raise ValueError(f"{part}/config.json differs between {a} and {b}: not the same architecture")
        ta, tb = load_file(a / part / name), load_file(b / part / name)
        if ta.keys() != tb.keys() or any(ta[k].shape != tb[k].shape for k in ta):
            raise ValueError(f"{part} weights of {a} and {b} do not have the same names and shapes")
        merged[part] = {k: torch.lerp(ta[k].float(), tb[k].float(), alpha).to(ta[k].dtype).contiguous() for k in ta}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(a, tmp)
    for part, name in PARTS.items():
        save_file(merged[part], tmp / part / name)
    tmp.rename(out)  # the folder appears whole or not at all
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of B (0 = A, 1 = B)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(merge(args.a, args.b, args.alpha, args.out))


if __name__ == "__main__":
    main()
