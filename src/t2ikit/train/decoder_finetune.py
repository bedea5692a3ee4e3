"""Fine-tune a model folder's VAE decoder on a style-balanced Shapes World stream, encoder frozen (or not).

    python -m t2ikit.train.decoder_finetune --model DIR --out VAE_DIR [--steps 1500] [--batch 32]
        [--encoder [--anchor W]]

The encoder (and so the latent space the UNet was trained on) stays fixed, so the new decoder drops into
the same model folder; Stable Diffusion's "ft-MSE" VAE decoders were made the same way. The stream mixes
the training stream with the style category half and half, because gray and black backgrounds and
outlined objects are rare in the training mix and are where the shipped decoder loses objects
(benchmarks/vae_recon.py). Loss: L1 + edge-weighted L1 (train.losses.edge_map) on the decoded posterior
mode. Deterministic: batch k is make_batch(seed, k, ...) of each half. `--encoder` trains the encoder too
(the UNet then has to follow the new latents), `--anchor W` holds its latent means near the old ones.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from t2ikit.train.losses import edge_map
from t2ikit.world.dataset import make_batch


def style_balanced_batch(seed: int, index: int, batch_size: int, resolution: int = 64) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1]: half the training mix, half statements of the style category."""
    half = batch_size // 2
    mix = make_batch(seed, index, batch_size - half, resolution)["rgb"]
    style = make_batch(seed + 1, index, half, resolution, category="style")["rgb"]
    rgb = torch.from_numpy(np.concatenate([mix, style]))  # (B, H, W, 3)
    return rgb.permute(0, 3, 1, 2) * 2 - 1


def finetune_decoder(vae, steps: int, batch_size: int = 32, lr: float = 1e-4, edge_weight: float = 1.0,
                     seed: int = 0, log_every: int = 50, echo=print, encoder: bool = False,
                     anchor: float = 0.0) -> list[dict]:
    """Train `vae`'s decoder (and post_quant_conv) in place; returns the log records.

    `encoder=True` trains the encoder too, with `anchor` * the mean squared distance of the new latent
    mean from the original encoder's (in the UNet's units: times the scaling factor) added to the loss,
    so the latent space the UNet knows moves only as far as the reconstruction pays for."""
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    if anchor < 0 or (anchor and not encoder):
        raise ValueError(f"anchor must be >= 0 and needs encoder=True; got {anchor} (encoder={encoder})")

    frozen = copy.deepcopy(vae).requires_grad_(False) if anchor else None  # the latents to hold near
    scale = float(vae.config.scaling_factor)
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    if encoder:
        params += list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    log, window, start = [], [], time.perf_counter()
    for step in range(steps):
        images = style_balanced_batch(seed, step, batch_size)
        with torch.set_grad_enabled(encoder):
            z = vae.encode(images).latent_dist.mode()
        recon = vae.decode(z).sample
        err = (recon - images).abs()
        loss = err.mean() + edge_weight * (err * edge_map(images)).mean()
        if anchor:
            with torch.no_grad():
                z0 = frozen.encode(images).latent_dist.mode()
            loss = loss + anchor * ((z - z0) * scale).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            record = {"step": step + 1, "loss": sum(window) / len(window),
                      "images_per_s": (step + 1) * batch_size / (time.perf_counter() - start)}
            log.append(record)
            window = []
            echo(json.dumps(record))
    vae.requires_grad_(False)
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder with a vae/ subfolder")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned VAE (fp16 safetensors)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--encoder", action="store_true", help="train the encoder too (the UNet must then adapt)")
    parser.add_argument("--anchor", type=float, default=0.0,
                        help="with --encoder: weight of the squared distance of the new latents from the old ones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32)
    log = finetune_decoder(vae, args.steps, args.batch, args.lr, seed=args.seed, encoder=args.encoder,
                           anchor=args.anchor)
    out = Path(args.out)
    vae.to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / "decoder_finetune.json").write_text(json.dumps({"args": vars(args), "log": log}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
