"""DDIM inversion of real images, and the unconditional embeddings that keep it exact under guidance.

    image ─► VAE mean ─► x_0 ─► DDIM run backwards (Song et al. 2021, Eq. 12 with the noise from the
    model at the next timestep) ─► x_T, and the whole trajectory x_T ... x_0.

Sampling x_T forwards with the same deterministic DDIM steps, the same prompt and guidance 1 returns
close to x_0 (how close: `docs/results/edit.md`). With guidance s > 1 the trajectory drifts; two fixes:

- "null-text": Null-text inversion (Mokady et al. 2022, Alg. 1): per step, optimise the unconditional
  embedding so that the guided step from the inverted x_t lands on the inverted x_{t-1}.
- "negative-prompt": Negative-prompt inversion (Miyake et al. 2023): the unconditional embedding is the
  source prompt's own, so cfg(c, c, s) = c and the guided source branch *is* the guidance-1 one. Free.

Levels: a schedule of N steps has timesteps t_0 > ... > t_{N-1} and N + 1 noise levels
alpha_bar(t_0), ..., alpha_bar(t_{N-1}), 1. `trajectory[i]` is the latent at level i: [0] is x_T, [N] is x_0.
The model is always called at t_i; its output is read at the latent's own level, as diffusers'
DDIMScheduler and DDIMInverseScheduler do, so that the two agree (tests/test_inversion.py).

SDXL's UNet also reads added conditioning per row (pooled text, size/crop time ids: t2ikit.models.sdxl): every
pass here takes it beside the text states (`added` for the conditional rows, `uncond_added` for the
unconditional ones; None for SD 1.x / 2.x), and an `Inversion` keeps its prompts' for the edits that follow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from PIL import Image, UnidentifiedImageError
from safetensors.torch import save_file

from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_call, unet_denoiser
from t2ikit.diffusion.guidance import Condition, cfg
from t2ikit.diffusion.loop import progress_bar, sample
from t2ikit.models.memory import check_memory
from t2ikit.text.weighting import DEFAULT_WEIGHTING, check_weighted_prompt, check_weighting, plain_text

UNCOND_MODES = ("none", "null-text", "negative-prompt")
NULL_TEXT_ITERS = 10  # inner Adam steps per timestep (Mokady et al. use 10)
NULL_TEXT_LR = 1e-2  # Adam learning rate, decayed linearly over the steps as in the paper's code
NULL_TEXT_TOL = 1e-5  # stop a step's optimisation once the latent MSE is below this


# ----------------------------------------------------------------------------------------------------
# Images in


def load_image(image, multiple: int = 1) -> torch.Tensor:
    """A path, PIL image, (H, W, 3) array or (3, H, W) / (B, 3, H, W) tensor in [0, 1] -> (B, 3, H, W) float32.

    ValueError if a file cannot be read, or the size is not a positive multiple of `multiple` (the
    model's latent grid times the UNet's downsampling).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"image {str(path)!r} does not exist")
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image {str(path)!r} cannot be read as an image: {err}") from None
    if type(image).__module__.startswith("PIL"):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image: expected an (H, W, 3) array, got shape {image.shape}")
        arr = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        image = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a path, PIL image, numpy array or torch tensor; got {type(image).__name__}")
    x = image[None] if image.ndim == 3 else image
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"image: expected (3, H, W) or (B, 3, H, W), got shape {tuple(image.shape)}")
    x = x.float()
    if not torch.isfinite(x).all() or x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError("image: values must be finite and in [0, 1] (uint8 arrays are divided by 255)")
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"image: size {w}x{h} is not a multiple of {multiple}, which the model needs "
                         f"(resize or crop it to e.g. {max(multiple, w // multiple * multiple)}x"
                         f"{max(multiple, h // multiple * multiple)})")
    return x.clamp(0, 1)


def size_multiple(pipe) -> int:
    """Pixel sizes the model takes are multiples of this: VAE factor times the UNet's downsampling."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)


@torch.no_grad()
def encode_image(pipe, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, C, h, w) latents: the VAE posterior's mean (deterministic), scaled."""
    config = pipe.vae.config
    z = pipe.vae.encode(images.to(pipe.device, pipe.dtype) * 2 - 1).latent_dist.mean
    if getattr(config, "shift_factor", None):
        z = z - config.shift_factor
    return z * config.scaling_factor


