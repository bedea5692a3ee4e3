"""Fusion strategies: how a UNet transformer block mixes self-attention (image) and cross-attention (text).

`FusionBlock` replaces diffusers' `BasicTransformerBlock` and keeps its modules under the same names
(norm1, attn1, norm2, attn2, norm3, ff), so Stable Diffusion weights load into it unchanged and the
hooked processor (t2ikit.attention) and map capture see the same attention layers in every strategy.
With S = SelfAttn(norm1 X) and C = CrossAttn(norm2 ., T) (the seed, "Multi-Modal Attention Fusion"):

    sequential   h = X + S;  Y = h + C(h)                       Stable Diffusion's block
    parallel     Y = X + alpha * S + beta * C(X)                alpha, beta learnable scalars (start 1)
    interleaved  h = X + S;  h = h + C(h);  h = h + S'(h);  Y = h + C'(h)
                 self and cross layers alternate twice in the block; S', C' are new diffusers Attention
                 layers whose output projections start at zero (Flamingo-style), so Y starts as sequential
    gated        h = X + S;  Cx = C(h);  g = sigmoid(W_g [norm1 X; Cx] + b_g)   (per token and channel)
                 Y = X + 2 * (g * Cx + (1 - g) * S)
                 W_g, b_g start at zero, so g = 1/2 and Y starts exactly as sequential (the factor 2 makes
                 g = 1/2 the plain sum); g -> 1 favours text, g -> 0 favours the image.

then every strategy adds the feed-forward: Y = Y + FF(norm3 Y).

T_x in the gate (the text context aligned to each image token) is the cross-attention output Cx itself:
for each image token, the text that attention gathered for it, already in image channels. Attention is
the alignment, so no second alignment has to be learned, and the gate costs one (2C -> C) linear layer.

Hierarchical fusion is a strategy per UNet resolution: `parse_fusion("hierarchical:8=gated,4=sequential")`
or a mapping {8: "gated", 4: "sequential"}; resolutions it does not name keep "sequential".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from PIL import Image, ImageDraw

from t2ikit.attention.processor import AttentionHook

BLOCK_STRATEGIES = ("sequential", "parallel", "interleaved", "gated")  # what one block can do
STRATEGIES = BLOCK_STRATEGIES + ("hierarchical",)  # what a UNet can be given
GATE_SCALE = 2.0  # Y = X + GATE_SCALE * mix: at g = 1/2 the gated block is exactly the sequential one


# ----------------------------------------------------------------------------------------------------
# Config: which strategy where
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FusionSpec:
    """A strategy for every block: `default` everywhere except the resolutions named in `per_resolution`."""

    default: str = "sequential"  # one of BLOCK_STRATEGIES
    per_resolution: dict[int, str] = field(default_factory=dict)  # latent-grid side (e.g. 8) -> strategy

    def strategy_at(self, resolution: int) -> str:
        return self.per_resolution.get(resolution, self.default)

    @property
    def name(self) -> str:
        if not self.per_resolution:
            return self.default
        parts = [f"{r}={s}" for r, s in sorted(self.per_resolution.items(), reverse=True)]
        return "hierarchical:" + ",".join(parts)


def parse_fusion(strategy) -> FusionSpec:
    """A FusionSpec from a name ("gated"), "hierarchical:16=sequential,8=gated", a {res: name} mapping, or
    a FusionSpec. Unknown names raise ValueError naming the allowed ones."""
    if isinstance(strategy, FusionSpec):
        spec = strategy
    elif isinstance(strategy, dict):
        spec = FusionSpec("sequential", _check_map(strategy))
    elif isinstance(strategy, str):
        name, _, rest = strategy.partition(":")
        name = name.strip()
        if name == "hierarchical":
            if not rest.strip():
                raise ValueError("hierarchical fusion needs a map, e.g. 'hierarchical:8=gated,4=sequential'")
            pairs = {}
            for part in rest.split(","):
                res, eq, block = part.partition("=")
                if not eq or not res.strip().isdigit():
                    raise ValueError(f"bad hierarchical entry {part!r} in {strategy!r}; write RESOLUTION=STRATEGY, "
                                     "e.g. 8=gated")
                pairs[int(res)] = block.strip()
            spec = FusionSpec("sequential", _check_map(pairs))
        elif rest:
            raise ValueError(f"only 'hierarchical' takes a map after ':', got {strategy!r}")
        else:
            spec = FusionSpec(name)
    else:
        raise TypeError(f"fusion strategy must be a str, a dict or a FusionSpec, got {type(strategy).__name__}")
    if spec.default not in BLOCK_STRATEGIES:
        raise ValueError(f"unknown fusion strategy {spec.default!r}; allowed: {', '.join(STRATEGIES)}")
    if spec.per_resolution:
        _check_map(spec.per_resolution)
    return spec


def _check_map(mapping: dict) -> dict[int, str]:
    out = {}
    for res, block in mapping.items():
        if isinstance(res, bool) or not isinstance(res, int) or res < 1:
            raise ValueError(f"hierarchical map keys are latent-grid sides (positive ints), got {res!r}")
        if block not in BLOCK_STRATEGIES:
            raise ValueError(f"unknown fusion strategy {block!r} at resolution {res}; allowed per resolution: "
                             f"{', '.join(BLOCK_STRATEGIES)}")
        out[res] = block
    if not out:
        raise ValueError("a hierarchical map must name at least one resolution")
    return out


# ----------------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------------


class Gate(nn.Module):
    """g = sigmoid(W_g [x; t_x] + b_g), (B, N, C) per token and channel; zero-init, so g starts at 1/2.

    A separate module so that a forward hook (GateRecorder) can read g during sampling."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, text_x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(torch.cat([x, text_x], dim=-1)))  # (B, N, C)


