"""Feature caching across steps: DeepCache (Ma, Fang & Wang 2023, "DeepCache: Accelerating Diffusion Models
for Free"), uniform schedule.

Adjacent denoising steps change the UNet's deep (low-resolution) features little. Every `interval`-th step
runs the whole UNet and keeps the features entering the shallow branch (Sec. 3.2); the steps between run only
the shallow branch at full resolution on the kept features. Two branches (BRANCHES):

    "block": conv_in -> down_blocks[0] (the skip connections of the last up block) -> up_blocks[-1] on the
             kept input of that block -> conv_out
    "layer": conv_in -> the last layer of up_blocks[-1] (its skip connection is conv_in's output) on the kept
             rest of that layer's input -> conv_out (DeepCache's branch 0, the shallowest)

    denoise = cached_denoiser(unet, interval=2)   # a denoiser like t2ikit.diffusion.denoisers.unet_denoiser

The wrapper calls diffusers' own blocks (no copy of the UNet), so attention processors and their hooks run
in every layer that runs; guidance rows [uncond; c_1; ...] are one batch, cached and reused as one. A step
whose batch differs from the cached one (a condition entering its step range) runs the whole UNet.
`interval=1` is the plain UNet on every step, bit for bit. Latent-guidance updates (relation guidance,
Attend-and-Excite, boxes) call the UNet themselves, with gradients, and never go through this cache.
"""

from __future__ import annotations

import torch

from t2ikit.diffusion.conditioning import Conditioning
from t2ikit.diffusion.denoisers import unet_denoiser

BRANCHES = ("layer", "block")  # how shallow the recomputed branch is (module docstring); the first, the cheapest,
# is the default


class FeatureCache:
    """A UNet2DConditionModel called like one (`cache(x, t, encoder_hidden_states=..., return_dict=False)`)
    that runs the shallow branch on the deep features it kept, whenever `full` is False and it holds them."""

    def __init__(self, unet, branch: str = "layer"):
        check_cacheable(unet)
        if branch not in BRANCHES:
            raise ValueError(f"unknown cache branch {branch!r}; allowed: {', '.join(BRANCHES)}")
        self.unet, self.branch = unet, branch
        self.full = True  # set by the denoiser before each call: True runs (and caches) the whole UNet
        self._deep: torch.Tensor | None = None  # (B, C, h, w): the shallow branch's deep input, last full step
        self._key: tuple | None = None  # shapes of the call that produced _deep
        self.shallow_calls = 0  # how many calls reused the cache (for tests and benchmarks)

    def __getattr__(self, name):  # config, dtype, device: the wrapped UNet's
        return getattr(self.__dict__["unet"], name)

    def reset(self) -> None:
        self._deep, self._key, self.shallow_calls = None, None, 0

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict=False,
                 down_intrablock_additional_residuals=None, added_cond_kwargs=None, **kwargs):
        if kwargs:
            raise TypeError(f"the feature cache does not pass {sorted(kwargs)} to the UNet")
        key = (tuple(sample.shape), tuple(encoder_hidden_states.shape))
        if self.full or self._deep is None or key != self._key:
            return self._full(key, sample, timestep, encoder_hidden_states, down_intrablock_additional_residuals,
                              added_cond_kwargs)
        self.shallow_calls += 1
        return (self._shallow(sample, timestep, encoder_hidden_states, down_intrablock_additional_residuals,
                              added_cond_kwargs),)

    def _full(self, key, sample, timestep, states, residuals, added):
        kept = {}

        def keep(module, args, kwargs):
            kept["deep"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        last = self.unet.up_blocks[-1]
        entry = last if self.branch == "block" else last.resnets[-1]  # "layer": [deep; conv_in skip] channels
        handle = entry.register_forward_pre_hook(keep, with_kwargs=True)
        try:
            out = self.unet(sample, timestep, encoder_hidden_states=states, return_dict=False,
                            down_intrablock_additional_residuals=residuals, added_cond_kwargs=added)
        finally:
            handle.remove()
        self._deep, self._key = kept["deep"], key
        return out

    def _shallow(self, sample, timestep, states, residuals, added) -> torch.Tensor:
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep))  # (B, D_t)
        aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=states, added_cond_kwargs=added or {})
        emb = emb + aug if aug is not None else emb
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        h = unet.conv_in(sample)  # (B, C_0, h, w)
        first, last = unet.down_blocks[0], unet.up_blocks[-1]
        if self.branch == "layer":  # the last layer's input is [deep features; conv_in's output] on channels
            out = last.resnets[-1](torch.cat([self._deep[:, :-h.shape[1]], h], dim=1), emb)
            if getattr(last, "has_cross_attention", False):
                out = last.attentions[-1](out, encoder_hidden_states=states, return_dict=False)[0]
            return self._head(out)
        extra = {}
        if residuals is not None:  # T2I-Adapter: its first level rides on the first down block
            extra["additional_residuals"] = residuals[0]
        if getattr(first, "has_cross_attention", False):
            _, skips = first(hidden_states=h, temb=emb, encoder_hidden_states=states, **extra)
        else:
            _, skips = first(hidden_states=h, temb=emb)
            if residuals is not None:
                skips = (*skips[:-1], skips[-1] + residuals[0]) if first.downsamplers is None else skips
        if first.downsamplers is not None:
            skips = skips[:-1]  # the downsampled output feeds the deep branch, which is cached
        skips = (h, *skips)[-len(last.resnets):]  # the last up block's skip connections, full resolution
        if getattr(last, "has_cross_attention", False):
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips,
                       encoder_hidden_states=states)
        else:
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips)
        return self._head(out)

    def _head(self, out: torch.Tensor) -> torch.Tensor:
        unet = self.unet
        if unet.conv_norm_out is not None:
            out = unet.conv_act(unet.conv_norm_out(out))
        return unet.conv_out(out)  # (B, C_out, h, w)


