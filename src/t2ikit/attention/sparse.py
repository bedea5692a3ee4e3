"""Sparse cross-attention: each image query attends to a few text tokens instead of all n.

The seed's four selection strategies (Sec. "Sparse and Efficient Attention"), as pure functions on
(B, heads, N, d) tensors and as attention hooks:

    top-k      each query keeps its k highest-scoring tokens           topk_attention      TopKHook
    dynamic    each query keeps the smallest set holding mass p        topp_attention      DynamicHook
    pruning    tokens shared by all queries of an image are removed:   prune_tokens        PruneHook
               padding, and tokens with low attention mass over the image
    learned    a keep-score per token from a small module trained with  TokenKeepScorer     LearnedPruneHook
               a sparsity penalty (train_keep_scorer)

Where the compute really shrinks: pruning gathers the kept keys once per image, so the attention itself
costs O(HW x k); the mass estimate reads a strided sample of the queries (1/`mass_stride` of them).
Per-query top-k and top-p still need every score q.k (O(HW x n x d)) to know what to keep; they gather
k keys per query with torch.gather, so only softmax and probs @ V shrink to O(HW x k x d).

`selection_mask` gives each strategy's keep mask M in {0,1}^(HW x n) (the seed's A_sparse = M * A_full,
renormalised) for measuring information kept (relative output error, KL of the rows); the gathered
functions compute the same attention without the mask.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from t2ikit.attention.processor import AttentionHook

STRATEGIES = ("topk", "topp", "prune", "learned")
DEFAULT_MASS_STRIDE = 4  # pruning estimates per-token mass from every 4th image query


# ---------------------------------------------------------------------------------------------------
# Argument checks (before any compute)
# ---------------------------------------------------------------------------------------------------


def check_k(k, n_tokens: int | None = None, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an int number of text tokens, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1 text token, got {k}")
    if n_tokens is not None and k > n_tokens:
        raise ValueError(f"{name}={k} is larger than the number of text tokens ({n_tokens}); allowed: 1..{n_tokens}")
    return k


def check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
        raise TypeError(f"p must be a number in (0, 1], got {p!r}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1] (the attention mass each query keeps), got {p}")
    return float(p)


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


# ---------------------------------------------------------------------------------------------------
# Per-query selection: top-k and dynamic (top-p)
# ---------------------------------------------------------------------------------------------------


def _gathered(scores_k: torch.Tensor, idx: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None = None):
    """softmax over the kept scores, then sum_j p_j v[idx_j]: O(Nq x k x d), not O(Nq x n x d).

    The (Nq x n) probability matrix of every (batch, head) holds k entries per row, so it is built as one
    block-diagonal CSR matrix (B*h*Nq, B*h*n) and multiplied with the stacked values: the same sum as
    gathering k values per query with torch.gather, without materialising the (B, h, Nq, k, d) copy (3x
    faster on CPU at 4096 x 64, k = 16)."""
    if keep is not None:
        scores_k = scores_k.masked_fill(~keep, float("-inf"))
    probs = scores_k.softmax(dim=-1).to(v.dtype)  # (B, h, Nq, k)
    B, h, Nq, k = idx.shape
    n, d = v.shape[-2:]
    offset = torch.arange(B * h, device=idx.device).view(B, h, 1, 1) * n  # block (b, h) starts at column (b*h)*n
    crow = torch.arange(0, B * h * Nq * k + 1, k, device=idx.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta", "invariant checks off"
        probs_csr = torch.sparse_csr_tensor(crow, (idx + offset).reshape(-1), probs.reshape(-1),
                                            size=(B * h * Nq, B * h * n))
        out = probs_csr @ v.reshape(B * h * n, d)  # (B*h*Nq, d)
    return out.view(B, h, Nq, d)


def topk_attention(q, k, v, k_keep: int, scale: float | None = None) -> torch.Tensor:
    """Each query attends to its k_keep highest-scoring keys only (B, h, Nq, d)."""
    check_k(k_keep, k.shape[-2], "k")
    scores = torch.matmul(q, k.transpose(-1, -2)) * _scale(q, scale)  # (B, h, Nq, n)
    top, idx = scores.topk(k_keep, dim=-1)  # (B, h, Nq, k)
    return _gathered(top, idx, v)


def topp_attention(q, k, v, p: float, scale: float | None = None, return_k: bool = False):
    """Dynamic sparsity: each query keeps the smallest set of keys whose softmax mass reaches p.

    The set size differs per query; keys are gathered up to the largest size any query needs, the rest
    masked. With return_k also the mean number of keys kept per query.
    """
    p = check_p(p)
    scores = torch.matmul(q, k.transpose(-1, -2)) * _scale(q, scale)  # (B, h, Nq, n)
    keep_sorted, order = _topp_sorted(scores, p)
    k_max = int(keep_sorted.sum(-1).max())
    out = _gathered(scores.gather(-1, order[..., :k_max]), order[..., :k_max], v, keep_sorted[..., :k_max])
    return (out, keep_sorted.sum(-1).float().mean().item()) if return_k else out


def _topp_sorted(scores: torch.Tensor, p: float):
    """Keep flags in descending-score order: a key is kept while the mass before it is < p."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    before = probs.cumsum(-1) - probs  # mass of the higher-scoring keys
    return before < p, order


