"""Hierarchical text attention: words, noun phrases and the sentence, attended separately and mixed.

    O = (lambda_w O_word + lambda_p O_phrase + lambda_s O_sentence) / (lambda_w + lambda_p + lambda_s)

(the seed's A_hierarchical = sum_i lambda_i A_i, applied to the values: each level is its own softmax
attention, so the mix is a convex combination of three attention outputs; StructureDiffusion, Feng et al.
2023, mixes noun-phrase cross-attention outputs the same way.)

    word      ordinary cross-attention over the n token keys
    phrase    one key/value per phrase of the prompt, the mean of its tokens' keys/values; phrases are what the
              model's prompt parser reads (`t2ikit.text.phrases.parsed_phrase_token_spans`: its object phrases
              and style spans, the chunker's noun phrases where it reads neither), never picked indices
    sentence  one key/value: the first EOS token (CLIP's pooled token) or the mean of the content tokens;
              a single key takes all the mass, so O_sentence is that value at every pixel

Mean-pooling keys and values equals pooling the text embeddings before to_k/to_v (both are affine), so
the hook works on the processor's k/v. A row with no phrase (the empty unconditional prompt) uses its
word-level output in place of the phrase level.

A prompt the parser cannot read (PromptParseError) is still attended: its phrases come from the rule-based
chunker (`t2ikit.text.phrases.phrase_token_spans`, any English) and a warning names the prompt and the part
the parser could not read. A warning rather than an error, because the phrase level needs only phrase spans,
which the chunker gives for any text, and hierarchical attention ran on every prompt before it read the parser.
On Shapes World captions the parser's reading gives exactly the chunker's phrases (`t2ikit.text.phrases`),
so the shipped model's outputs did not change.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from t2ikit.attention.sparse import OverrideHook, _TextBound, content_tokens
from t2ikit.text.parser import PromptParseError
from t2ikit.text.phrases import PhraseSpan, parsed_phrase_token_spans, phrase_token_spans

SENTENCE_POOLS = ("eos", "mean")


def check_lambdas(lambdas) -> tuple[float, float, float]:
    """(lambda_w, lambda_p, lambda_s): finite, >= 0, with a positive sum."""
    try:
        values = tuple(float(x) for x in lambdas)
    except (TypeError, ValueError):
        raise TypeError(f"lambdas must be three numbers (word, phrase, sentence), got {lambdas!r}") from None
    if len(values) != 3:
        raise ValueError(f"lambdas must be three numbers (word, phrase, sentence), got {len(values)}: {lambdas!r}")
    if not all(math.isfinite(x) and x >= 0 for x in values):
        raise ValueError(f"lambdas must be finite and >= 0, got {values}")
    if sum(values) <= 0:
        raise ValueError(f"lambdas must sum to a positive number (they are normalised by their sum), got {values}")
    return values


def phrase_spans(tokenizer, text: str, parser=None) -> list[PhraseSpan]:
    """The phrases the phrase level pools: as `parser` reads `text` (a text.parser.Parser), else the chunker's;
    the chunker's with a warning naming the part where the parser cannot read it (module docstring)."""
    if parser is None:
        return phrase_token_spans(tokenizer, text)
    try:
        return parsed_phrase_token_spans(tokenizer, parser, text)
    except PromptParseError as err:
        warnings.warn(f"hierarchical attention: the {parser.name} parser cannot read {text!r} ({err}); its phrase "
                      f"level pools the rule-based chunker's noun phrases instead", stacklevel=2)
        return phrase_token_spans(tokenizer, text)


def pooling_matrices(tokenizer, texts: list[str], sentence: str = "eos", parser=None) -> torch.Tensor:
    """(B, n + 1, n): rows 0..P-1 pool each phrase's tokens (mean; `phrase_spans`), rows P..n-1 are zero (no
    phrase), row n pools the sentence (the first EOS, or the mean of the content tokens after BOS)."""
    if sentence not in SENTENCE_POOLS:
        raise ValueError(f"sentence pooling must be one of {SENTENCE_POOLS}, got {sentence!r}")
    n = tokenizer.model_max_length
    content = content_tokens(tokenizer, texts)  # (B, n): BOS, words, first EOS
    pool = torch.zeros(len(texts), n + 1, n)
    for b, text in enumerate(texts):
        for i, span in enumerate(phrase_spans(tokenizer, text, parser)[:n]):
            pool[b, i, list(span.positions)] = 1.0 / len(span.positions)
        last = int(content[b].sum()) - 1  # the first EOS (truncated prompts: the last slot)
        if sentence == "eos" or last <= 1:
            pool[b, n, last] = 1.0
        else:
            pool[b, n, 1:last] = 1.0 / (last - 1)
    return pool


