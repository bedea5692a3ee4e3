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

Regions are given (a box or mask and a prompt each, the same for every image of a call) or planned from the
prompt (`region_layout="auto"`): one region per object phrase the model's parser reads, its prompt that phrase
("a small red circle"), its mask the boxes the layout planner (`t2ikit.control.layout`) gives the object's
instances with the image's seed, the whole prompt as the base. Planned regions differ per image, so a call's
regions are a `RegionBatch`: R regions with a prompt and a mask per image (an image whose prompt names fewer
objects has the prompt "" and an empty mask in the regions past its own).
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
    """(..., H, W) pixel masks ((R, H, W), or (R, N, 1, H, W) per image) -> (..., h, w) area-averaged to the
    latent grid."""
    t = torch.from_numpy(np.asarray(masks)).float()
    lead, (h, w) = t.shape[:-2], t.shape[-2:]
    pooled = F.adaptive_avg_pool2d(t.reshape(-1, 1, h, w), latent_hw)  # (prod(lead), 1, h', w')
    return pooled.reshape(*lead, *latent_hw)


def layout_regions(boxes, size: tuple[int, int]) -> list[Region]:
    """One Region per phrase of a layout plan (`control.layout.plan_layout`, one Box per object instance): the
    phrase as its prompt, the union of its boxes as its mask ("three red squares": one region, three boxes)."""
    h, w = size
    out = []
    for phrase in dict.fromkeys(b.phrase for b in boxes):
        mask = np.zeros((h, w), np.float32)
        for b in boxes:
            if b.phrase == phrase:
                mask[b.y0:b.y1, b.x0:b.x1] = 1.0
        out.append(Region(phrase, mask=mask))
    return out


@dataclass
class RegionBatch:
    """The regions of one generate call: R regions, each with a prompt per image and a weight.

    masks: (R, H, W) when every image has the same regions (given ones), (R, N, H, W) when some are planned
    per image; then an image without region r has the prompt "" and an all-zero mask there.
    """

    prompts: list[list[str]]  # R lists of N prompts, one per image
    weights: list[float]  # (R,)
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def per_image(self) -> bool:
        return self.masks.ndim == 4

    def latent(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        """The masks on the latent grid as guidance conditions take them: (R, h, w), or (R, N, 1, h, w)."""
        return latent_masks(self.masks[:, :, None] if self.per_image else self.masks, latent_hw)


def batch_regions(given: list[Region], size: tuple[int, int], count: int,
                  planned: list[list[Region]] | None = None) -> RegionBatch:
    """The RegionBatch of `given` regions (every image) and, if given, `planned` ones (a list per image, after
    the given ones); ValueError for a bad region (`check_regions`)."""
    masks = check_regions(given, size) if given else np.zeros((0, *size), np.float32)
    prompts = [[r.prompt] * count for r in given]
    weights = [r.weight for r in given]
    if planned is None:
        return RegionBatch(prompts, weights, masks)
    if len(planned) != count:
        raise ValueError(f"planned regions for {len(planned)} images, the call makes {count}")
    extra = max((len(p) for p in planned), default=0)
    per_image = np.zeros((len(given) + extra, count, *size), np.float32)  # (R, N, H, W)
    per_image[:len(given)] = masks[:, None]
    for i, regions in enumerate(planned):
        if regions:
            per_image[len(given):len(given) + len(regions), i] = check_regions(regions, size)
    prompts += [[p[r].prompt if r < len(p) else "" for p in planned] for r in range(extra)]
    weights += [1.0] * extra
    return RegionBatch(prompts, weights, per_image)


class RegionAttentionHook(AttentionHook):
    """Masks cross-attention per region over the concatenated contexts (see module docstring); masks (R, H, W),
    or (R, N, H, W) per image (row b of the UNet batch is image b mod N: every row block holds the N images)."""

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
        """(h*w, (R + 1) * T) multiplier a_g(q) for each query and token; (N, h*w, (R + 1) * T) per image."""
        if hw not in self._cache:
            m = latent_masks(self.masks.numpy(), hw).flatten(-2).transpose(0, -1)  # (hw, R) or (hw, N, R)
            base = (1 - m.sum(-1, keepdim=True)).clamp(min=0) + self.base_weight  # (hw, 1) or (hw, N, 1)
            a = torch.cat([base, m * self.weights], dim=-1)  # (hw, R + 1) or (hw, N, R + 1)
            a = a if a.ndim == 2 else a.transpose(0, 1)  # per image: (N, hw, R + 1)
            self._cache[hw] = a.repeat_interleave(self.tokens, dim=-1)  # (..., hw, (R + 1) T)
        return self._cache[hw]

    def on_probs(self, ctx, probs):
        if probs.shape[-1] != self.tokens * (len(self.weights) + 1):
            raise ValueError(
                f"regions: the context has {probs.shape[-1]} tokens, expected (regions + 1) x {self.tokens}; "
                f"encode it with `region_context`"
            )
        a = self.token_scales(ctx.query_hw).to(probs)  # (Nq, Nk), or (N, Nq, Nk) per image
        if a.ndim == 2:
            p = probs * a
        else:  # row b is image b mod N: broadcast over the row blocks, no per-call copy of the multipliers
            if probs.shape[0] % a.shape[0]:
                raise ValueError(f"regions: planned for {a.shape[0]} images, the UNet batch has {probs.shape[0]} rows")
            p = (probs.unflatten(0, (-1, a.shape[0])) * a[:, None]).flatten(0, 1)
        return p / p.sum(-1, keepdim=True).clamp(min=1e-12)


def region_context(base: torch.Tensor, regions: list[torch.Tensor]) -> torch.Tensor:
    """(N, (R + 1) T, D): the base prompt's states followed by each region prompt's, along tokens."""
    return torch.cat([base, *regions], dim=1)
