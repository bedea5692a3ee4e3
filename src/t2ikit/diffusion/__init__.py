"""Sampling: the denoising loop, guidance functions and samplers by name."""

from t2ikit.diffusion.guidance import cfg
from t2ikit.diffusion.samplers import DEFAULT_SAMPLER, SAMPLERS, check_sampler, make_scheduler, sampler_display_name

__all__ = ["DEFAULT_SAMPLER", "SAMPLERS", "cfg", "check_sampler", "make_scheduler", "sampler_display_name"]