# ----------------------------------------------------------------------------------------------------
# The deterministic DDIM schedule and its step, both ways


@dataclass(frozen=True)
class Schedule:
    timesteps: torch.Tensor  # (N,) descending, the model is called at these
    levels: torch.Tensor  # (N + 1,) alpha_bar of each latent level, the last is 1 (clean)
    prediction_type: str  # "epsilon" | "v_prediction" | "sample"

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def ddim_schedule(scheduler_config: dict, steps: int) -> Schedule:
    """The model's noise schedule and timestep spacing, as diffusers' DDIMScheduler sets them."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    sched = DDIMScheduler.from_config({**config, "clip_sample": False, "set_alpha_to_one": True})
    sched.set_timesteps(steps)
    alphas = sched.alphas_cumprod
    levels = torch.cat([alphas[sched.timesteps], torch.ones(1)]).double()
    return Schedule(sched.timesteps.clone(), levels, sched.config.prediction_type)


def split_output(out: torch.Tensor, x: torch.Tensor, alpha: float, prediction_type: str):
    """(eps, x0) from a model output at a latent of level alpha_bar = alpha."""
    a, b = math.sqrt(alpha), math.sqrt(1 - alpha)
    if prediction_type == "epsilon":
        return out, (x - b * out) / a
    if prediction_type == "v_prediction":  # v = a eps - b x0 (Salimans & Ho 2022)
        return a * out + b * x, a * x - b * out
    if prediction_type == "sample":
        return (x - a * out) / b, out
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def ddim_move(out: torch.Tensor, x: torch.Tensor, alpha_from: float, alpha_to: float, prediction_type: str):
    """Deterministic DDIM (eta = 0) from level alpha_from to alpha_to, either direction."""
    eps, x0 = split_output(out, x, alpha_from, prediction_type)
    return math.sqrt(alpha_to) * x0 + math.sqrt(1 - alpha_to) * eps


# ----------------------------------------------------------------------------------------------------
# SDXL's added conditioning, per row


def added_rows(pipe, prompts: list[str], size: tuple[int, int], weighting: str = "none") -> dict | None:
    """SDXL's added_cond_kwargs with one row per prompt (its plain text's pooled embedding, the time ids of an
    image of `size` (H, W)), as generation builds them; None for a model whose UNet reads text states alone."""
    if not getattr(pipe, "is_sdxl", False):
        return None
    return pipe.sdxl_added([plain_text(p, weighting) for p in prompts], tuple(size))


def added_at(added: dict | None, rows) -> dict | None:
    """The rows `rows` (an index tensor or slice) of added conditioning."""
    return None if added is None else {key: value[rows] for key, value in added.items()}


def _text(cond, uncond=None, guidance: float = 1.0, added=None, uncond_added=None, **kwargs) -> Conditioning:
    """Conditioning.text with SDXL's added conditioning of the conditional and the unconditional rows."""
    return Conditioning([Condition(cond, float(guidance), name="text", added=added)], uncond,
                        uncond_added=uncond_added, **kwargs)


def item_noise(shape: tuple[int, ...], batch: int, seed: int | list[int], dim: int = 0) -> torch.Tensor:
    """Standard normal noise of `shape` for each of `batch` items, stacked at `dim`; item b draws from a CPU
    generator seeded `seed + b` (or `seed[b]` for a list), so a batch equals its items edited one by one
    (item b alone with seed + b)."""
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + b for b in range(batch)]
    if len(seeds) != batch:
        raise ValueError(f"item_noise: {len(seeds)} seeds for {batch} items")
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds], dim)


