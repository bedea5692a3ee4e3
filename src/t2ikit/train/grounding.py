"""Token grounding: a training loss that puts each object word's cross-attention on its object.

For every caption token that belongs to an object's noun phrase ("a small red circle"), the UNet's
cross-attention map of that token should fall inside the object's silhouette. The loss of one token at
one layer is 1 - (attention inside the object) / (all its attention over the image), averaged over heads
first (the token loss of TokenCompose, Wang et al. 2024). Shapes World knows every object's silhouette,
so the targets are exact. At high noise the latent says little about where the objects are, so the only
way to meet the loss there is to read the layout from the text, relation words included: the signal
the plain denoising loss gives too weakly (docs/MODEL_CARD.md, "why relations fail").

The capture hook and the relation term (`GroundingCapture`, `group_centroids`, `relation_loss`) are the core's,
`t2ikit.attention.grounding`, which sampling-time relation guidance uses too; the trainer imports them from here.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from t2ikit.attention.grounding import GroundingCapture, group_centroids, relation_loss
from t2ikit.world import vocab
from t2ikit.world.caption import CaptionError, decompose

MAX_GROUPS = vocab.MAX_OBJECTS  # a scene has at most this many noun phrases (groups)
# CLIP's pre-tokenizer, restricted to what captions contain: a run of letters, a digit, or one other symbol.
_PRE_TOKENS = re.compile(r"[^\W\d_]+|\d|[^\s\w]")


def caption_token_groups(caption: str, max_length: int) -> np.ndarray:
    """(max_length,) int64: the group (noun phrase) each token position of `caption` belongs to, -1 for none.

    Position 0 is the start token. Captions the world writes have known words only, so token k + 1 is the
    k-th pre-token of the caption; a caption that cannot be read (or "" from caption dropout) grounds nothing.
    """
    out = np.full(max_length, -1, dtype=np.int64)
    if not caption.strip():
        return out
    try:
        objects = decompose(caption).objects
    except CaptionError:
        return out
    for k, m in enumerate(_PRE_TOKENS.finditer(caption)):
        position = k + 1
        if position >= max_length - 1:  # the end token keeps the last slot
            break
        for span in objects:
            if span.start <= m.start() and m.end() <= span.end and len(span.ref) == 1:
                out[position] = span.ref[0]
    return out


def grounding_loss(maps: list[tuple[tuple[int, int], torch.Tensor]], token_groups: torch.Tensor,
                   group_masks: torch.Tensor) -> torch.Tensor:
    """Mean over layers and grounded tokens of 1 - inside / total of the head-averaged attention.

    maps: ((h, w), probs (B, heads, h*w, T)) per cross-attention call; token_groups (B, T) int64 (-1: none);
    group_masks (B, G, R, R) in {0, 1}. Zero (with a graph) when no token is grounded.
    """
    if not maps:
        raise ValueError("grounding_loss needs captured cross-attention maps; none were captured")
    grounded = token_groups >= 0  # (B, T)
    n = grounded.sum()
    if int(n) == 0:
        return sum(p.sum() for _, p in maps) * 0.0
    masks = group_masks.float()
    index = token_groups.clamp(min=0)  # (B, T)
    losses = []
    for (h, w), probs in maps:
        m = F.adaptive_avg_pool2d(masks, (h, w)).flatten(2)  # (B, G, h*w): fraction of each cell covered
        per_token = torch.gather(m, 1, index.unsqueeze(-1).expand(-1, -1, h * w))  # (B, T, h*w)
        a = probs.float().mean(dim=1)  # (B, h*w, T)
        inside = torch.einsum("bpt,btp->bt", a, per_token)
        total = a.sum(dim=1).clamp(min=1e-12)  # (B, T)
        losses.append(((1.0 - inside / total) * grounded).sum() / n)
    return torch.stack(losses).mean()


__all__ = ["MAX_GROUPS", "GroundingCapture", "caption_token_groups", "group_centroids", "grounding_loss",
           "relation_loss"]