# ---------------------------------------------------------------------------------------------------
# Pruning: tokens removed for all queries of an image (gather once, then ordinary attention)
# ---------------------------------------------------------------------------------------------------


def token_mass(q, k, scale: float | None = None, stride: int = DEFAULT_MASS_STRIDE) -> torch.Tensor:
    """Mean attention mass per text token over (a strided sample of) the image queries: (B, h, n)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    scores = torch.matmul(q[:, :, ::stride], k.transpose(-1, -2)) * _scale(q, scale)
    return scores.softmax(-1).mean(-2)


def prune_indices(mass: torch.Tensor, keep: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (B, h, keep) of the kept tokens: allowed ones (e.g. not padding) by mass, then, where a row
    has fewer than `keep` allowed tokens, its highest-mass others (so every row gathers the same count)."""
    check_k(keep, mass.shape[-1], "keep")
    rank = mass.clone()
    if allowed is not None:  # (B, n): allowed tokens rank above every disallowed one
        rank = rank + 2.0 * allowed[:, None, :].to(rank.dtype)
    return rank.topk(keep, dim=-1).indices.sort(dim=-1).values


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, h, n, d), idx (B, h, k) -> (B, h, k, d)."""
    return torch.gather(x, 2, idx[..., None].expand(*idx.shape, x.shape[-1]))


def prune_tokens(q, k, v, keep: int, allowed: torch.Tensor | None = None, scale: float | None = None,
                 stride: int = DEFAULT_MASS_STRIDE):
    """Content-based pruning: keep `keep` tokens per image (and head) by attention mass; (k', v') gathered."""
    idx = prune_indices(token_mass(q, k, scale, stride), keep, allowed)
    return gather_tokens(k, idx), gather_tokens(v, idx)


# ---------------------------------------------------------------------------------------------------
# Keep masks M (B, h, Nq, n) for measuring information kept
# ---------------------------------------------------------------------------------------------------


def selection_mask(scores: torch.Tensor, strategy: str, level, q=None, k=None, allowed=None,
                   stride: int = DEFAULT_MASS_STRIDE) -> torch.Tensor:
    """The boolean keep mask of `strategy` at `level` (k for topk/prune/learned, p for topp)."""
    n = scores.shape[-1]
    if strategy == "topk":
        check_k(level, n)
        idx = scores.topk(level, dim=-1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)
    if strategy == "topp":
        keep_sorted, order = _topp_sorted(scores, check_p(level))
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, keep_sorted)
    if strategy in ("prune", "learned"):
        if strategy == "prune":
            mass = scores[:, :, ::stride].softmax(-1).mean(-2)
        else:  # learned: only the scorer's ranking (passed as allowed scores), same for every head
            if allowed is None:
                raise ValueError("the learned strategy needs the scorer's keep scores as `allowed` (B, n)")
            mass, allowed = allowed[:, None, :].expand(scores.shape[0], scores.shape[1], n), None
        idx = prune_indices(mass, level, allowed)  # (B, h, keep)
        keep = torch.zeros(scores.shape[:2] + (n,), dtype=torch.bool, device=scores.device).scatter_(-1, idx, True)
        return keep[:, :, None, :].expand_as(scores)
    raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def information_kept(q, k, v, mask: torch.Tensor, scale: float | None = None) -> dict:
    """Relative output error ||O_s - O|| / ||O||, mean KL(A_sparse || A) of the rows (= -log of the mass
    kept), mean kept mass and mean kept tokens per query, of the masked attention vs the dense one."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * _scale(q, scale)
    dense = scores.softmax(-1)
    sparse = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    o_d, o_s = dense @ v, sparse @ v
    kept_mass = (dense * mask).sum(-1)
    kl = torch.where(sparse > 0, sparse * (sparse.clamp_min(1e-30).log() - dense.clamp_min(1e-30).log()),
                     torch.zeros_like(sparse)).sum(-1)
    return {
        "rel_error": ((o_s - o_d).norm() / o_d.norm()).item(),
        "kl": kl.mean().item(),
        "kept_mass": kept_mass.mean().item(),
        "kept_tokens": mask.sum(-1).float().mean().item(),
    }