class LevelScheduler:
    """Deterministic DDIM over a Schedule's levels as a scheduler for `t2ikit.diffusion.loop.sample`.

    Forwards, step i moves level i to level i + 1 with the model called at t_i; `inverse=True` runs
    the levels backwards (DDIM inversion: level i + 1 to level i, still at t_i), so inversion is the
    same loop as sampling with another scheduler. A fresh object per run (it has no state but this).
    """

    init_noise_sigma = 1.0

    def __init__(self, schedule: Schedule, inverse: bool = False):
        self.schedule, self.inverse = schedule, inverse
        order = list(reversed(range(schedule.steps))) if inverse else list(range(schedule.steps))
        self._index = {float(schedule.timesteps[i]): i for i in order}
        self.timesteps = schedule.timesteps[order]

    def scale_model_input(self, x: torch.Tensor, t) -> torch.Tensor:
        return x

    def step(self, out: torch.Tensor, t, x: torch.Tensor, return_dict: bool = False):
        i, levels = self._index[float(t)], self.schedule.levels
        a_from, a_to = (float(levels[i + 1]), float(levels[i])) if self.inverse else (float(levels[i]),
                                                                                    float(levels[i + 1]))
        return (ddim_move(out, x, a_from, a_to, self.schedule.prediction_type),)


def ddim_invert(unet, schedule: Schedule, x0: torch.Tensor, cond: torch.Tensor, progress=None,
                added: dict | None = None) -> torch.Tensor:
    """(N + 1, B, C, h, w) trajectory from x_T ([0]) to x0 ([N]), by DDIM steps run backwards (guidance 1).
    `added`: SDXL's added conditioning of `cond`'s rows (module docstring)."""
    traj = [None] * (schedule.steps + 1)
    traj[schedule.steps] = x0

    def record(i, t, x):  # the loop's step i reached level steps - 1 - i
        traj[schedule.steps - 1 - i] = x
        return x

    sample(unet_denoiser(unet), LevelScheduler(schedule, inverse=True), x0,
           _text(cond, added=added, after_step=[record]), progress=progress or False)
    return torch.stack(traj)


def ddim_denoise(unet, schedule: Schedule, noise: torch.Tensor, cond: torch.Tensor, uncond=None,
                 guidance: float = 1.0, controller=None, after_step=None, progress=None,
                 residuals: list[torch.Tensor] | None = None, added: dict | None = None,
                 uncond_added: dict | None = None) -> torch.Tensor:
    """Deterministic DDIM from x_T to x_0 through `t2ikit.diffusion.loop.sample`.

    uncond: None, a (B, T, D) tensor, or a list of one per step (null-text inversion's).
    controller: an installed AttentionController; its clock follows the steps.
    after_step(i, x) -> x: called with the latent at level i + 1 (mask blending).
    residuals: adapter residuals per down level (a sketch or mask adapter holding the edit's structure).
    added, uncond_added: SDXL's added conditioning of the `cond` and the `uncond` rows (module docstring).
    """
    after = [] if after_step is None else [lambda i, t, x: after_step(i, x)]
    c = _text(cond, uncond, guidance, added, uncond_added, residuals=residuals, controller=controller,
              after_step=after)
    return sample(unet_denoiser(unet), LevelScheduler(schedule), noise, c, progress=progress or False)


def null_text_optimize(unet, schedule: Schedule, trajectory: torch.Tensor, cond: torch.Tensor,
                       uncond: torch.Tensor, guidance: float, iters: int = NULL_TEXT_ITERS,
                       lr: float = NULL_TEXT_LR, tol: float = NULL_TEXT_TOL, progress=None, added: dict | None = None,
                       uncond_added: dict | None = None) -> list[torch.Tensor]:
    """Null-text inversion (Mokady et al. 2022, Alg. 1): one optimised (B, T, D) unconditional embedding per step.

    The guided DDIM sampling runs through the loop (`sample`); before each step a latent-update callback
    optimises that step's unconditional embedding (starting from the previous step's) so that the guided
    step lands on the inverted trajectory, and the loop then takes the step with it, evaluating the
    unconditional and conditional predictions as separate UNet calls, as the optimisation does (a batched call
    sums in another order, and the per-step Adam optimisation amplifies that to ~1e-5).
    Batched: the loss is a sum over images and Adam is elementwise, so each image's embedding follows
    its own gradient (early stopping uses the batch's largest error). SDXL: `added` / `uncond_added` ride with the
    conditional / unconditional rows; only the unconditional text states are optimised, its pooled text is kept.
    """
    embeds = [uncond.detach().clone() for _ in range(schedule.steps)]  # step i's is set before step i runs

    def optimise(i, t, x, scheduler):
        a_i, a_next = float(schedule.levels[i]), float(schedule.levels[i + 1])
        target = trajectory[i + 1]
        c_out = unet_call(unet, x, t, cond, added=added)
        u = (embeds[i - 1] if i else embeds[0]).detach().clone().requires_grad_(True)  # a copy: Adam updates u in place
        opt = torch.optim.Adam([u], lr=lr * (1.0 - i / (schedule.steps * 1.0)) + lr * 0.1)
        for _ in range(iters):
            with torch.enable_grad():
                pred = ddim_move(cfg(unet_call(unet, x, t, u, added=uncond_added), c_out, guidance), x, a_i, a_next,
                                 schedule.prediction_type)
                per_image = ((pred - target) ** 2).flatten(1).mean(1)
                if float(per_image.detach().max()) < tol:
                    break
                opt.zero_grad()
                per_image.sum().backward()
                opt.step()
        embeds[i] = u.detach()
        return x

    sample(unet_denoiser(unet), LevelScheduler(schedule), trajectory[0],
           _text(cond, embeds, guidance, added, uncond_added, before_step=[optimise], batch_rows=False),
           progress=progress or False)
    return embeds