def hierarchical_attention(q, k, v, phrase_pool: torch.Tensor, sentence_pool: torch.Tensor,
                           lambdas=(1.0, 1.0, 0.0), scale: float | None = None) -> torch.Tensor:
    """q (B, h, Nq, d), k/v (B, h, n, d); phrase_pool (B, P, n) (zero rows: no phrase); sentence_pool (B, n).
    Returns the lambda mix of word, phrase and sentence attention outputs (B, h, Nq, d)."""
    lw, lp, ls = check_lambdas(lambdas)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    has = phrase_pool.sum(-1) > 0  # (B, P)
    row_has = has.any(-1)[:, None, None, None]  # (B, 1, 1, 1)
    word = F.scaled_dot_product_attention(q, k, v, scale=scale) if lw or (lp and not row_has.all()) else 0.0
    total = lw * word if lw else torch.zeros_like(q)
    if lp:
        pool = phrase_pool.to(k.dtype)[:, None]  # (B, 1, P, n)
        kp, vp = pool @ k, pool @ v  # (B, h, P, d)
        scores = (q @ kp.transpose(-1, -2)) * scale  # (B, h, Nq, P)
        probs = torch.nan_to_num(scores.masked_fill(~has[:, None, None, :], float("-inf")).softmax(-1), nan=0.0)
        total = total + lp * torch.where(row_has, probs @ vp, word)  # no phrase in the row: the word level
    if ls:
        total = total + ls * (sentence_pool.to(v.dtype)[:, None, None, :] @ v)  # (B, h, 1, d): one key, all mass
    return total / (lw + lp + ls)


class HierarchicalHook(OverrideHook, _TextBound):
    """Cross-attention over words, noun phrases and the sentence (module docstring); bind to the prompts
    with `bind(pipe, prompts, negatives)` (or use `sparse.bound_generate`) before generating."""

    name = "hierarchical"

    def __init__(self, lambdas=(1.0, 1.0, 0.0), sentence: str = "eos"):
        super().__init__()
        self.lambdas = check_lambdas(lambdas)
        if sentence not in SENTENCE_POOLS:
            raise ValueError(f"sentence pooling must be one of {SENTENCE_POOLS}, got {sentence!r}")
        self.sentence = sentence

    def row_info(self, pipe, texts):
        return pooling_matrices(pipe.tokenizer, texts, self.sentence, getattr(pipe, "parser", None))

    def pools(self, ctx, q, k) -> tuple[torch.Tensor, torch.Tensor]:
        """This batch's phrase pools (B, P, n), P = the phrases of its longest row, and sentence pool (B, n)."""
        pool = self.batch_rows(ctx, q.shape[0]).to(q.device)  # (B, n + 1, n)
        n = pool.shape[-1]
        if k.shape[-2] != n:
            raise RuntimeError(f"{self.name}: bound to {n} text tokens, the keys have {k.shape[-2]}")
        used = int((pool[:, :n].sum(-1) > 0).sum(-1).max())  # phrases in the longest row
        return pool[:, :max(used, 1)], pool[:, n]

    def attend(self, ctx, q, k, v):
        return hierarchical_attention(q, k, v, *self.pools(ctx, q, k), self.lambdas)


def hierarchical_levels(q, k, v, phrase_pool: torch.Tensor, sentence_pool: torch.Tensor,
                        scale: float | None = None) -> torch.Tensor:
    """The three levels' outputs stacked (3, B, h, Nq, d): word, phrase (the word level in a row without a
    phrase), sentence; `hierarchical_attention` with lambdas L is (L @ levels) / sum(L)."""
    return torch.stack([hierarchical_attention(q, k, v, phrase_pool, sentence_pool, one, scale)
                        for one in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))])


class LearnableHierarchicalHook(HierarchicalHook):
    """HierarchicalHook whose lambdas are softmax(logits), a torch Parameter: learned by gradient through a
    frozen UNet (e.g. its diffusion loss). The mix is scale-free (normalised by the sum), so the simplex is
    the whole search space; `learned()` gives lambdas for "hier:W/P/S" or HierarchicalHook."""

    def __init__(self, lambdas=(1.0, 1.0, 1.0), sentence: str = "eos"):
        super().__init__(lambdas, sentence)
        if min(self.lambdas) <= 0:
            raise ValueError(f"learnable lambdas must start > 0 (their logits are log lambdas), got {self.lambdas}")
        self.logits = torch.nn.Parameter(torch.tensor(self.lambdas).log())

    def mix(self) -> torch.Tensor:
        return self.logits.softmax(0)  # (3,) on the simplex

    def learned(self) -> tuple[float, float, float]:
        return tuple(float(x) for x in self.mix().detach())

    def attend(self, ctx, q, k, v):
        levels = hierarchical_levels(q, k, v, *self.pools(ctx, q, k))  # (3, B, h, Nq, d)
        return (self.mix().to(levels.dtype)[:, None, None, None, None] * levels).sum(0)
