"""Measure VAE candidates for 64x64 Shapes World images: training throughput and reconstruction error.

    python benchmarks/vae_candidates.py [--steps 150] [--batch 16] [--device cpu|cuda] [--json out.json]

Prints one row per candidate: images/s of one training step on this CPU, and after `--steps` steps of
AdamW on make_batch data: the fraction of small objects the oracle still reads (colour, position) in the
reconstruction, MSE over all pixels, MSE over foreground pixels (not the background colour),
and the fraction of foreground pixels whose colour is within 0.1 (every channel) of the truth.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from t2ikit.models.sizes import VAESize, build_vae, count_params
from t2ikit.train.losses import vae_loss

CANDIDATES = {
    "f8-c4 (32,64,64,64)": VAESize((32, 64, 64, 64), 1, 4, 16),
    "f4-c4 (32,64,64)": VAESize((32, 64, 64), 1, 4, 16),
    "f4-c4 (16,32,64)": VAESize((16, 32, 64), 1, 4, 16),
    "f2-c4 (32,64)": VAESize((32, 64), 1, 4, 16),
}


def _standin_batch(seed: int, index: int, size: int, res: int) -> dict:
    """Filled/outlined squares and circles, 10-22 px, vocabulary colours: used until world.dataset lands."""
    from t2ikit.world.vocab import BACKGROUNDS, COLOURS

    rng = np.random.default_rng([seed, index])
    cols, bgs = list(COLOURS.values()), list(BACKGROUNDS.values())
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    out = np.empty((size, res, res, 3), np.float32)
    for i in range(size):
        out[i] = bgs[rng.integers(len(bgs))]
        for _ in range(rng.integers(1, 5)):
            s = rng.uniform(10, 22)
            cx, cy = rng.uniform(s / 2, res - s / 2, 2)
            if rng.random() < 0.5:
                d = np.hypot(xx - cx, yy - cy) / (s / 2)
            else:
                d = np.maximum(abs(xx - cx), abs(yy - cy)) / (s / 2)
            m = d <= 1 if rng.random() < 0.7 else (d <= 1) & (d > 1 - 3 / (s / 2))
            out[i][m] = cols[rng.integers(len(cols))]
    return {"rgb": out, "captions": [""] * size}


def batch(seed: int, index: int, size: int) -> torch.Tensor:
    try:
        from t2ikit.world.dataset import make_batch
    except ModuleNotFoundError:
        make_batch = _standin_batch

    rgb = make_batch(seed, index, size, 64)["rgb"]  # (B, H, W, 3) in [0, 1]
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2) * 2 - 1  # (B, 3, H, W) in [-1, 1]


def small_objects_kept(x: torch.Tensor, r: torch.Tensor) -> dict:
    """Of the small objects the oracle reads in the originals, the fraction it reads again, same colour and
    within 3 px, in the reconstructions."""
    from t2ikit.world.oracle import detect

    found = kept = 0
    for a, b in zip(x.permute(0, 2, 3, 1).cpu().numpy(), r.permute(0, 2, 3, 1).cpu().numpy()):
        again = detect(b).detections
        for d in detect(a).detections:
            if d.size != "small":
                continue
            found += 1
            kept += any(
                e.colour == d.colour and abs(e.centre[0] - d.centre[0]) <= 3 and abs(e.centre[1] - d.centre[1]) <= 3
                for e in again
            )
    return {"small_objects": found, "small_objects_kept": kept / max(found, 1)}


def evaluate(vae, images: torch.Tensor) -> dict:
    with torch.no_grad():
        rec = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    x, r = (images + 1) / 2, (rec + 1) / 2
    bg = x[:, :, :1, :1]  # the corner pixel is background in every scene
    fg = ((x - bg).abs().amax(1) > 0.05)  # (B, H, W)
    err = (x - r).abs().amax(1)  # (B, H, W)
    return {
        **small_objects_kept(x, r),
        "mse": float(((x - r) ** 2).mean()),
        "fg_mse": float((((x - r) ** 2).mean(1))[fg].mean()),
        "fg_within_0.1": float((err[fg] <= 0.1).float().mean()),
        "fg_within_0.2": float((err[fg] <= 0.2).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--edge-weight", type=float, default=1.0)
    parser.add_argument("--only", default=None, help="substring of the candidate names to run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trained", default=None, help="also evaluate a trained AutoencoderKL folder (e.g. a model's vae/)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    held = batch(seed=999, index=0, size=64).to(dev)
    rows = []
    if args.trained:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.trained, torch_dtype=torch.float32).to(dev).eval()
        rows.append({"candidate": f"trained {args.trained}", "params": count_params(vae), **evaluate(vae, held)})
        print(json.dumps(rows[-1]), flush=True)
    for name, cfg in CANDIDATES.items():
        if args.only and args.only not in name:
            continue
        vae = build_vae(cfg).to(dev)
        opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(0)
        t_train = 0.0
        for step in range(args.steps):
            x = batch(seed=0, index=step, size=args.batch).to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
            t0 = time.perf_counter()
            loss = vae_loss(vae, x, kl_weight=1e-6, edge_weight=args.edge_weight, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_train += time.perf_counter() - t0
        row = {"candidate": name, "device": args.device, "steps": args.steps, "batch": args.batch, "params": count_params(vae), "latent": f"{64 // cfg.factor}x{64 // cfg.factor}x{cfg.latent_channels}",
               "train_imgs_per_s": args.steps * args.batch / t_train, **evaluate(vae.eval(), held)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
