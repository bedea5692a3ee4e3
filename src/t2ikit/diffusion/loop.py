"""The denoising loop: the only one in t2ikit. Generation, inversion and every edit method run through it.

    sample(denoiser, scheduler, noise, conditioning)

A denoiser (t2ikit.diffusion.denoisers) maps (x, t, conditioning, step, num_steps) to a prediction,
guidance included; latent updates run before each step (`Conditioning.before_step`) and after it
(`Conditioning.after_step`); attention hooks ride on the processor stack (`Conditioning.controller`).
A scheduler is a diffusers scheduler with its timesteps set, or anything with the same four members
(`timesteps`, `init_noise_sigma`, `scale_model_input`, `step`): DDIM inversion is the same loop with
the DDIM step run backwards (t2ikit.diffusion.inversion.LevelScheduler).
"""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager

import torch
from diffusers.utils.torch_utils import randn_tensor

from t2ikit.diffusion.conditioning import Conditioning


@contextmanager
def progress_bar(total: int, enabled: bool = True, desc: str = "sampling"):
    """tqdm on stderr if installed, else a one-line counter on stderr; `enabled=False` prints nothing."""
    if not enabled:
        yield lambda: None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        done = [0]

        def update():
            done[0] += 1
            print(f"\r{desc}: {done[0]}/{total}", end="" if done[0] < total else "\n", file=sys.stderr, flush=True)

        yield update
        return
    with tqdm(total=total, desc=desc, file=sys.stderr, leave=False) as bar:
        yield bar.update


def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """(N, C, h, w) Gaussian noise, row i drawn from `generators[i]` alone: a batch equals its items."""
    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for {shape[0]} images")
    return randn_tensor(shape, generator=generators, device=torch.device(device), dtype=dtype)


@torch.no_grad()
def sample(
    denoiser,  # (x, t, conditioning, step, num_steps) -> prediction (t2ikit.diffusion.denoisers)
    scheduler,  # timesteps already set (scheduler.set_timesteps)
    noise: torch.Tensor,  # (N, C, h, w): unit Gaussian for generation, the start latent for inversion
    c: Conditioning,
    generators: list[torch.Generator] | None = None,  # per image, for stochastic samplers' step noise
    progress=True,  # bool (a bar on stderr) or a callable called once per step (an outer bar's update)
    callback=None,  # callback(i, t, latents) after every step
) -> torch.Tensor:
    """Run `denoiser` over the scheduler's timesteps from `noise` to clean latents (module docstring)."""
    timesteps = scheduler.timesteps
    num_steps = len(timesteps)
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generators} if generators is not None and "generator" in step_params else {}
    latents = noise * scheduler.init_noise_sigma
    if c.controller is not None:  # hooks read where they are: step, timestep, latent grid, batch layout
        c.controller.latent_hw = tuple(noise.shape[-2:])
    with progress_bar(num_steps, progress is True) as bar:
        update = progress if callable(progress) else bar
        for i, t in enumerate(timesteps):
            for before in c.before_step:
                latents = before(i, t, latents, scheduler)
            if c.controller is not None:
                c.controller.set_step(i, num_steps, t)
            x = scheduler.scale_model_input(latents, t)
            out = denoiser(x, t, c, i, num_steps)
            latents = scheduler.step(out, t, latents, **step_kwargs, return_dict=False)[0]
            for after in c.after_step:
                latents = after(i, t, latents)
            if callback is not None:
                callback(i, t, latents)
            update()
    return latents


__all__ = ["initial_noise", "progress_bar", "sample"]
