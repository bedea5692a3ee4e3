"""Attention fusion of a reference image (IP-Adapter, Ye et al. 2023, decoupled cross-attention, Eq. 5):

    out = Attn(q, K_text, V_text) + scale * Attn(q, K_ref, V_ref),  K_ref = tokens W'_k, V_ref = tokens W'_v

Reference-image tokens get their own key/value projections beside the text's, in every cross-attention
layer, through an AttentionHook (on_qkv keeps the queries, on_output adds the reference branch before
the output projection), so it stacks with every other hook. The new projections start as copies of the
text's (IP-Adapter's initialisation) and train with the base model frozen; the trained adapter also gates
each layer's branch with a zero-initialised scalar, so training starts from the unchanged base model.

`ReferenceAdapter` bundles the encoder and the projections into one module with a JSON config, saved and
loaded like the additive adapters (safetensors, no pickle); `reference_loss` is its training objective.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from t2ikit.attention.processor import AttentionController, AttentionHook
from t2ikit.control.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, save_adapter
from t2ikit.diffusion.losses import denoising_loss


def _conv_stages(hidden: int) -> list[nn.Module]:
    """Three stride-2 conv stages (the module indices 0, 2, 4 hold the weights; saved adapters rely on them):
    at 64 px a cell of the 8x8 output sees a whole small object."""
    return [nn.Conv2d(3, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU()]


class ReferenceEncoder(nn.Module):
    """(B, 3, H, W) image in [0, 1] -> (B, M, D) tokens: a conv stack pooled to a grid of M = grid^2 cells."""

    def __init__(self, token_dim: int, grid: int = 2, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(*_conv_stages(hidden), nn.AdaptiveAvgPool2d(grid))
        self.proj = nn.Linear(hidden, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.net(image * 2 - 1).flatten(2).transpose(1, 2)  # (B, M, hidden)
        return self.norm(self.proj(x))


class ResamplerEncoder(nn.Module):
    """(B, 3, H, W) image in [0, 1] -> (B, N, D) tokens: N learned queries cross-attend to the conv feature map
    (the Perceiver resampler of IP-Adapter-Plus, Ye et al. 2023, Sec. 3.3, and Flamingo). N can match the text
    context, so the tokens can be trained to look like a caption's text states (`reference_distill_loss`)."""

    def __init__(self, token_dim: int, n_tokens: int, hidden: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        self.net = nn.Sequential(*_conv_stages(hidden))  # (B, hidden, H/8, W/8), no pooling
        self.proj_in = nn.Linear(hidden + 2, token_dim)  # + the (y, x) of each cell: where an object is, in order
        self.queries = nn.Parameter(torch.randn(n_tokens, token_dim) * token_dim**-0.5)
        self.attn = nn.ModuleList(nn.MultiheadAttention(token_dim, heads, batch_first=True) for _ in range(layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, 2 * token_dim), nn.GELU(),
                          nn.Linear(2 * token_dim, token_dim))
            for _ in range(layers)
        )
        self.norm_q = nn.ModuleList(nn.LayerNorm(token_dim) for _ in range(layers))
        self.norm_out = nn.LayerNorm(token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.net(image * 2 - 1)  # (B, hidden, h, w)
        b, _, h, w = f.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        where = torch.stack([ys, xs]).to(f).expand(b, 2, h, w)
        kv = self.proj_in(torch.cat([f, where], 1).flatten(2).transpose(1, 2))  # (B, h*w, D)
        x = self.queries.expand(b, -1, -1)  # (B, N, D)
        for attn, mlp, norm in zip(self.attn, self.mlp, self.norm_q):
            x = x + attn(norm(x), kv, kv, need_weights=False)[0]
            x = x + mlp(x)
        return self.norm_out(x)


def _key(layer: str) -> str:
    return layer.replace(".", "_")


class ReferenceAttentionHook(AttentionHook):
    """Adds the reference branch to every cross-attention layer of `unet` (see module docstring)."""

    name = "reference"

    def __init__(self, unet, scale: float = 1.0, gated: bool = False):
        self.scale = scale
        self.tokens: torch.Tensor | None = None  # (N, M, D), set with set_tokens
        self.heads: dict[str, int] = {}
        k, v = {}, {}
        for layer in unet.attn_processors:
            if ".attn2." not in layer:
                continue
            attn = unet.get_submodule(layer.rsplit(".processor", 1)[0])
            self.heads[layer] = attn.heads
            k[_key(layer)] = nn.Linear(attn.to_k.in_features, attn.to_k.out_features, bias=False)
            v[_key(layer)] = nn.Linear(attn.to_v.in_features, attn.to_v.out_features, bias=False)
            k[_key(layer)].weight.data.copy_(attn.to_k.weight.data)  # IP-Adapter init: the text's projections
            v[_key(layer)].weight.data.copy_(attn.to_v.weight.data)
        if not k:
            raise ValueError("ReferenceAttentionHook: the UNet has no cross-attention layers")
        self.projections = nn.ModuleDict({"k": nn.ModuleDict(k), "v": nn.ModuleDict(v)})
        # gated: a zero-initialised scalar per layer multiplies the branch (GLIGEN/Flamingo-style tanh-free gate),
        # so an untrained adapter leaves the frozen model exactly as it was, like the additive adapters' zero convs
        self.gates = nn.ParameterDict({key: nn.Parameter(torch.zeros(())) for key in k}) if gated else None
        self._query: torch.Tensor | None = None

    def set_tokens(self, tokens: torch.Tensor) -> ReferenceAttentionHook:
        self.tokens = tokens
        return self

    def applies(self, ctx) -> bool:
        return ctx.cross and self.tokens is not None and self.scale != 0

    def on_qkv(self, ctx, query, key, value):
        self._query = query  # (B, heads, Nq, d)
        return query, key, value

    def on_output(self, ctx, out):
        q = self._query
        b, heads, _, d = q.shape
        tokens = self.tokens.to(q)
        if b % tokens.shape[0]:
            raise ValueError(f"reference tokens for {tokens.shape[0]} images, the attention batch is {b}")
        tokens = tokens.repeat(b // tokens.shape[0], 1, 1)  # rows of [uncond; cond; ...] share the image
        k = self.projections["k"][_key(ctx.layer)](tokens).view(b, -1, heads, d).transpose(1, 2)
        v = self.projections["v"][_key(ctx.layer)](tokens).view(b, -1, heads, d).transpose(1, 2)
        ref = F.scaled_dot_product_attention(q, k, v)  # (B, heads, Nq, d)
        gate = self.gates[_key(ctx.layer)] if self.gates is not None else 1.0
        return out + self.scale * gate * ref.transpose(1, 2).reshape(b, -1, heads * d)


# ----------------------------------------------------------------------------------------------------------
# The trainable bundle: encoder + per-layer projections


FUSIONS = ("decoupled", "concat")


@dataclass
class ReferenceConfig:
    token_dim: int  # width of the reference tokens = the UNet's cross-attention dim
    grid: int = 2  # tokens per image = grid^2 (coarse: identity more than layout)
    hidden: int = 32  # width of the encoder's convs
    gated: bool = True  # decoupled: zero-initialised per-layer gates, so an untrained adapter changes nothing
    fusion: str = "decoupled"  # "decoupled" (own K/V per layer, IP-Adapter) or "concat" (tokens appended to the
    #                            text context, read by the frozen text K/V: image tokens as pseudo-words)
    tokens: int = 0  # 0: grid^2 pooled tokens (ReferenceEncoder); N > 0: N resampler tokens (ResamplerEncoder)
    modality: str = "reference"
    kind: str = "attention"  # how it is fused (the additive ConditionAdapter's folders have no "kind")


class ReferenceAdapter(nn.Module):
    """ReferenceEncoder + the decoupled K/V projections of every cross-attention layer of one UNet."""

    def __init__(self, unet, config: ReferenceConfig | None = None):
        super().__init__()
        self.config = config or ReferenceConfig(token_dim=unet.config.cross_attention_dim)
        if self.config.token_dim != unet.config.cross_attention_dim:
            raise ValueError(f"reference adapter tokens are {self.config.token_dim} wide; this UNet's "
                             f"cross-attention takes {unet.config.cross_attention_dim}")
        if self.config.fusion not in FUSIONS:
            raise ValueError(f"unknown reference fusion {self.config.fusion!r}; allowed: {', '.join(FUSIONS)}")
        if self.config.tokens < 0:
            raise ValueError(f"reference adapter tokens must be >= 0 (0: grid^2 pooled tokens), got {self.config.tokens}")
        self.encoder = (ResamplerEncoder(self.config.token_dim, self.config.tokens, self.config.hidden)
                        if self.config.tokens else ReferenceEncoder(self.config.token_dim, self.config.grid,
                                                                     self.config.hidden))
        self._hook = None
        if self.config.fusion == "decoupled":
            self._hook = ReferenceAttentionHook(unet, gated=self.config.gated)
            self.projections = self._hook.projections  # registered here, so state_dict() holds them
            self.gates = self._hook.gates

    @property
    def concat(self) -> bool:
        return self.config.fusion == "concat"

    def context(self, text_states: torch.Tensor, image: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """concat fusion: (B, T, D) text states -> (B, T + M, D) with `image`'s tokens (times `scale`) appended;
        image rows are repeated over the blocks of a batch of several conditions."""
        if not self.concat:
            raise ValueError("context() is the concat fusion; a decoupled reference adapter works through hook()")
        tokens = self.encoder(image) * scale  # (N, M, D)
        b = text_states.shape[0]
        if b % tokens.shape[0]:
            raise ValueError(f"reference tokens for {tokens.shape[0]} images, the text batch is {b}")
        return torch.cat([text_states, tokens.to(text_states).repeat(b // tokens.shape[0], 1, 1)], dim=1)

    def null_context(self, text_states: torch.Tensor, empty_states: torch.Tensor) -> torch.Tensor:
        """concat fusion, the unconditional branch: (B, T, D) -> (B, T + M, D) with the empty caption's first M
        states in place of the image tokens ("no reference", as IP-Adapter feeds zero image embeddings to the
        unconditional branch), so classifier-free guidance amplifies the reference as it amplifies the text.
        empty_states: (1, T', D) text states of "" (T' >= M)."""
        m = self.config.tokens or self.config.grid**2
        if empty_states.shape[1] < m:
            raise ValueError(f"the empty caption gives {empty_states.shape[1]} states; the adapter appends {m} tokens")
        null = empty_states[:, :m].to(text_states).expand(text_states.shape[0], -1, -1)
        return torch.cat([text_states, null], dim=1)

    def hook(self, image: torch.Tensor, scale: float = 1.0) -> ReferenceAttentionHook:
        """The attention hook carrying `image`'s tokens (image: (B, 3, H, W) in [0, 1]) at `scale`."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"reference adapter expects (B, 3, H, W) images; got {tuple(image.shape)}")
        if self._hook is None:
            raise ValueError("hook() is the decoupled fusion; a concat reference adapter works through context()")
        self._hook.scale = scale
        return self._hook.set_tokens(self.encoder(image))


def reference_loss(unet, adapter: ReferenceAdapter, latents, text_states, reference, noise_scheduler,
                   generator: torch.Generator) -> torch.Tensor:
    """The frozen UNet's eps/v MSE with the reference branch in every cross-attention, uniform timesteps."""

    def denoise(x, t):
        if adapter.concat:
            return unet(x, t, encoder_hidden_states=adapter.context(text_states, reference), return_dict=False)[0]
        with AttentionController([adapter.hook(reference)]).install(unet):
            return unet(x, t, encoder_hidden_states=text_states, return_dict=False)[0]

    return denoising_loss(denoise, latents, noise_scheduler, generator)


def reference_distill_loss(adapter: ReferenceAdapter, reference, target_states) -> torch.Tensor:
    """Align the encoder with the text encoder: MSE between the reference's tokens (B, N, D) and the frozen
    text encoder's states (B, N, D) of a caption of the reference (its objects, no relations), so the frozen
    cross-attention reads the tokens as it reads words (IP-Adapter relies on CLIP's image-text alignment for
    this; Shapes World has no pretrained image encoder, so the alignment is learnt here)."""
    tokens = adapter.encoder(reference)
    if tokens.shape != target_states.shape:
        raise ValueError(f"distillation needs as many tokens as the text context: the encoder gives "
                         f"{tuple(tokens.shape)}, the text states are {tuple(target_states.shape)} (set tokens = "
                         f"{target_states.shape[1]})")
    return F.mse_loss(tokens.float(), target_states.float())


def save_reference_adapter(adapter: ReferenceAdapter, folder: str | Path, extra: dict | None = None) -> Path:
    return save_adapter(adapter, folder, extra)


def is_attention_adapter(folder: str | Path) -> bool:
    """True if `folder` holds a ReferenceAdapter (attention fusion) rather than an additive adapter."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("config", {}).get("kind") == "attention"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_reference_adapter(folder: str | Path, unet) -> ReferenceAdapter:
    """A ReferenceAdapter saved by `save_reference_adapter`, for `unet`; ValueError if it does not fit."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{folder} is not an adapter folder: needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())["config"]
    if config.get("kind") != "attention":
        raise ValueError(f"{folder} holds an additive adapter, not an attention (IP-Adapter style) reference adapter")
    adapter = ReferenceAdapter(unet, ReferenceConfig(**config))
    try:
        adapter.load_state_dict(load_file(folder / ADAPTER_WEIGHTS), strict=True)
    except RuntimeError as err:
        raise ValueError(f"the reference adapter in {folder} does not fit this UNet: {str(err)[:300]}") from None
    return adapter.eval().requires_grad_(False)
