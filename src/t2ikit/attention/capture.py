"""Attention-map capture for chosen layers, heads and steps, aggregated per prompt word.

Only the layers and steps a store selects leave the fused attention path. Memory is bounded by
construction: the store keeps one running sum per layer over the selected steps, of shape
(B, h, w, Nk) float32, so its size is sum over selected layers of B * h * w * Nk * 4 bytes, independent
of the number of steps (`AttentionStore.nbytes` says how much it holds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionContext, AttentionHook


class AttentionStore(AttentionHook):
    """Sums of attention probabilities per layer, averaged over the selected heads.

    layers: None (every layer of the chosen kind), an iterable of substrings of layer names
        ("up_blocks.1", "mid_block"), or a predicate on the layer name.
    heads: None (mean over all heads) or head indices to average.
    steps: None (every step) or step indices to keep.
    cross: capture cross-attention (keys: text tokens) or self-attention (keys: image tokens).
    """

    needs_probs = True
    name = "capture"

    def __init__(self, layers: Iterable[str] | Callable[[str], bool] | None = None,
                 heads: Iterable[int] | None = None, steps: Iterable[int] | None = None, cross: bool = True):
        if layers is None or callable(layers):
            self._layer_ok = layers or (lambda name: True)
        else:
            parts = list(layers)
            if not parts or not all(isinstance(p, str) for p in parts):
                raise ValueError(f"layers must be substrings of layer names, a predicate or None, got {layers!r}")
            self._layer_ok = lambda name: any(p in name for p in parts)
        self.heads = None if heads is None else sorted(set(int(h) for h in heads))
        if self.heads is not None and (not self.heads or self.heads[0] < 0):
            raise ValueError(f"heads must be non-negative head indices, got {heads!r}")
        self.steps = None if steps is None else frozenset(int(s) for s in steps)
        self.cross = cross
        self.sums: dict[str, torch.Tensor] = {}  # layer -> (B, h, w, Nk)
        self.counts: dict[str, int] = {}

    def applies(self, ctx: AttentionContext) -> bool:
        return (ctx.cross == self.cross and self._layer_ok(ctx.layer)
                and (self.steps is None or ctx.step in self.steps))

    def on_probs(self, ctx: AttentionContext, probs: torch.Tensor) -> torch.Tensor:
        if self.heads is not None:
            if self.heads[-1] >= probs.shape[1]:
                raise ValueError(f"head {self.heads[-1]} asked for, but layer {ctx.layer} has {probs.shape[1]} heads")
            selected = probs[:, self.heads]
        else:
            selected = probs
        h, w = ctx.query_hw
        m = selected.detach().float().mean(dim=1).reshape(probs.shape[0], h, w, probs.shape[-1])
        if ctx.layer in self.sums:
            self.sums[ctx.layer] += m
            self.counts[ctx.layer] += 1
        else:
            self.sums[ctx.layer] = m.clone()
            self.counts[ctx.layer] = 1
        return probs

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.sums.values())

    def clear(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def mean_maps(self, size: tuple[int, int]) -> torch.Tensor:
        """(B, Nk, H, W): the mean over captured layers and steps, each layer upsampled to `size`."""
        if not self.sums:
            raise ValueError("the store captured nothing: no selected layer ran at a selected step")
        total = None
        for layer, s in self.sums.items():
            m = (s / self.counts[layer]).permute(0, 3, 1, 2)  # (B, Nk, h, w)
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            total = m if total is None else total + m
        return total / len(self.sums)

    def word_maps(self, word_tokens: Mapping[str, Iterable[int]], size: tuple[int, int],
                  batch_index: int = -1) -> dict[str, torch.Tensor]:
        """{word: (H, W) map}: attention to the word's token positions summed, for one batch item.

        `word_tokens` comes from `text/` (a word's token positions in the encoded prompt, BOS counted),
        never hand-picked indices. batch_index -1 is the last item: with classifier-free guidance
        the conditional half comes second, so -1 is the last conditional image.
        """
        maps = self.mean_maps(size)[batch_index]  # (Nk, H, W)
        out = {}
        for word, tokens in word_tokens.items():
            tokens = list(tokens)
            if not tokens:
                raise ValueError(f"word {word!r} has no token positions")
            if max(tokens) >= maps.shape[0] or min(tokens) < 0:
                raise ValueError(f"word {word!r} has token positions {tokens} outside 0..{maps.shape[0] - 1}")
            out[word] = maps[tokens].sum(dim=0)
        return out
