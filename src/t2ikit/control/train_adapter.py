"""Train a condition adapter on a frozen base model with Shapes World's exact (image, condition, caption).

    python -m t2ikit.control.train_adapter --modality sketch --steps 300 --batch-size 16 --out DIR

Only the adapter's weights train; the UNet, VAE and text encoder stay frozen (T2I-Adapter's recipe).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class AdapterTrainConfig:
    modality: str = "sketch"  # condition the adapter reads: sketch, depth, mask, reference
    steps: int = 300  # optimiser steps
    batch_size: int = 16  # (image, condition, caption) triples per step
    lr: float = 1e-3  # AdamW learning rate (a fresh, zero-initialised adapter takes a large one)
    hidden: int = 32  # adapter width
    seed: int = 0  # data stream and timestep/noise draws
    data_seed: int = 1234  # Shapes World stream (a different world seed from the base model's training)
    threads: int = 1  # torch CPU threads


def train(pipe, config: AdapterTrainConfig, log_every: int = 25):
    """(adapter, record): trains a ConditionAdapter for `pipe`'s UNet, base frozen."""
    from diffusers import DDPMScheduler

    from t2ikit.control.adapters import ConditionAdapter, adapter_config_for, adapter_loss
    from t2ikit.control.encoders import CONDITIONS, check_condition_name, shapes_batch

    check_condition_name(config.modality)
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    acfg = adapter_config_for(pipe.unet, pipe.vae_scale_factor, config.modality, CONDITIONS[config.modality],
                              config.hidden)
    adapter = ConditionAdapter(acfg).train()
    opt = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=0.0)
    noise_scheduler = DDPMScheduler.from_config({k: v for k, v in pipe.scheduler_config.items()
                                                 if not k.startswith("_")})
    gen = torch.Generator().manual_seed(config.seed)
    size = pipe.default_size[0]
    losses, start = [], time.time()
    for step in range(config.steps):
        batch = shapes_batch(config.data_seed, step, config.batch_size, size, names=(config.modality,))
        with torch.no_grad():
            latents = pipe.vae.encode(batch["rgb"] * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
            text = pipe.encode_text(batch["captions"])
        loss = adapter_loss(pipe.unet, adapter, latents, text, batch[config.modality], noise_scheduler, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            print(f"step {step + 1}/{config.steps} loss {recent:.4f} ({time.time() - start:.0f} s)", flush=True)
    record = {"train_config": asdict(config), "base_model": str(pipe.path), "final_loss": losses[-1],
              "loss_first_25": sum(losses[:25]) / min(25, len(losses)),
              "loss_last_25": sum(losses[-25:]) / min(25, len(losses)), "seconds": time.time() - start}
    return adapter.eval().requires_grad_(False), record


def main(argv=None) -> int:
    from t2ikit.bench.compbench import default_model_path
    from t2ikit.control.adapters import save_adapter
    from t2ikit.pipeline import T2IPipeline

    d = AdapterTrainConfig()
    p = argparse.ArgumentParser(description=__doc__)
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--model", default=None)
    p.add_argument("--out", required=True)
    args = vars(p.parse_args(argv))
    model, out = args.pop("model"), args.pop("out")
    config = AdapterTrainConfig(**args)
    torch.set_num_threads(config.threads)
    pipe = T2IPipeline.from_folder(model or default_model_path())
    adapter, record = train(pipe, config)
    save_adapter(adapter, out, extra=record)
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
