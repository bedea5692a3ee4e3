"""Token grounding: a training loss that puts each object word's cross-attention on its object.

For every caption token that belongs to an object's noun phrase ("a small red circle"), the UNet's
cross-attention map of that token should fall inside the object's silhouette. The loss of one token at
one layer is 1 - (attention inside the object) / (all its attention over the image), averaged over heads
first (the token loss of TokenCompose, Wang et al. 2024). Shapes World knows every object's silhouette,
so the targets are exact. At high noise the latent says little about where the objects are, so the only
way to meet the loss there is to read the layout from the text, relation words included: the signal
the plain denoising loss gives too weakly (docs/MODEL_CARD.md, "why relations fail").
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionHook
from t2ikit.world import vocab

MAX_GROUPS = vocab.MAX_OBJECTS  # a scene has at most this many noun phrases (groups)
# CLIP's pre-tokenizer, restricted to what captions contain: a run of letters, a digit, or one other symbol.
_PRE_TOKENS = re.compile(r"[^\W\d_]+|\d|[^\s\w]")


def caption_token_groups(caption: str, max_length: int) -> np.ndarray:
    """(max_length,) int64: the group (noun phrase) each token position of `caption` belongs to, -1 for none.

    Position 0 is the start token. Captions the world writes have known words only, so token k + 1 is the
    k-th pre-token of the caption; a caption that cannot be read (or "" from caption dropout) grounds nothing.
    """
    from t2ikit.world.caption import CaptionError, decompose

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


class GroundingCapture(AttentionHook):
    """Keeps every cross-attention map of one UNet call, averaged over heads (both terms use the average), with
    its graph (for the loss)."""

    needs_probs = True
    name = "grounding"

    def __init__(self):
        self.maps: list[tuple[tuple[int, int], torch.Tensor]] = []  # ((h, w), (B, 1, h*w, T))

    def applies(self, ctx) -> bool:
        return ctx.cross

    def on_probs(self, ctx, probs: torch.Tensor) -> torch.Tensor:
        self.maps.append((ctx.query_hw, probs.mean(dim=1, keepdim=True)))
        return probs

    def clear(self) -> None:
        self.maps.clear()


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


def _membership(token_groups: torch.Tensor) -> torch.Tensor:
    """(B, T, G) float: token t belongs to group g."""
    return F.one_hot(token_groups.clamp(min=0), MAX_GROUPS).float() * (token_groups >= 0).unsqueeze(-1)


def group_centroids(probs: torch.Tensor, hw: tuple[int, int], token_groups: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each group's words look: ((B, G, 2) centroids (x, y) in [0, 1] of the mean over the group's tokens of
    each token's attention distribution over the image (heads averaged), (B, G) bool: the group has tokens)."""
    h, w = hw
    a = probs.float().mean(dim=1)  # (B, h*w, T)
    a = a / a.sum(dim=1, keepdim=True).clamp(min=1e-12)  # each token's distribution over pixels
    ys, xs = torch.meshgrid((torch.arange(h, device=a.device) + 0.5) / h, (torch.arange(w, device=a.device) + 0.5) / w,
                            indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(a.dtype)  # (h*w, 2)
    token_xy = torch.einsum("bpt,pc->btc", a, grid)  # (B, T, 2)
    member = _membership(token_groups).to(a.dtype)
    counts = member.sum(dim=1)  # (B, G)
    centroids = torch.einsum("btg,btc->bgc", member, token_xy) / counts.clamp(min=1).unsqueeze(-1)
    return centroids, counts > 0


def _rows(c: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """c (B, G, 2) at groups (B, R) -> (B, R, 2)."""
    return torch.gather(c, 1, groups.unsqueeze(-1).expand(-1, -1, c.shape[-1]))


def relation_loss(maps: list[tuple[tuple[int, int], torch.Tensor]], token_groups: torch.Tensor,
                  relations: torch.Tensor, margin: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """Mean over layers and stated relations of relu(margin - sign * (c_object - c_subject)[axis]).

    reduction "sum": summed over relations instead (mean over layers), so that each image's gradient does not
    depend on the rest of the batch (sampling-time guidance, `t2ikit.analysis.excite`).

    c_g is where group g's words attend (`group_centroids`, in units of the image side). A stated relation
    "A left of B" asks B's attention to sit at least `margin` to the right of A's. Relations whose groups have
    no grounded tokens (dropped or unreadable captions) are skipped; zero (with a graph) when none is left.
    relations: (B, R, 4) rows (subject, object, axis, sign), -1 rows pad (`t2ikit.world.scene.relation_rows`).
    """
    if not maps:
        raise ValueError("relation_loss needs captured cross-attention maps; none were captured")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    valid = relations[..., 0] >= 0  # (B, R)
    subject, obj = relations[..., 0].clamp(min=0), relations[..., 1].clamp(min=0)
    axis, sign = relations[..., 2].clamp(min=0), relations[..., 3].to(torch.float32)
    has = _membership(token_groups).sum(dim=1) > 0  # (B, G): the group has grounded tokens
    ok = valid & torch.gather(has, 1, subject) & torch.gather(has, 1, obj)
    n = ok.sum()
    if int(n) == 0:
        return sum(p.sum() for _, p in maps) * 0.0
    losses = []
    for hw, probs in maps:
        c, _ = group_centroids(probs, hw, token_groups)  # (B, G, 2)
        difference = _rows(c, obj) - _rows(c, subject)  # (B, R, 2): object's centroid - subject's
        offset = torch.gather(difference, 2, axis.unsqueeze(-1)).squeeze(-1)  # (B, R), along each relation's axis
        losses.append((F.relu(margin - sign * offset) * ok).sum() / (n if reduction == "mean" else 1))
    return torch.stack(losses).mean()
