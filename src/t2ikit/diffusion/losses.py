"""The diffusion (denoising) loss, shared by every trainer: the base model's (t2ikit.train) and the adapters'.

    t ~ U{0, ..., T-1},  eps ~ N(0, I),  x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps   (DDPM, Ho et al. 2020)
    loss = mean_b w_b || denoise(x_t, t) - target ||^2,  target = eps or v = sqrt(a_t) eps - sqrt(1 - a_t) x_0

with w_b the min-SNR-gamma weights (Hang et al. 2023) or 1. The draws come from one generator, timesteps
first, then noise, so a training step is a function of its seed, for any data-parallel world size.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "v_prediction")


# ----------------------------------------------------------------------------------------------------
# Draws for a data-parallel shard
# ----------------------------------------------------------------------------------------------------


def global_randn(local_shape, generator: torch.Generator | None, shard: tuple[int, int]) -> torch.Tensor:
    """Normal draws for the whole global batch, rows rank::world: the same numbers for any world size."""
    rank, world = shard
    shape = (local_shape[0] * world, *local_shape[1:])
    return torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)[rank::world]


def global_randint(high: int, local_b: int, generator: torch.Generator, shard: tuple[int, int]) -> torch.Tensor:
    rank, world = shard
    return torch.randint(0, high, (local_b * world,), generator=generator, device=generator.device)[rank::world]


# ----------------------------------------------------------------------------------------------------
# Weighting
# ----------------------------------------------------------------------------------------------------


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep, (B,)."""
    a = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return a / (1 - a).clamp(min=1e-12)


def min_snr_weights(snr_t: torch.Tensor, gamma: float, prediction_type: str, floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, Eq. 9), expressed for an eps or v target.

    In x0 terms the weight is min(SNR, gamma): at the noisiest steps it goes to 0 with the SNR (2e-9 at t = 999
    of the cosine schedule), so nothing trains what the model predicts from pure noise, where the layout is
    chosen. `floor` raises that x0 weight to at least `floor` (1 gives the noisiest steps the weight of the
    plain v loss); 0 is the paper's weighting.
    """
    if gamma <= 0:
        return torch.ones_like(snr_t)
    clipped = torch.minimum(snr_t, torch.full_like(snr_t, gamma)).clamp(min=floor)
    if prediction_type == "epsilon":
        return clipped / snr_t.clamp(min=1e-12)
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1)
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


# ----------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------


def check_timestep_range(timestep_range, num_train_timesteps: int) -> tuple[int, int]:
    """(lo, hi) with 0 <= lo < hi <= num_train_timesteps as ints (None: the whole schedule); ValueError otherwise."""
    if timestep_range is None or len(timestep_range) == 0:
        return 0, num_train_timesteps
    try:
        lo, hi = timestep_range
    except (TypeError, ValueError):
        raise ValueError(f"timestep range must be [lo, hi]; got {timestep_range!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) \
            or not 0 <= lo < hi <= num_train_timesteps:
        raise ValueError(f"timestep range must be integers 0 <= lo < hi <= {num_train_timesteps} (the training "
                         f"timesteps); got {timestep_range!r}")
    return lo, hi


def noised_batch(
    latents: torch.Tensor,  # (B, C, h, w) clean latents x_0
    noise_scheduler,  # a diffusers DDPMScheduler: the training noise schedule (diffusion.schedules)
    generator: torch.Generator,  # draws the timesteps, then the noise
    shard: tuple[int, int] = (0, 1),  # (rank, world): latents are items rank::world of the global batch
    timestep_range: tuple[int, int] | None = None,  # draw t in [lo, hi) only; None = every training timestep
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(timesteps (B,), noisy latents x_t, target): uniform timesteps, the eps or v target of the schedule."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    lo, hi = check_timestep_range(timestep_range, noise_scheduler.config.num_train_timesteps)
    timesteps = (lo + global_randint(hi - lo, latents.shape[0], generator, shard)).to(latents.device)
    noise = global_randn(latents.shape, generator, shard).to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if prediction_type == "v_prediction":
        return timesteps, noisy, noise_scheduler.get_velocity(latents, noise, timesteps)
    return timesteps, noisy, noise


def denoising_loss(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],  # (x_t, t) -> eps or v prediction
    latents: torch.Tensor,  # (B, C, h, w), already multiplied by the VAE scaling factor
    noise_scheduler,  # a diffusers DDPMScheduler: the training noise schedule
    generator: torch.Generator,  # draws timesteps and noise, so a step is a function of its seed
    snr_gamma: float = 0.0,  # min-SNR gamma; 0 = plain MSE over all elements
    snr_floor: float = 0.0,  # lower bound of the min-SNR weight in x0 terms (min_snr_weights' floor)
    shard: tuple[int, int] = (0, 1),  # (rank, world): latents are items rank::world of the global batch
    outputs: dict | None = None,  # when given, filled with pred, noisy, timesteps (for extra loss terms)
    timestep_range: tuple[int, int] | None = None,  # train on t in [lo, hi) only (noised_batch); None = all
) -> torch.Tensor:
    """(Weighted) MSE between denoise(x_t, t) and the eps or v target at uniformly drawn timesteps."""
    timesteps, noisy, target = noised_batch(latents, noise_scheduler, generator, shard, timestep_range)
    pred = denoise(noisy, timesteps)
    if outputs is not None:
        outputs.update(pred=pred, noisy=noisy, timesteps=timesteps)
    if snr_gamma <= 0:
        return F.mse_loss(pred.float(), target.float())
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # (B,)
    weights = min_snr_weights(snr(noise_scheduler.alphas_cumprod, timesteps), snr_gamma,
                              noise_scheduler.config.prediction_type, snr_floor)
    return (weights * per_sample).mean()
