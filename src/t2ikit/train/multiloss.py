"""Multi-loss training: L_total = L_rec + lambda_1 L_text_alignment + lambda_2 L_image_quality, with the
lambdas fixed, learned by homoscedastic uncertainty (Kendall et al. 2018) or balanced by GradNorm
(Chen et al. 2018). The module holds the state the terms need: two projection heads and the weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from t2ikit.train.grounding import grounding_loss, relation_loss
from t2ikit.train.losses import edge_l1_loss, info_nce, predicted_x0

TERMS = ("reconstruction", "text_alignment", "image_quality", "grounding", "relation")
ATTENTION_TERMS = ("grounding", "relation")  # terms computed on captured cross-attention maps


class MultiLoss(nn.Module):
    """Projection heads for the alignment term and the loss weights; `combine` returns the total."""

    def __init__(self, cfg, text_dim: int, mid_channels: int, seed: int):
        super().__init__()
        self.cfg = cfg  # a LossesConfig
        lambdas = {"reconstruction": 1.0, "text_alignment": cfg.text_alignment, "image_quality": cfg.image_quality,
                   "grounding": cfg.grounding, "relation": cfg.relation}
        self.names = [n for n in TERMS if lambdas[n] > 0]
        init = torch.tensor([lambdas[n] for n in self.names])
        g = torch.Generator().manual_seed(seed)
        if cfg.text_alignment > 0:
            self.text_head = nn.Linear(text_dim, cfg.proj_dim)
            self.image_head = nn.Linear(mid_channels, cfg.proj_dim)
            for lin in (self.text_head, self.image_head):
                nn.init.normal_(lin.weight, std=lin.in_features**-0.5, generator=g)
                nn.init.zeros_(lin.bias)
        if cfg.weighting == "uncertainty":
            # L = sum_i exp(-s_i) L_i + s_i (Kendall et al. 2018, Eq. 10 up to constant factors); exp(-s_i(0)) = lambda_i
            self.log_vars = nn.Parameter(-init.log())
        # GradNorm weights are not trained by the optimizer: an analytic step on |G_i - target_i| (Chen et al. 2018, Eq. 2)
        self.register_buffer("weights", init.clone())
        self.register_buffer("initial_losses", torch.zeros(len(self.names)))  # L_i(0), set at the first step

    def current_weights(self) -> torch.Tensor:
        if self.cfg.weighting == "uncertainty":
            return torch.exp(-self.log_vars)
        return self.weights

    def terms(self, latents, states, ids, pad_id, outputs, noise_scheduler, recon, mid,
              grounding: tuple | None = None) -> dict[str, torch.Tensor]:
        """Every active term as a scalar tensor; `outputs` from diffusion_loss, `mid` (B, C, h, w) mid-block features,
        `grounding` (captured maps, token_groups, group_masks, relations) for the t2ikit.train.grounding terms."""
        out = {"reconstruction": recon}
        if "text_alignment" in self.names:
            mask = (ids != pad_id).unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            text = (states * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, D) masked mean
            image = mid.float().mean(dim=(2, 3))  # (B, C)
            out["text_alignment"] = info_nce(self.text_head(text.float()), self.image_head(image), self.cfg.temperature)
        if "image_quality" in self.names:
            x0 = predicted_x0(noise_scheduler, outputs["noisy"], outputs["pred"], outputs["timesteps"])
            out["image_quality"] = edge_l1_loss(x0, latents)
        if any(n in self.names for n in ATTENTION_TERMS) and grounding is None:
            raise ValueError("the grounding and relation terms need captured attention maps and grounding targets")
        if "grounding" in self.names:
            maps, token_groups, group_masks, _ = grounding
            out["grounding"] = grounding_loss(maps, token_groups, group_masks)
        if "relation" in self.names:
            maps, token_groups, _, relations = grounding
            out["relation"] = relation_loss(maps, token_groups, relations, self.cfg.relation_margin)
        return out

    def combine(self, terms: dict[str, torch.Tensor], shared: torch.nn.Parameter | None = None) -> torch.Tensor:
        """Weighted total; with GradNorm, first one analytic update of the weights from this micro-batch."""
        losses = torch.stack([terms[n].float() for n in self.names])  # (K,)
        if self.cfg.weighting == "uncertainty":
            return (torch.exp(-self.log_vars) * losses + self.log_vars).sum()
        if self.cfg.weighting == "gradnorm" and self.training and shared is not None and len(self.names) > 1:
            self._gradnorm_step(losses, shared)
        return (self.weights * losses).sum()

    @torch.no_grad()
    def _gradnorm_step(self, losses: torch.Tensor, shared: torch.nn.Parameter) -> None:
        with torch.enable_grad():
            norms = torch.stack([
                torch.autograd.grad(l, shared, retain_graph=True, allow_unused=True)[0].norm()
                if l.requires_grad else torch.zeros((), device=l.device)
                for l in losses
            ]).detach()  # ||grad_W L_i||, (K,)
        cur = losses.detach().clone()
        if dist.is_available() and dist.is_initialized():  # every rank applies the same update
            dist.all_reduce(norms)
            dist.all_reduce(cur)
            norms, cur = norms / dist.get_world_size(), cur / dist.get_world_size()
        if not self.initial_losses.any():
            self.initial_losses.copy_(cur)
        g = self.weights * norms  # G_i
        ratio = cur / self.initial_losses.clamp(min=1e-12)
        target = g.mean() * (ratio / ratio.mean()) ** self.cfg.gradnorm_alpha
        total = self.weights.sum()
        w = self.weights - self.cfg.gradnorm_lr * torch.sign(g - target) * norms
        w = w.clamp(min=1e-3 * float(total))  # weights stay positive (GradNorm renormalises, it never zeroes a task)
        self.weights.copy_(w * total / w.sum())


def mid_block_capture(unet) -> tuple[dict, object]:
    """A forward hook storing the UNet mid-block output under key "mid"; returns (store, handle)."""
    store: dict = {}

    def hook(_module, _inputs, output):
        store["mid"] = output

    return store, unet.mid_block.register_forward_hook(hook)


def shared_parameter(unet) -> torch.nn.Parameter:
    """GradNorm's W: the last weight of the UNet mid block, through which all three terms pass."""
    return [p for p in unet.mid_block.parameters() if p.dim() > 1][-1]

