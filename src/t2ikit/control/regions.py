"""Region-specific prompts: a box or mask per prompt, enforced in cross-attention or in noise space.

- `RegionAttentionHook` (regional prompting; cf. Paint-with-Words, eDiff-I Sec. 4.3): the UNet
  cross-attends to the concatenated contexts [base; region_1; ...; region_R] (R + 1 blocks of T
  tokens). For every image token q the probabilities of block g are scaled by a_g(q) and renormalised,
  which is the softmax with log a_g(q) added to the scores: a_i(q) = w_i m_i(q) for region i (m_i its
  mask, area-averaged to the layer's grid), a_0(q) = max(0, 1 - sum_i m_i(q)) + base_weight for the
  base prompt. So queries outside region i never see its prompt; where regions overlap, their weights
  share the token.
- noise space (MultiDiffusion, Bar-Tal et al. 2023): one guidance condition per region with its mask,
  blended by `t2ikit.diffusion.guidance.combine`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from t2ikit.attention.processor import AttentionHook

REGION_MODES = ("attention", "noise")


@dataclass
class Region:
    """A prompt for part of the image: a box (x0, y0, x1, y1) in pixels, x1/y1 exclusive, or a mask."""

    prompt: str
    box: tuple[int, int, int, int] | None = None
    mask: np.ndarray | None = None  # (H, W) in [0, 1] at image size
    weight: float = 1.0  # share of the region's tokens where regions overlap

    def pixel_mask(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W) float32 mask at image size; ValueError if the box leaves the image or the mask differs."""
        h, w = size
        if (self.box is None) == (self.mask is None):
            raise ValueError(f"region {self.prompt!r}: give exactly one of box and mask")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise ValueError(
                    f"region {self.prompt!r}: box {self.box} (x0, y0, x1, y1) is not inside the {w}x{h} image "
                    f"(need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
                )
            m = np.zeros((h, w), np.float32)
            m[y0:y1, x0:x1] = 1.0
            return m
        m = np.asarray(self.mask, np.float32)
        if m.shape != (h, w):
            raise ValueError(f"region {self.prompt!r}: mask is {m.shape[1]}x{m.shape[0]}, the image is {w}x{h}")
        if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1 or m.max() == 0:
            raise ValueError(f"region {self.prompt!r}: mask values must be in [0, 1] and not all 0")
        return m


def parse_region(text: str, size: tuple[int, int] | None = None) -> Region:
    """"x0,y0,x1,y1:prompt" (pixels) or "mask.png:prompt" -> Region; checked against `size` if given."""
    head, sep, prompt = text.partition(":")
    if not sep or not prompt.strip():
        raise ValueError(f"--region must be 'x0,y0,x1,y1:prompt' or 'mask.png:prompt'; got {text!r}")
    prompt = prompt.strip()
    if re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*){3}", head):
        region = Region(prompt, box=tuple(int(v) for v in head.split(",")))
    else:
        path = Path(head.strip())
        if not path.is_file():
            raise ValueError(f"--region {text!r}: {head!r} is neither a box 'x0,y0,x1,y1' nor an existing mask image")
        try:
            with Image.open(path) as image:
                mask = np.asarray(image.convert("L"), np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"--region mask {path} could not be read as an image: {err}") from None
        region = Region(prompt, mask=(mask >= 0.5).astype(np.float32))
    if size is not None:
        region.pixel_mask(size)
    return region


def check_regions(regions: list[Region], size: tuple[int, int]) -> np.ndarray:
    """(R, H, W) pixel masks; ValueError for a bad region or overlapping weights with no positive sum."""
    masks = np.stack([r.pixel_mask(size) for r in regions])
    weights = np.asarray([r.weight for r in regions], np.float32)[:, None, None]
    covered = masks.sum(0) > 0
    if ((masks * weights).sum(0)[covered] <= 0).any():
        raise ValueError(
            f"region weights {weights.ravel().tolist()} do not sum to a positive number where the regions "
            f"overlap; give weights > 0"
        )
    return masks


def latent_masks(masks: np.ndarray, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(R, H, W) pixel masks -> (R, h, w) area-averaged to the latent grid."""
    t = torch.from_numpy(masks).float()[:, None]
    return F.adaptive_avg_pool2d(t, latent_hw)[:, 0]


class RegionAttentionHook(AttentionHook):
    """Masks cross-attention per region over the concatenated contexts (see module docstring)."""

    needs_probs = True
    name = "regions"

    def __init__(self, masks: np.ndarray, weights: list[float], tokens_per_prompt: int, base_weight: float = 0.0):
        self.masks = torch.from_numpy(np.asarray(masks, np.float32))  # (R, H, W) pixel masks
        self.weights = torch.tensor(weights, dtype=torch.float32)  # (R,)
        self.tokens = tokens_per_prompt  # T: every block has T tokens
        self.base_weight = base_weight
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def applies(self, ctx) -> bool:
        return ctx.cross

    def token_scales(self, hw: tuple[int, int]) -> torch.Tensor:
        """(h*w, (R + 1) * T) multiplier a_g(q) for each query and token."""
        if hw not in self._cache:
            m = latent_masks(self.masks.numpy(), hw).flatten(1).T  # (hw, R)
            base = (1 - m.sum(1, keepdim=True)).clamp(min=0) + self.base_weight  # (hw, 1)
            a = torch.cat([base, m * self.weights], dim=1)  # (hw, R + 1)
            self._cache[hw] = a.repeat_interleave(self.tokens, dim=1)  # (hw, (R + 1) T)
        return self._cache[hw]

    def on_probs(self, ctx, probs):
        if probs.shape[-1] != self.tokens * (len(self.weights) + 1):
            raise ValueError(
                f"regions: the context has {probs.shape[-1]} tokens, expected (regions + 1) x {self.tokens}; "
                f"encode it with `region_context`"
            )
        a = self.token_scales(ctx.query_hw).to(probs)  # (Nq, Nk)
        p = probs * a
        return p / p.sum(-1, keepdim=True).clamp(min=1e-12)


def region_context(base: torch.Tensor, regions: list[torch.Tensor]) -> torch.Tensor:
    """(N, (R + 1) T, D): the base prompt's states followed by each region prompt's, along tokens."""
    return torch.cat([base, *regions], dim=1)
