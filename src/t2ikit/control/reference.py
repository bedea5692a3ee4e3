"""Attention fusion of a reference image (IP-Adapter, Ye et al. 2023, decoupled cross-attention, Eq. 5):

    out = Attn(q, K_text, V_text) + scale * Attn(q, K_ref, V_ref),  K_ref = tokens W'_k, V_ref = tokens W'_v

Reference-image tokens get their own key/value projections beside the text's, in every cross-attention
layer, through an AttentionHook (on_qkv keeps the queries, on_output adds the reference branch before
the output projection), so it stacks with every other hook. The new projections start as copies of the
text's (IP-Adapter's initialisation) and train with the base model frozen; t2ikit ships no trained
weights for them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionHook


class ReferenceEncoder(nn.Module):
    """(B, 3, H, W) image in [0, 1] -> (B, M, D) tokens: a conv stack pooled to a grid of M = grid^2 cells."""

    def __init__(self, token_dim: int, grid: int = 2, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.proj = nn.Linear(hidden, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.net(image * 2 - 1).flatten(2).transpose(1, 2)  # (B, M, hidden)
        return self.norm(self.proj(x))


def _key(layer: str) -> str:
    return layer.replace(".", "_")


class ReferenceAttentionHook(AttentionHook):
    """Adds the reference branch to every cross-attention layer of `unet` (see module docstring)."""

    name = "reference"

    def __init__(self, unet, scale: float = 1.0):
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
        return out + self.scale * ref.transpose(1, 2).reshape(b, -1, heads * d)