# ----------------------------------------------------------------------------------------------------
# The pipeline-level call


@dataclass
class Inversion:
    """An inverted batch: what editing needs to regenerate (and change) the images."""

    trajectory: torch.Tensor  # (N + 1, B, C, h, w): [0] = x_T (the noise), [N] = x_0 (the encoded image)
    schedule: Schedule
    prompts: list[str]
    cond: torch.Tensor  # (B, T, D)
    uncond: list[torch.Tensor] | torch.Tensor | None  # per step (null-text), one tensor, or None (guidance 1)
    guidance: float
    uncond_mode: str
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]: the inverted images
    added: dict | None = None  # SDXL: the prompts' added conditioning (pooled text (B, P), time ids (B, 6)); else None
    uncond_added: dict | None = None  # SDXL: the unconditional rows' (with `uncond`); None without uncond or SDXL

    @property
    def noise(self) -> torch.Tensor:
        return self.trajectory[0]

    def uncond_for(self, rows: torch.Tensor | None = None):
        """The unconditional embeddings (per step or one), optionally gathered at batch `rows`."""
        if self.uncond is None or rows is None:
            return self.uncond
        if isinstance(self.uncond, list):
            return [u[rows] for u in self.uncond]
        return self.uncond[rows]

    def at(self, rows: torch.Tensor) -> Inversion:
        """The inversion of the images at batch `rows` only."""
        return replace(self, trajectory=self.trajectory[:, rows], cond=self.cond[rows], uncond=self.uncond_for(rows),
                       prompts=[self.prompts[b] for b in rows.tolist()], images=self.images[rows],
                       added=added_at(self.added, rows), uncond_added=added_at(self.uncond_added, rows))


def check_guidance(guidance) -> float:
    if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or not math.isfinite(guidance) or guidance < 0:
        raise ValueError(f"guidance must be a finite number >= 0 (1 = none); got {guidance!r}")
    return float(guidance)


