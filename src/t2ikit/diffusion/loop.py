"""The denoising loop: a plain function over a UNet, a scheduler and guidance (as lean as diffusers')."""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager

import torch

from t2ikit.diffusion.guidance import cfg


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
    from diffusers.utils.torch_utils import randn_tensor

    if len(generators) != shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} generators for {shape[0]} images")
    return randn_tensor(shape, generator=generators, device=torch.device(device), dtype=dtype)


@torch.no_grad()
def sample(
    unet,
    scheduler,
    noise: torch.Tensor,  # (N, C, h, w) unit Gaussian, from `initial_noise`
    cond: torch.Tensor,  # (N, T, D) text embeddings of the prompts
    uncond: torch.Tensor | None,  # (N, T, D) of the negative prompts, None for no guidance
    steps: int,
    guidance: float,
    generators: list[torch.Generator] | None = None,  # per image, for stochastic samplers' step noise
    progress: bool = True,
    callback=None,  # callback(i, t, latents) after every step
    controller=None,  # an installed t2ikit.attention.AttentionController: its clock follows the steps
    before_step=None,  # before_step(i, t, latents, scheduler) -> latents: a latent update before step i
) -> torch.Tensor:
    """Reverse diffusion from `noise` to clean latents with classifier-free guidance.

    Uncond and cond run as one batch [uncond; cond] through the UNet, as in diffusers' SD pipeline. With
    guidance == 1 (or no uncond) the unconditional half is skipped: cfg(u, c, 1) == c. `before_step` is where
    sampling-time latent guidance goes (t2ikit.analysis.excite.LatentGuidance): it may run the UNet with
    gradients of its own; what it returns is denoised.
    """
    scheduler.set_timesteps(steps, device=noise.device)
    guided = uncond is not None and guidance != 1.0
    embeds = torch.cat([uncond, cond]) if guided else cond  # (2N or N, T, D)
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generators} if generators is not None and "generator" in step_params else {}
    latents = noise * scheduler.init_noise_sigma
    if controller is not None:  # hooks read where they are: step, timestep, latent grid, batch layout
        controller.latent_hw = tuple(noise.shape[-2:])
        controller.guided = guided
    with progress_bar(len(scheduler.timesteps), progress) as update:
        for i, t in enumerate(scheduler.timesteps):
            if controller is not None:
                controller.set_step(i, len(scheduler.timesteps), t)
            if before_step is not None:
                latents = before_step(i, t, latents, scheduler)
            x = torch.cat([latents, latents]) if guided else latents
            x = scheduler.scale_model_input(x, t)
            eps = unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]
            if guided:
                eps = cfg(*eps.chunk(2), guidance)
            latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
            if callback is not None:
                callback(i, t, latents)
            update()
    return latents
