"""How a prompt's embedding is made from text-encoder rows: a `Recipe` lists the rows to encode (one per
chunk in AUTOMATIC1111's syntax, more for compel's downweighted fragments) and the function that combines
their last hidden states; `blend_parts` is the weighted mean of a blend's parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Row:
    """One text-encoder input of model_max_length tokens."""

    ids: tuple[int, ...]  # BOS + tokens + EOS + padding
    mask: tuple[int, ...]  # the attention mask: the tokenizer's (1 up to EOS) or an explicit one
    explicit: bool = False  # True: always pass `mask` (compel's masked fragments); else as `encode_prompts`


def chunk_row(tokenizer, ids: list[int]) -> Row:
    """BOS + ids + EOS + padding to model_max_length, as the tokenizer pads for `encode_prompts`."""
    pad = tokenizer.model_max_length - len(ids) - 2
    if pad < 0:
        raise ValueError(f"{len(ids)} tokens do not fit a {tokenizer.model_max_length}-token chunk")
    full = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad
    return Row(tuple(full), (1,) * (len(ids) + 2) + (0,) * pad)


@dataclass
class Recipe:
    """How one prompt's (chunks * model_max_length, D) embedding is made from encoded rows."""

    rows: list[Row]
    chunks: int
    combine: Callable  # (embeds (len(rows), M, D), empty () -> (M, D)) -> (chunks * M, D)


def blend_parts(parts: list, blend: tuple[float, ...], normalize: bool = True):
    """sum_k b_k E_k (/ sum_k b_k when `normalize`) of same-shape (T, D) parts; one part is returned as is."""
    import torch

    if len(parts) == 1 and blend == (1.0,):
        return parts[0]
    rows = torch.stack(parts)  # (K, T, D)
    b = torch.tensor(blend, dtype=rows.dtype, device=rows.device)
    out = (rows * b[:, None, None]).sum(0)
    return out / b.sum() if normalize else out
