"""Exponential moving average of model weights (the weights that are exported)."""

from __future__ import annotations

import torch

from t2ikit.train import distributed


class EMA:
    """Shadow copies of a module's floating-point parameters, updated after each optimizer step. Under FSDP a
    shadow is sharded like its parameter (the update is elementwise, so each rank updates its own chunk)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone().float() for k, p in module.named_parameters()}

    def current_decay(self, step: int) -> float:
        # Warm-up so a short run's EMA is not dominated by the random init (as in diffusers' EMAModel).
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = self.current_decay(step)
        names = [k for k, _ in module.named_parameters()]
        params = [p.detach().float() for _, p in module.named_parameters()]
        if params and distributed.is_sharded(params[0]) and not distributed.is_sharded(self.shadow[names[0]]):
            for k, p in zip(names, params):  # first update under FSDP: keep this rank's chunk of each shadow
                self.shadow[k] = distributed.shard_like(self.shadow[k], p)
        torch._foreach_lerp_([self.shadow[k] for k in names], params, 1 - d)  # one fused launch per group

    def gather(self) -> None:
        """Whole shadows again after FSDP training (a collective when they are sharded)."""
        self.shadow = self.state_dict()

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Whole tensors (under FSDP a collective: every rank calls it)."""
        return {k: distributed.full_tensor(v) for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {len(missing)} tensors, e.g. {sorted(missing)[0]!r}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
