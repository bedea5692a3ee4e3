"""Reward fine-tuning with the Shapes World oracle: policy-gradient training of a model's UNet (GRPO / DDPO).

    t2ikit train --config configs/shapes-rl.toml [--out DIR] [--resume] [--time-limit MIN] [--stop-at K]

Each iteration k:
1. draws `prompts` statements of the CompBench categories from the *train* split (`world.categories.sample_spec`;
   the held-out colour-shape pairs of `world.vocab.HELD_OUT` never appear) and words them (`write_caption`);
2. samples a group of `group` images per prompt with a stochastic sampler through the one loop
   (`diffusion.loop.sample`): DDIM with eta > 0 (Song et al. 2021, Eq. 12) on a short schedule, under classifier-free
   guidance, recording every step's latent and the Gaussian log-prob of the step taken (`PolicyScheduler`);
3. scores every image with the oracle (`world.oracle.score`) and turns the checks into advantages normalised
   within each group (GRPO, Shao et al. 2024): per check ("check": every check of the prompt normalised over the
   group, then averaged, so a check most samples miss weighs as much as one most pass) or on the fraction of
   checks passed ("score");
4. updates the UNet on `train_steps` of the recorded denoising steps with the clipped objective of PPO (Schulman
   et al. 2017) on the ratio of the step's log-prob under the current and the sampling UNet (DDPO, Black et al.
   2023), plus `beta` times the mean squared difference between the guided prediction of the UNet and of the
   frozen initial UNet on the same latents: an anchor against drifting away from what the model could draw.

Every draw of iteration k comes from generators seeded by (seed, k) and the learning rate is constant, so a run
killed (even with kill -9) and resumed from its last checkpoint (`train.checkpoint`: atomic, safetensors) reaches
the weights of the uninterrupted run bit for bit on one machine and thread count. The log (`OUT/log.jsonl`) holds
one record per iteration: reward per category and per check kind, the share of images passing every check, the
diversity of each group (mean pairwise RMS distance of its images, pixels and latents: a collapse shows as a fall),
the objective's parts, approximate KL and clip fraction; every `eval.every` iterations CompBench of the current
UNet on the train and held-out splits, with the plain sampler and with the model's default relation guidance.
The run ends by exporting a model folder (`OUT/model`, fp16 safetensors) that loads like the shipped one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from t2ikit.bench.progress import bar, summary, write
from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_denoiser
from t2ikit.diffusion.loop import initial_noise, sample
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import PLAIN, T2IPipeline
from t2ikit.train import checkpoint as ckpt
from t2ikit.train.config import from_dict, read_toml
from t2ikit.world import vocab
from t2ikit.world.caption import write_caption
from t2ikit.world.categories import CATEGORIES, sample_spec
from t2ikit.world.oracle import score

ADVANTAGES = ("check", "score")
STAGE = "reward"

# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


@dataclass
class RewardEvalConfig:
    every: int = 0  # iterations between CompBench evaluations (and one at the end); 0 = never
    splits: list = field(default_factory=lambda: ["train", "heldout"])  # CompBench splits to run
    categories: list = field(default_factory=list)  # CompBench categories; [] = all of world.categories.CATEGORIES
    n_prompts: int = 2  # prompts per category
    seeds: int = 2  # images per prompt (>= 2 also measures the diversity among a prompt's images)
    steps: int = 20  # sampler steps (the model's default sampler and guidance)
    guided: bool = True  # also run with the model's default relation guidance beside the plain sampler (0)


@dataclass
class RewardConfig:
    model: str = ""  # model folder to fine-tune ([model] init); "" = the shipped model
    out: str = "runs/rl"  # run folder: checkpoints/, log.jsonl, model/ (overridden by --out)
    seed: int = 0  # seeds every prompt, noise and timestep draw (iteration k: generators of (seed, k))
    threads: int = 1  # torch CPU threads (results are bitwise reproducible for a fixed count)
    iterations: int = 100  # sample-then-update rounds
    prompts: int = 2  # prompts per iteration
    group: int = 4  # images per prompt (G); advantages are normalised within a prompt's group
    mix: dict = field(default_factory=dict)  # CompBench category -> weight of the prompts; {} = every category alike
    size: int = 0  # image side in pixels while sampling and evaluating; 0 = the model's default
    sample_steps: int = 10  # denoising steps of the stochastic sampler
    eta: float = 1.0  # DDIM eta: 0 is deterministic (no log-prob), 1 is DDPM's ancestral variance
    guidance: float = 0.0  # classifier-free guidance while sampling and in the log-prob; 0 = the model's default
    train_steps: int = 2  # recorded denoising steps per iteration the objective trains on (drawn per iteration)
    epochs: int = 1  # passes of the objective over an iteration's samples
    minibatch: int = 0  # samples per optimizer step; 0 = all of the iteration's (prompts * group)
    advantage: str = "check"  # "check": group-normalised per check, then averaged; "score": fraction passed
    adv_clip: float = 5.0  # advantages clipped to [-adv_clip, adv_clip]
    clip: float = 1e-4  # PPO clip range of the ratio (DDPO's value for per-element mean log-probs)
    beta: float = 0.1  # weight of the anchor: MSE between the UNet's and the frozen initial UNet's guided predictions
    lr: float = 1e-5  # AdamW learning rate (constant)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    checkpoint_every: int = 1  # iterations between checkpoints (and one at the end)
    keep: int = 2  # complete checkpoints kept
    time_limit_min: float = 0.0  # > 0: after this many minutes, checkpoint, export and stop (--resume continues)
    stop_at: int = 0  # > 0: checkpoint, export and stop after this iteration
    progress: bool = True  # a bar over iterations and one line per iteration on stderr
    export_dir: str = "model"  # export folder, relative to out unless absolute
    export_fp16: bool = True  # weights saved in float16 (loaded in the model's dtype: it only halves the files)
    export_at_end: bool = True  # export the model folder when the run ends or stops
    eval: RewardEvalConfig = field(default_factory=RewardEvalConfig)

    def validate(self) -> RewardConfig:
        for name in ("iterations", "prompts", "group", "sample_steps", "train_steps", "epochs", "threads", "keep",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"reward.{name} must be >= 1, got {getattr(self, name)}")
        if self.group < 2:
            raise ValueError(f"reward.group must be >= 2 (advantages are normalised within a group), got {self.group}")
        if not 0 < self.eta <= 1:
            raise ValueError(f"reward.eta must be in (0, 1]: eta = 0 is deterministic and has no log-prob; got "
                             f"{self.eta}")
        if self.train_steps > self.sample_steps - 1:
            raise ValueError(f"reward.train_steps = {self.train_steps} exceeds the {self.sample_steps - 1} stochastic "
                             f"steps of a {self.sample_steps}-step sampler (its last step is deterministic)")
        if self.minibatch < 0 or self.minibatch > self.prompts * self.group:
            raise ValueError(f"reward.minibatch must be in [0, prompts * group = {self.prompts * self.group}], got "
                             f"{self.minibatch}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"reward.advantage must be one of {', '.join(ADVANTAGES)}; got {self.advantage!r}")
        for name in ("adv_clip", "clip", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"reward.{name} must be > 0, got {getattr(self, name)}")
        for name in ("beta", "weight_decay", "grad_clip", "guidance", "time_limit_min", "size"):
            if getattr(self, name) < 0:
                raise ValueError(f"reward.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.stop_at <= self.iterations:
            raise ValueError(f"reward.stop_at must be in [0, iterations = {self.iterations}] (0 = off), got "
                             f"{self.stop_at}")
        check_mix(self.mix)
        e = self.eval
        if e.every < 0 or e.n_prompts < 1 or e.seeds < 1 or e.steps < 1:
            raise ValueError("reward.eval: every must be >= 0 and n_prompts, seeds, steps >= 1")
        bad = [s for s in e.splits if s not in ("train", "heldout")]
        if bad or not e.splits:
            raise ValueError(f"reward.eval.splits must name 'train' and/or 'heldout', got {e.splits}")
        unknown = [c for c in e.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"reward.eval.categories: unknown {unknown}; allowed: {', '.join(CATEGORIES)}")
        if self.model and not (Path(self.model) / "model_index.json").is_file():
            raise ValueError(f"reward.model={self.model!r} is not a model folder (no model_index.json there)")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


# What a resumed run must share with the run that wrote the checkpoint: everything that changes its trajectory.
TRAJECTORY_KEYS = ("model", "seed", "prompts", "group", "mix", "size", "sample_steps", "eta", "guidance", "train_steps",
                   "epochs", "minibatch", "advantage", "adv_clip", "clip", "beta", "lr", "weight_decay", "grad_clip")


def check_mix(mix: dict) -> dict[str, float]:
    """Category -> weight of the training prompts: CompBench categories only, weights >= 0, not all 0."""
    unknown = sorted(set(mix) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"reward.mix: unknown categories {unknown}; allowed: {', '.join(CATEGORIES)}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in mix.values()):
        raise ValueError(f"reward.mix weights must be numbers >= 0, got {mix}")
    if mix and not sum(mix.values()) > 0:
        raise ValueError(f"reward.mix weights must not all be 0, got {mix}")
    return {k: float(v) for k, v in mix.items()} if mix else {c: 1.0 for c in CATEGORIES}


def is_reward_config(path: str | Path) -> bool:
    return "reward" in read_toml(path)


def load_reward_config(path: str | Path, overrides: dict | None = None) -> RewardConfig:
    """The `[reward]` table (with `[reward.eval]`) of a TOML run config; unknown keys and other tables are errors."""
    data = read_toml(path)
    extra = sorted(set(data) - {"reward"})
    if extra or "reward" not in data:
        raise ValueError(f"{path}: a reward run config holds one table, [reward] (and [reward.eval]); found "
                         f"{sorted(data)}")
    table = {**data["reward"], **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return from_dict(RewardConfig, table, "reward").validate()


# ----------------------------------------------------------------------------------------------------
# The stochastic sampler and its log-prob (pure functions, then the scheduler the loop runs)
# ----------------------------------------------------------------------------------------------------


def ddim_step(pred: torch.Tensor, x: torch.Tensor, alpha: float, alpha_prev: float, eta: float,
              prediction_type: str) -> tuple[torch.Tensor, float]:
    """(mean, std) of x_prev given x_t: DDIM with stochasticity eta, Song et al. 2021, Eq. 12 (no clipping)."""
    if prediction_type == "v_prediction":
        x0 = alpha**0.5 * x - (1 - alpha) ** 0.5 * pred
        eps = alpha**0.5 * pred + (1 - alpha) ** 0.5 * x
    elif prediction_type == "epsilon":
        eps = pred
        x0 = (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    else:
        raise ValueError(f"prediction type {prediction_type!r} is not supported (epsilon, v_prediction)")
    variance = (1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)  # sigma_t^2 at eta = 1 (DDPM's)
    std = eta * max(variance, 0.0) ** 0.5
    mean = alpha_prev**0.5 * x0 + max(1 - alpha_prev - std**2, 0.0) ** 0.5 * eps
    return mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """(N,) log N(x; mean, std^2 I) averaged over the elements of each row (DDPO's per-element mean)."""
    lp = -((x.float() - mean.float()) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return lp.mean(dim=tuple(range(1, x.ndim)))


class PolicyScheduler:
    """DDIM with eta > 0 on `steps` trailing timesteps of a model's training schedule, for `loop.sample`: each step
    draws x_prev ~ N(mean, std^2) with the row's own generator and records (x_t, x_prev, log-prob)."""

    init_noise_sigma = 1.0

    def __init__(self, scheduler_config: dict, steps: int, eta: float, device="cpu"):
        train = training_scheduler(scheduler_config)
        self.alphas = train.alphas_cumprod.double()
        self.prediction_type = train.config.prediction_type
        n = train.config.num_train_timesteps
        # "trailing" spacing: the first step starts at the noisiest training timestep (as the shipped sampler does)
        self.timesteps = torch.from_numpy(np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1).to(device)
        self.eta = eta
        self.records: list[dict] = []

    def alpha_pair(self, i: int) -> tuple[float, float]:
        """(alpha_bar at step i's timestep, at the next one; 1 after the last step)."""
        t = int(self.timesteps[i])
        prev = int(self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else -1
        return float(self.alphas[t]), float(self.alphas[prev]) if prev >= 0 else 1.0

    def scale_model_input(self, x: torch.Tensor, t) -> torch.Tensor:
        return x

    def step(self, pred: torch.Tensor, t, x: torch.Tensor, generator=None, return_dict: bool = False):
        i = len(self.records)
        alpha, alpha_prev = self.alpha_pair(i)
        mean, std = ddim_step(pred.float(), x.float(), alpha, alpha_prev, self.eta, self.prediction_type)
        if std > 0:
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
            prev = mean + std * noise
            log_prob = gaussian_log_prob(prev, mean, std)
        else:  # the last step lands on the predicted x0: nothing drawn, nothing to train
            prev, log_prob = mean, torch.zeros(x.shape[0])
        self.records.append({"x": x.float().cpu(), "prev": prev.cpu(), "log_prob": log_prob.cpu(), "std": std})
        return (prev.to(x.dtype),)


# ----------------------------------------------------------------------------------------------------
# Rewards and advantages
# ----------------------------------------------------------------------------------------------------


def group_advantages(passed: np.ndarray, how: str, eps: float = 1e-4) -> np.ndarray:
    """(G,) advantages of a group from its (G, J) pass matrix (every image of a prompt has the same J checks).

    "score": r_i = fraction of checks passed, A_i = (r_i - mean r) / (std r + eps) (GRPO).
    "check": each check normalised over the group, (p_ij - mean_j) / (std_j + eps), then averaged over j.
    A group whose images all score alike gets zero advantages: it says nothing about what to change."""
    p = passed.astype(np.float64)
    if how == "score":
        r = p.mean(axis=1)
        return (r - r.mean()) / (r.std() + eps)
    if how == "check":
        return ((p - p.mean(axis=0)) / (p.std(axis=0) + eps)).mean(axis=1)
    raise ValueError(f"unknown advantage {how!r}; allowed: {', '.join(ADVANTAGES)}")


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean over pairs (i < j) of the RMS difference between rows of x (G, ...): 0 when a group has collapsed."""
    flat = x.reshape(x.shape[0], -1).double()
    d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    g = x.shape[0]
    return float(d.sum() / (g * (g - 1))) if g > 1 else 0.0


def draw_prompts(seed: int, iteration: int, n: int, mix: dict[str, float]) -> list[tuple[str, str, object]]:
    """n (category, caption, spec) of the train split for an iteration: a pure function of (seed, iteration)."""
    rng = np.random.default_rng([seed, iteration, 0])
    names = list(mix)
    p = np.asarray([mix[k] for k in names]) / sum(mix.values())
    out = []
    for _ in range(n):
        category = names[int(rng.choice(len(names), p=p))]
        spec = sample_spec(rng, category, split="train")
        if any((g.colour, g.shape) in vocab.HELD_OUT for g in spec.groups):  # sample_spec's promise, held here too
            raise RuntimeError(f"a training prompt holds a held-out colour-shape pair: {spec}")
        out.append((category, write_caption(spec, rng), spec))
    return out


def image_seed(seed: int, iteration: int, j: int) -> int:
    return (seed * 1_000_003 + iteration * 10_007 + j) % (2**63)


# ----------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------


class RewardTrainer:
    """The policy (the model's UNet), its frozen reference, the optimizer and the iteration count."""

    def __init__(
        self,
        config: RewardConfig,  # the resolved run config
        out: str | Path | None = None,  # run folder; default config.out
        scorer=score,  # (image (3, H, W) in [0, 1], spec) -> oracle Score; tests give a stand-in a random model passes
    ):
        self.cfg = config.validate()
        self.scorer = scorer
        self.out = Path(out if out is not None else config.out)
        torch.set_num_threads(config.threads)
        self.model_path = Path(config.model) if config.model else shipped_model_path()
        record = self.model_path / "t2ikit_train_config.json"  # a t2ikit-trained folder records its UNet's fusion
        fusion = json.loads(record.read_text()).get("model", {}).get("fusion") if record.is_file() else None
        if fusion not in (None, "sequential"):
            raise ValueError(f"reward.model={str(self.model_path)!r} has a {fusion!r}-fusion UNet; reward fine-tuning "
                             "exports stock diffusers UNets only (sequential fusion)")
        self.pipe = T2IPipeline.from_folder(self.model_path, device="cpu", dtype="fp32")
        self.unet = self.pipe.unet  # the policy: the pipeline generates (and evaluates) with the weights it trains
        self.reference = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.unet.requires_grad_(True)
        self.guidance = config.guidance or float(self.pipe.defaults["guidance"])
        self.mix = check_mix(config.mix)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.iteration = 0
        with torch.no_grad():
            self.empty = self.pipe.encode_text([""])  # (1, T, D) unconditional states

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    # -- one iteration -------------------------------------------------------------------------------

    @torch.no_grad()
    def collect(self, iteration: int) -> dict:
        """Sample the groups of an iteration through the one loop, recording every step; score with the oracle."""
        c = self.cfg
        drawn = draw_prompts(c.seed, iteration, c.prompts, self.mix)
        captions = [caption for _, caption, _ in drawn for _ in range(c.group)]  # prompt-major, G per prompt
        n = len(captions)
        seeds = [image_seed(c.seed, iteration, j) for j in range(n)]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        cond = self.pipe.encode_text([caption for _, caption, _ in drawn])  # (P, T, D)
        cond = cond.repeat_interleave(c.group, dim=0)  # (N, T, D)
        uncond = self.empty.expand(n, -1, -1)
        scheduler = PolicyScheduler(self.pipe.scheduler_config, c.sample_steps, c.eta)
        noise = initial_noise((n, self.unet.config.in_channels, *self._latent_hw()), generators, "cpu", torch.float32)
        self.unet.eval()
        latents = sample(unet_denoiser(self.unet), scheduler, noise, Conditioning.text(cond, uncond, self.guidance),
                         generators, progress=False)
        images = self.pipe.decode(latents)  # (N, 3, H, W) in [0, 1]
        passed, kinds, all_passed = [], [], []
        for j, image in enumerate(images):
            s = self.scorer(image, drawn[j // c.group][2])
            passed.append([ch.passed for ch in s.checks])
            kinds.append([ch.kind for ch in s.checks])
            all_passed.append(s.all_passed)
        advantages = np.concatenate([group_advantages(np.asarray(passed[p * c.group:(p + 1) * c.group]), c.advantage)
                                     for p in range(c.prompts)])
        advantages = np.clip(advantages, -c.adv_clip, c.adv_clip)
        return {"drawn": drawn, "cond": cond, "uncond": uncond, "records": scheduler.records, "scheduler": scheduler,
                "latents": latents, "images": images, "passed": passed, "kinds": kinds, "all_passed": all_passed,
                "advantages": torch.tensor(advantages, dtype=torch.float32)}

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.cfg.size, self.cfg.size) if self.cfg.size else self.pipe.default_size

    def _latent_hw(self) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        if self.image_size[0] % f or self.image_size[1] % f:
            raise ValueError(f"reward.size={self.cfg.size} is not a multiple of the VAE factor {f}")
        return self.image_size[0] // f, self.image_size[1] // f

    def guided(self, unet, x: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, i: int) -> torch.Tensor:
        """The guided prediction the sampler stepped with (the same denoiser, the same batch layout)."""
        return unet_denoiser(unet)(x, t, Conditioning.text(cond, uncond, self.guidance), i, self.cfg.sample_steps)

    def update(self, iteration: int, batch: dict) -> dict:
        """The clipped objective (+ anchor) on `train_steps` recorded steps of every sample; returns its statistics."""
        c = self.cfg
        gen = torch.Generator().manual_seed(image_seed(c.seed, iteration, 10**6))
        stochastic = [i for i, r in enumerate(batch["records"]) if r["std"] > 0]
        chosen = sorted(stochastic[int(k)] for k in torch.randperm(len(stochastic), generator=gen)[:c.train_steps])
        n = len(batch["advantages"])
        size = c.minibatch or n
        stats: dict[str, list[float]] = {}
        self.unet.train()
        scheduler = batch["scheduler"]
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, size):
                rows = order[start:start + size]
                adv = batch["advantages"][rows]
                self.optimizer.zero_grad(set_to_none=True)
                for i in chosen:
                    r = batch["records"][i]
                    t = scheduler.timesteps[i]
                    x, cond, uncond = r["x"][rows], batch["cond"][rows], batch["uncond"][rows]
                    pred = self.guided(self.unet, x, t, cond, uncond, i)
                    alpha, alpha_prev = scheduler.alpha_pair(i)
                    mean, std = ddim_step(pred.float(), x, alpha, alpha_prev, c.eta, scheduler.prediction_type)
                    log_prob = gaussian_log_prob(r["prev"][rows], mean, std)
                    ratio = torch.exp(log_prob - r["log_prob"][rows])
                    policy = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - c.clip, 1 + c.clip)).mean()
                    with torch.no_grad():
                        ref = self.guided(self.reference, x, t, cond, uncond, i)
                    anchor = (pred.float() - ref.float()).pow(2).mean()
                    loss = (policy + c.beta * anchor) / len(chosen)
                    loss.backward()
                    with torch.no_grad():
                        delta = log_prob - r["log_prob"][rows]
                        for key, value in (("policy_loss", policy), ("anchor", anchor),
                                           ("approx_kl", 0.5 * (delta**2).mean()),
                                           ("clip_fraction", ((ratio - 1).abs() > c.clip).float().mean())):
                            stats.setdefault(key, []).append(float(value))
                params = [p for p in self.unet.parameters() if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, c.grad_clip if c.grad_clip > 0 else float("inf"))
                stats.setdefault("grad_norm", []).append(float(norm))
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.unet.eval()
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["trained_timesteps"] = [int(scheduler.timesteps[i]) for i in chosen]
        return out

    # -- records -------------------------------------------------------------------------------------

    def iteration_record(self, batch: dict) -> dict:
        """Reward per category and per check kind, pass-all rate, group diversity (pixels and latents)."""
        c = self.cfg
        per_category: dict[str, dict[str, list[float]]] = {}
        kinds: dict[str, list[int]] = {}
        for j, (passed, kind, ok) in enumerate(zip(batch["passed"], batch["kinds"], batch["all_passed"])):
            category = batch["drawn"][j // c.group][0]
            entry = per_category.setdefault(category, {"reward": [], "all_passed": []})
            entry["reward"].append(float(np.mean(passed)) if passed else 1.0)
            entry["all_passed"].append(float(ok))
            for k, p in zip(kind, passed):
                kinds.setdefault(k, []).append(int(p))
        groups = range(c.prompts)
        g = c.group
        rewards = [r for e in per_category.values() for r in e["reward"]]
        return {
            "reward": float(np.mean(rewards)),
            "all_passed": float(np.mean(batch["all_passed"])),
            "reward_per_category": {k: float(np.mean(v["reward"])) for k, v in sorted(per_category.items())},
            "all_passed_per_category": {k: float(np.mean(v["all_passed"])) for k, v in sorted(per_category.items())},
            "checks": {k: float(np.mean(v)) for k, v in sorted(kinds.items())},
            "diversity_pixels": float(np.mean([mean_pairwise_distance(batch["images"][p * g:(p + 1) * g])
                                               for p in groups])),
            "diversity_latents": float(np.mean([mean_pairwise_distance(batch["latents"][p * g:(p + 1) * g])
                                                for p in groups])),
            "prompts": [[category, caption] for category, caption, _ in batch["drawn"]],
        }

    def log(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), **record}) + "\n")

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, iteration: int) -> dict:
        """CompBench of the current UNet on each split, plain sampler and (when the model has one) its default
        relation guidance, with the diversity among each prompt's seeds."""
        from t2ikit.bench.compbench import make_suite, run

        e = self.cfg.eval
        self.unet.requires_grad_(False)  # relation guidance differentiates the latents, never the weights
        record: dict = {"event": "eval", "iteration": iteration}
        try:
            default_rg = float(self.pipe.defaults["relation_guidance"])
            modes = {"plain": 0.0, **({"guided": default_rg} if e.guided and default_rg > 0 else {})}
            for split in e.splits:
                suite = make_suite(split, e.n_prompts, e.seeds, e.categories or CATEGORIES)
                for mode, rg in modes.items():
                    images: dict[str, list[torch.Tensor]] = {}

                    def generate(prompts, seeds, rg=rg, images=images):
                        settings = PLAIN if rg == 0 else {"relation_guidance": rg}  # plain, or the model's default
                        spec = self.pipe.make_spec(list(prompts), steps=e.steps, size=self.image_size, **settings)
                        out = self.pipe.run(spec, progress=False, seeds=[int(s) for s in seeds]).images
                        for prompt, image in zip(prompts, out):
                            images.setdefault(prompt, []).append(image)
                        return list(out)

                    result = run(suite, generate)
                    diversity = [mean_pairwise_distance(torch.stack(v)) for v in images.values() if len(v) > 1]
                    record[f"{split}_{mode}"] = {
                        "overall": result["overall"]["accuracy"],
                        "mean_category": result["mean_category_accuracy"],
                        "per_category": {k: v["accuracy"] for k, v in result["per_category"].items()},
                        "diversity_pixels": float(np.mean(diversity)) if diversity else None,
                        "n": result["overall"]["n"]}
        finally:
            self.unet.requires_grad_(True)
        self.log(record)
        return record

    # -- checkpoints ---------------------------------------------------------------------------------

    def save(self) -> Path:
        otensors, ometa = ckpt.optimizer_to_flat(self.optimizer)
        tensors = {**{f"model.unet.{k}": v for k, v in self.unet.state_dict().items()}, **otensors}
        state = {"stage": STAGE, "step": self.iteration, "optimizer": ometa}
        name = ckpt.checkpoint_name(0, STAGE, self.iteration)
        path = ckpt.save_checkpoint(self.checkpoint_dir, name, tensors, state, self.cfg.to_json(), self.cfg.keep)
        self.log({"event": "checkpoint", "iteration": self.iteration, "path": str(path)})
        return path

    def load(self, path: str | Path) -> None:
        tensors, state, config_json = ckpt.load_checkpoint(path)
        saved = json.loads(config_json)
        mine = dataclasses.asdict(self.cfg)
        differs = sorted(k for k in TRAJECTORY_KEYS if saved.get(k) != mine[k])
        if state.get("stage") != STAGE or differs:
            raise ValueError(f"cannot resume from {str(path)!r}: it is not a checkpoint of this reward run "
                             f"(differs in {differs or 'stage'})")
        part = {k[len("model.unet."):]: v for k, v in tensors.items() if k.startswith("model.unet.")}
        missing, unexpected = self.unet.load_state_dict(part, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {str(path)!r} does not match the model's UNet: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        ckpt.optimizer_from_flat(self.optimizer, tensors, state["optimizer"])
        self.iteration = int(state["step"])
        self.log({"event": "resume", "iteration": self.iteration, "path": str(path)})

    # -- export --------------------------------------------------------------------------------------

    def export(self, out_dir: str | Path | None = None, fp16: bool | None = None) -> Path:
        """A model folder of the fine-tuned UNet beside the init folder's VAE, text encoder, tokenizer, scheduler
        and t2ikit.json (defaults, parser), like the trainer's export."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        from t2ikit.train.export import export_pipeline

        if out_dir is None:
            out_dir = Path(self.cfg.export_dir) if Path(self.cfg.export_dir).is_absolute() else \
                self.out / self.cfg.export_dir
        sd = StableDiffusionPipeline(  # copies: export_pipeline casts to fp16 in place
            vae=copy.deepcopy(self.pipe.vae), text_encoder=copy.deepcopy(self.pipe.text_encoder),
            tokenizer=self.pipe.tokenizer, unet=copy.deepcopy(self.unet).requires_grad_(False).eval(),
            scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),  # replaced by the init folder's config below
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        path = export_pipeline(sd, out_dir, self.cfg.export_fp16 if fp16 is None else fp16)
        shutil.copyfile(self.model_path / "scheduler" / "scheduler_config.json",
                        path / "scheduler" / "scheduler_config.json")  # the init folder's sampler, not a stand-in
        for name in ("t2ikit.json", "t2ikit_train_config.json"):  # defaults and parser; how the base was trained
            if (self.model_path / name).is_file():
                shutil.copyfile(self.model_path / name, path / name)
        (path / "t2ikit_reward_config.json").write_text(json.dumps(
            {**dataclasses.asdict(self.cfg), "init": str(self.model_path.resolve()), "iteration": self.iteration},
            indent=1))
        self.log({"event": "export", "iteration": self.iteration, "path": str(path)})
        return path

    # -- run -----------------------------------------------------------------------------------------

    def run(self, resume: str | None = None) -> Path:
        """Train from the start or from a checkpoint ("latest" or a folder); export; returns the model folder (the
        checkpoint folder without export_at_end)."""
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(c.to_json())
        if resume:
            self.load(ckpt.resolve_checkpoint(self.checkpoint_dir, resume))
        start = time.monotonic()
        iterations = bar(total=c.iterations, desc="reward fine-tune", enabled=c.progress, unit="iter")
        iterations.update(self.iteration)
        while self.iteration < c.iterations:
            k = self.iteration
            t0 = time.perf_counter()
            batch = self.collect(k)
            t1 = time.perf_counter()
            stats = self.update(k, batch)
            t2 = time.perf_counter()
            self.iteration = k + 1
            record = {"event": "iteration", "iteration": self.iteration, **self.iteration_record(batch), **stats,
                      "seconds_sample": round(t1 - t0, 2), "seconds_update": round(t2 - t1, 2)}
            self.log(record)
            iterations.update()
            if c.progress:
                write(f"iteration {self.iteration}/{c.iterations}: reward {record['reward']:.3f}, all passed "
                      f"{record['all_passed']:.2f}, diversity {record['diversity_pixels']:.3f}, "
                      f"kl {record['approx_kl']:.2e} ({t2 - t0:.0f} s)")
            out_of_time = c.time_limit_min > 0 and time.monotonic() - start > c.time_limit_min * 60
            stop_here = self.iteration == c.stop_at
            last = self.iteration == c.iterations
            if self.iteration % c.checkpoint_every == 0 or last or out_of_time or stop_here:
                self.save()
            if c.eval.every and (self.iteration % c.eval.every == 0 or last):
                self.evaluate(self.iteration)
            if out_of_time or stop_here:
                self.log({"event": "time_limit" if out_of_time else "stop_at", "iteration": self.iteration})
                break
        iterations.close()
        path = self.export() if c.export_at_end else self.checkpoint_dir
        summary(f"reward fine-tune: iteration {self.iteration}/{c.iterations} in {time.monotonic() - start:.0f} s; "
                f"wrote {path}", c.progress)
        return path


def run(config: RewardConfig, out: str | Path | None = None, resume: str | None = None) -> Path:
    """Train (or resume) the reward run of `config`; returns the exported model folder."""
    return RewardTrainer(config, out).run(resume=resume)


__all__ = ["PolicyScheduler", "RewardConfig", "RewardEvalConfig", "RewardTrainer", "ddim_step", "draw_prompts",
           "gaussian_log_prob", "group_advantages", "is_reward_config", "load_reward_config",
           "mean_pairwise_distance", "run"]
