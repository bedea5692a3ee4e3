"""Where each word's cross-attention lies: a capture hook that keeps the maps with their graph, the centroid of
each object's words, and the relation loss on those centroids.

Sampling-time latent guidance (`t2ikit.diffusion.latent_guidance`) and training (`t2ikit.train.grounding`) both
read the same captured maps. Objects are "groups": token_groups (B, T) int64 names the group of each token
position (-1: none), relations (B, R, 4) int64 rows (subject, object, axis, sign) with -1 rows padding, axis and
sign from `t2ikit.text.parser.RELATION_AXES`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionHook


class GroundingCapture(AttentionHook):
    """Keeps every cross-attention map of one UNet call, averaged over heads, with its graph (for a loss)."""

    needs_probs = True
    name = "grounding"

    def __init__(self):
        self.maps: list[tuple[tuple[int, int], torch.Tensor]] = []  # ((h, w), (B, 1, h*w, T)) per layer call

    def applies(self, ctx) -> bool:
        return ctx.cross

    def on_probs(self, ctx, probs: torch.Tensor) -> torch.Tensor:
        self.maps.append((ctx.query_hw, probs.mean(dim=1, keepdim=True)))
        return probs

    def clear(self) -> None:
        self.maps.clear()


def _group_count(token_groups: torch.Tensor, relations: torch.Tensor | None = None) -> int:
    """Enough groups for every index in token_groups (and relations' subject/object columns), at least one."""
    top = int(token_groups.max()) if token_groups.numel() else -1
    if relations is not None and relations.numel():
        top = max(top, int(relations[..., :2].max()))
    return top + 1 if top >= 0 else 1


def _membership(token_groups: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, T, G) float: token t belongs to group g."""
    return F.one_hot(token_groups.clamp(min=0), groups).float() * (token_groups >= 0).unsqueeze(-1)


def group_centroids(probs: torch.Tensor, hw: tuple[int, int], token_groups: torch.Tensor, groups: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each group's words look: ((B, G, 2) centroids (x, y) in [0, 1] of the mean over the group's tokens of
    each token's attention distribution over the image (heads averaged), (B, G) bool: the group has tokens).

    groups: G, by default one more than the largest group index in token_groups.
    """
    groups = _group_count(token_groups) if groups is None else groups
    h, w = hw
    a = probs.float().mean(dim=1)  # (B, h*w, T)
    a = a / a.sum(dim=1, keepdim=True).clamp(min=1e-12)  # each token's distribution over pixels
    ys, xs = torch.meshgrid((torch.arange(h, device=a.device) + 0.5) / h, (torch.arange(w, device=a.device) + 0.5) / w,
                            indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(a.dtype)  # (h*w, 2)
    token_xy = torch.einsum("bpt,pc->btc", a, grid)  # (B, T, 2)
    member = _membership(token_groups, groups).to(a.dtype)  # (B, T, G)
    counts = member.sum(dim=1)  # (B, G)
    centroids = torch.einsum("btg,btc->bgc", member, token_xy) / counts.clamp(min=1).unsqueeze(-1)
    return centroids, counts > 0


def _rows(c: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """c (B, G, 2) at groups (B, R) -> (B, R, 2)."""
    return torch.gather(c, 1, groups.unsqueeze(-1).expand(-1, -1, c.shape[-1]))


def relation_loss(maps: list[tuple[tuple[int, int], torch.Tensor]], token_groups: torch.Tensor,
                  relations: torch.Tensor, margin: float = 0.1, reduction: str = "mean") -> torch.Tensor:
    """Mean over layers and stated relations of relu(margin - sign * (c_object - c_subject)[axis]).

    The centroid-energy form of training-free layout guidance (Chen et al. 2023, "Training-Free Layout Control
    with Cross-Attention Guidance"; Epstein et al. 2023, "Diffusion Self-Guidance"). c_g is where group g's words
    attend (`group_centroids`, in units of the image side). A stated relation "A left of B" asks B's attention to
    sit at least `margin` to the right of A's. Relations whose groups have no grounded tokens (dropped or
    unreadable prompts) are skipped; zero (with a graph) when none is left.

    maps: ((h, w), probs (B, heads, h*w, T)) per cross-attention call; token_groups (B, T); relations (B, R, 4).
    reduction "sum": summed over relations instead (mean over layers), so that each image's gradient does not
    depend on the rest of the batch (sampling-time guidance).
    """
    if not maps:
        raise ValueError("relation_loss needs captured cross-attention maps; none were captured")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    groups = _group_count(token_groups, relations)
    valid = relations[..., 0] >= 0  # (B, R)
    subject, obj = relations[..., 0].clamp(min=0), relations[..., 1].clamp(min=0)
    axis, sign = relations[..., 2].clamp(min=0), relations[..., 3].to(torch.float32)
    has = _membership(token_groups, groups).sum(dim=1) > 0  # (B, G): the group has grounded tokens
    ok = valid & torch.gather(has, 1, subject) & torch.gather(has, 1, obj)
    n = ok.sum()
    if int(n) == 0:
        return sum(p.sum() for _, p in maps) * 0.0
    losses = []
    for hw, probs in maps:
        c, _ = group_centroids(probs, hw, token_groups, groups)  # (B, G, 2)
        difference = _rows(c, obj) - _rows(c, subject)  # (B, R, 2): object's centroid - subject's
        offset = torch.gather(difference, 2, axis.unsqueeze(-1)).squeeze(-1)  # (B, R), along each relation's axis
        losses.append((F.relu(margin - sign * offset) * ok).sum() / (n if reduction == "mean" else 1))
    return torch.stack(losses).mean()


__all__ = ["GroundingCapture", "group_centroids", "relation_loss"]
