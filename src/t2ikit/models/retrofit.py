"""Retrofit a (pretrained) diffusers UNet2DConditionModel to another fusion strategy, in place.

Every BasicTransformerBlock becomes a `FusionBlock` that keeps its weights; the new parameters start so
that the retrofitted UNet computes what the original did (zero-initialised gates and output projections,
as GLIGEN, Li et al. 2023, Sec. 3.2, and Flamingo do), so fine-tuning starts from the pretrained model.
The same call turns a freshly built UNet into a from-scratch model of any strategy.

Parallel fusion cannot start equal to a sequential model (its cross-attention reads X, not X + SelfAttn(X),
and no choice of alpha, beta undoes that), so retrofitting a sequential block to "parallel" is refused;
train parallel models from scratch (`from_scratch=True`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from t2ikit.models.fusion import FusionBlock, FusionSpec, check_block, parse_fusion


def transformer_blocks(unet) -> list[tuple[str, int, torch.nn.ModuleList, int]]:
    """(path, resolution, container, index) of every transformer block, resolution = latent-grid side."""
    side = unet.config.sample_size
    side = side if isinstance(side, int) else side[0]
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    places = [(f"down_blocks.{i}", b, side // 2**i) for i, b in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        places.append(("mid_block", unet.mid_block, side // 2 ** (n_down - 1)))
    places += [(f"up_blocks.{i}", b, side // 2 ** (n_up - 1 - i)) for i, b in enumerate(unet.up_blocks)]
    out = []
    for prefix, block, res in places:
        for a, transformer in enumerate(getattr(block, "attentions", None) or []):
            for k in range(len(getattr(transformer, "transformer_blocks", []))):
                out.append((f"{prefix}.attentions.{a}.transformer_blocks.{k}", res, transformer.transformer_blocks, k))
    return out


def resolutions(unet) -> list[int]:
    """The latent-grid sides at which `unet` has transformer blocks, largest first."""
    return sorted({res for _, res, _, _ in transformer_blocks(unet)}, reverse=True)


def fusion_plan(unet, strategy) -> list[tuple[str, int, str]]:
    """(block path, resolution, strategy) for every transformer block; ValueError for a bad strategy or a
    hierarchical map naming a resolution the UNet does not have. Computes nothing."""
    _check_unet(unet)
    spec = parse_fusion(strategy)
    blocks = transformer_blocks(unet)
    if not blocks:
        raise ValueError("the UNet has no transformer blocks (no cross-attention levels) to fuse")
    have = sorted({res for _, res, _, _ in blocks}, reverse=True)
    missing = [r for r in spec.per_resolution if r not in have]
    if missing:
        raise ValueError(f"hierarchical fusion names resolution(s) {missing} that the UNet does not have; its "
                         f"attention resolutions are {have} (latent-grid sides at sample_size "
                         f"{unet.config.sample_size})")
    return [(path, res, spec.strategy_at(res)) for path, res, _, _ in blocks]


def retrofit(unet, strategy, seed: int = 0, from_scratch: bool = False):
    """Replace every transformer block of `unet` by a FusionBlock of `strategy` (see fusion_plan); in place.

    Output equals the original's at the start for every strategy but "parallel", which is only allowed
    with from_scratch=True. New random weights (interleaved q, k, v) are drawn from `seed`. Returns unet.
    """
    plan = fusion_plan(unet, strategy)
    if not from_scratch and any(s == "parallel" for _, _, s in plan):
        raise ValueError("parallel fusion cannot start equal to the pretrained sequential blocks (its "
                         "cross-attention reads X instead of X + SelfAttn(X)); use gated or interleaved to "
                         "retrofit, or pass from_scratch=True for a model you will train from the start")
    located = {path: (container, k) for path, _, container, k in transformer_blocks(unet)}
    for container, k in located.values():
        if isinstance(container[k], FusionBlock):
            raise ValueError("the UNet already has fusion blocks; retrofit the original model instead")
        check_block(container[k])
    generator = torch.Generator().manual_seed(seed)
    for path, _, block_strategy in plan:
        container, k = located[path]
        container[k] = FusionBlock(container[k], block_strategy, generator)
    unet.t2ikit_fusion = parse_fusion(strategy).name  # what was done, for reports
    return unet


def fusion_parameters(unet) -> list[torch.nn.Parameter]:
    """The parameters that fusion added (gates, alpha/beta, interleaved layers): what a gate-only
    fine-tune trains."""
    params = []
    for module in unet.modules():
        if isinstance(module, FusionBlock):
            for name in ("alpha", "beta"):
                if hasattr(module, name):
                    params.append(getattr(module, name))
            for name in ("gate", "extra"):
                if hasattr(module, name):
                    params += list(getattr(module, name).parameters())
    return params


def _check_unet(unet) -> None:
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"retrofit needs a diffusers UNet2DConditionModel, got {type(unet).__name__}")


def load_fused_unet(folder, strategy=None):
    """The UNet of a model folder trained with fusion (`t2ikit train` with model.fusion): a stock diffusers
    loader would drop the fusion weights, so this rebuilds the blocks, then loads every weight strictly.

    `strategy`: default the folder's t2ikit_train_config.json model.fusion."""
    folder = Path(folder)
    if strategy is None:
        config_path = folder / "t2ikit_train_config.json"
        if not config_path.is_file():
            raise ValueError(f"{folder} has no t2ikit_train_config.json naming its fusion; pass strategy=")
        strategy = json.loads(config_path.read_text())["model"].get("fusion", "sequential")
    unet_dir = folder / "unet"
    weights = sorted(unet_dir.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{unet_dir} has no safetensors weights")
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_dir))
    retrofit(unet, strategy, from_scratch=True)
    state = {}
    for path in weights:
        state.update(load_file(path))
    missing, unexpected = unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{unet_dir} does not hold a {strategy!r} fusion UNet: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return unet.eval()


__all__ = ["FusionSpec", "fusion_parameters", "fusion_plan", "load_fused_unet", "resolutions", "retrofit",
           "transformer_blocks"]
