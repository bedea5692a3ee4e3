"""Typed run configs for `t2ikit train`, read from TOML; unknown keys are an error naming the key."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from t2ikit.diffusion.losses import check_timestep_range
from t2ikit.train.curriculum import curriculum_from_config

# ----------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------


@dataclass
class RunConfig:
    seed: int = 0  # seeds model init, the data stream and every noise draw
    out: str = "runs/default"  # output folder: checkpoints/, log.jsonl, model/ (overridden by --out)
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    precision: str = "fp32"  # "fp32" or "bf16" (autocast, CUDA only; CPU always runs fp32)
    workers: int = 0  # DataLoader worker processes rendering Shapes World batches
    prefetch: int = 4  # batches each worker renders ahead
    log_every: int = 10  # optimizer steps per JSONL log record
    progress: bool = True  # tqdm progress bar on stderr
    time_limit_min: float = 0.0  # > 0: after this many minutes, checkpoint, export and stop (a GPU lease)
    stop_at: int = 0  # > 0: after this UNet-stage step, checkpoint, export and stop; the lr schedule still spans
    # unet_train.steps (the step a time-limited run stopped at, written down so that a rerun reproduces it)
    compile: bool = False  # torch.compile the UNet forward (CUDA; weights and checkpoints are unchanged)
    parallel: str = "ddp"  # under torchrun (WORLD_SIZE > 1): "ddp" (DistributedDataParallel) or "fsdp" (FSDP2 fully_shard)


@dataclass
class ModelConfig:
    size: str = "s"  # UNet + text-encoder size, a key of t2ikit.models.sizes.MODEL_SIZES
    vae: str = "f4"  # VAE size, a key of t2ikit.models.sizes.VAE_SIZES
    resolution: int = 64  # image side in pixels
    max_tokens: int = 32  # tokenizer max_length (captions are padded/truncated to it)
    fusion: str = "sequential"  # UNet fusion strategy (t2ikit.models.fusion): sequential, parallel, interleaved,
    # gated or "hierarchical:16=sequential,8=gated"; anything but sequential is not a stock diffusers UNet
    init: str = ""  # a model folder (diffusers format, same size) to start from instead of a fresh init: fine-tuning.
    # Its VAE, text encoder and UNet weights are loaded; with vae_train.steps = 0 its VAE scaling factor is kept


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000  # discrete training timesteps
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers beta schedule; cosine reaches ~zero terminal SNR
    beta_start: float = 0.00085  # used by "linear" / "scaled_linear" only
    beta_end: float = 0.012  # used by "linear" / "scaled_linear" only
    prediction_type: str = "v_prediction"  # "epsilon" or "v_prediction" (v is well posed at zero SNR)


@dataclass
class OptimConfig:
    steps: int = 1000  # optimizer steps in this stage (0 skips the stage)
    batch_size: int = 64  # images per optimizer step (split over grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per optimizer step; must divide batch_size
    lr: float = 1e-3  # peak learning rate of AdamW
    warmup_steps: int = 100  # linear warmup from 0 to lr
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class VAETrainConfig(OptimConfig):
    kl_weight: float = 1e-6  # KL weight: tiny, so the latent keeps exact colours of 10 px objects
    edge_weight: float = 1.0  # extra L1 on edge pixels, where small shapes live
    calibration_batches: int = 4  # batches whose latent std sets vae.config.scaling_factor
    style_share: float = 0.0  # share of VAE scenes drawn from the style category (gray/black backgrounds, outlines),
    # which the training mix states for a quarter of its scenes; 0 = the training mix as the UNet sees it


@dataclass
class UNetTrainConfig(OptimConfig):
    snr_gamma: float = 5.0  # min-SNR-gamma weighting (Hang et al. 2023); 0 disables
    snr_floor: float = 0.0  # x0-space min-SNR weight raised to at least this (1: the noisiest steps train); 0 = off
    caption_dropout: float = 0.1  # probability of an empty caption, for classifier-free guidance
    ema_decay: float = 0.999  # EMA of UNet and text encoder (warmed up: min(decay, (1+t)/(10+t)))
    text_lr_scale: float = 1.0  # text-encoder lr = lr * text_lr_scale (trained jointly)
    # [lo, hi]: the denoising loss draws its timesteps in [lo, hi) only (a fine-tune of the low-noise steps, where
    # the fine detail is drawn, that leaves the noisy steps, where the layout is chosen, as they are); [] = all
    timestep_range: list = field(default_factory=list)


@dataclass
class LossesConfig:
    # L_total = L_reconstruction + text_alignment * L_text_alignment + image_quality * L_image_quality
    #           + grounding * L_grounding + relation * L_relation
    text_alignment: float = 0.0  # lambda_1: InfoNCE between pooled text and pooled UNet mid-block features; 0 = off
    image_quality: float = 0.0  # lambda_2: Sobel-edge L1 between predicted-x0 and true latents; 0 = off
    grounding: float = 0.0  # token grounding: each object word's cross-attention inside its object (t2ikit.train.grounding); 0 = off
    relation: float = 0.0  # relation term: where B's words attend lies `relation_margin` past A's for "A left of B" etc.; 0 = off
    relation_margin: float = 0.1  # in units of the image side
    weighting: str = "fixed"  # "fixed" (the lambdas), "uncertainty" (Kendall et al. 2018) or "gradnorm" (Chen et al. 2018)
    proj_dim: int = 64  # width of the two projection heads of the alignment loss
    temperature: float = 0.1  # InfoNCE softmax temperature
    gradnorm_alpha: float = 1.5  # GradNorm restoring-force exponent
    gradnorm_lr: float = 0.025  # GradNorm step size on the loss weights


@dataclass
class CurriculumConfig:
    # Piecewise-constant schedules over stage-2 (UNet) optimizer steps: [[step, value], ...], first step 0.
    resolution: list = field(default_factory=list)  # image side in px, e.g. [[0, 16], [200, 32]]; [] = model.resolution
    complexity: list = field(default_factory=list)  # max objects per scene, e.g. [[0, 1], [100, 2], [200, 4]]; [] = any
    mix: dict = field(default_factory=dict)  # category -> weight of the UNet stage's scenes, e.g. {spatial = 0.3, ...}; {} = TRAIN_MIX


@dataclass
class WorldConfig:
    name: str = "full"  # Shapes World restriction of every stage's scenes (t2ikit.world.categories.WORLDS):
    # "full", or "mini" (3 colours x 3 shapes, large objects, single / colour binding / spatial)


@dataclass
class CheckpointConfig:
    every: int = 500  # optimizer steps between checkpoints (and one at the end of each stage)
    keep: int = 2  # complete checkpoints kept; older ones are deleted after a newer one is complete


@dataclass
class EvalConfig:
    every: int = 0  # UNet steps between evaluations; 0 = never
    compbench: bool = False  # run t2ikit.bench.compbench.evaluate (when importable) on the EMA pipeline
    split: str = "train"  # CompBench suite: "train" or "heldout" (held-out colour-shape pairs)
    n_prompts: int = 4  # CompBench prompts per category
    seeds: int = 1  # CompBench images per prompt
    steps: int = 20  # sampler steps for evaluation images
    guidance: float = 4.0  # classifier-free guidance scale for evaluation images


@dataclass
class ExportConfig:
    dir: str = "model"  # export folder, relative to run.out unless absolute
    fp16: bool = False  # save weights in float16 (for shipping); training is unaffected
    at_end: bool = True  # export when training finishes
    defaults: dict = field(default_factory=dict)  # generation defaults for the folder's t2ikit.json, e.g.
    # {relation_guidance = 200.0}; keys: t2ikit.pipeline.DEFAULT_KEYS
    layout_sides: dict = field(default_factory=dict)  # the layout planner's box side per size class (t2ikit.json)
    layout_gap: float | None = None  # ... and its least distance between boxes (t2ikit.json); None: the planner's


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vae_train: VAETrainConfig = field(default_factory=lambda: VAETrainConfig(lr=1e-3, edge_weight=1.0))
    unet_train: UNetTrainConfig = field(default_factory=UNetTrainConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self, check_paths: bool = True) -> "TrainConfig":
        """Raise ValueError naming the first bad value; `check_paths` also checks that model.init is a model folder
        (off for the config saved in a checkpoint, which is only compared with the running config; the running
        config's Trainer still loads model.init before a checkpoint replaces its weights)."""
        from t2ikit.models.sizes import model_size, vae_size

        model_size(self.model.size)
        from t2ikit.models.fusion import parse_fusion

        parse_fusion(self.model.fusion)  # ValueError naming the allowed strategies
        v = vae_size(self.model.vae)
        if self.model.resolution % v.factor:
            raise ValueError(f"model.resolution={self.model.resolution} is not divisible by the VAE factor {v.factor}")
        if check_paths and self.model.init and not (Path(self.model.init) / "model_index.json").is_file():
            raise ValueError(
                f"model.init={self.model.init!r} is not a model folder (no model_index.json there); give the folder "
                "of an exported model, such as a run's model/ or src/t2ikit/weights/shapes-v6b"
            )
        if self.run.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"run.device must be 'auto', 'cpu' or 'cuda', got {self.run.device!r}")
        if self.run.precision not in ("fp32", "bf16"):
            raise ValueError(f"run.precision must be 'fp32' or 'bf16', got {self.run.precision!r}")
        if self.diffusion.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"diffusion.prediction_type must be 'epsilon' or 'v_prediction', got {self.diffusion.prediction_type!r}"
            )
        for name in ("vae_train", "unet_train"):
            o = getattr(self, name)
            if o.steps < 0 or o.batch_size < 1 or o.grad_accum < 1 or o.batch_size % o.grad_accum:
                raise ValueError(
                    f"{name}: steps must be >= 0 and grad_accum ({o.grad_accum}) must divide batch_size ({o.batch_size})"
                )
        if not 0 <= self.run.stop_at <= self.unet_train.steps:
            raise ValueError(f"run.stop_at must be in [0, unet_train.steps = {self.unet_train.steps}] (0 = off), got "
                             f"{self.run.stop_at}")
        if not 0 <= self.vae_train.style_share <= 1:
            raise ValueError(f"vae_train.style_share must be in [0, 1], got {self.vae_train.style_share}")
        if not 0 <= self.unet_train.caption_dropout <= 1:
            raise ValueError(f"unet_train.caption_dropout must be in [0, 1], got {self.unet_train.caption_dropout}")
        from t2ikit.control.layout import check_gap, check_sides
        from t2ikit.pipeline import check_defaults

        check_defaults(self.export.defaults, "export.defaults")
        try:
            check_sides(self.export.layout_sides)
            check_gap(self.export.layout_gap)
        except ValueError as err:
            raise ValueError(f"export.{err}") from None
        u = self.unet_train
        if u.snr_floor < 0 or (u.snr_floor > 0 and (u.snr_gamma <= 0 or u.snr_floor > u.snr_gamma)):
            raise ValueError(f"unet_train.snr_floor must be in [0, snr_gamma] with min-SNR on (snr_gamma > 0), got "
                             f"{u.snr_floor} with snr_gamma {u.snr_gamma}")
        try:
            check_timestep_range(u.timestep_range, self.diffusion.num_train_timesteps)
        except ValueError as err:
            raise ValueError(f"unet_train.{err}") from None
        if u.snr_floor > 0 and self.diffusion.prediction_type != "v_prediction":
            raise ValueError("unet_train.snr_floor needs diffusion.prediction_type = 'v_prediction': for an epsilon "
                             "target the floored weight is floor / SNR, which diverges at pure noise")
        if self.run.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"run.parallel must be 'ddp' or 'fsdp', got {self.run.parallel!r}")
        lo = self.losses
        if min(lo.text_alignment, lo.image_quality, lo.grounding, lo.relation) < 0:
            raise ValueError(
                "losses.text_alignment, losses.image_quality, losses.grounding and losses.relation must be >= 0, got "
                f"{lo.text_alignment}, {lo.image_quality}, {lo.grounding}, {lo.relation}"
            )
        if not 0 <= lo.relation_margin < 1:
            raise ValueError(f"losses.relation_margin is a fraction of the image side in [0, 1), got {lo.relation_margin}")
        if lo.weighting not in ("fixed", "uncertainty", "gradnorm"):
            raise ValueError(f"losses.weighting must be 'fixed', 'uncertainty' or 'gradnorm', got {lo.weighting!r}")
        if lo.proj_dim < 1 or lo.temperature <= 0 or lo.gradnorm_lr < 0:
            raise ValueError("losses.proj_dim must be >= 1, losses.temperature > 0 and losses.gradnorm_lr >= 0")

        curriculum_from_config(self)  # ValueError naming a bad schedule
        from t2ikit.world.categories import check_mix, get_world

        try:
            get_world(self.world.name)
            if self.curriculum.mix:
                check_mix(self.curriculum.mix, self.world.name)
        except ValueError as err:
            raise ValueError(f"world.name / curriculum.mix: {err}") from None
        if self.checkpoint.every < 1 or self.checkpoint.keep < 1:
            raise ValueError("checkpoint.every and checkpoint.keep must be >= 1")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass `cls` from a nested dict; an unknown key or a wrong type raises ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'} must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ValueError(f"unknown config key {name!r}; allowed keys here: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, name)
        else:
            kwargs[key] = _check_type(value, hint, name)
    return cls(**kwargs)


def _check_type(value, hint, name: str):
    base = typing.get_origin(hint) or hint
    if isinstance(hint, types.UnionType):
        base = tuple(typing.get_args(hint))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (base is int or base is float) and isinstance(value, bool):
        raise ValueError(f"config key {name!r} must be a number, got {value!r}")
    if not isinstance(value, base):
        raise ValueError(f"config key {name!r} must be {getattr(base, '__name__', base)}, got {value!r}")
    return value


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The tables of a TOML file; ValueError (naming `what`) if it is missing or not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{what} {str(path)!r} is not valid TOML: {err}") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML run config; missing keys take the dataclass defaults."""
    return from_dict(TrainConfig, read_toml(path)).validate()


def config_from_json(text: str) -> TrainConfig:
    return from_dict(TrainConfig, json.loads(text)).validate(check_paths=False)