# ---------------------------------------------------------------------------------------------------
# Learned sparsity: a keep-score per token
# ---------------------------------------------------------------------------------------------------


class TokenKeepScorer(torch.nn.Module):
    """Keep logit per text token from its embedding (B, n, D) -> (B, n). Trained by train_keep_scorer."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, 1))
        self.initialize_weights()

    def initialize_weights(self):
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.constant_(self.net[-1].bias, 3.0)  # start by keeping every token (sigmoid(3) = 0.95)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.net(embeds).squeeze(-1)


def gated_attention(q, k, v, gate: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Soft token gates g in (0, 1) (B, n) as log g added to every score: the differentiable relaxation of
    keeping token j with probability g_j. g = 1 everywhere is dense attention."""
    bias = gate.clamp_min(1e-6).log()[:, None, None, :].to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[0], q.shape[1], q.shape[2], -1))


def relative_gates(logits: torch.Tensor) -> torch.Tensor:
    """Gates g / max_j g_j of sigmoid keep scores (B, n). Attention with log g added to the scores is blind to
    a common factor of all gates, so an unnormalised penalty on mean g just shrinks every gate alike and
    learns nothing; relative to the row's largest gate, the penalty has to choose which tokens to drop."""
    gate = torch.sigmoid(logits)
    return gate / gate.amax(-1, keepdim=True)


def train_keep_scorer(embeds: torch.Tensor, samples: list[tuple], dim: int | None = None, steps: int = 200,
                      sparsity: float = 0.05, lr: float = 3e-3, seed: int = 0) -> tuple[TokenKeepScorer, list]:
    """Train a TokenKeepScorer: loss = relative error of the gated attention output vs dense + sparsity * mean g.

    `embeds` (B, n, D) text embeddings; `samples` a list of (q, k, v) of cross-attention calls whose batch
    rows are those B texts (captured from the UNet, e.g. with `capture_qkv`). Returns (scorer, loss history).
    """
    if not samples:
        raise ValueError("train_keep_scorer needs at least one captured (q, k, v) sample")
    torch.manual_seed(seed)
    scorer = TokenKeepScorer(dim or embeds.shape[-1])
    opt = torch.optim.Adam(scorer.parameters(), lr=lr)
    dense = [F.scaled_dot_product_attention(q, k, v) for q, k, v in samples]
    history = []
    for step in range(steps):
        gate = relative_gates(scorer(embeds))  # (B, n)
        err = sum(((gated_attention(q, k, v, gate) - o).norm() / o.norm()) for (q, k, v), o in zip(samples, dense))
        loss = err / len(samples) + sparsity * gate.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"step": step, "loss": loss.item(), "error": (err / len(samples)).item(),
                        "mean_gate": gate.mean().item()})
    return scorer.eval(), history


# ---------------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------------


class _CrossHook(AttentionHook):
    """Cross-attention only."""

    def applies(self, ctx) -> bool:
        return ctx.cross


