"""Train a condition adapter on a frozen base model with Shapes World's exact (image, condition, caption).

    t2ikit train --config configs/adapter-depth.toml [--out DIR] [--resume]
    t2ikit train --config configs/adapter-depth.toml --export-only src/t2ikit/control/weights/depth-v1 --fp16
    python -m t2ikit.train.adapter --modality sketch --steps 300 --batch-size 16 --out DIR

Only the adapter's weights train; the UNet, VAE and text encoder stay frozen (T2I-Adapter's and
IP-Adapter's recipe). sketch, depth and mask train an additive `ConditionAdapter`; reference trains the
attention-fusion `ReferenceAdapter` (its own K/V projections beside the text's), on reference images that
show the same objects in another layout, so it must carry identity (colour, shape, size), not positions.
Caption dropout (the caption replaced by "" for a fraction of the samples) makes the adapter carry what
the caption would otherwise say.

Checkpoints (`OUT/checkpoints/ckpt-0-adapter-<step>`, atomic, safetensors) hold the adapter, AdamW's moments
and the noise generator's state; the data of step k is a pure function of (data_seed, k), so `--resume`
continues exactly where the run stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from t2ikit.bench.consistency import consistency_loss
from t2ikit.bench.progress import bar, summary, write
from t2ikit.control.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ConditionAdapter, adapter_config_for, \
    adapter_loss, save_adapter
from t2ikit.control.encoders import CONDITIONS, check_condition_name
from t2ikit.control.reference import FUSIONS, ReferenceAdapter, ReferenceConfig, reference_distill_loss, \
    reference_loss
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline
from t2ikit.train.checkpoint import checkpoint_name, load_checkpoint, optimizer_from_flat, optimizer_to_flat, \
    resolve_checkpoint, save_checkpoint
from t2ikit.train.config import from_dict, read_toml
from t2ikit.train.losses import predicted_x0
from t2ikit.world.conditions import shapes_batch


@dataclass
class AdapterTrainConfig:
    modality: str = "sketch"  # condition the adapter reads: sketch, depth, mask, reference
    steps: int = 300  # optimiser steps
    batch_size: int = 16  # (image, condition, caption) triples per step
    lr: float = 1e-3  # AdamW learning rate (a fresh, zero-initialised adapter takes a large one)
    hidden: int = 32  # adapter width
    grid: int = 2  # reference only: tokens per image = grid^2
    fusion: str = "decoupled"  # reference only: "decoupled" (own K/V per layer) or "concat" (tokens after the text)
    tokens: int = 0  # reference only: 0 = grid^2 pooled tokens; N = a resampler's N tokens (N = the text context
    #                  length for distillation)
    distill_steps: int = 0  # reference only: the first steps align the tokens with the text encoder's states of
    #                         the reference's caption (reference_distill_loss) instead of the diffusion loss
    caption_dropout: float = 0.0  # fraction of samples trained with the empty caption
    consistency_weight: float = 0.0  # sketch only: + w * L_sketch (soft-edge Dice of the decoded predicted x0)
    consistency_max_t: int = 600  # ... on the samples with timestep below this (where x0 has a shape)
    seed: int = 0  # timestep/noise/dropout draws
    data_seed: int = 1234  # Shapes World stream (a different world seed from the base model's training)
    threads: int = 1  # torch CPU threads
    checkpoint_every: int = 100  # steps between checkpoints (0: only at the end)
    keep: int = 2  # checkpoints kept
    model: str = ""  # base model folder; "" = the shipped default model
    out: str = ""  # run folder: checkpoints/ and the trained adapter (adapter.safetensors, adapter_config.json)

    def validate(self) -> AdapterTrainConfig:
        check_condition_name(self.modality)
        for name in ("steps", "batch_size", "hidden", "grid", "threads", "keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"adapter.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"adapter.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"adapter.caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.consistency_weight < 0 or (self.consistency_weight > 0 and self.modality != "sketch"):
            raise ValueError(f"adapter.consistency_weight must be >= 0 and is defined for sketch only (a decoded "
                             f"image has edges; depth and masks would need an estimator); got "
                             f"{self.consistency_weight} for {self.modality!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"adapter.fusion must be one of {', '.join(FUSIONS)}; got {self.fusion!r}")
        if self.tokens < 0 or self.distill_steps < 0:
            raise ValueError(f"adapter.tokens and adapter.distill_steps must be >= 0; got {self.tokens} and "
                             f"{self.distill_steps}")
        if (self.tokens or self.distill_steps) and self.modality != "reference":
            raise ValueError(f"adapter.tokens and adapter.distill_steps are for the reference modality, not "
                             f"{self.modality!r}")
        if self.distill_steps and not self.tokens:
            raise ValueError("adapter.distill_steps needs adapter.tokens = the text context length (the tokens "
                             "are matched to a caption's text states one for one)")
        if not self.lr > 0:
            raise ValueError(f"adapter.lr must be > 0, got {self.lr}")
        return self


def load_adapter_config(path: str | Path, overrides: dict | None = None) -> AdapterTrainConfig:
    """The `[adapter]` table of a TOML run config (unknown keys and other tables are errors)."""
    data = read_toml(path)
    extra = sorted(set(data) - {"adapter"})
    if extra or "adapter" not in data:
        raise ValueError(f"{path}: an adapter run config holds exactly one table, [adapter]; found {sorted(data)}")
    table = {**data["adapter"], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return from_dict(AdapterTrainConfig, table, "adapter").validate()


def is_adapter_config(path: str | Path) -> bool:
    return "adapter" in read_toml(path)


def make_adapter(pipe, config: AdapterTrainConfig):
    """A fresh adapter for `pipe`: ReferenceAdapter for reference, ConditionAdapter otherwise."""
    if config.modality == "reference":
        rc = ReferenceConfig(token_dim=pipe.unet.config.cross_attention_dim, grid=config.grid, hidden=config.hidden,
                             fusion=config.fusion, tokens=config.tokens)
        return ReferenceAdapter(pipe.unet, rc)
    acfg = adapter_config_for(pipe.unet, pipe.vae_scale_factor, config.modality, CONDITIONS[config.modality],
                              config.hidden)
    return ConditionAdapter(acfg)


def export_adapter(trained: str | Path, folder: str | Path, fp16: bool = False) -> Path:
    """Copy the trained adapter of run folder `trained` to `folder`, in float16 with `fp16` (how t2ikit ships
    adapters: the weights are loaded into the model's dtype, so fp16 only halves the file)."""
    trained, folder = Path(trained), Path(folder)
    if not (trained / ADAPTER_WEIGHTS).is_file() or not (trained / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{trained} holds no trained adapter ({ADAPTER_WEIGHTS} + {ADAPTER_CONFIG}); train it first")
    if folder.resolve() == trained.resolve():
        raise ValueError("--export-only DIR must differ from the run folder")
    tensors = load_file(trained / ADAPTER_WEIGHTS)
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / ADAPTER_WEIGHTS)
    shutil.copyfile(trained / ADAPTER_CONFIG, folder / ADAPTER_CONFIG)
    return folder


def _checkpoint(root: Path, step: int, adapter, opt, gen, losses, config: AdapterTrainConfig) -> Path:
    otensors, ometa = optimizer_to_flat(opt)
    tensors = {**{f"model.{k}": v for k, v in adapter.state_dict().items()}, **otensors,
               "rng.generator": gen.get_state()}
    state = {"stage": "adapter", "step": step, "optimizer": ometa, "losses": losses}
    return save_checkpoint(root, checkpoint_name(0, "adapter", step), tensors, state,
                           json.dumps(asdict(config), indent=1), config.keep)


def _restore(path: Path, adapter, opt, gen, config: AdapterTrainConfig) -> tuple[int, list[float]]:
    tensors, state, config_json = load_checkpoint(path)
    saved = json.loads(config_json)
    differs = {k for k in ("modality", "batch_size", "hidden", "grid", "fusion", "data_seed", "seed", "caption_dropout", "lr",
                           "consistency_weight", "consistency_max_t", "model") if saved.get(k) != getattr(config, k)}
    if state.get("stage") != "adapter" or differs:
        raise ValueError(f"cannot resume from {path}: it is not a checkpoint of this adapter run "
                         f"(differs in {sorted(differs) or 'stage'})")
    adapter.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    optimizer_from_flat(opt, tensors, state["optimizer"])
    gen.set_state(tensors["rng.generator"])
    return int(state["step"]), list(state["losses"])


def sketch_consistency_loss(pipe, adapter, latents, text_states, sketch, noise_scheduler, generator,
                            weight: float, max_t: int) -> torch.Tensor:
    """adapter_loss + weight * L_sketch: the seed's L_consistency as a training term. The predicted x0 of
    the samples with t < max_t is decoded by the frozen VAE and its soft edges are compared with the sketch
    (Dice, `bench.consistency.consistency_loss`); gradients reach the adapter through the UNet and VAE."""
    step = {}
    loss = adapter_loss(pipe.unet, adapter, latents, text_states, sketch, noise_scheduler, generator, step)
    t, noisy, pred = step["timesteps"], step["noisy"], step["pred"]
    low = t < max_t
    if weight > 0 and bool(low.any()):
        x0 = predicted_x0(noise_scheduler, noisy[low], pred[low], t[low])
        image = (pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample.float() + 1).div(2).clamp(0, 1)
        loss = loss + weight * consistency_loss({"image": image}, {"sketch": sketch[low]},
                                                {"sketch": 1.0})
    return loss


def train(pipe, config: AdapterTrainConfig, log_every: int = 25, resume: str | None = None, progress: bool = True):
    """(adapter, record): trains an adapter for `pipe`'s frozen UNet; checkpoints under config.out.

    `progress`: a bar over steps (with the loss), a line every `log_every` steps and a summary, on stderr."""
    config.validate()
    root = Path(config.out) / "checkpoints" if config.out else None
    if resume is not None and root is None:
        raise ValueError("resuming needs adapter.out (the run folder holding checkpoints/)")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    adapter = make_adapter(pipe, config).train()
    opt = torch.optim.AdamW(adapter.parameters(), lr=config.lr, weight_decay=0.0)
    noise_scheduler = training_scheduler(pipe.scheduler_config)
    gen = torch.Generator().manual_seed(config.seed)
    first, losses = 0, []
    if resume is not None:
        first, losses = _restore(resolve_checkpoint(root, resume), adapter, opt, gen, config)
        print(f"resumed at step {first}", flush=True)
    size = pipe.default_size[0]
    empty = pipe.encode_text([""])  # (1, T, D)
    if config.distill_steps and config.tokens != empty.shape[1]:
        raise ValueError(f"adapter.tokens = {config.tokens}, but this model's text context is {empty.shape[1]} "
                         f"states long; distillation matches them one for one (set tokens = {empty.shape[1]})")
    start = time.time()
    steps_bar = bar(total=config.steps, desc=f"train {config.modality} adapter", enabled=progress, unit="step")
    steps_bar.update(first)
    for step in range(first, config.steps):
        batch = shapes_batch(config.data_seed, step, config.batch_size, size, names=(config.modality,))
        with torch.no_grad():
            latents = pipe.vae.encode(batch["rgb"] * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
            text = pipe.encode_text(batch["captions"])
        if config.caption_dropout > 0:
            drop = torch.rand(len(text), generator=gen) < config.caption_dropout
            text = torch.where(drop[:, None, None], empty.expand_as(text), text)
        cond = batch[config.modality]
        if step < config.distill_steps:
            with torch.no_grad():
                target = pipe.encode_text(batch["reference_captions"])
            loss = reference_distill_loss(adapter, cond, target)
        elif config.consistency_weight > 0:
            loss = sketch_consistency_loss(pipe, adapter, latents, text, cond, noise_scheduler, gen,
                                           config.consistency_weight, config.consistency_max_t)
        else:
            loss_fn = reference_loss if config.modality == "reference" else adapter_loss
            loss = loss_fn(pipe.unet, adapter, latents, text, cond, noise_scheduler, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        done = step + 1
        steps_bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        steps_bar.update()
        if progress and log_every and done % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            write(f"step {done}/{config.steps} loss {recent:.4f} ({time.time() - start:.0f} s)")
        if root is not None and ((config.checkpoint_every and done % config.checkpoint_every == 0)
                                 or done == config.steps):
            _checkpoint(root, done, adapter, opt, gen, losses, config)
    record = {"train_config": asdict(config), "base_model": model_label(pipe.path), "final_loss": losses[-1],
              "loss_first_25": sum(losses[:25]) / min(25, len(losses)),
              "loss_last_25": sum(losses[-25:]) / min(25, len(losses)), "seconds_this_run": time.time() - start}
    steps_bar.close()
    summary(f"train {config.modality} adapter: {config.steps - first} steps in {time.time() - start:.1f} s, "
            f"loss over the last 25 steps {record['loss_last_25']:.4f}", progress)
    return adapter.eval().requires_grad_(False), record


def model_label(path) -> str:
    """How an adapter's record names its base model: a packaged model by its name (which `--model` takes on
    any machine), any other folder by its absolute path."""
    path = Path(path).resolve()
    return path.name if path.parent == shipped_model_path().parent else str(path)


def run(config: AdapterTrainConfig, resume: str | None = None, progress: bool = True) -> Path:
    """Train (or resume) the run of `config` and write the adapter into config.out; returns that folder."""
    config.validate()
    if not config.out:
        raise ValueError("adapter.out (or --out) is required: the folder the trained adapter is written to")
    torch.set_num_threads(config.threads)
    pipe = T2IPipeline.from_folder(config.model or shipped_model_path())
    adapter, record = train(pipe, config, resume=resume, progress=progress)
    folder = save_adapter(adapter, config.out, extra=record)  # one format for additive and reference adapters
    print(json.dumps(record, indent=1))
    return folder


def main(argv=None) -> int:
    d = AdapterTrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(d).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the newest checkpoint in OUT/checkpoints, or the given checkpoint folder")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    run(AdapterTrainConfig(**args), resume=resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