class AttentionPair(nn.Module):
    """One more self- then cross-attention layer (interleaved), shaped like the block's own attn1 / attn2.

    Its modules are named attn1 / attn2 so the hooked processor tells self from cross by name as usual.
    q, k, v are drawn from `generator`; the output projections start at zero, so the pair adds nothing
    until it is trained (Flamingo's zero-initialised gated cross-attention, Alayrac et al. 2022, Sec. 3.1)."""

    def __init__(self, like_self, like_cross, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _attention_like(like_self)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = _attention_like(like_cross)
        with torch.no_grad():
            for attn in (self.attn1, self.attn2):
                for lin in (attn.to_q, attn.to_k, attn.to_v):
                    bound = math.sqrt(3.0 / lin.in_features)  # LeCun uniform, as models.sizes.initialize_weights
                    lin.weight.copy_(torch.empty_like(lin.weight).uniform_(-bound, bound, generator=generator))
                nn.init.zeros_(attn.to_out[0].weight)
                if attn.to_out[0].bias is not None:
                    nn.init.zeros_(attn.to_out[0].bias)


def _attention_like(attn):
    """A fresh diffusers Attention with the geometry of `attn`."""
    from diffusers.models.attention_processor import Attention  # lazy: config checks import parse_fusion from here

    dim = attn.to_q.in_features
    inner = attn.to_q.out_features
    cross = attn.to_k.in_features if attn.is_cross_attention else None
    new = Attention(query_dim=dim, heads=attn.heads, dim_head=inner // attn.heads, cross_attention_dim=cross,
                    bias=attn.to_q.bias is not None, out_bias=attn.to_out[0].bias is not None)
    return new.to(attn.to_q.weight.device, attn.to_q.weight.dtype)


# ----------------------------------------------------------------------------------------------------
# The block
# ----------------------------------------------------------------------------------------------------


class FusionBlock(nn.Module):
    """Drop-in for diffusers' BasicTransformerBlock (layer_norm type): same call, same module names."""

    def __init__(self, block: nn.Module, strategy: str, generator: torch.Generator | None = None):
        super().__init__()
        check_block(block)
        if strategy not in BLOCK_STRATEGIES:
            raise ValueError(f"unknown fusion strategy {strategy!r}; allowed: {', '.join(BLOCK_STRATEGIES)}")
        self.strategy = strategy
        self.dim = block.norm1.normalized_shape[0]
        self.norm1, self.attn1 = block.norm1, block.attn1
        self.norm2, self.attn2 = block.norm2, block.attn2
        self.norm3, self.ff = block.norm3, block.ff
        like = block.attn1.to_q.weight
        if strategy == "parallel":
            self.alpha = nn.Parameter(torch.ones(1, device=like.device, dtype=like.dtype))
            self.beta = nn.Parameter(torch.ones(1, device=like.device, dtype=like.dtype))
        elif strategy == "gated":
            self.gate = Gate(self.dim).to(like.device, like.dtype)
        elif strategy == "interleaved":
            self.extra = AttentionPair(block.attn1, block.attn2, self.dim, generator).to(like.device, like.dtype)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                timestep=None, cross_attention_kwargs=None, class_labels=None, added_cond_kwargs=None):
        kw = dict(cross_attention_kwargs or {})
        if "gligen" in kw:
            raise ValueError("GLIGEN inputs are not supported by t2ikit FusionBlock")
        x = hidden_states  # (B, N, C) image tokens
        t = encoder_hidden_states  # (B, T, D) text tokens

        def cross(attn, norm, h):
            return attn(norm(h), encoder_hidden_states=t, attention_mask=encoder_attention_mask, **kw)

        n1 = self.norm1(x)
        s = self.attn1(n1, attention_mask=attention_mask, **kw)  # (B, N, C) A_self
        if self.strategy == "sequential":
            x = x + s
            x = x + cross(self.attn2, self.norm2, x)
        elif self.strategy == "parallel":
            x = x + self.alpha * s + self.beta * cross(self.attn2, self.norm2, x)
        elif self.strategy == "interleaved":
            x = x + s
            x = x + cross(self.attn2, self.norm2, x)
            x = x + self.extra.attn1(self.extra.norm1(x), attention_mask=attention_mask, **kw)
            x = x + cross(self.extra.attn2, self.extra.norm2, x)
        else:  # gated
            c = cross(self.attn2, self.norm2, x + s)  # (B, N, C) A_cross, also T_x: text gathered per token
            g = self.gate(n1, c)  # (B, N, C) in (0, 1)
            x = x + GATE_SCALE * (g * c + (1 - g) * s)
        return x + self.ff(self.norm3(x))

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}"


