"""Prompt-to-Prompt (Hertz et al. 2022) as an attention hook: the source branch's maps drive the target's.

Source and target prompts run in one batch, rows [sources (P); targets (P)] (inside each half of
classifier-free guidance's [uncond; cond]). In the conditional half, for the first `cross_steps` steps the
target's cross-attention probabilities are replaced by the source's, moved to the target's token
positions by an alignment (Sec. 3.2):

    replace   same token count ("a red circle" -> "a blue circle"): every target token takes the source
              token's map at the same position (word swap)
    refine    target tokens that also occur in the source (matched in order, as in the paper's
              refinement mapper) take the source's maps; new tokens keep their own
    reweight  as refine, then the maps of chosen target words are scaled by a factor (Sec. 3.2, "attention
              re-weighting")

and for the first `self_steps` steps the target's self-attention probabilities are the source's
(the paper's code injects self-attention too; it keeps the layout).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from t2ikit.attention.processor import AttentionContext, AttentionHook
from t2ikit.text.spans import token_positions

MODES = ("replace", "refine", "reweight")
DEFAULT_CROSS_FRACTION = 0.8  # P2P's cross_replace_steps default in the paper's notebooks
DEFAULT_SELF_FRACTION = 0.4  # P2P's self_replace_steps


@dataclass(frozen=True)
class Alignment:
    """Where each target token's map comes from, for one (source, target) pair."""

    index: torch.Tensor  # (T,) long: source position for each target position
    alpha: torch.Tensor  # (T,) float: 1 = take the source's map, 0 = keep the target's own
    scale: torch.Tensor  # (T,) float: reweighting factor per target position (1 = unchanged)


def _ids(tokenizer, prompt: str) -> list[int]:
    enc = tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length)
    return list(enc["input_ids"])


def _content_length(tokenizer, ids: list[int]) -> int:
    """Positions up to and including the first EOS."""
    eos = tokenizer.eos_token_id
    return ids.index(eos) + 1 if eos in ids else len(ids)


def align(tokenizer, source: str, target: str, mode: str = "refine",
          reweight: Mapping[str, float] | None = None) -> Alignment:
    """The token alignment of Prompt-to-Prompt for one pair; ValueError on a pair the mode cannot align."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not isinstance(source, str) or not isinstance(target, str):
        raise TypeError("source and target prompts must be str")
    src, tgt = _ids(tokenizer, source), _ids(tokenizer, target)
    n = len(tgt)
    ls, lt = _content_length(tokenizer, src), _content_length(tokenizer, tgt)
    if mode == "replace":
        if ls != lt:
            raise ValueError(
                f"mode 'replace' swaps words of equal token length, but {source!r} has {ls - 2} tokens and "
                f"{target!r} has {lt - 2}; use mode 'refine' for prompts that add or remove words")
        index, alpha = torch.arange(n), torch.ones(n)
    else:
        index, alpha = torch.zeros(n, dtype=torch.long), torch.zeros(n)
        matcher = difflib.SequenceMatcher(None, src[1:ls - 1], tgt[1:lt - 1], autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                index[1 + block.b + k], alpha[1 + block.b + k] = 1 + block.a + k, 1.0
        index[0], alpha[0] = 0, 1.0  # BOS
        for j in range(lt - 1, n):  # EOS and padding follow the source's EOS and padding
            index[j], alpha[j] = min(ls - 1 + (j - (lt - 1)), n - 1), 1.0
    scale = torch.ones(n)
    if mode == "reweight" and not reweight:
        raise ValueError("mode 'reweight' needs reweight={word: factor}, e.g. {'red': 2.0}")
    for word, factor in (reweight or {}).items():
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor >= 0:
            raise ValueError(f"reweight factor for {word!r} must be a number >= 0; got {factor!r}")
        scale[token_positions(tokenizer, target, word)] = float(factor)
    return Alignment(index, alpha, scale)


def resolve_steps(steps: int | float | None, num_steps: int, default_fraction: float, name: str) -> int:
    """Injection steps: an int count, a float fraction of the run, or None for the default fraction."""
    if steps is None:
        return round(default_fraction * num_steps)
    if isinstance(steps, bool) or not isinstance(steps, (int, float)):
        raise TypeError(f"{name} must be an int (steps), a float in [0, 1] (fraction) or None; got {steps!r}")
    if isinstance(steps, float):
        if not 0.0 <= steps <= 1.0:
            raise ValueError(f"{name} as a fraction must be in [0, 1]; got {steps}")
        return round(steps * num_steps)
    if not 0 <= steps <= num_steps:
        raise ValueError(f"{name} must be between 0 and the {num_steps} sampling steps; got {steps}")
    return steps


class PromptToPromptHook(AttentionHook):
    """Inject the source rows' attention into the target rows (see module docstring).

    alignments: one per (source, target) pair; batch rows are [sources; targets] in each CFG half.
    cross_steps / self_steps: inject at steps < these (ints, already resolved by `resolve_steps`).
    """

    needs_probs = True
    name = "prompt-to-prompt"

    def __init__(self, alignments: list[Alignment], cross_steps: int, self_steps: int):
        if not alignments or not all(isinstance(a, Alignment) for a in alignments):
            raise ValueError("alignments must be a non-empty list of Alignment (see p2p.align)")
        for name, v in (("cross_steps", cross_steps), ("self_steps", self_steps)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0; got {v!r}")
        self.pairs = len(alignments)
        self.index = torch.stack([a.index for a in alignments])  # (P, T)
        self.alpha = torch.stack([a.alpha for a in alignments])  # (P, T)
        self.scale = torch.stack([a.scale for a in alignments])  # (P, T)
        self.reweights = bool((self.scale != 1).any())
        self.cross_steps, self.self_steps = cross_steps, self_steps

    def applies(self, ctx: AttentionContext) -> bool:
        if ctx.cross:
            return ctx.step < self.cross_steps or self.reweights
        return ctx.step < self.self_steps

    def on_probs(self, ctx: AttentionContext, probs: torch.Tensor) -> torch.Tensor:
        b = probs.shape[0]
        half = b // 2 if ctx.guided else 0  # P2P edits the conditional half only
        if b - half != 2 * self.pairs:
            raise ValueError(f"prompt-to-prompt expects {2 * self.pairs} conditional rows ([sources; targets]), "
                             f"got {b - half}")
        probs = probs.clone()
        src = probs[half:half + self.pairs]  # (P, heads, Nq, Nk)
        tgt = probs[half + self.pairs:]
        if not ctx.cross:
            probs[half + self.pairs:] = src
            return probs
        if ctx.step < self.cross_steps:
            idx = self.index.to(probs.device)[:, None, None, :].expand_as(src)
            alpha = self.alpha.to(probs.device, probs.dtype)[:, None, None, :]
            tgt = src.gather(-1, idx) * alpha + tgt * (1 - alpha)
        if self.reweights:
            tgt = tgt * self.scale.to(probs.device, probs.dtype)[:, None, None, :]
        probs[half + self.pairs:] = tgt
        return probs
