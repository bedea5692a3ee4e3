"""Named model sizes ("xs" .. "l"; the mini protocol's "mini-xs" .. "mini-l"), the builders of the UNet, VAE and
text encoder, and their cost report.

A run, a test and a scaling sweep name a size instead of repeating channel lists (STYLE.md, rule 5).
Every component is a stock diffusers/transformers class, so a trained model is an ordinary
StableDiffusionPipeline folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from t2ikit.text import encoder

# ----------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """One row of the size table: the UNet and the text encoder that conditions it."""

    block_out_channels: tuple[int, ...]  # UNet channels per resolution level (latent res, /2, /4, ...)
    layers_per_block: int  # ResNet (+ transformer) layers per UNet level
    head_dim: int  # channels per attention head; heads per level = channels // head_dim
    norm_num_groups: int  # GroupNorm groups; must divide every entry of block_out_channels
    text_hidden: int  # text-encoder width; also the UNet's cross_attention_dim
    text_layers: int  # text-encoder transformer layers
    text_heads: int  # text-encoder attention heads

    @property
    def cross_attention_dim(self) -> int:
        return self.text_hidden


@dataclass(frozen=True)
class VAESize:
    """The autoencoder: images (B, 3, R, R) <-> latents (B, latent_channels, R / factor, R / factor)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)  # one level per entry; factor = 2 ** (levels - 1)
    layers_per_block: int = 1  # ResNet layers per level (the decoder has one more, as in diffusers)
    latent_channels: int = 4  # channels of the latent the UNet denoises
    norm_num_groups: int = 16  # GroupNorm groups; must divide every entry of block_out_channels
    mid_attention: bool = False  # self-attention in the mid block (costly at 16x16; measured no gain)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


# Cross-attention at every level: the smallest objects (10 px = 2.5 latent pixels at factor 4) are only
# resolved at the top level, so binding their colour to their word has to happen there.
MODEL_SIZES: dict[str, ModelSize] = {
    "xs": ModelSize((8, 16), 1, 8, 4, text_hidden=16, text_layers=1, text_heads=2),
    "s": ModelSize((32, 64, 128), 1, 32, 16, text_hidden=64, text_layers=2, text_heads=2),
    "m": ModelSize((64, 128, 128), 2, 32, 32, text_hidden=128, text_layers=3, text_heads=4),
    "l": ModelSize((96, 192, 384), 2, 32, 32, text_hidden=192, text_layers=4, text_heads=4),
}

# The mini protocol's sizes (configs/mini.toml, t2ikit.report.mini: 32 px scenes of the reduced "mini" world on
# 16x16x4 latents): width multiples of "xs" with a 1-layer text encoder. A table of their own, so that the size
# ladder above (what `t2ikit train --sizes` and the plans list) keeps its four rungs; `model_size` reads both.
MINI_SIZES: dict[str, ModelSize] = {
    "mini-xs": ModelSize((8, 16), 1, 4, 2, text_hidden=8, text_layers=1, text_heads=2),
    "mini-s": ModelSize((16, 32), 1, 8, 4, text_hidden=16, text_layers=1, text_heads=2),
    "mini-m": ModelSize((32, 64), 1, 16, 8, text_hidden=32, text_layers=1, text_heads=2),
    "mini-l": ModelSize((64, 128), 1, 32, 16, text_hidden=64, text_layers=1, text_heads=2),
}

VAE_SIZES: dict[str, VAESize] = {
    "xs": VAESize(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4),
    "f4": VAESize(),  # the shipped choice; see docs/VAE.md for the measurements behind it
}


def model_size(name: str) -> ModelSize:
    """The named size `name`: a key of MODEL_SIZES or of MINI_SIZES."""
    for table in (MODEL_SIZES, MINI_SIZES):
        if name in table:
            return table[name]
    raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join([*MODEL_SIZES, *MINI_SIZES])}")


def vae_size(name: str) -> VAESize:
    if name not in VAE_SIZES:
        raise ValueError(f"unknown VAE size {name!r}; known sizes: {', '.join(VAE_SIZES)}")
    return VAE_SIZES[name]


# ----------------------------------------------------------------------------------------------------
# Weight init
# ----------------------------------------------------------------------------------------------------


