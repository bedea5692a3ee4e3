"""Boxes: each phrase of the prompt placed in its box(es), training-free, on any SD-style model.

Two parts act, each optional:

- a latent update before the first steps (`BoxGuidance`, a `before_step` of `t2ikit.diffusion.loop.sample`),
  the backward guidance of training-free layout control (Chen et al. 2023, "Training-Free Layout Control with
  Cross-Attention Guidance", Eq. 3; BoxDiff, Xie et al. 2023): with A_k the mean cross-attention map of phrase
  k's tokens (heads averaged, each layer), the energy

      E = sum_k (1 - sum_{p in boxes_k} A_k(p) / sum_p A_k(p))^2  +  sum_k sum_{b in boxes_k} (1 - max_{p in b} A_k(p) / max_p A_k(p))

  is stepped down in the latent: the first term pulls the phrase's attention into the union of its boxes, the
  second (BoxDiff's corner/peak constraint in its simplest form) asks every box of the phrase for a peak as
  strong as the phrase's strongest, so that three boxes of "a red square" ask for three squares;
- attention masking (`BoxAttentionHook`): for the first steps, a phrase's tokens are not attended from image
  positions outside its boxes (their probabilities there scaled by `outside` and renormalised, as
  regional prompting does for whole prompts).

A phrase is found in the prompt by its text (`t2ikit.text.spans.token_positions`), so no parser is needed and
any tokenizer serves; a phrase that is not in a prompt is an error before any compute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from t2ikit.attention.grounding import GroundingCapture
from t2ikit.attention.processor import AttentionHook
from t2ikit.diffusion.latent_guidance import CapturedGuidance, decayed_step
from t2ikit.text.spans import token_positions

# Defaults measured on the shipped model (docs/BOXES.md, `python benchmarks/boxes.py`): 5 guided steps of one
# gradient step at 40 met as many boxes as 10 steps or 2 iterations at 20, at 1.4x plain instead of 1.7-2.3x;
# attention masking alone moved nothing (the other tokens carry a phrase's content through the text encoder's
# causal attention), so it is off unless asked for.
DEFAULT_BOX_GUIDANCE = 40.0  # step size of the latent update
DEFAULT_BOX_STEPS = 5  # sampling steps (from the first) with the latent update
DEFAULT_BOX_ITERATIONS = 1  # gradient steps per guided sampling step
DEFAULT_MASK_FRACTION = 0.0  # fraction of the steps with attention masking (BoxAttentionHook); 0 = off
PRESENCE_WEIGHT = 1.0  # weight of the per-box peak term of the energy


@dataclass(frozen=True)
class Box:
    """A phrase of the prompt and where it goes: (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int
    phrase: str

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1

    def check(self, size: tuple[int, int]) -> Box:
        """ValueError unless the box lies inside an image of `size` (height, width) and has a phrase."""
        h, w = size
        if not self.phrase.strip():
            raise ValueError(f"box {self.xyxy}: the phrase is empty")
        if not (0 <= self.x0 < self.x1 <= w and 0 <= self.y0 < self.y1 <= h):
            raise ValueError(f"box {self.xyxy} of {self.phrase!r} (x0, y0, x1, y1) is not inside the {w}x{h} image "
                             f"(need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})")
        return self

    def spec(self) -> str:
        """The box as `parse_box` reads it (and a PNG records it)."""
        return f"{self.x0},{self.y0},{self.x1},{self.y1}:{self.phrase}"


def parse_box(text, size: tuple[int, int] | None = None) -> Box:
    """"x0,y0,x1,y1:phrase" (pixels) -> Box (a Box passes through); checked against `size` if given."""
    if isinstance(text, Box):
        box = text
    elif isinstance(text, str):
        m = re.fullmatch(r"\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*:(.*)", text, re.S)
        if not m or not m.group(5).strip():
            raise ValueError(f"a box must be 'x0,y0,x1,y1:phrase' in pixels, e.g. '0,0,32,32:a red circle'; "
                             f"got {text!r}")
        box = Box(*(int(v) for v in m.groups()[:4]), m.group(5).strip())
    else:
        raise ValueError(f"a box must be a Box or 'x0,y0,x1,y1:phrase'; got {text!r}")
    return box.check(size) if size is not None else box


def phrase_groups(boxes: list[Box]) -> dict[str, list[Box]]:
    """The boxes of each distinct phrase, in order of first mention."""
    groups: dict[str, list[Box]] = {}
    for b in boxes:
        groups.setdefault(b.phrase, []).append(b)
    return groups


def box_targets(tokenizer, prompts: list[str], boxes: list[list[Box]], size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the energy reads, per image: ((N, K, T) float token membership of each of the image's phrases (zero
    padding), (N, K, M, H, W) pixel masks of each phrase's boxes (M the most boxes of a phrase, zero padding),
    (N, K, M) bool: a real box). `boxes[i]`: image i's boxes (the same list for every image, or a plan each).
    ValueError if a phrase is not in its image's prompt or lies past the context."""
    if len(boxes) != len(prompts):
        raise ValueError(f"box_targets: {len(boxes)} box lists for {len(prompts)} prompts")
    groups = [phrase_groups(b) for b in boxes]
    n, t, h, w = len(prompts), tokenizer.model_max_length, *size
    k_max = max([1] + [len(g) for g in groups])
    m_max = max([1] + [len(v) for g in groups for v in g.values()])
    member = torch.zeros(n, k_max, t)
    masks, real = torch.zeros(n, k_max, m_max, h, w), torch.zeros(n, k_max, m_max, dtype=torch.bool)
    positions: dict[tuple[str, str], list[int]] = {}
    for i, (prompt, group) in enumerate(zip(prompts, groups)):
        for k, (phrase, placed) in enumerate(group.items()):
            if (prompt, phrase) not in positions:
                try:
                    positions[prompt, phrase] = token_positions(tokenizer, prompt, phrase)
                except ValueError as err:
                    if "past the" in str(err):
                        raise
                    raise ValueError(f"box phrase {phrase!r} is not a phrase of the prompt {prompt!r}: a box places "
                                     "words the prompt says") from None
            member[i, k, [p for p in positions[prompt, phrase] if p < t]] = 1.0
            for j, b in enumerate(placed):
                masks[i, k, j, b.y0:b.y1, b.x0:b.x1] = 1.0
                real[i, k, j] = True
    return member, masks, real


def box_loss(maps: list[tuple[tuple[int, int], torch.Tensor]], member: torch.Tensor, masks: torch.Tensor,
             real: torch.Tensor, presence: float = PRESENCE_WEIGHT) -> torch.Tensor:
    """The energy of the module docstring: mean over layers, summed over images (each image's gradient is its
    own). maps: ((h, w), (B, heads, h*w, T)) per cross-attention call; member (B, K, T); masks (B, K, M, H, W)."""
    if not maps:
        raise ValueError("box guidance needs captured cross-attention maps; none were captured")
    has = member.sum(-1) > 0  # (B, K)
    weights = member / member.sum(-1, keepdim=True).clamp(min=1)  # mean over the phrase's tokens
    b, k, m = real.shape
    losses = []
    for hw, probs in maps:
        a = probs.float().mean(dim=1)  # (B, h*w, T'): T' > T where other tokens follow the prompt's (regions)
        w = F.pad(weights, (0, a.shape[-1] - weights.shape[-1])).to(a)
        phrase = torch.einsum("bpt,bkt->bkp", a, w)  # (B, K, h*w)
        grid = F.adaptive_avg_pool2d(masks.to(a).flatten(0, 2), hw).reshape(b, k, m, -1)  # box coverage per cell
        union = grid.sum(2).clamp(max=1)  # (B, K, h*w)
        inside = (phrase * union).sum(-1) / phrase.sum(-1).clamp(min=1e-12)  # (B, K)
        loss = ((1 - inside) ** 2 * has).sum()
        if presence:
            peak = phrase / phrase.amax(-1, keepdim=True).clamp(min=1e-12)  # (B, K, h*w), max 1
            cells = (grid >= 0.5) | (grid == grid.amax(-1, keepdim=True))  # a box smaller than a cell keeps its best
            in_box = torch.where(cells, peak[:, :, None], torch.zeros((), dtype=a.dtype, device=a.device))
            missing = (1 - in_box.amax(-1)) * real.to(a) * has[..., None]  # (B, K, M)
            loss = loss + presence * missing.sum()
        losses.append(loss)
    return torch.stack(losses).mean()


class BoxGuidance(CapturedGuidance):
    """The energy's latent update as a `before_step` of `t2ikit.diffusion.loop.sample`: in the first `steps`
    steps, `iterations` gradient steps, each through one conditional UNet pass with cross-attention captured
    (`t2ikit.diffusion.latent_guidance.CapturedGuidance` runs the passes; `shared=True` lets the last pass serve
    the step's prediction, alone or in a `JointGuidance` beside relation guidance).

    prompts: the plain text of each image's prompt; cond: (N, T, D) their embeddings; boxes in pixels of an
    image of `size`: one list for every image, or a list per image (`targets`: their `box_targets`, if made). Step size decays over the guided steps as
    Attend-and-Excite's does."""

    def __init__(self, unet, tokenizer, prompts: list[str], cond: torch.Tensor, boxes: list[Box],
                 size: tuple[int, int], step_size: float = DEFAULT_BOX_GUIDANCE, steps: int = DEFAULT_BOX_STEPS,
                 iterations: int = DEFAULT_BOX_ITERATIONS, targets=None, added: dict | None = None,
                 shared: bool = False):
        if cond.shape[0] != len(prompts):
            raise ValueError(f"cond must hold one embedding per prompt: {cond.shape[0]} for {len(prompts)} prompts")
        self.scale, self.steps, self.iterations, self.shared = float(step_size), steps, iterations, shared
        if targets is None:
            per_image = boxes if boxes and isinstance(boxes[0], (list, tuple)) else [boxes] * len(prompts)
            targets = box_targets(tokenizer, prompts, [[parse_box(b, size) for b in bs] for bs in per_image], size)
        member, masks, real = targets
        self.member, self.masks, self.real = member.to(cond.device), masks.to(cond.device), real.to(cond.device)
        self.capture = GroundingCapture()
        super().__init__(unet, cond, [self.capture], added)

    def iterations_at(self, i: int) -> int:
        return self.iterations if i < self.steps and self.scale != 0 else 0

    def step_size(self, i: int) -> float:
        return decayed_step(self.scale, i, self.steps)

    def loss(self, latent_hw: tuple[int, int]) -> torch.Tensor:
        return box_loss(self.capture.maps, self.member, self.masks, self.real)


class BoxAttentionHook(AttentionHook):
    """Cross-attention masking for the first `fraction` of the steps: phrase k's tokens are attended from inside
    the union of its boxes only (probabilities outside scaled by `outside`, then renormalised over the tokens).

    member: (N, K, T) token membership of each image's prompt (`box_targets`); masks: (N, K, M, H, W). Rows follow
    the batch's blocks (AttentionContext.blocks): the prompts' condition ("text") gets the masks, the
    unconditional rows and other conditions (regions) are left alone.
    """

    needs_probs = True
    name = "boxes"

    def __init__(self, member: torch.Tensor, masks: torch.Tensor, fraction: float, outside: float = 0.0):
        self.member, self.union = member, masks.sum(2).clamp(max=1)  # (N, K, T), (N, K, H, W)
        self.fraction, self.outside = fraction, outside

    def applies(self, ctx) -> bool:
        return ctx.cross and ctx.num_steps > 0 and ctx.step < round(self.fraction * ctx.num_steps)

    def _rows(self, ctx, batch: int) -> slice:
        n = self.member.shape[0]
        blocks = ctx.blocks or (("uncond", "text") if ctx.guided else ("text",))
        if "text" not in blocks or len(blocks) * n != batch:
            return slice(0, 0)
        k = blocks.index("text")
        return slice(k * n, (k + 1) * n)

    def on_probs(self, ctx, probs: torch.Tensor) -> torch.Tensor:
        rows = self._rows(ctx, probs.shape[0])
        if rows.stop == rows.start:
            return probs
        h, w = ctx.query_hw
        union = F.adaptive_avg_pool2d(self.union.to(probs), (h, w)).flatten(2)  # (N, K, h*w)
        member = self.member.to(probs)  # (N, K, T)
        # scale[n, q, t] = 1 for tokens of no phrase; inside its boxes' coverage c: c + (1 - c) * outside
        keep = union + (1 - union) * self.outside  # (N, K, h*w)
        tokens = member.amax(1)  # (N, T): the token belongs to some phrase
        scale = torch.einsum("nkq,nkt->nqt", keep, member) / member.sum(1).clamp(min=1)[:, None]  # (N, h*w, T)
        scale = torch.where(tokens[:, None].bool(), scale, torch.ones_like(scale))
        scale = F.pad(scale, (0, probs.shape[-1] - scale.shape[-1]), value=1.0)  # tokens after the prompt's: kept
        out = probs.clone()
        p = probs[rows] * scale[:, None]  # (N, heads, h*w, T)
        out[rows] = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
        return out


__all__ = ["Box", "BoxAttentionHook", "BoxGuidance", "DEFAULT_BOX_GUIDANCE", "DEFAULT_BOX_ITERATIONS", "DEFAULT_BOX_STEPS",
           "DEFAULT_MASK_FRACTION", "box_loss", "box_targets", "parse_box", "phrase_groups"]
