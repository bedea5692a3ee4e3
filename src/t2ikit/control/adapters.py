"""Adapters: small trainable networks that feed a condition into a frozen UNet.

- `ConditionAdapter` (T2I-Adapter, Mou et al. 2023): a conv encoder over the condition map producing one
  residual per UNet down block, added inside the block (diffusers' `down_intrablock_additional_residuals`,
  the argument diffusers reserves for T2I-Adapters; `down_block_additional_residuals` is ControlNet's
  per-skip form and is deprecated for adapters). Output convs are zero-initialised, so an untrained
  adapter leaves the base model unchanged.
- `HierarchicalAdapter`: one modality per scale: each adapter contributes only at the levels it owns.
- `adapter_loss`: the base model's own diffusion loss (diffusion.losses) with the adapter's residuals, base frozen.
- `save_adapter` / `load_adapter`: safetensors weights + a JSON config beside them (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from t2ikit.diffusion.losses import denoising_loss

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"


@dataclass
class AdapterConfig:
    modality: str  # "sketch" | "depth" | "mask" | "reference": what the adapter reads
    in_channels: int  # channels of the condition map (1 sketch/depth, K mask, 3 reference)
    channels: tuple[int, ...]  # output channels per UNet down block (= unet.config.block_out_channels)
    downscale: int  # pixels per latent cell (the VAE factor): pixel-unshuffle factor at the input
    hidden: int = 32  # width of the encoder's first stage
    levels: tuple[int, ...] = field(default=())  # down-block levels it feeds; () = all (hierarchical use)

    def __post_init__(self):
        self.channels = tuple(self.channels)
        self.levels = tuple(self.levels)


def adapter_config_for(unet, vae_scale_factor: int, modality: str, in_channels: int, hidden: int = 32,
                       levels: tuple[int, ...] = ()) -> AdapterConfig:
    """An AdapterConfig matching `unet`'s down blocks."""
    return AdapterConfig(modality, in_channels, tuple(unet.config.block_out_channels), vae_scale_factor, hidden,
                         levels)


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ConditionAdapter(nn.Module):
    """Condition map (B, C_in, H, W) -> list of residuals, level k of shape (B, channels[k], h/2^k, w/2^k)."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        c = config
        self.unshuffle = nn.PixelUnshuffle(c.downscale)  # (B, C_in * f^2, h, w): latent resolution
        self.conv_in = nn.Conv2d(c.in_channels * c.downscale**2, c.hidden, 3, padding=1)
        self.stages, self.outs = nn.ModuleList(), nn.ModuleList()
        width = c.hidden
        for k, out in enumerate(c.channels):
            down = nn.Identity() if k == 0 else nn.Conv2d(width, width, 3, stride=2, padding=1)
            self.stages.append(nn.Sequential(down, _Res(width)))
            self.outs.append(nn.Conv2d(width, out, 1))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for conv in self.outs:  # zero-init: an untrained adapter adds nothing (ControlNet's zero convs)
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, cond: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
        if cond.ndim != 4 or cond.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{self.config.modality} adapter expects (B, {self.config.in_channels}, H, W); got {tuple(cond.shape)}"
            )
        x = self.conv_in(self.unshuffle(cond))
        residuals = []
        for k, (stage, out) in enumerate(zip(self.stages, self.outs)):
            x = stage(x)
            r = out(x) * scale
            if self.config.levels and k not in self.config.levels:
                r = torch.zeros_like(r)
            residuals.append(r)
        return residuals


class HierarchicalAdapter(nn.Module):
    """Several adapters, summed per level; each feeds only its config.levels (a modality per scale)."""

    def __init__(self, adapters: list[ConditionAdapter]):
        super().__init__()
        if not adapters:
            raise ValueError("HierarchicalAdapter needs at least one adapter")
        self.adapters = nn.ModuleList(adapters)

    def forward(self, conds: dict[str, torch.Tensor], scales: dict[str, float] | None = None) -> list[torch.Tensor]:
        scales = scales or {}
        total = None
        for a in self.adapters:
            name = a.config.modality
            if name not in conds:
                raise ValueError(f"HierarchicalAdapter: no condition given for adapter {name!r}; given {sorted(conds)}")
            res = a(conds[name], scales.get(name, 1.0))
            total = res if total is None else [t + r for t, r in zip(total, res)]
        return total


def adapter_loss(unet, adapter: ConditionAdapter, latents, text_states, cond, noise_scheduler,
                 generator: torch.Generator, outputs: dict | None = None) -> torch.Tensor:
    """MSE of the frozen UNet's eps/v prediction with the adapter's residuals, at uniform timesteps
    (`outputs`, when given, receives pred, noisy and timesteps, as in denoising_loss)."""
    return denoising_loss(lambda x, t: unet(x, t, encoder_hidden_states=text_states,
                                            down_intrablock_additional_residuals=adapter(cond), return_dict=False)[0],
                          latents, noise_scheduler, generator, outputs=outputs)


def save_adapter(adapter: nn.Module, folder: str | Path, extra: dict | None = None) -> Path:
    """Write adapter.safetensors and adapter_config.json (plus `extra`, e.g. the training record) of any
    adapter whose `config` is a dataclass (ConditionAdapter, reference.ReferenceAdapter)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, folder / ADAPTER_WEIGHTS)
    (folder / ADAPTER_CONFIG).write_text(json.dumps({"config": asdict(adapter.config), **(extra or {})}, indent=1))
    return folder


def load_adapter(folder: str | Path) -> ConditionAdapter:
    """An adapter saved by `save_adapter`; ValueError if the folder is not one."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{folder} is not an adapter folder: needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())["config"]
    if config.get("kind") == "attention":
        raise ValueError(f"{folder} holds an attention (reference) adapter: load it with "
                         "t2ikit.control.reference.load_reference_adapter(folder, unet)")
    config = AdapterConfig(**config)
    adapter = ConditionAdapter(config)
    adapter.load_state_dict(load_file(folder / ADAPTER_WEIGHTS), strict=True)
    return adapter.eval().requires_grad_(False)