class OverrideHook(_CrossHook):
    """A hook that computes the attention output itself in on_qkv (its own gathered shapes) and puts it in
    place in on_output; the processor meanwhile attends to one key only, so it costs O(HW x d)."""

    def __init__(self):
        self._pending: dict[str, torch.Tensor] = {}

    def attend(self, ctx, q, k, v) -> torch.Tensor:  # (B, h, Nq, d)
        raise NotImplementedError

    def on_qkv(self, ctx, q, k, v):
        self._pending[ctx.layer] = self.attend(ctx, q, k, v)
        return q, k[:, :, :1], v[:, :, :1]

    def on_output(self, ctx, out):
        o = self._pending.pop(ctx.layer)  # (B, h, Nq, d)
        return o.transpose(1, 2).reshape(out.shape).to(out.dtype)

    def incompatible_with(self, other) -> str | None:
        if other.needs_probs:
            return f"{self.name} computes the cross-attention itself, so no probabilities are left for {other.name}"
        if isinstance(other, OverrideHook):
            return "both compute the cross-attention output themselves"
        return None


class TopKHook(OverrideHook):
    """Per-query top-k cross-attention (k keys gathered per query)."""

    name = "sparse-topk"

    def __init__(self, k: int):
        super().__init__()
        self.k = check_k(k)

    def attend(self, ctx, q, k, v):
        return topk_attention(q, k, v, self.k)


class DynamicHook(OverrideHook):
    """Per-query top-p cross-attention: the smallest key set holding mass p. Records mean keys kept."""

    name = "sparse-topp"

    def __init__(self, p: float):
        super().__init__()
        self.p = check_p(p)
        self.kept: list[float] = []

    def attend(self, ctx, q, k, v):
        out, mean_k = topp_attention(q, k, v, self.p, return_k=True)
        self.kept.append(mean_k)
        return out


