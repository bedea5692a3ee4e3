"""Samplers by name: diffusers scheduler classes, built fresh for every generation from a model's config.

A sampler is named by its key ("dpmpp_2m_karras") or by the name AUTOMATIC1111 shows and writes into its PNGs
("DPM++ 2M Karras"), in any case; `check_sampler` turns either into the key.
"""

from __future__ import annotations

import functools
from typing import Any

_KARRAS = {"use_karras_sigmas": True}  # the noise levels of Karras et al. 2022 (EDM), Eq. 5, rho = 7
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}  # Lu et al. 2022, DPM-Solver++(2M)
_DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}  # its SDE variant (step noise)

# key -> (diffusers scheduler class, overrides of the folder's config, AUTOMATIC1111 display name)
SAMPLERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", _DPMPP_2M, "DPM++ 2M"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {**_DPMPP_2M, **_KARRAS}, "DPM++ 2M Karras"),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", _DPMPP_2M_SDE, "DPM++ 2M SDE"),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler", {**_DPMPP_2M_SDE, **_KARRAS}, "DPM++ 2M SDE Karras"),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}, "DPM++ SDE"),
    "dpmpp_sde_karras": ("DPMSolverSDEScheduler", _KARRAS, "DPM++ SDE Karras"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "lms_karras": ("LMSDiscreteScheduler", _KARRAS, "LMS Karras"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
DEFAULT_SAMPLER = "dpmpp_2m"
# every spelling a user may type, lower-cased -> key: the key itself and the display name
_ALIASES = {**{k: k for k in SAMPLERS}, **{v[2].lower(): k for k, v in SAMPLERS.items()}}


def check_sampler(name: str) -> str:
    """The key of sampler `name` (a key or an AUTOMATIC1111 display name, any case), else ValueError listing them."""
    key = _ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    if key is None:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: {', '.join(SAMPLERS)} "
                         f"(or their AUTOMATIC1111 names: {', '.join(v[2] for v in SAMPLERS.values())})")
    return key


def sampler_display_name(name: str) -> str:
    """The sampler's name as AUTOMATIC1111 writes it in PNG parameters ("DPM++ 2M")."""
    return SAMPLERS[check_sampler(name)][2]


def sampler_from_display_name(display: str) -> str | None:
    """Inverse of `sampler_display_name` (any case); None for a name t2ikit does not have."""
    return _ALIASES.get(display.strip().lower())


# Heun's second-order step averages the slopes at both ends of a step; from the largest noise level of a schedule
# whose last timestep keeps almost no signal (the shipped model's cosine schedule: sigma 2e4 at t = 999) to the next
# (sigma 13), that average overshoots by thousands and the image is noise. SD's scaled-linear schedule ends at 14.6.
HEUN_MAX_SIGMA = 1000.0


def check_sampler_fits(name: str, config: dict[str, Any]) -> str:
    """The sampler's key, or ValueError where it cannot sample this noise schedule (Heun from a near-infinite
    noise level, HEUN_MAX_SIGMA)."""
    key = check_sampler(name)
    if SAMPLERS[key][0] == "HeunDiscreteScheduler":
        import torch

        from t2ikit.diffusion.losses import snr
        from t2ikit.diffusion.schedules import training_scheduler

        alphas = training_scheduler(config).alphas_cumprod
        sigma = float(snr(alphas, torch.tensor([len(alphas) - 1]))) ** -0.5  # of the noisiest training step
        if sigma > HEUN_MAX_SIGMA:
            raise ValueError(f"sampler {name!r} cannot sample this model's noise schedule: it starts at noise level "
                             f"sigma {sigma:.0f}, where Heun's second-order step overshoots (it works up to "
                             f"{HEUN_MAX_SIGMA:.0f}; Stable Diffusion's schedule starts at 14.6); use euler, dpmpp_2m "
                             "or unipc")
    return key


def make_scheduler(name: str, config: dict[str, Any], seeds: list[int] | None = None):
    """A new scheduler of sampler `name` from a model's scheduler config (its noise schedule, prediction type).

    A fresh object per generation: multistep schedulers keep history between steps (no leaks across calls).
    `seeds`: one per image, for a sampler that draws its step noise from seeds instead of the loop's generators
    (DPM++ SDE's Brownian tree, one per image so that a batch equals its items); default 0.
    """
    import diffusers

    class_name, overrides, _ = SAMPLERS[check_sampler_fits(name, config)]
    if class_name == "DPMSolverSDEScheduler":
        _require_torchsde(name)
        overrides = {**overrides, "noise_sampler_seed": list(seeds) if seeds is not None else 0}
    cls = getattr(diffusers, class_name)  # names from the table above, never from a file
    if overrides.get("use_karras_sigmas"):
        cls = _from_the_first_step(cls)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    # DDIM's own default clips its x0 estimate to [-1, 1], a pixel-space rule that wrecks a latent (the shipped
    # model's latents reach beyond 1): off unless the folder's config says otherwise, as Stable Diffusion's configs do
    defaults = {"clip_sample": False} if class_name == "DDIMScheduler" else {}
    return cls.from_config({**defaults, **config, **overrides})


@functools.cache
def _from_the_first_step(cls):
    """`cls` whose `set_timesteps` also sets its begin index to 0, as the loop starts at the first timestep.

    Karras sigmas on a schedule with a large sigma_max (the shipped model's cosine schedule: 2e4) map the first two
    sigmas to one timestep; diffusers then takes the second match as the start (its img2img rule) and steps once
    past the end (IndexError at any step count >= 4).
    """

    class Scheduler(cls):
        def set_timesteps(self, *args, **kwargs):
            super().set_timesteps(*args, **kwargs)
            self.set_begin_index(0)

    Scheduler.__name__ = Scheduler.__qualname__ = cls.__name__
    return Scheduler


def _require_torchsde(name: str) -> None:
    try:
        import torchsde  # noqa: F401  (diffusers' DPMSolverSDEScheduler imports it when it steps)
    except ImportError:
        raise ValueError(f"sampler {name!r} needs the torchsde package: pip install torchsde") from None


__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "check_sampler", "make_scheduler", "sampler_display_name",
           "sampler_from_display_name"]
