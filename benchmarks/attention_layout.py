"""Where do the object words attend, at each noise level? One UNet call per timestep on a batch of Shapes World
spatial scenes (noised training images), with every cross-attention map captured.

    python benchmarks/attention_layout.py [--model DIR] [--n 32] [--timesteps 50,300,600,900,990] [--threads 1]

prints per timestep: the grounding loss (1 - the share of an object word's attention inside its object; uniform
attention scores 1 minus the objects' share of the image), the relation loss at margin 0.1 (t2ikit.train.grounding), and per layer resolution the
share of scenes whose two objects' attention centroids are in the stated order along the relation's axis (50% is
chance) with the mean signed offset in units of the image side. At low noise the image itself says where the
objects are; at high noise only the caption can.
"""

from __future__ import annotations

import argparse
import functools
from collections import defaultdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--n", type=int, default=32, help="spatial scenes in the batch")
    p.add_argument("--timesteps", default="50,300,600,900,990", help="comma-separated training timesteps")
    p.add_argument("--seed", type=int, default=99, help="world seed of the scenes (and of the noise)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    if args.n < 1 or not timesteps or min(timesteps) < 0:
        p.error("--n must be >= 1 and --timesteps non-negative integers")

    import torch

    from t2ikit.attention.processor import AttentionController
    from t2ikit.cli.models import load_pipeline
    from t2ikit.diffusion.schedules import training_scheduler
    from t2ikit.models.registry import resolve_model
    from t2ikit.train.data import ShapesBatches, _make_batch, to_model_input
    from t2ikit.train.grounding import GroundingCapture, group_centroids, grounding_loss, relation_loss

    folder = resolve_model(args.model)
    pipe = load_pipeline(str(folder), threads=args.threads)
    noise_scheduler = training_scheduler(pipe.scheduler_config)
    if max(timesteps) >= noise_scheduler.config.num_train_timesteps:
        p.error(f"--timesteps must be below {noise_scheduler.config.num_train_timesteps}")
    data = ShapesBatches(seed=args.seed, batch_size=args.n, length=1, resolution=pipe.vae.config.sample_size,
                         tokenizer=pipe.tokenizer, grounding=True,
                         make_batch=functools.partial(_make_batch, category="spatial"))
    item = data[0]
    capture = GroundingCapture()
    AttentionController([capture]).install(pipe.unet)
    gen = torch.Generator().manual_seed(args.seed)
    rows = torch.arange(args.n)
    rel = item["relations"][:, 0]  # spatial scenes state one relation
    print(f"{folder}: {args.n} spatial scenes, one UNet call per timestep")
    with torch.no_grad():
        latents = pipe.vae.encode(to_model_input(item["pixels"], "cpu")).latent_dist.mean * pipe.vae.config.scaling_factor
        states = pipe.text_encoder(item["input_ids"])[0]
        for t in timesteps:
            capture.clear()
            noise = torch.randn(latents.shape, generator=gen)
            ts = torch.full((args.n,), t)
            pipe.unet(noise_scheduler.add_noise(latents, noise, ts), ts, encoder_hidden_states=states)
            g = grounding_loss(capture.maps, item["token_groups"], item["group_masks"])
            r = relation_loss(capture.maps, item["token_groups"], item["relations"], 0.1)
            by_res = defaultdict(list)
            for hw, probs in capture.maps:
                c, _ = group_centroids(probs, hw, item["token_groups"])
                offset = (c[rows, rel[:, 1]] - c[rows, rel[:, 0]]).gather(1, rel[:, 2:3]).squeeze(1) * rel[:, 3]
                by_res[hw[0]].append(offset)
            parts = []
            for side in sorted(by_res, reverse=True):
                o = torch.stack(by_res[side])  # (layers, n)
                parts.append(f"{side}x{side}: {float((o > 0).float().mean()):.0%} in order, {float(o.mean()):+.3f}")
            print(f"t={t:4d}  grounding {float(g):.3f}  relation {float(r):.4f}  " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