def invert(pipe, image, prompt: str | list[str], steps: int = 20, guidance: float = 1.0,
           uncond: str = "null-text", negative_prompt: str = "", null_text_iters: int = NULL_TEXT_ITERS,
           progress: bool = False, weighting: str = DEFAULT_WEIGHTING) -> Inversion:
    """Invert `image` (path, PIL, array, tensor; a batch with a list of prompts) under `prompt`.

    guidance 1: plain DDIM inversion. guidance > 1: the trajectory is inverted unguided (as Mokady et al.
    do) and `uncond` says how guided sampling is kept on it: "null-text", "negative-prompt", or "none".
    `weighting`: the syntax of the prompt and the negative prompt (t2ikit.text.weighting; plain text reads the
    same in every mode).
    """
    guidance = check_guidance(guidance)
    if uncond not in UNCOND_MODES:
        raise ValueError(f"uncond must be one of {', '.join(UNCOND_MODES)}; got {uncond!r}")
    if not isinstance(null_text_iters, int) or null_text_iters < 0:
        raise ValueError(f"null_text_iters must be an int >= 0; got {null_text_iters!r}")
    images = load_image(image, size_multiple(pipe))
    check_memory(pipe, len(images), tuple(images.shape[-2:]), rows_per_image=1, what="invert", encode=True,
                 decode=False, grad=guidance != 1.0 and uncond == "null-text")
    prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(images) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"need one prompt (str) per image: {len(prompts)} prompt(s) for {len(images)} image(s)")
    schedule = ddim_schedule(pipe.scheduler_config, steps)
    check_weighting(list(dict.fromkeys(prompts + [negative_prompt])), weighting)
    for p in dict.fromkeys(prompts):
        check_weighted_prompt(pipe.tokenizer, p, weighting)
    cond = pipe._encode_each(prompts, weighting)
    size = tuple(images.shape[-2:])
    added = added_rows(pipe, prompts, size, weighting)  # SDXL: pooled text and time ids per row; else None
    x0 = encode_image(pipe, images)
    work = schedule.steps * (2 if guidance != 1.0 and uncond == "null-text" else 1)
    with progress_bar(work, progress, "inverting") as update:
        traj = ddim_invert(pipe.unet, schedule, x0, cond, progress=update, added=added)
        embeds = uncond_added = None
        if guidance != 1.0:
            if uncond == "negative-prompt":
                embeds, uncond_added = cond, added
            else:
                negatives = [negative_prompt] * len(prompts)
                embeds = pipe._encode_each(negatives, weighting)
                uncond_added = added_rows(pipe, negatives, size, weighting)
                if uncond == "null-text":
                    embeds = null_text_optimize(pipe.unet, schedule, traj, cond, embeds, guidance,
                                                iters=null_text_iters, progress=update, added=added,
                                                uncond_added=uncond_added)
    return Inversion(traj, schedule, prompts, cond, embeds, guidance, uncond, images, added, uncond_added)


@torch.no_grad()
def reconstruct(pipe, inversion: Inversion, decode: bool = True) -> torch.Tensor:
    """Sample the inverted noise back under its own prompt and guidance: (B, 3, H, W) images (or latents)."""
    z = ddim_denoise(pipe.unet, inversion.schedule, inversion.noise, inversion.cond, inversion.uncond,
                     inversion.guidance, added=inversion.added, uncond_added=inversion.uncond_added)
    return pipe.decode(z) if decode else z


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, cap: float = 60.0) -> torch.Tensor:
    """PSNR in dB per image of (B, 3, H, W) images in [0, 1]; over `mask` (B or 1, 1, H, W) pixels if given."""
    d = (a.float() - b.float()) ** 2
    if mask is None:
        mse = d.flatten(1).mean(1)
    else:
        m = mask.float().expand(a.shape[0], 1, *a.shape[-2:])
        mse = (d * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * a.shape[1]).clamp_min(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-cap / 10)))).clamp(max=cap)


def save_inversion(inversion: Inversion, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write the trajectory, timesteps, levels and embeddings to a .safetensors file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors; got {str(path)!r}")
    tensors = {"latents": inversion.noise, "trajectory": inversion.trajectory, "timesteps": inversion.schedule.timesteps,
               "levels": inversion.schedule.levels, "cond": inversion.cond}
    if isinstance(inversion.uncond, list):
        tensors["uncond"] = torch.stack(inversion.uncond)  # (N, B, T, D)
    elif inversion.uncond is not None:
        tensors["uncond"] = inversion.uncond
    if inversion.added is not None:  # SDXL: what its UNet read besides the text states
        tensors["pooled"], tensors["time_ids"] = inversion.added["text_embeds"], inversion.added["time_ids"]
    if inversion.uncond_added is not None:
        tensors["uncond_pooled"] = inversion.uncond_added["text_embeds"]
    meta = {"prompts": "\n".join(inversion.prompts), "guidance": str(inversion.guidance),
            "uncond_mode": inversion.uncond_mode, "prediction_type": inversion.schedule.prediction_type,
            **{k: str(v) for k, v in (metadata or {}).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().clone().contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    return path


__all__ = ["Inversion", "LevelScheduler", "Schedule", "added_at", "added_rows", "ddim_denoise",
           "ddim_invert", "item_noise", "ddim_move", "ddim_schedule", "encode_image", "invert", "load_image",
           "null_text_optimize", "psnr", "reconstruct", "save_inversion", "size_multiple"]
