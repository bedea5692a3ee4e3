"""The trainer: stage 1 trains the VAE; stage 2 trains the text encoder jointly with the UNet on frozen-VAE
latents. Checkpoints are resume-exact: every random draw of step t comes from a generator seeded by
(seed, stage, t), the data item of step t is a pure function of (seed, t), and the learning rate is a
pure function of t, so N straight steps and N/2 + kill + resume + N/2 give bit-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tqdm.auto import tqdm

from t2ikit.attention.processor import AttentionController
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.retrofit import retrofit
from t2ikit.models.sizes import build_text_encoder, build_unet, build_vae, vae_size
from t2ikit.pipeline import T2IPipeline, write_model_defaults
from t2ikit.text.tokenizer import build_tokenizer as build_word_tokenizer
from t2ikit.train import checkpoint as ckpt
from t2ikit.train import distributed
from t2ikit.train.config import OptimConfig, TrainConfig, config_from_json
from t2ikit.train.curriculum import curriculum_from_config
from t2ikit.train.data import ShapesBatches, make_loader, style_mixed_batch, to_model_input
from t2ikit.train.ema import EMA
from t2ikit.train.export import build_pipeline, export_pipeline
from t2ikit.train.grounding import GroundingCapture
from t2ikit.train.losses import diffusion_loss, vae_loss
from t2ikit.train.multiloss import ATTENTION_TERMS, MultiLoss, mid_block_capture, shared_parameter
from t2ikit.world.vocab import caption_words

STAGES = ("vae", "unet")
EvalHook = Callable[["Trainer", int], dict]


# ----------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------


def lr_at(step: int, o: OptimConfig) -> float:
    """Linear warmup to o.lr over o.warmup_steps, then cosine decay to o.lr * o.min_lr_ratio at o.steps."""
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, o.steps - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_seed(seed: int, stage: str, step: int) -> int:
    """Seed of the generator for every draw of one optimizer step (timesteps, noise, posterior samples)."""
    return (seed * 1_000_003 + STAGES.index(stage) * 10_000_019 + step) % (2**63)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


@functools.lru_cache(maxsize=4)
def build_tokenizer(max_tokens: int):
    """The word-level Shapes World tokenizer (cached: building it learns BPE merges, ~seconds)."""
    return build_word_tokenizer(caption_words(), max_tokens)


def compbench_hook(trainer: "Trainer", step: int) -> dict:
    """CompBench (t2ikit.bench.compbench.evaluate) of the EMA model through the generation core (`pipe.run`,
    the training schedule's DPM-Solver++, no latent guidance); {} when the module is absent."""
    try:
        from t2ikit.bench.compbench import evaluate
    except ImportError:
        return {}
    e = trainer.cfg.eval
    sd = trainer.pipeline(ema=True).to(trainer.device)
    pipe = T2IPipeline(sd.unet, sd.vae, sd.text_encoder, sd.tokenizer, dict(sd.scheduler.config))

    def generate(prompts: list[str], seeds: list[int]) -> list:
        spec = pipe.make_spec(list(prompts), None, e.steps, e.guidance, 0, 1, None, "dpmpp_2m", 0.0,
                              weighting="none")
        images = pipe.run(spec, progress=False, seeds=[int(s) for s in seeds]).images
        return list(images.permute(0, 2, 3, 1).float().cpu().numpy())  # (H, W, 3) float in [0, 1] each

    result = evaluate(generate, split=e.split, n_prompts=e.n_prompts, seeds=e.seeds, world=trainer.cfg.world.name)
    return {"compbench_overall": result["overall"]["accuracy"],
            "compbench_mean_category": result["mean_category_accuracy"]}


class _StageStep(torch.nn.Module):
    """The trainable modules of a stage under one root, whose forward is the stage's loss: the unit that
    DDP/FSDP wrap (DDP synchronises gradients only of parameters used inside its module's forward)."""

    def __init__(self, modules: dict[str, torch.nn.Module], loss_fn):
        super().__init__()
        self.parts = torch.nn.ModuleDict(modules)
        self.loss_fn = loss_fn

    def forward(self, item: dict, gen: torch.Generator):
        return self.loss_fn(item, gen)


# ----------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------


class Trainer:
    """Holds the models, the optimizer of the current stage and the position (stage, step)."""

    def __init__(
        self,
        cfg: TrainConfig,  # the resolved run config
        out: str | Path | None = None,  # run folder; default cfg.run.out
        device: str | None = None,  # overrides cfg.run.device
        make_batch=None,  # overrides t2ikit.world.dataset.make_batch (tests)
        eval_hooks: tuple[EvalHook, ...] = (),  # extra callables run every cfg.eval.every UNet steps
    ):
        self.cfg = cfg.validate()
        self.out = Path(out if out is not None else cfg.run.out)
        self.device = resolve_device(device or cfg.run.device)
        self.dist = distributed.init_from_env(self.device.type)  # torchrun: join the group; alone: rank 0 of 1
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        for name in ("vae_train", "unet_train"):
            o = getattr(cfg, name)
            if (o.batch_size // o.grad_accum) % self.dist.world:
                raise ValueError(
                    f"{name}: the world size {self.dist.world} does not divide the micro-batch of "
                    f"{o.batch_size // o.grad_accum} images (batch_size {o.batch_size} / grad_accum {o.grad_accum}); "
                    "the global batch must split evenly across ranks"
                )
        self.fsdp = self.dist.enabled and cfg.run.parallel == "fsdp"
        if self.fsdp and cfg.losses.weighting == "gradnorm":
            # GradNorm differentiates each loss term w.r.t. one UNet weight; under FSDP the registered weight is a
            # shard the forward does not use (it runs on the gathered copy), so that gradient does not exist.
            raise ValueError(
                "losses.weighting='gradnorm' does not work with run.parallel='fsdp' (GradNorm needs the gradient of "
                "each term w.r.t. a whole UNet weight); use run.parallel='ddp' or another losses.weighting"
            )
        self.curriculum = curriculum_from_config(cfg)
        if make_batch is None and cfg.world.name != "full":  # every stage's scenes come from the named world
            make_batch = functools.partial(_world_batch, world=cfg.world.name)
        self.make_batch = make_batch
        self.eval_hooks = list(eval_hooks) + ([compbench_hook] if cfg.eval.compbench else [])
        if cfg.run.precision == "bf16" and self.device.type != "cuda":
            warnings.warn("run.precision='bf16' applies on CUDA only; training on CPU in fp32", stacklevel=2)
        self.amp_dtype = torch.bfloat16 if cfg.run.precision == "bf16" and self.device.type == "cuda" else None
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        m = cfg.model
        self.latent_size = m.resolution // vae_size(m.vae).factor
        self.tokenizer = build_tokenizer(m.max_tokens)
        self.vae = self._build("vae")
        self.unet = self._build("unet")
        self.text_encoder = self._build("text_encoder")
        if m.init:
            self._init_from(Path(m.init))
        self.noise_scheduler = training_scheduler(dataclasses.asdict(cfg.diffusion))
        self.multiloss = None
        lo = cfg.losses
        if (lo.text_alignment > 0 or lo.image_quality > 0 or lo.grounding > 0 or lo.relation > 0
                or lo.weighting != "fixed"):
            self.multiloss = self._build("aux")
        self.ema_unet = EMA(self.unet, cfg.unet_train.ema_decay)
        self.ema_text = EMA(self.text_encoder, cfg.unet_train.ema_decay)
        self.stage, self.step = STAGES[0], 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optim: tuple[dict, dict] | None = None
        self._log_window: list[float] = []
        self._sharded: dict[str, torch.nn.Module] = {}  # under FSDP, while a stage trains: its modules, sharded
        self._plain_processors: dict | None = None  # while grounding hooks are installed: the UNet's own processors

    def _build(self, name: str) -> torch.nn.Module:
        """A freshly initialised component ("vae", "unet", "text_encoder", "aux") on the device; the same seeds
        every time, so the models of a run start alike on every rank and in every run."""
        m, seed = self.cfg.model, self.cfg.run.seed
        v = vae_size(m.vae)
        if name == "vae":
            return build_vae(m.vae, sample_size=m.resolution, seed=seed).to(self.device)
        if name == "unet":
            unet = build_unet(m.size, latent_channels=v.latent_channels, sample_size=self.latent_size, seed=seed + 1)
            if m.fusion != "sequential":  # fusion blocks replace SD's transformer blocks (t2ikit.models.retrofit)
                retrofit(unet, m.fusion, seed=seed + 1, from_scratch=True)  # before .to(): new weights
            return unet.to(self.device)
        if name == "text_encoder":
            return build_text_encoder(m.size, self.tokenizer, seed=seed + 2).to(self.device)
        if name == "aux":
            return MultiLoss(
                self.cfg.losses, self.text_encoder.config.hidden_size, self.unet.config.block_out_channels[-1],
                seed=seed + 3,
            ).to(self.device)
        raise ValueError(f"unknown component {name!r}")

    def _init_from(self, folder: Path) -> None:
        """Fine-tuning: load the VAE, text encoder and UNet weights (and the VAE scaling factor) of an exported
        model folder into the freshly built components; the architecture must be the one the config names."""
        from transformers import CLIPTextModel, CLIPTokenizer

        vocab = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True).get_vocab()
        if vocab != self.tokenizer.get_vocab():
            raise ValueError(f"model.init={str(folder)!r}: its tokenizer's vocabulary is not t2ikit's, so its text "
                             "encoder's embeddings would mean other words")
        sources = {
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=torch.float32),
            "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32),
        }
        for name, source in sources.items():
            try:
                getattr(self, name).load_state_dict(source.state_dict(), strict=True)
            except RuntimeError as err:
                first = str(err).splitlines()[1:2] or [str(err)]
                raise ValueError(
                    f"model.init={str(folder)!r}: its {name} does not fit model.size={self.cfg.model.size!r} / "
                    f"model.vae={self.cfg.model.vae!r} ({first[0].strip()})"
                ) from None
        self.vae.register_to_config(scaling_factor=float(sources["vae"].config.scaling_factor))

    # -- paths ---------------------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def export_dir(self) -> Path:
        d = Path(self.cfg.export.dir)
        return d if d.is_absolute() else self.out / d

    # -- run -----------------------------------------------------------------------------------------

    def run(self, resume: str | None = None) -> Path | None:
        """Train every stage from the start or from a checkpoint ("latest" or a folder); export at the end."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.out / "config.json").write_text(self.cfg.to_json())
        if resume:
            self.load(ckpt.resolve_checkpoint(self.checkpoint_dir, resume))
        self._t_start = time.monotonic()
        self.stopped_early = False
        if self.stage == "vae":
            self._train_vae()
            if self.stopped_early:
                return self.export() if self.cfg.export.at_end else None
            if not (self.cfg.model.init and self.cfg.vae_train.steps == 0):
                self.calibrate_vae()  # a resumed UNet stage keeps the factor stored in its checkpoint
            # else: fine-tuning on the init folder's untouched VAE keeps the factor its UNet was trained with
            self.stage, self.step = "unet", 0
        self.vae.eval().requires_grad_(False)
        self._train_unet()
        if self.cfg.export.at_end:
            return self.export()
        return None

    def _train_vae(self) -> None:
        c = self.cfg.vae_train
        self.vae.train().requires_grad_(True)

        def loss_fn(item: dict, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
            pixels = to_model_input(item["pixels"], self.device)
            return vae_loss(self.vae, pixels, c.kl_weight, c.edge_weight, generator=gen, shard=self.dist.shard), {}

        params = [{"params": [p for p in self.vae.parameters()], "lr_scale": 1.0}]
        self._loop("vae", c, params, _StageStep({"vae": self.vae}, loss_fn), tokenizer=None)
        self.vae.eval().requires_grad_(False)

    @torch.no_grad()
    def calibrate_vae(self) -> float:
        """Set vae.config.scaling_factor = 1 / std of latents, so the UNet sees unit-variance latents."""
        c = self.cfg.vae_train
        self.vae.eval().requires_grad_(False)
        data = self._dataset("calibrate", batch_size=c.batch_size, length=max(1, c.calibration_batches), tokenizer=None)
        latents = [
            self.vae.encode(to_model_input(data[i]["pixels"], self.device)).latent_dist.mean.float()
            for i in range(len(data))
        ]
        std = torch.cat(latents).std().item()
        factor = 1.0 / max(std, 1e-6)
        self.vae.register_to_config(scaling_factor=factor)
        return factor

    def _train_unet(self) -> None:
        # A compiled wrapper shares the UNet's parameters; state dicts and EMA keep using self.unet.
        unet_forward = torch.compile(self.unet) if self.cfg.run.compile else self.unet
        c = self.cfg.unet_train
        self.unet.train()
        self.text_encoder.train()
        factor = self.vae.config.scaling_factor

        ml = self.multiloss
        mid_store, hook = ({}, None)
        if ml is not None and "text_alignment" in ml.names:
            mid_store, hook = mid_block_capture(self.unet)
        shared = None
        if ml is not None and ml.cfg.weighting == "gradnorm":
            shared = shared_parameter(self.unet)
        capture, controller = None, None

        if ml is not None and any(n in ml.names for n in ATTENTION_TERMS):
            capture = GroundingCapture()
            self._plain_processors = dict(self.unet.attn_processors)  # for pipeline(): evaluation without the hooks
            controller = AttentionController([capture]).install(self.unet)

        def loss_fn(item: dict, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
            pixels = to_model_input(item["pixels"], self.device)
            ids = item["input_ids"].to(self.device, non_blocking=True)
            with torch.no_grad():
                latents = self.vae.encode(pixels).latent_dist.mean * factor  # (B, C, h, w)
            states = self.text_encoder(ids)[0]  # (B, T, D), as StableDiffusionPipeline encodes prompts
            outputs = {} if ml is not None else None
            if capture is not None:
                capture.clear()
            recon = diffusion_loss(
                unet_forward, latents, states, self.noise_scheduler, gen, c.snr_gamma, self.dist.shard, outputs,
                snr_floor=c.snr_floor, timestep_range=c.timestep_range,
            )
            if ml is None:
                return recon, {}
            grounding = None
            if capture is not None:
                grounding = (list(capture.maps), item["token_groups"].to(self.device),
                             item["group_masks"].to(self.device), item["relations"].to(self.device))
                capture.clear()
            terms = ml.terms(latents, states, ids, self.tokenizer.pad_token_id, outputs, self.noise_scheduler, recon,
                             mid_store.get("mid"), grounding)
            total = ml.combine(terms, shared)
            weights = ml.current_weights().detach()
            info = {f"loss_{n}": float(terms[n].detach()) for n in ml.names}
            info.update({f"weight_{n}": float(w) for n, w in zip(ml.names, weights)})
            return total, info

        def after_step(step: int) -> None:
            self.ema_unet.update(self.unet, step)
            self.ema_text.update(self.text_encoder, step)
            if self.cfg.eval.every and step % self.cfg.eval.every == 0 and self.eval_hooks:
                self._evaluate(step)

        params = [
            {"params": list(self.unet.parameters()), "lr_scale": 1.0},
            {"params": list(self.text_encoder.parameters()), "lr_scale": c.text_lr_scale},
        ]
        parts = {"unet": self.unet, "text_encoder": self.text_encoder}
        if ml is not None:
            parts["aux"] = ml
            if any(True for _ in ml.parameters()):  # projection heads and/or uncertainty log-variances
                params.append({"params": list(ml.parameters()), "lr_scale": 1.0, "weight_decay": 0.0})
        try:
            self._loop("unet", c, params, _StageStep(parts, loss_fn), tokenizer=self.tokenizer, after_step=after_step)
        finally:
            if hook is not None:
                hook.remove()
            if controller is not None:
                controller.uninstall()
                self._plain_processors = None

    # -- the loop ------------------------------------------------------------------------------------

    def _dataset(self, stage: str, batch_size: int, length: int, tokenizer, caption_dropout: float = 0.0,
                 items_per_step: int = 1):
        offsets = {"vae": 0, "unet": 1, "calibrate": 2}  # a separate, reproducible stream per stage
        curriculum = self.curriculum if stage == "unet" and self.curriculum.active() else None
        make_batch, share = self.make_batch, self.cfg.vae_train.style_share
        if stage == "vae" and share > 0:  # the VAE sees more styled scenes; calibration keeps the UNet's mix
            make_batch = functools.partial(style_mixed_batch, style_share=share, make_batch=make_batch)
        return ShapesBatches(
            curriculum=curriculum,
            items_per_step=items_per_step,
            shard=self.dist.shard if stage != "calibrate" else (0, 1),
            seed=self.cfg.run.seed * 3 + offsets[stage],
            batch_size=batch_size,
            length=length,
            resolution=self.cfg.model.resolution,
            tokenizer=tokenizer,
            caption_dropout=caption_dropout,
            make_batch=make_batch,
            grounding=stage == "unet" and (self.cfg.losses.grounding > 0 or self.cfg.losses.relation > 0),
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loop(self, stage: str, o: OptimConfig, groups: list[dict], step_module: _StageStep, tokenizer,
              after_step=None) -> None:
        if self.step >= o.steps:
            return
        names = {id(p): n for n, p in step_module.named_parameters()}
        model = distributed.wrap(step_module, self.dist, self.cfg.run.parallel)
        if self.fsdp:  # fully_shard registered new (sharded) parameters in place of the ones the groups hold
            current = dict(step_module.named_parameters())
            groups = [{**g, "params": [current[names[id(p)]] for p in g["params"]]} for g in groups]
            self._sharded = dict(step_module.parts)
        self.optimizer = torch.optim.AdamW(
            groups, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, fused=self.device.type == "cuda"
        )
        if self._pending_optim is not None:
            ckpt.optimizer_from_flat(self.optimizer, *self._pending_optim)
            self._pending_optim = None
        params = [p for g in groups for p in g["params"]]
        micro = o.batch_size // o.grad_accum
        data = self._dataset(
            stage, micro, o.steps * o.grad_accum, tokenizer, getattr(o, "caption_dropout", 0.0) if tokenizer else 0.0,
            items_per_step=o.grad_accum,
        )
        r = self.cfg.run
        loader = iter(make_loader(data, self.step * o.grad_accum, r.workers, r.prefetch, self.device.type == "cuda"))
        bar = _progress(stage, o.steps, self.step, enabled=r.progress and self.dist.is_main)
        info_window: dict[str, list[float]] = {}
        t_window, n_window = time.perf_counter(), 0
        loss_value, t_stage = float("nan"), time.perf_counter()
        while self.step < o.steps:
            step = self.step
            lr = lr_at(step, o)
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            gen = torch.Generator().manual_seed(step_seed(r.seed, stage, step))
            total = torch.zeros((), device=self.device)
            for k in range(o.grad_accum):
                item = next(loader)
                last = k == o.grad_accum - 1
                sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                with sync:  # DDP all-reduces gradients once per optimizer step, on the last micro-batch
                    with self._autocast():
                        loss, info = model(item, gen)
                        loss = loss / o.grad_accum
                    loss.backward()
                total += loss.detach()
                for key, value in info.items():
                    info_window.setdefault(key, []).append(value)
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step = step + 1
            if after_step is not None:
                after_step(self.step)
            n_window += o.batch_size
            loss_value = float(distributed.mean_across(self.dist, total))  # the global batch's loss
            self._log_window.append(loss_value)
            if bar is not None:
                sps = n_window / max(time.perf_counter() - t_window, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{sps:.0f}", refresh=False)
            if self.step % r.log_every == 0 or self.step == o.steps:
                elapsed = time.perf_counter() - t_window
                self.log(
                    {
                        "event": "train",
                        "stage": stage,
                        "step": self.step,
                        "loss": sum(self._log_window) / len(self._log_window),
                        "lr": lr,
                        "grad_norm": float(grad_norm),
                        "samples_per_s": n_window / max(elapsed, 1e-9),
                        **self._window_means(info_window),
                    }
                )
                self._log_window, t_window, n_window, info_window = [], time.perf_counter(), 0, {}
            limit = r.time_limit_min * 60
            out_of_time = limit > 0 and time.monotonic() - getattr(self, "_t_start", time.monotonic()) > limit
            if limit > 0:
                out_of_time = distributed.any_across(self.dist, out_of_time)  # every rank stops at the same step
            stop_here = stage == "unet" and self.step == r.stop_at
            if self.step % self.cfg.checkpoint.every == 0 or self.step == o.steps or out_of_time or stop_here:
                self.save()
            if out_of_time or stop_here:
                self.stopped_early = True
                if out_of_time:
                    self.log({"event": "time_limit", "stage": stage, "step": self.step, "minutes": r.time_limit_min})
                else:
                    self.log({"event": "stop_at", "stage": stage, "step": self.step})
                break
        if bar is not None:
            bar.close()
            print(f"train {stage}: step {self.step}/{o.steps} in {time.perf_counter() - t_stage:.1f} s, last loss "
                  f"{loss_value:.4f}" + (" (stopped early)" if self.stopped_early else ""), file=sys.stderr, flush=True)
        if self.fsdp:
            self._unshard()

    def _window_means(self, window: dict[str, list[float]]) -> dict[str, float]:
        """Per-term losses and weights over the log window, averaged over ranks (rank-local terms)."""
        if not window:
            return {}
        keys = sorted(window)
        means = torch.tensor([sum(window[k]) / len(window[k]) for k in keys], dtype=torch.float64)
        means = distributed.mean_across(self.dist, means)
        return {k: float(v) for k, v in zip(keys, means)}

    def _evaluate(self, step: int) -> None:
        if self._sharded:  # FSDP: every rank gathers whole copies, rank 0 evaluates them, the others wait
            with self._gathered():
                self._evaluate(step)
            distributed.barrier(self.dist)
            return
        if not self.dist.is_main:
            return
        record = {"event": "eval", "stage": self.stage, "step": step}
        for hook in self.eval_hooks:
            record.update(hook(self, step) or {})
        self.log(record)

    # -- FSDP: whole modules back from shards --------------------------------------------------------

    _ATTRS = {"vae": "vae", "unet": "unet", "text_encoder": "text_encoder", "aux": "multiloss"}

    def _whole_copies(self) -> dict[str, torch.nn.Module]:
        """Plain modules holding the whole weights of the sharded ones (a collective: every rank calls it)."""
        out = {}
        for name, module in self._sharded.items():
            with torch.random.fork_rng(devices=[]):  # building draws default inits: leave the run's RNG as it was
                plain = self._build(name)
            plain.load_state_dict(distributed.full_state_dict(module))
            if name == "vae":
                plain.register_to_config(scaling_factor=module.config.scaling_factor)
            out[name] = plain.train(module.training)
        return out

    def _unshard(self) -> None:
        """End of an FSDP stage: whole, plain modules and EMA shadows replace the sharded ones for good."""
        for name, plain in self._whole_copies().items():
            setattr(self, self._ATTRS[name], plain)
        self.ema_unet.gather()
        self.ema_text.gather()
        self._sharded = {}

    @contextlib.contextmanager
    def _gathered(self):
        """Whole copies of the sharded modules and EMA in place of the shards while the block runs (eval hooks)."""
        sharded, emas = self._sharded, (self.ema_unet.shadow, self.ema_text.shadow)
        attrs = {name: getattr(self, self._ATTRS[name]) for name in sharded}
        try:
            self._unshard()
            yield
        finally:
            for name, module in attrs.items():
                setattr(self, self._ATTRS[name], module)
            self.ema_unet.shadow, self.ema_text.shadow = emas
            self._sharded = sharded

    # -- state ---------------------------------------------------------------------------------------

    def log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        record = {"time": time.time(), **record}
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {"vae": self.vae, "unet": self.unet, "text_encoder": self.text_encoder}
        if self.multiloss is not None:
            modules["aux"] = self.multiloss
        return modules

    def save(self) -> Path:
        tensors = {}  # whole tensors: under FSDP every rank gathers the shards, rank 0 writes
        for name, module in self._modules().items():
            tensors.update({f"model.{name}.{k}": v for k, v in distributed.full_state_dict(module).items()})
        tensors.update({f"ema.unet.{k}": v for k, v in self.ema_unet.state_dict().items()})
        tensors.update({f"ema.text_encoder.{k}": v for k, v in self.ema_text.state_dict().items()})
        optim_meta = None
        if self._pending_optim is not None:  # loaded but its stage has not started yet: keep it
            pending_tensors, optim_meta = self._pending_optim
            tensors.update({k: v for k, v in pending_tensors.items() if k.startswith("optim.")})
        elif self.optimizer is not None:
            opt_tensors, optim_meta = ckpt.optimizer_to_flat(self.optimizer)
            tensors.update(opt_tensors)
        tensors.update(ckpt.rng_to_flat())
        state = {
            "stage": self.stage,
            "step": self.step,
            "scaling_factor": float(self.vae.config.scaling_factor),
            "optimizer": optim_meta,
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world,  # informational: the state is the same for any world size
        }
        name = ckpt.checkpoint_name(STAGES.index(self.stage) + 1, self.stage, self.step)
        path = self.checkpoint_dir / name
        if self.dist.is_main:  # rank 0 writes; the others wait until the checkpoint is complete
            path = ckpt.save_checkpoint(
                self.checkpoint_dir, name, tensors, state, self.cfg.to_json(), self.cfg.checkpoint.keep
            )
            self.log({"event": "checkpoint", "stage": self.stage, "step": self.step, "path": str(path)})
        distributed.barrier(self.dist)
        return path

    def load(self, path: str | Path) -> None:
        tensors, state, config_json = ckpt.load_checkpoint(path)
        saved = config_from_json(config_json)
        for section in ("model", "diffusion", "losses", "world"):  # a checkpoint without [world] is "full"
            if getattr(saved, section) != getattr(self.cfg, section):
                raise ValueError(
                    f"checkpoint {str(path)!r} was trained with a different [{section}] config: "
                    f"{getattr(saved, section)} vs {getattr(self.cfg, section)}"
                )
        if state.get("stage") not in STAGES:
            raise ValueError(f"checkpoint {str(path)!r} names unknown stage {state.get('stage')!r}")
        for name, module in self._modules().items():
            _load_prefixed(module, tensors, f"model.{name}.", path)
        self.ema_unet.load_state_dict(_strip(tensors, "ema.unet."))
        self.ema_text.load_state_dict(_strip(tensors, "ema.text_encoder."))
        self.vae.register_to_config(scaling_factor=state["scaling_factor"])
        ckpt.rng_from_flat(tensors)
        self.stage, self.step = state["stage"], int(state["step"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.dist.world:  # fine: the global batch and every draw are the same for any world size
            self.log({"event": "resume_world_size", "saved": saved_world, "now": self.dist.world})
        self._pending_optim = (tensors, state["optimizer"]) if state.get("optimizer") else None
        if self.stage == "vae" and self.step >= self.cfg.vae_train.steps:
            self._pending_optim = None  # stage 1 is complete; its optimizer is not needed any more
        self.log({"event": "resume", "stage": self.stage, "step": self.step, "path": str(path)})

    # -- export --------------------------------------------------------------------------------------

    def pipeline(self, ema: bool = True):
        """A StableDiffusionPipeline over copies of the components (EMA weights by default)."""
        if self._sharded:
            raise RuntimeError("Trainer.pipeline() under FSDP needs whole weights: call it inside Trainer._gathered()")
        unet, text = copy.deepcopy(self.unet).eval(), copy.deepcopy(self.text_encoder).eval()
        if self._plain_processors:  # a grounding stage's capture hooks stay with the training UNet
            unet.set_attn_processor(dict(self._plain_processors))
        if ema:
            self.ema_unet.copy_to(unet)
            self.ema_text.copy_to(text)
        return build_pipeline(copy.deepcopy(self.vae).eval(), text, self.tokenizer, unet, self.cfg.diffusion)

    def export(self, out_dir: str | Path | None = None, fp16: bool | None = None) -> Path:
        out_dir = Path(out_dir) if out_dir is not None else self.export_dir()
        if not self.dist.is_main:  # rank 0 exports; the others wait for the folder
            distributed.barrier(self.dist)
            return out_dir
        pipe = self.pipeline(ema=True).to("cpu")
        path = export_pipeline(pipe, out_dir, self.cfg.export.fp16 if fp16 is None else fp16)
        (path / "t2ikit_train_config.json").write_text(self.cfg.to_json())
        export = self.cfg.export
        if export.defaults or export.layout_sides or export.layout_gap is not None:
            write_model_defaults(path, export.layout_sides, export.layout_gap, **export.defaults)
        self.log({"event": "export", "path": str(path), "stage": self.stage, "step": self.step})
        distributed.barrier(self.dist)
        return path


def _world_batch(seed: int, index: int, batch_size: int, resolution: int, split: str, world: str = "full",
                 **kwargs) -> dict:
    """t2ikit.world.dataset.make_batch of a named world (picklable through functools.partial)."""
    from t2ikit.world.dataset import make_batch

    return make_batch(seed, index, batch_size, resolution=resolution, split=split, world=world, **kwargs)


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_prefixed(module: torch.nn.Module, tensors: dict, prefix: str, path) -> None:
    part = _strip(tensors, prefix)
    missing, unexpected = module.load_state_dict(part, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _progress(stage: str, total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, desc=f"train {stage}", file=sys.stderr, dynamic_ncols=True)