def check_cacheable(unet) -> None:
    """ValueError unless `unet` has the SD-style structure the shallow branch assumes."""
    needed = ("down_blocks", "up_blocks", "conv_in", "conv_out", "time_embedding", "get_time_embed")
    missing = [n for n in needed if not hasattr(unet, n)]
    if missing:
        raise ValueError(f"feature caching needs a diffusers UNet2DConditionModel; {type(unet).__name__} lacks "
                         f"{', '.join(missing)}")
    config = unet.config
    if config.center_input_sample:
        raise ValueError("feature caching does not support UNets with center_input_sample")
    if config.class_embed_type is not None or config.addition_embed_type not in (None, "text_time"):
        raise ValueError("feature caching supports UNets without class embeddings and with no added conditioning "
                         f"other than SDXL's; this one has class_embed_type={config.class_embed_type!r}, "
                         f"addition_embed_type={config.addition_embed_type!r}")
    if len(unet.up_blocks[-1].resnets) != len(unet.down_blocks[0].resnets) + 1:
        raise ValueError("feature caching needs the last up block to take conv_in's and the first down block's "
                         "outputs as its skip connections (layers_per_block + 1 resnets)")


def check_interval(interval) -> int:
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise ValueError(f"cache_interval must be an int >= 1 (1 = off, N = the whole UNet every N-th step); "
                         f"got {interval!r}")
    return interval


def cached_denoiser(unet, interval: int, branch: str = "layer"):
    """`unet_denoiser` whose UNet runs whole on steps 0, N, 2N, ... and its shallow branch on the cached deep
    features between (module docstring). interval 1: `unet_denoiser(unet)` itself."""
    check_interval(interval)
    if interval == 1:
        return unet_denoiser(unet)
    cache = FeatureCache(unet, branch)
    inner = unet_denoiser(cache)

    def denoise(x: torch.Tensor, t, c: Conditioning, step: int, num_steps: int) -> torch.Tensor:
        if step == 0:
            cache.reset()
        cache.full = step % interval == 0
        return inner(x, t, c, step, num_steps)

    denoise.cache = cache
    return denoise


__all__ = ["BRANCHES", "FeatureCache", "cached_denoiser", "check_cacheable", "check_interval"]