def initialize_weights(module: torch.nn.Module, generator: torch.Generator | None = None) -> None:
    """Seeded init: diffusers' layer defaults, redrawn from `generator`, then zero-init of the output convs.

    Redrawing every parameter from one generator makes a model a pure function of its seed. Zeroing the
    UNet's `conv_out` makes the untrained model predict 0 (the mean of eps and v), the usual start (DiT).
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1:  # biases and norm gains keep their diffusers defaults (0 / 1)
                continue
            fan_in = p[0].numel()
            bound = (1.0 / fan_in) ** 0.5 * (3.0**0.5)  # uniform with variance 1 / fan_in (LeCun)
            p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=generator))
        conv_out = getattr(module, "conv_out", None)
        if conv_out is not None and module.__class__.__name__ == "UNet2DConditionModel":
            conv_out.weight.zero_()
            conv_out.bias.zero_()


# ----------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int):
    """Run a constructor on the global CPU generator seeded with `seed`, restoring the caller's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_unet(size: str | ModelSize, latent_channels: int = 4, sample_size: int = 16, seed: int = 0):
    """A diffusers UNet2DConditionModel of a named size for (B, latent_channels, sample_size, sample_size)."""
    from diffusers import UNet2DConditionModel  # diffusers' models load transformers: only when building

    s = model_size(size) if isinstance(size, str) else size
    levels = len(s.block_out_channels)
    heads = tuple(max(1, c // s.head_dim) for c in s.block_out_channels)
    with _seeded(seed):  # layer constructors draw biases from the global generator
        unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=latent_channels,
            out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlock2D",) * levels,
            up_block_types=("CrossAttnUpBlock2D",) * levels,
            block_out_channels=s.block_out_channels,
            layers_per_block=s.layers_per_block,
            norm_num_groups=s.norm_num_groups,
            cross_attention_dim=s.cross_attention_dim,
            attention_head_dim=heads,  # diffusers' legacy name: this is the number of heads per level
        )
    initialize_weights(unet, torch.Generator().manual_seed(seed))
    return unet


def build_vae(size: str | VAESize = "f4", sample_size: int = 64, scaling_factor: float = 1.0, seed: int = 0):
    """A diffusers AutoencoderKL; `scaling_factor` is set from data after VAE training (latent std = 1)."""
    from diffusers import AutoencoderKL

    v = vae_size(size) if isinstance(size, str) else size
    levels = len(v.block_out_channels)
    with _seeded(seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=v.block_out_channels,
            layers_per_block=v.layers_per_block,
            latent_channels=v.latent_channels,
            norm_num_groups=v.norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            mid_block_add_attention=v.mid_attention,
            force_upcast=False,
        )
    initialize_weights(vae, torch.Generator().manual_seed(seed))
    return vae


def build_text_encoder(size: str | ModelSize, tokenizer, seed: int = 0):
    """The CLIP text encoder of a named size, sized to `tokenizer` (built by t2ikit.text.encoder)."""
    s = model_size(size) if isinstance(size, str) else size
    with _seeded(seed):  # transformers initialises from the global generator
        return encoder.build_text_encoder(
            hidden_size=s.text_hidden,
            layers=s.text_layers,
            heads=s.text_heads,
            max_positions=tokenizer.model_max_length,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )


# ----------------------------------------------------------------------------------------------------
# Cost report
# ----------------------------------------------------------------------------------------------------


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_flops(unet, latent_shape: tuple[int, int, int], text_tokens: int = 16) -> int:
    """FLOPs of one UNet forward (one denoising step, batch 1, no CFG) at latent_shape (C, H, W)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *latent_shape)
    cond = torch.zeros(1, text_tokens, unet.config.cross_attention_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor([500]), encoder_hidden_states=cond)
    return int(counter.get_total_flops())


def size_report(vae: str = "f4", resolution: int = 64, text_tokens: int = 16) -> list[dict]:
    """Parameters and FLOPs per denoising step for every named size, at the latent shape of `vae`."""
    v = vae_size(vae)
    latent = (v.latent_channels, resolution // v.factor, resolution // v.factor)
    rows = []
    for name, s in MODEL_SIZES.items():
        unet = build_unet(s, latent_channels=v.latent_channels, sample_size=latent[1])
        rows.append(
            {
                "size": name,
                "unet_params": count_params(unet),
                "text_params_approx": _text_params(s, vocab_size=128, max_positions=text_tokens),
                "latent_shape": list(latent),
                "gflops_per_step": unet_flops(unet, latent, text_tokens) / 1e9,
                **{k: v for k, v in dataclasses.asdict(s).items()},
            }
        )
    return rows


def _text_params(s: ModelSize, vocab_size: int, max_positions: int) -> int:
    # Embeddings + per layer (4 h^2 attention + 8 h^2 MLP at width 4h + norms); exact enough for a table.
    h = s.text_hidden
    return (vocab_size + max_positions) * h + s.text_layers * (12 * h * h + 13 * h) + 2 * h
