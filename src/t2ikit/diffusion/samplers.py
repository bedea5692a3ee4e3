"""Samplers by name: diffusers scheduler classes, built fresh for every generation from a model's config."""

from __future__ import annotations

from typing import Any

# name -> (diffusers scheduler class, overrides of the folder's config, AUTOMATIC1111 display name)
SAMPLERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
DEFAULT_SAMPLER = "dpmpp_2m"


def check_sampler(name: str) -> str:
    """`name` if it is a known sampler, else ValueError listing the valid names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are: {', '.join(SAMPLERS)}")
    return name


def sampler_display_name(name: str) -> str:
    """The sampler's name as AUTOMATIC1111 writes it in PNG parameters ("DPM++ 2M")."""
    return SAMPLERS[check_sampler(name)][2]


def sampler_from_display_name(display: str) -> str | None:
    """Inverse of `sampler_display_name`; None for a name t2ikit does not have."""
    return next((k for k, v in SAMPLERS.items() if v[2] == display), None)


def make_scheduler(name: str, config: dict[str, Any]):
    """A new scheduler of sampler `name` from a model's scheduler config (its noise schedule, prediction type).

    A fresh object per generation: multistep schedulers keep history between steps (no leaks across calls).
    """
    import diffusers

    class_name, overrides, _ = SAMPLERS[check_sampler(name)]
    cls = getattr(diffusers, class_name)  # names from the table above, never from a file
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls.from_config({**config, **overrides})