def check_block(block: nn.Module) -> None:
    """TypeError / ValueError unless `block` is a BasicTransformerBlock that FusionBlock can take over."""
    from diffusers.models.attention import BasicTransformerBlock

    if not isinstance(block, BasicTransformerBlock):
        raise TypeError(f"FusionBlock replaces a diffusers BasicTransformerBlock, got {type(block).__name__}")
    problems = []
    if block.norm_type != "layer_norm":
        problems.append(f"norm_type {block.norm_type!r} (only 'layer_norm', as in Stable Diffusion)")
    if block.attn2 is None:
        problems.append("no cross-attention (attn2)")
    if block.only_cross_attention:
        problems.append("only_cross_attention=True")
    if block.pos_embed is not None:
        problems.append("positional embeddings")
    if problems:
        raise ValueError("this transformer block cannot be fused: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Gate behaviour
# ----------------------------------------------------------------------------------------------------


class GateRecorder:
    """Mean gate per gated layer and sampling step: forward hooks on every Gate of `unet`.

    Pass it to `T2IPipeline.generate(..., hooks=[recorder.clock])` so it knows the step; with CFG only
    the conditional half of the batch is recorded. `records`: dicts(layer, step, timestep, mean, token_std,
    channel_std): token_std is the spread of g over image tokens (content), channel_std over channels."""

    def __init__(self, unet: nn.Module):
        self.records: list[dict] = []
        self._step, self._timestep, self._guided = -1, None, False
        recorder = self

        class _Clock(AttentionHook):
            name = "gate-clock"

            def applies(self, ctx):  # reads the controller's clock; never changes attention
                recorder._step, recorder._timestep, recorder._guided = ctx.step, ctx.timestep, ctx.guided
                return False

        self.clock = _Clock()
        self._handles = []
        for name, module in unet.named_modules():
            if isinstance(module, Gate):
                self._handles.append(module.register_forward_hook(self._hook(name.removesuffix(".gate"))))
        if not self._handles:
            raise ValueError("the UNet has no gated fusion blocks to record (apply 'gated' fusion first)")

    def _hook(self, layer: str):
        def hook(module, inputs, g):  # g: (B, N, C)
            if self._guided:
                g = g[g.shape[0] // 2:]
            g = g.detach().float()
            self.records.append({
                "layer": layer, "step": self._step, "timestep": self._timestep, "mean": g.mean().item(),
                "token_std": g.mean(-1).std(-1).mean().item() if g.shape[1] > 1 else 0.0,
                "channel_std": g.mean(1).std(-1).mean().item(),
            })
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def table(self) -> tuple[list[str], list[int], list[list[float]]]:
        """(layers, steps, means[layer][step]) averaged over calls."""
        layers = list(dict.fromkeys(r["layer"] for r in self.records))
        steps = sorted({r["step"] for r in self.records})
        sums = {(r["layer"], r["step"]): [] for r in self.records}
        for r in self.records:
            sums[(r["layer"], r["step"])].append(r["mean"])
        grid = [[sum(sums.get((l, s), [float("nan")])) / max(1, len(sums.get((l, s), [0]))) for s in steps]
                for l in layers]
        return layers, steps, grid


def plot_gates(layers: list[str], steps: list[int], grid: list[list[float]], path, title: str = "") -> None:
    """Heat map PNG: one row per gated layer, one column per sampling step, colour = mean gate (PIL)."""
    cell, label_w, top = 18, 330, 40
    finite = [v for row in grid for v in row if v == v]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = max(hi - lo, 1e-6)
    img = Image.new("RGB", (label_w + cell * len(steps) + 10, top + cell * len(layers) + 30), "white")
    d = ImageDraw.Draw(img)
    d.text((5, 5), f"{title}  mean gate g per layer (rows) and sampling step (columns, noisy -> clean)", fill="black")
    d.text((5, 20), f"colour: blue = {lo:.4f} .. red = {hi:.4f}", fill="black")
    for i, (layer, row) in enumerate(zip(layers, grid)):
        y = top + i * cell
        short = layer.replace("transformer_blocks", "tb").replace("attentions", "att")
        d.text((5, y + 3), short[-52:], fill="black")
        for j, v in enumerate(row):
            a = 0.5 if v != v else (v - lo) / span
            d.rectangle([label_w + j * cell, y, label_w + (j + 1) * cell - 1, y + cell - 1],
                        fill=(int(255 * a), 40, int(255 * (1 - a))))
    d.text((label_w, top + cell * len(layers) + 8), f"steps {steps[0] if steps else ''}..{steps[-1] if steps else ''}",
           fill="black")
    img.save(path)
