"""The training noise schedule of a model: what its diffusion loss noises with (add_noise, get_velocity,
alphas_cumprod), built from the model folder's scheduler config (any diffusers scheduler's config)."""

from __future__ import annotations

from diffusers import DDPMScheduler

# The keys of a scheduler config that define the forward process and the prediction target; the rest
# (solver order, timestep spacing, ...) only concern sampling.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas",
                 "prediction_type", "rescale_betas_zero_snr")


def training_scheduler(config: dict) -> DDPMScheduler:
    """A DDPMScheduler on the schedule of `config` (keys missing from it take diffusers' defaults).

    Only the training schedule is kept, so a sampler's config (DPM-Solver++, DDIM, ...) gives the same
    object as the DDPM config it was trained with; clip_sample is off, as the samplers have it.
    """
    return DDPMScheduler(**{k: config[k] for k in SCHEDULE_KEYS if k in config}, clip_sample=False)