class _TextBound(_CrossHook):
    """A hook that needs per-row knowledge of the prompts: `bind(pipe, prompts, negatives)` before a run.

    Rows follow the sampling loop's batch: its row blocks (AttentionContext.blocks: "uncond", then the
    active conditions by name, the prompts' condition named "text"); without them [negatives; prompts]
    when guided, else prompts. `conditions` binds further conditions' prompts by name (noise-space
    region prompts), so a hook reads each row's own tokens in an N-condition batch."""

    rows: dict | None = None

    def bind(self, pipe, prompts: list[str], negatives: list[str] | None = None,
             conditions: dict[str, list[str]] | None = None):
        negatives = negatives if negatives is not None else [""] * len(prompts)
        self.rows = {"cond": self.row_info(pipe, list(prompts)), "uncond": self.row_info(pipe, list(negatives))}
        for name, texts in (conditions or {}).items():
            self.rows[name] = self.row_info(pipe, list(texts))
        return self

    def row_info(self, pipe, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def batch_rows(self, ctx, batch: int) -> torch.Tensor:
        if self.rows is None:
            raise RuntimeError(f"{self.name}: call bind(pipe, prompts) before generating")
        if ctx.blocks is not None:
            names = ["cond" if b == "text" else b for b in ctx.blocks]
            missing = [b for b in names if b not in self.rows]
            if missing:
                raise RuntimeError(f"{self.name} was bound without the prompts of condition(s) {missing}")
            rows = torch.cat([self.rows[b] for b in names])
        else:
            rows = torch.cat([self.rows["uncond"], self.rows["cond"]]) if ctx.guided else self.rows["cond"]
        if rows.shape[0] != batch:
            raise RuntimeError(f"{self.name} was bound to {rows.shape[0]} rows, the UNet batch has {batch}")
        return rows


def content_tokens(tokenizer, texts: list[str]) -> torch.Tensor:
    """(B, n) bool: the tokens that are not padding (BOS, the words and the first EOS)."""
    enc = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    return enc["attention_mask"].bool()


class PruneHook(_TextBound):
    """Content-based pruning: drop padding, then keep `keep` tokens per image by attention mass.

    keep=None keeps exactly the non-padding tokens (rows with fewer get their highest-mass padding tokens
    so every row gathers the same count). Without bind, every token is a candidate (mass only)."""

    name = "sparse-prune"

    def __init__(self, keep: int | None = None, stride: int = DEFAULT_MASS_STRIDE, drop_padding: bool = True):
        if keep is None and not drop_padding:
            raise ValueError("PruneHook needs keep=<int> or drop_padding=True; otherwise nothing is pruned")
        self.keep = None if keep is None else check_k(keep, name="keep")
        self.stride = stride
        self.drop_padding = drop_padding
        self.kept: list[int] = []

    def row_info(self, pipe, texts):
        return content_tokens(pipe.tokenizer, texts)

    def on_qkv(self, ctx, q, k, v):
        n = k.shape[-2]
        allowed = self.batch_rows(ctx, q.shape[0]) if (self.drop_padding and self.rows is not None) else None
        keep = self.keep if self.keep is not None else int(allowed.sum(-1).max()) if allowed is not None else n
        check_k(keep, n, "keep")
        k, v = prune_tokens(q, k, v, keep, allowed, stride=self.stride)
        self.kept.append(keep)
        return q, k, v


class LearnedPruneHook(_TextBound):
    """Learned sparsity: a TokenKeepScorer's relative gates choose the tokens (gate > threshold, or the top
    `keep`), gathered for all queries of an image."""

    name = "sparse-learned"

    def __init__(self, scorer: TokenKeepScorer, keep: int | None = None, threshold: float = 0.5):
        self.scorer, self.keep, self.threshold = scorer, (None if keep is None else check_k(keep, name="keep")), threshold
        self.kept: list[int] = []

    @torch.no_grad()
    def row_info(self, pipe, texts):
        return relative_gates(self.scorer(pipe.encode_text(texts)))  # (B, n) gates in (0, 1]

    def on_qkv(self, ctx, q, k, v):
        gate = self.batch_rows(ctx, q.shape[0]).to(q.device)
        keep = self.keep if self.keep is not None else max(1, int((gate > self.threshold).sum(-1).max()))
        check_k(keep, k.shape[-2], "keep")
        idx = gate.topk(keep, dim=-1).indices.sort(-1).values[:, None, :].expand(-1, k.shape[1], -1)
        self.kept.append(keep)
        return q, gather_tokens(k, idx), gather_tokens(v, idx)


# ---------------------------------------------------------------------------------------------------
# Helpers: capture, generation with bound hooks
# ---------------------------------------------------------------------------------------------------


class QKVCapture(_CrossHook):
    """Records (layer, step, q, k, v) of cross-attention calls (detached) for measurement and training."""

    name = "qkv-capture"

    def __init__(self, steps: set[int] | None = None, cond_only: bool = True):
        self.steps, self.cond_only, self.records = steps, cond_only, []

    def on_qkv(self, ctx, q, k, v):
        if self.steps is None or ctx.step in self.steps:
            rows = slice(q.shape[0] // 2, None) if (self.cond_only and ctx.guided) else slice(None)  # cond half
            self.records.append((ctx.layer, ctx.step, q[rows].detach().clone(), k[rows].detach().clone(),
                                 v[rows].detach().clone()))
        return q, k, v


def bound_generate(pipe, hooks: list, prompts, **kwargs):
    """pipe.generate with `hooks` bound to this call's prompts first (the ones that need the text)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    n = kwargs.get("n", 1)
    rows = [p for p in prompts for _ in range(n)]
    negative = kwargs.get("negative_prompt")
    negs = None if negative is None else ([negative] * len(rows) if isinstance(negative, str)
                                          else [x for x in negative for _ in range(n)])
    for h in hooks:
        if isinstance(h, _TextBound):
            h.bind(pipe, rows, negs)
    return pipe.generate(prompts, hooks=list(hooks), **kwargs)


class HookedPipeline:
    """A pipeline whose generate builds fresh hooks per call (`make_hooks()`) and binds them to the prompts:
    what CompBench's pipeline_generator needs to run a sparse or hierarchical variant."""

    def __init__(self, pipe, make_hooks, name: str):
        self.pipe, self.make_hooks, self.name = pipe, make_hooks, name

    def generate(self, prompts, **kwargs):
        return bound_generate(self.pipe, self.make_hooks(), prompts, **kwargs)

