"""Q2: sparsity vs quality of cross-attention on the shipped model (the seed's k* = argmin[loss + lambda cost]).

Three measurements on one set of compositional CompBench prompts:

- quality: the oracle on images generated with each sparse variant (top-k at several k, top-p, mass pruning,
  learned keep-scores), paired with dense on the same prompts and seeds: CompBench accuracy (every check
  passed, Wilson) and the check pass rate (the share of the oracle's checks an image passes: more sensitive),
  with paired bootstrap intervals of the difference;
- cost: the cross-attention's multiply-adds counted on the UNet's real calls (shapes, kept counts) and its
  wall time measured on the same captured q, k, v, every strategy interleaved with dense;
- information: I(A_sparse; A_dense) of the attention rows (t2ikit.bench.information.discrete_mi on a codebook of
  the dense rows, see `information_kept_mi`), next to KL and the relative output error.

k*(lambda) is read off the measured top-k curve (dense = k = n), with a bootstrap interval over the prompts.
Helpers for generating and scoring a variant (`scored_variant`, `check_rate_difference`) are shared with Q3.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from t2ikit.pipeline import PLAIN
from t2ikit.report.core import Figure, Finding, ReportContext, Table, experiment

COMPOSITIONAL = ("colour_binding", "shape_binding", "spatial", "complex")  # the categories Q2 and Q3 score
STATED_LAMBDA = 0.1  # k*: 10 points of cross-attention FLOP ratio are worth 1 point of check pass rate
LAMBDAS = np.logspace(-3, 1, 41)  # the lambda sweep of the k* figure
CODEBOOK = 16  # codes of the dense attention rows for the discrete I(A_sparse; A_dense)
MI_ROWS = 3000  # attention rows (query x head x layer x step) the MI is estimated on
MIN_PROMPTS_REDUNDANCY = 5  # prompts per category before per-category intervals are read as separating them
SCORER_SEED = 7  # world seed of the learned keep-scorer's training prompts (not the bench's)
IMAGE_SIZE = None  # (H, W) of the scored images; None: the model's default (tests set the oracle's minimum)


# ---------------------------------------------------------------------------------------------------
# Generating and scoring a variant (shared with Q3)
# ---------------------------------------------------------------------------------------------------


def compositional_suite(n_prompts: int, seeds: int):
    from t2ikit.bench.compbench import make_suite

    return make_suite("train", n_prompts, seeds, COMPOSITIONAL)


def scored_variant(ctx: ReportContext, name: str, suite, steps: int, batch: int, generator) -> dict:
    """Images of every suite item from `generator` (compbench's (prompts, seeds) -> images), scored by the oracle,
    one unit per batch (`<name>.b<start>`): {"items": [[category, prompt, seed, passed, checks passed, checks]],
    "seconds": generation seconds}."""
    from t2ikit.bench.progress import bar
    from t2ikit.world.oracle import score

    def one_batch(items):
        def fn():
            t0 = time.perf_counter()
            images = generator([it.prompt for it in items], [it.seed for it in items])
            seconds = time.perf_counter() - t0
            rows = []
            for it, image in zip(items, images):
                s = score(image, it.spec)
                rows.append([it.category, it.prompt, it.seed, bool(s.all_passed),
                             sum(bool(c.passed) for c in s.checks), len(s.checks)])
            return {"items": rows, "seconds": seconds}
        return fn

    items, seconds = [], 0.0
    progress = bar(total=len(suite.items), desc=f"{ctx.experiment_id} {name}", enabled=ctx.progress, unit="image")
    for start in range(0, len(suite.items), batch):
        part = ctx.unit(f"{name.replace(':', '=').replace('/', '_')}.b{start}",
                        one_batch(suite.items[start:start + batch]))
        items += part["items"]
        seconds += part["seconds"]
        progress.update(len(part["items"]))
    progress.close()
    return {"items": items, "seconds": seconds}


def model_generator(pipe, steps: int, attention: str | None = None, make_hooks=None):
    """compbench's generator for the pipeline with an attention variant ("topk:4", "hier:1/1/0", ...) or hooks
    built fresh per call and bound to its prompts (`make_hooks`); relation guidance off (see what_was_run)."""
    from t2ikit.attention.sparse import HookedPipeline
    from t2ikit.bench.compbench import pipeline_generator

    target = pipe if make_hooks is None else HookedPipeline(pipe, make_hooks, "hooked")
    kwargs = dict(PLAIN)
    if IMAGE_SIZE is not None:
        kwargs["size"] = IMAGE_SIZE
    if attention is not None:
        kwargs["attention"] = attention
    return pipeline_generator(target, steps=steps, **kwargs)


def check_fraction(items) -> np.ndarray:
    """Per image: the share of the oracle's checks it passes."""
    return np.array([r[4] / r[5] if r[5] else float(r[3]) for r in items], dtype=float)


def check_rate_difference(base: dict, other: dict, rng: np.random.Generator, resamples: int,
                          category: str | None = None) -> dict:
    """other - base in check pass rate on the same items, with a paired bootstrap interval."""
    from t2ikit.bench.stats import bootstrap_interval

    if [r[:3] for r in base["items"]] != [r[:3] for r in other["items"]]:
        raise ValueError("the two variants were not scored on the same items")
    keep = [category is None or r[0] == category for r in base["items"]]
    a, b = check_fraction(base["items"])[keep], check_fraction(other["items"])[keep]
    lo, hi = bootstrap_interval(b - a, rng, resamples)
    return {"base": float(a.mean()), "other": float(b.mean()), "diff": float((b - a).mean()), "ci95": [lo, hi]}


def accuracy_cell(items, category: str | None = None) -> tuple[str, float, tuple[float, float]]:
    from t2ikit.bench.stats import wilson_interval

    rows = [r for r in items if category is None or r[0] == category]
    passed = sum(bool(r[3]) for r in rows)
    lo, hi = wilson_interval(passed, len(rows))
    acc = passed / len(rows) if rows else 0.0
    return f"{acc:.2f} [{lo:.2f}, {hi:.2f}] ({passed}/{len(rows)})", acc, (lo, hi)


def fmt(x: float, ci, digits: int = 3) -> str:
    return f"{x:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


# ---------------------------------------------------------------------------------------------------
# Cost and information on captured cross-attention calls
# ---------------------------------------------------------------------------------------------------


def capture_calls(pipe, prompts: list[str], steps: int, seed: int = 0) -> list:
    """(layer, step, q, k, v) of every cross-attention call (conditional half) at the first, middle and last step."""
    from t2ikit.attention.sparse import QKVCapture

    cap = QKVCapture(steps={0, steps // 2, steps - 1})
    pipe.generate(prompts, seed=seed, steps=steps, progress=False, hooks=[cap], **PLAIN)
    return cap.records


def keep_mask(scores, strategy: str, level, allowed, gates):
    from t2ikit.attention import sparse as sp

    if strategy == "prune":
        keep = int(allowed.sum(-1).max()) if level is None else level
        return sp.selection_mask(scores, "prune", keep, allowed=allowed)
    if strategy == "learned":
        return sp.selection_mask(scores, "learned", level, allowed=gates)
    return sp.selection_mask(scores, strategy, level)


def counted_flops(strategy: str, q, n: int, mask) -> float:
    """Multiply-adds of QK^T and probs @ V as the strategy's gathered implementation (attention.sparse) runs them
    on this call; selection, softmax and sorting not counted (benchmarks/sparse.py's count)."""
    from t2ikit.attention.sparse import DEFAULT_MASS_STRIDE

    B, h, Nq, d = q.shape
    kept = mask.sum(-1)  # (B, h, Nq)
    if strategy == "dense":
        per = 2 * Nq * n
    elif strategy == "topk":
        per = Nq * n + Nq * int(kept.max())  # every score, then k values per query
    elif strategy == "topp":
        per = Nq * n + Nq * int(kept.max())  # gathered up to the largest set any query keeps
    elif strategy == "prune":
        per = -(-Nq // DEFAULT_MASS_STRIDE) * n + 2 * Nq * int(kept.max())  # strided mass estimate, k keys
    elif strategy == "learned":
        per = 2 * Nq * int(kept.max())  # keep scores come from the text alone
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return float(per * d * B * h)


def run_attention(strategy: str, level, q, k, v, allowed, gates):
    """The strategy's own gathered implementation on one call (what the hooks run)."""
    from t2ikit.attention import sparse as sp

    if strategy == "dense":
        return F.scaled_dot_product_attention(q, k, v)
    if strategy == "topk":
        return sp.topk_attention(q, k, v, level)
    if strategy == "topp":
        return sp.topp_attention(q, k, v, level)
    if strategy == "prune":
        keep = int(allowed.sum(-1).max()) if level is None else level
        return F.scaled_dot_product_attention(q, *sp.prune_tokens(q, k, v, keep, allowed))
    if strategy == "learned":
        idx = gates.topk(level, dim=-1).indices.sort(-1).values[:, None, :].expand(-1, k.shape[1], -1)
        return F.scaled_dot_product_attention(q, sp.gather_tokens(k, idx), sp.gather_tokens(v, idx))
    raise ValueError(f"unknown strategy {strategy!r}")


def information_kept_mi(dense_rows: np.ndarray, sparse_rows: np.ndarray, codebook: np.ndarray,
                        rng: np.random.Generator, resamples: int) -> dict:
    """I(A_sparse; A_dense) of attention rows, both coded by the nearest code of `codebook` (k-means of the dense
    rows' square roots, the Hellinger embedding), estimated by `discrete_mi` (plug-in, Miller-Madow): in nats and
    as the share of H(A_dense code) it keeps. Interval of the share: the bootstrap's spread over rows placed around
    the estimate (a resample's duplicated rows bias the plug-in share upwards, so its raw percentiles can miss
    the estimate; this keeps the spread and drops that bias, as `mi_interval` does for KSG). The resamples use
    `miller_madow_mi` on the joint table, the same estimator as `discrete_mi` without its per-call label sort."""
    from scipy.cluster.vq import vq

    from t2ikit.bench.information import discrete_mi
    from t2ikit.bench.stats import percentile_interval

    d, _ = vq(np.sqrt(dense_rows), codebook)
    s, _ = vq(np.sqrt(sparse_rows), codebook)
    mi, entropy = discrete_mi(s, d), discrete_mi(d, d)
    estimate = mi / entropy if entropy > 0 else 1.0
    k = len(codebook)
    pairs = s * k + d
    draws = []
    for _ in range(resamples):  # the same estimator on resampled rows, from the joint table (fast)
        joint = np.bincount(pairs[rng.integers(0, len(pairs), len(pairs))], minlength=k * k).reshape(k, k)
        h = miller_madow_mi(np.diag(joint.sum(0)))
        draws.append(miller_madow_mi(joint) / h if h > 0 else 1.0)
    lo, hi = percentile_interval(estimate + np.asarray(draws) - np.mean(draws))
    return {"mi_nats": mi, "h_dense_nats": entropy, "kept_share": estimate,
            "kept_share_ci": [max(0.0, lo), min(1.0, hi)]}


def miller_madow_mi(joint: np.ndarray) -> float:
    """`discrete_mi` (plug-in with the Miller-Madow correction, >= 0) from a joint count table (a, b)."""
    n = joint.sum()

    def entropy(counts):
        counts = counts[counts > 0]
        p = counts / n
        return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * n))

    return max(0.0, entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint.ravel()))


def measure_information(records, allowed, gates, settings, rng_seed: int, resamples: int, rounds: int) -> dict:
    """Per setting "strategy:level": kept mass, KL, relative output error, I(A_sparse; A_dense), counted FLOP
    ratio and the measured wall-time ratio of the cross-attention (interleaved with dense, fastest of rounds)."""
    from scipy.cluster.vq import kmeans2

    from t2ikit.attention import sparse as sp

    rng = np.random.default_rng(rng_seed)
    dense_rows = []
    for _, _, q, k, v in records:
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        dense_rows.append(scores.softmax(-1).reshape(-1, k.shape[-2]))
    dense_all = torch.cat(dense_rows).double().numpy()
    pick = np.sort(rng.choice(len(dense_all), size=min(MI_ROWS, len(dense_all)), replace=False))
    codebook, _ = kmeans2(np.sqrt(dense_all[pick]), CODEBOOK, rng=rng, minit="++")
    dense_flops = sum(counted_flops("dense", q, k.shape[-2], torch.ones(q.shape[:3] + (1,))) for _, _, q, k, _ in
                      records)

    out = {}
    for strategy, level in settings:
        acc, sparse_rows, flop = [], [], 0.0
        for _, _, q, k, v in records:
            scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
            mask = keep_mask(scores, strategy, level, allowed, gates)
            acc.append((q.shape[1] * q.shape[2], sp.information_kept(q, k, v, mask)))
            sparse_rows.append(scores.masked_fill(~mask, float("-inf")).softmax(-1).reshape(-1, k.shape[-2]))
            flop += counted_flops(strategy, q, k.shape[-2], mask)
        weight = sum(w for w, _ in acc)
        row = {m: sum(w * r[m] for w, r in acc) / weight for m in ("rel_error", "kl", "kept_mass", "kept_tokens")}
        row.update(information_kept_mi(dense_all[pick], torch.cat(sparse_rows).double().numpy()[pick], codebook,
                                       rng, resamples))
        row["flop_ratio"] = flop / dense_flops
        out[f"{strategy}:{level}"] = row

    # wall time: every strategy's own implementation on the calls of the first captured step, interleaved
    first = min(step for _, step, *_ in records)
    calls = [(q, k, v) for _, step, q, k, v in records if step == first]
    runs = {"dense:None": ("dense", None), **{f"{s}:{lv}": (s, lv) for s, lv in settings}}
    best = {name: float("inf") for name in runs}
    with torch.no_grad():
        for _ in range(rounds):
            for name, (strategy, level) in runs.items():
                t0 = time.perf_counter()
                for q, k, v in calls:
                    run_attention(strategy, level, q, k, v, allowed, gates)
                best[name] = min(best[name], time.perf_counter() - t0)
    for name in out:
        out[name]["time_ratio"] = best[name] / best["dense:None"]
    return {"settings": out, "dense_ms": 1e3 * best["dense:None"], "calls_timed": len(calls),
            "rows": int(len(dense_all)), "mi_rows": int(len(pick))}


def redundancy_by_category(records, prompts_categories: list[str], k: int = 4) -> dict:
    """Per prompt: the attention mass its queries' top-k tokens hold and the tokens a query needs for 90% of its
    mass (mean over captured calls, heads and queries); grouped by category (the text's redundancy)."""
    per_prompt = np.zeros((len(prompts_categories), 2))
    count = 0
    for _, _, q, kk, _ in records:
        probs = ((q @ kk.transpose(-1, -2)) / q.shape[-1] ** 0.5).softmax(-1)  # (B, h, Nq, n)
        top = probs.topk(k, dim=-1).values.sum(-1).mean((1, 2))  # (B,)
        need = (probs.sort(-1, descending=True).values.cumsum(-1) < 0.9).sum(-1).add(1).float().mean((1, 2))
        per_prompt += torch.stack([top, need], 1).double().numpy()
        count += 1
    per_prompt /= max(count, 1)
    out = {}
    for cat in dict.fromkeys(prompts_categories):
        rows = per_prompt[[c == cat for c in prompts_categories]]
        out[cat] = {"topk_mass": rows[:, 0].tolist(), "k90": rows[:, 1].tolist()}
    return out


# ---------------------------------------------------------------------------------------------------
# Learned keep-scores (trained here: the model ships none)
# ---------------------------------------------------------------------------------------------------


def train_scorer_unit(pipe, steps: int, n_prompts: int, gen_steps: int) -> dict:
    """Train a TokenKeepScorer (attention.sparse.train_keep_scorer) on captured calls of prompts from another
    world seed than the bench's; its weights as lists (JSON)."""
    from t2ikit.attention import sparse as sp
    from t2ikit.bench.compbench import make_suite

    suite = make_suite("train", n_prompts, 1, COMPOSITIONAL, bench_seed=SCORER_SEED)
    prompts = [it.prompt for it in suite.items]
    records = capture_calls(pipe, prompts, gen_steps)
    with torch.no_grad():
        embeds = pipe.encode_text(prompts)
    scorer, history = sp.train_keep_scorer(embeds, [(q, k, v) for _, _, q, k, v in records], steps=steps)
    return {"state": {k: v.tolist() for k, v in scorer.state_dict().items()}, "prompts": len(prompts),
            "samples": len(records), "steps": steps, "first": history[0], "last": history[-1]}


def load_scorer(unit: dict, dim: int):
    from t2ikit.attention.sparse import TokenKeepScorer

    scorer = TokenKeepScorer(dim)
    scorer.load_state_dict({k: torch.tensor(v) for k, v in unit["state"].items()})
    return scorer.eval()


# ---------------------------------------------------------------------------------------------------
# k*
# ---------------------------------------------------------------------------------------------------


def k_star(loss: np.ndarray, cost: np.ndarray, ks: list[int], lambdas) -> list[int]:
    """argmin_k [loss(k) + lambda cost(k)] for each lambda (ties: the smaller k)."""
    return [ks[int(np.argmin(loss + lam * cost))] for lam in lambdas]


def k_star_curve(fractions: np.ndarray, cost: np.ndarray, ks: list[int], lambdas, rng, resamples: int) -> dict:
    """k*(lambda) with a bootstrap interval over images: fractions (len(ks), images) of check pass fractions,
    the last row dense; the loss is dense's rate minus the level's."""
    loss = fractions[-1].mean() - fractions.mean(1)
    point = k_star(loss, cost, ks, lambdas)
    n = fractions.shape[1]
    draws = []
    for _ in range(resamples):
        f = fractions[:, rng.integers(0, n, n)]
        draws.append(k_star(f[-1].mean() - f.mean(1), cost, ks, lambdas))
    draws = np.asarray(draws)
    return {"k": point, "lo": np.percentile(draws, 2.5, axis=0).tolist(),
            "hi": np.percentile(draws, 97.5, axis=0).tolist()}


# ---------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------


@experiment("q2.sparsity", "Sparse cross-attention: quality vs cost, k*, and the information kept",
            minutes={"quick": 2, "full": 7})
def run(ctx: ReportContext) -> Finding:
    torch.set_num_threads(ctx.threads)
    pipe = ctx.pipe()
    n_tokens = pipe.tokenizer.model_max_length
    steps = ctx.pick(10, 20, smoke=2)
    n_prompts, seeds = ctx.pick(2, 6, smoke=1), ctx.pick(1, 2, smoke=1)
    resamples = ctx.pick(500, 2000, smoke=20)
    topk = [k for k in ctx.pick((2, 8), (1, 2, 4, 8, 16), smoke=(2,)) if k < n_tokens]
    others = ctx.pick(["topp:0.9"], ["topp:0.9", "prune:8", "prune"], smoke=["topp:0.9"])
    train_scorer = ctx.pick(False, True, smoke=False)
    suite = compositional_suite(n_prompts, seeds)
    prompts = list(dict.fromkeys(it.prompt for it in suite.items))
    categories = [next(it.category for it in suite.items if it.prompt == p) for p in prompts]

    # learned keep-scores: the shipped model has no trained scorer, so full trains one
    scorer, scorer_unit = None, None
    if train_scorer:
        scorer_unit = ctx.unit("scorer", lambda: train_scorer_unit(pipe, 150, 4, steps))
        scorer = load_scorer(scorer_unit, pipe.text_encoder.config.hidden_size)
    learned = [8] if scorer is not None else []

    # information and cost on the captured calls of the dense run (cheap: every level)
    info_levels = [("topk", k) for k in sorted({*ctx.pick((1, 4, 16, 32), (1, 2, 4, 8, 16, 24, 32)), *topk})
                   if k < n_tokens]
    info_levels += [("topp", p) for p in ctx.pick((0.5, 0.9, 0.99), (0.5, 0.8, 0.9, 0.95, 0.99))]
    info_levels += [("prune", k) for k in ctx.pick((8,), (4, 8, 16))] + [("prune", None)]
    info_levels += [("learned", k) for k in (4, 8, 16)] if scorer is not None else []

    def information():
        from t2ikit.attention.sparse import content_tokens, relative_gates

        records = capture_calls(pipe, prompts, steps)
        allowed = content_tokens(pipe.tokenizer, prompts)
        with torch.no_grad():
            gates = relative_gates(scorer(pipe.encode_text(prompts))) if scorer is not None else None
        out = measure_information(records, allowed, gates, info_levels, 0, ctx.pick(100, 200, smoke=10),
                                  ctx.pick(3, 5, smoke=1))
        out["redundancy"] = redundancy_by_category(records, categories)
        out["content_tokens"] = allowed.sum(-1).tolist()
        return out

    info = ctx.unit("information", information)
    S = info["settings"]

    # quality: every CompBench variant on the same items as dense
    variants = ["dense"] + [f"topk:{k}" for k in topk] + others + [f"learned:{k}" for k in learned]
    batch = ctx.pick(8, 16, smoke=4)
    results = {}
    for name in variants:
        if name.startswith("learned:"):
            from t2ikit.attention.sparse import LearnedPruneHook

            keep = int(name.split(":")[1])
            gen = model_generator(pipe, steps, make_hooks=lambda keep=keep: [LearnedPruneHook(scorer, keep=keep)])
        else:
            gen = model_generator(pipe, steps, attention=None if name == "dense" else name)
        results[name] = scored_variant(ctx, name, suite, steps, batch, gen)

    rng = np.random.default_rng(0)
    dense = results["dense"]
    n_items = len(dense["items"])

    def info_key(name):
        if name == "dense":
            return None
        s, _, lv = name.partition(":")
        return f"{s}:{lv}" if lv else f"{s}:None"

    rows, curve = [], {}
    for name in variants:
        r = results[name]
        acc_text, acc, _ = accuracy_cell(r["items"])
        d = check_rate_difference(dense, r, rng, resamples)
        key = info_key(name)
        cost = 1.0 if key is None else S[key]["flop_ratio"]
        t_ratio = 1.0 if key is None else S[key]["time_ratio"]
        share = (1.0, [1.0, 1.0]) if key is None else (S[key]["kept_share"], S[key]["kept_share_ci"])
        kept = n_tokens if key is None else S[key]["kept_tokens"]
        curve[name] = {"check_rate": d["other"], "diff": d["diff"], "ci95": d["ci95"], "flop_ratio": cost,
                       "time_ratio": t_ratio, "kept_share": share[0], "kept_share_ci": share[1], "accuracy": acc,
                       "kept_tokens": kept, "gen_s_per_image": r["seconds"] / max(len(r["items"]), 1)}
        rows.append([name, f"{kept:.1f}", f"{cost:.3f}", f"{t_ratio:.2f}", f"{curve[name]['gen_s_per_image']:.2f}",
                     acc_text, f"{d['other']:.3f}", fmt(d["diff"], d["ci95"]),
                     f"{share[0]:.3f} [{share[1][0]:.3f}, {share[1][1]:.3f}]"])

    # k* on the top-k curve (dense = k = n), counted FLOPs and the seed's ideal cost k/n
    ks = list(topk) + [n_tokens]
    fractions = np.stack([check_fraction(results[f"topk:{k}"]["items"]) for k in topk]
                         + [check_fraction(dense["items"])])  # (levels, images), dense last
    cost_counted = np.array([S[f"topk:{k}"]["flop_ratio"] for k in topk] + [1.0])
    cost_ideal = np.array([k / n_tokens for k in ks])
    kstar = {"counted": k_star_curve(fractions, cost_counted, ks, LAMBDAS, rng, resamples),
             "ideal": k_star_curve(fractions, cost_ideal, ks, [STATED_LAMBDA] + list(LAMBDAS), rng, resamples)}
    ideal_stated = {m: kstar["ideal"][m][0] for m in ("k", "lo", "hi")}
    kstar["ideal"] = {m: v[1:] for m, v in kstar["ideal"].items()}
    counted_stated = k_star_curve(fractions, cost_counted, ks, [STATED_LAMBDA], rng, resamples)
    counted_stated = {m: v[0] for m, v in counted_stated.items()}

    # the bound: relative quality loss vs the share of information lost, per information setting
    bound_rows, bound_ok = [], []
    base_rate = curve["dense"]["check_rate"]
    for name in variants[1:]:
        c = curve[name]
        q_loss = -c["diff"] / base_rate if base_rate > 0 else 0.0
        q_ci = [-c["ci95"][1] / base_rate, -c["ci95"][0] / base_rate] if base_rate > 0 else [0.0, 0.0]
        i_loss = 1 - c["kept_share"]
        i_ci = [1 - c["kept_share_ci"][1], 1 - c["kept_share_ci"][0]]
        ok = q_loss <= i_ci[1]
        bound_ok.append(ok)
        bound_rows.append([name, fmt(q_loss, q_ci), f"{i_loss:.3f} [{i_ci[0]:.3f}, {i_ci[1]:.3f}]",
                           f"{S[info_key(name)]['kl']:.3f}", f"{S[info_key(name)]['rel_error']:.3f}",
                           "yes" if ok else "no"])

    # redundancy: mass of the top-4 tokens and tokens for 90% of the mass, per category (bootstrap over prompts)
    from t2ikit.bench.stats import bootstrap_interval

    red_rows, red, cat_kstar = [], {}, {}
    for cat, v in info["redundancy"].items():
        k90 = np.array(v["k90"])
        lo, hi = bootstrap_interval(k90, rng, resamples)
        red[cat] = (float(k90.mean()), lo, hi)
        loss = check_rate_difference(dense, results[f"topk:{topk[0]}"], rng, resamples, cat)
        keep = [r[0] == cat for r in dense["items"]]
        ks_cat = k_star_curve(fractions[:, keep], cost_counted, ks, [STATED_LAMBDA], rng, resamples)
        cat_kstar[cat] = {m: x[0] for m, x in ks_cat.items()}
        red_rows.append([cat, len(k90), f"{np.mean(v['topk_mass']):.3f}", f"{k90.mean():.1f} [{lo:.1f}, {hi:.1f}]",
                         fmt(loss["diff"], loss["ci95"]),
                         f"{cat_kstar[cat]['k']} [{cat_kstar[cat]['lo']:.0f}, {cat_kstar[cat]['hi']:.0f}]"])
    # categories differ in redundancy when two intervals are disjoint; a bootstrap over fewer prompts than
    # MIN_PROMPTS_REDUNDANCY only spans the prompts' own values, so it cannot say so
    separated = n_prompts >= MIN_PROMPTS_REDUNDANCY and any(a[2] < b[1] for a in red.values() for b in red.values())
    # the optimal k itself depends on the text when two categories' k* intervals are disjoint
    k_depends = n_prompts >= MIN_PROMPTS_REDUNDANCY and any(a["hi"] < b["lo"] for a in cat_kstar.values()
                                                            for b in cat_kstar.values())

    # verdict: a trade-off exists when some sparse variant (fewer FLOPs) loses quality with an interval below 0
    lost = [n for n in variants[1:] if curve[n]["ci95"][1] < 0 and curve[n]["flop_ratio"] < 1]
    resolved = [k for k in topk if curve[f"topk:{k}"]["ci95"][1] < 0]
    gained = [n for n in variants[1:] if curve[n]["ci95"][0] > 0]
    if lost and k_depends:
        verdict = "holds"
    elif lost or k_depends:
        verdict = "partly holds"
    elif not gained:
        verdict = "no difference"
    else:
        verdict = "does not hold"  # sparsity improved quality: no trade-off to optimise

    smallest = topk[0]
    c_small = curve[f"topk:{smallest}"]
    lost_text = ", ".join(f"{n} ({fmt(curve[n]['diff'], curve[n]['ci95'])} at FLOP ratio {curve[n]['flop_ratio']:.2f})"
                          for n in lost)
    answer = (
        f"On {pipe.name} ({n_items} paired images, dense check pass rate {base_rate:.3f}), per-query top-k at k = "
        f"{smallest} of {n_tokens} tokens changes the check pass rate by {fmt(c_small['diff'], c_small['ci95'])}; "
        + (f"quality is lost with an interval below 0 by {lost_text}, so a trade-off exists. " if lost else
           "no sparse variant loses quality with an interval below 0. ")
        + (f"Gains with an interval above 0: {', '.join(gained)}. " if gained else "")
        + f"Per-query top-k still scores every key, so its counted FLOPs only fall to {c_small['flop_ratio']:.2f} "
        f"of dense at k = {smallest}, and its measured cross-attention time is {c_small['time_ratio']:.2f}x dense"
        + (": it buys no time here. " if c_small["time_ratio"] >= 1 else ". ")
        + f"k* at lambda = {STATED_LAMBDA}: {counted_stated['k']} [{counted_stated['lo']:.0f}, "
        f"{counted_stated['hi']:.0f}] "
        f"with the counted FLOPs, {ideal_stated['k']} [{ideal_stated['lo']:.0f}, {ideal_stated['hi']:.0f}] with the "
        f"seed's ideal cost k/n; k* falls from {kstar['counted']['k'][0]} to {kstar['counted']['k'][-1]} as lambda "
        f"goes from {LAMBDAS[0]:g} to {LAMBDAS[-1]:g}. Top-{smallest} keeps {c_small['kept_share']:.2f} "
        f"[{c_small['kept_share_ci'][0]:.2f}, {c_small['kept_share_ci'][1]:.2f}] of the dense map's information "
        f"(discrete I on a {CODEBOOK}-code codebook); the seed's bound (relative quality loss <= information lost) "
        f"is met by {sum(bound_ok)} of {len(bound_ok)} sparse variants"
        + (" (trivially where no quality was lost). " if not lost else ". ")
        + "Text redundancy: a query needs "
        + ", ".join(f"{v[0]:.1f} [{v[1]:.1f}, {v[2]:.1f}] ({c})" for c, v in red.items())
        + " tokens for 90% of its mass"
        + (" (the categories differ)" if separated else
           (f" ({n_prompts} prompts per category: not resolved)" if n_prompts < MIN_PROMPTS_REDUNDANCY else
            " (intervals overlap)"))
        + "; k* per category at the stated lambda: "
        + ", ".join(f"{c} {v['k']} [{v['lo']:.0f}, {v['hi']:.0f}]" for c, v in cat_kstar.items())
        + (", so the optimal sparsity depends on the text" + _direction(red, cat_kstar) + "." if k_depends else
           ": a dependence of the optimal sparsity on the text is not resolved"
           + (" (too few prompts per category)." if n_prompts < MIN_PROMPTS_REDUNDANCY else " (intervals overlap)."))
        + (" Under this budget (few prompts, one seed) only large effects could show."
           if ctx.budget != "full" else "")
    )

    figures = _figures(ctx, curve, variants, topk, n_tokens, kstar, S)
    tables = [
        Table("Quality vs cost per variant (paired with dense on the same prompts and seeds)",
              ["variant", "kept tokens / query", "cross-attn FLOP ratio (counted)", "cross-attn time ratio (measured)",
               "generation s / image", "CompBench accuracy [95% Wilson]", "check pass rate",
               "check rate - dense [95% paired bootstrap]", "I(A_sparse; A_dense) share kept [95%]"],
              rows, note="FLOPs: multiply-adds of QK^T and probs @ V as the gathered implementation runs them on the "
                         "UNet's captured cross-attention calls; time: those calls, interleaved with dense, fastest of "
                         "rounds. dense = top-k at k = n."),
        Table("The seed's bound: quality degradation <= information loss",
              ["variant", "relative check-rate loss [95%]", "information lost (1 - I/H) [95%]", "KL(sparse||dense)",
               "rel. attention output error", "bound met"], bound_rows,
              note="information: I(A_sparse; A_dense) / H(A_dense) with both attention rows coded by a "
                   f"{CODEBOOK}-code k-means codebook of the dense rows (Hellinger embedding), discrete_mi "
                   "(plug-in, Miller-Madow), bootstrap over rows. A continuous estimator cannot serve here: "
                   "A_sparse is a deterministic function of A_dense, so gaussian_mi diverges as k -> n and KSG "
                   "collapses on the identical rows; the codebook gives a finite H to measure the share against."),
        Table("Text redundancy per category (captured dense attention)",
              ["category", "prompts", f"mass of the top-4 tokens", "tokens for 90% of a query's mass [95%]",
               f"check rate change at top-{smallest} [95%]", f"k* at lambda {STATED_LAMBDA} (counted FLOPs) [95%]"],
              red_rows),
        Table("k*(lambda) = argmin_k [check-rate loss(k) + lambda * cost(k)], top-k curve",
              ["lambda", "k* (counted FLOPs) [95%]", "k* (ideal cost k/n) [95%]"],
              [[f"{lam:.3g}", f"{kstar['counted']['k'][i]} [{kstar['counted']['lo'][i]:.0f}, "
                              f"{kstar['counted']['hi'][i]:.0f}]",
                f"{kstar['ideal']['k'][i]} [{kstar['ideal']['lo'][i]:.0f}, {kstar['ideal']['hi'][i]:.0f}]"]
               for i, lam in enumerate(LAMBDAS) if i % 5 == 0]),
    ]
    if scorer_unit is not None:
        tables.append(Table("Learned keep-scorer (trained here; none ships with the model)",
                            ["prompts", "captured calls", "Adam steps", "mean gate first -> last",
                             "rel. error first -> last"],
                            [[scorer_unit["prompts"], scorer_unit["samples"], scorer_unit["steps"],
                              f"{scorer_unit['first']['mean_gate']:.3f} -> {scorer_unit['last']['mean_gate']:.3f}",
                              f"{scorer_unit['first']['error']:.4f} -> {scorer_unit['last']['error']:.4f}"]]))
    numbers = {
        "items": n_items, "steps": steps, "n_tokens": n_tokens, "dense_check_rate": base_rate,
        "topk_min": smallest, "topk_min_diff": c_small["diff"], "topk_min_ci95": c_small["ci95"],
        "k_star_counted": counted_stated["k"], "k_star_counted_ci95": [counted_stated["lo"], counted_stated["hi"]],
        "topk_loss_resolved": resolved, "loss_resolved": lost, "gain_resolved": gained,
        "k_star_by_category": cat_kstar, "k_star_depends_on_text": k_depends,
        "k_star_ideal": ideal_stated["k"], "k_star_ideal_ci95": [ideal_stated["lo"], ideal_stated["hi"]],
        "lambda": STATED_LAMBDA, "bound_met": int(sum(bound_ok)), "bound_checked": len(bound_ok),
        "curve": {name: {k: v for k, v in c.items()} for name, c in curve.items()},
        "learned_scorer": scorer_unit is not None,
    }
    what = (f"Model {pipe.name}, {len(COMPOSITIONAL)} compositional CompBench categories "
            f"({', '.join(COMPOSITIONAL)}) x "
            f"{n_prompts} prompts x {seeds} seed(s) = {n_items} images per variant, {steps} dpmpp_2m steps, guidance "
            f"{pipe.defaults['guidance']}, relation guidance off (it would act through the same attention); "
            f"variants {', '.join(variants)}; information and cost on the cross-attention calls captured at steps 0, "
            f"{steps // 2}, {steps - 1} of the dense run. "
            + ("Learned keep-scores: not measured at this budget (no trained scorer ships with the model; "
               "--budget full trains one for 150 steps)." if scorer is None else
               "Learned keep-scores: a scorer trained here for 150 steps (no trained one ships)."))
    return Finding(answer=answer, verdict=verdict, tables=tables, figures=figures, numbers=numbers,
                   what_was_run=what)


def _direction(red: dict, cat_kstar: dict) -> str:
    """Whether the category that needs the largest k* is the one whose attention is most spread (the seed's reading:
    less redundant text needs more tokens) or not."""
    top = max(cat_kstar, key=lambda c: (cat_kstar[c]["k"], cat_kstar[c]["lo"]))
    spread = max(red, key=lambda c: red[c][0])
    if top == spread:
        return f"; the category needing the most tokens ({top}) also spreads its attention the most"
    return (f"; but the category needing the most tokens ({top}, {red[top][0]:.1f} tokens for 90% of the mass) is "
            f"not the one whose attention is most spread ({spread}, {red[spread][0]:.1f}): k* follows what the "
            "prompt asks for, not how redundant its attention looks")


def _bar(c: dict) -> list[float]:
    """Error bar (below, above) of a variant's check rate: the paired interval of its difference to dense."""
    return [max(c["diff"] - c["ci95"][0], 0.0), max(c["ci95"][1] - c["diff"], 0.0)]


def _figures(ctx, curve, variants, topk, n_tokens, kstar, S) -> list:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure("curve")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    tk = [f"topk:{k}" for k in topk] + ["dense"]
    xs = [curve[n]["flop_ratio"] for n in tk]
    ys = [curve[n]["check_rate"] for n in tk]
    base = curve["dense"]["check_rate"]
    err = np.array([_bar(curve[n]) for n in tk]).T
    ax1.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label="top-k (k = " + ", ".join(
        str(k) for k in topk) + f", {n_tokens})")
    for n in variants:
        if n not in tk:
            c = curve[n]
            ax1.errorbar([c["flop_ratio"]], [c["check_rate"]], yerr=np.array(_bar(c))[:, None], marker="s",
                         capsize=3, linestyle="none", label=n)
    ax1.axhline(base, color="gray", lw=0.8, ls="--")
    ax1.set_xlabel("cross-attention FLOPs / dense (counted)")
    ax1.set_ylabel("oracle check pass rate")
    ax1.set_title(f"{ctx.command()}", fontsize=5)
    ax1.legend(fontsize=7)
    levels = sorted(int(key.split(":")[1]) for key in S if key.startswith("topk:"))
    share = [S[f"topk:{k}"]["kept_share"] for k in levels]
    lo = [S[f"topk:{k}"]["kept_share_ci"][0] for k in levels]
    hi = [S[f"topk:{k}"]["kept_share_ci"][1] for k in levels]
    kn = [k / n_tokens for k in levels]
    ax2.plot(kn, share, marker="o", label="I(A_sparse; A_dense) / H(A_dense)")
    ax2.fill_between(kn, lo, hi, alpha=0.3)
    ax2.plot(kn, [S[f"topk:{k}"]["kept_mass"] for k in levels], marker=".", label="attention mass kept")
    ratio = [1 + curve[f"topk:{k}"]["diff"] / base if base > 0 else 1.0 for k in topk]
    ax2.plot([k / n_tokens for k in topk], ratio, marker="s", label="check rate / dense")
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax2.set_xticks(kn, [f"{k}/{n_tokens}" for k in levels], fontsize=7)
    ax2.set_xlabel("k / n (top-k)")
    ax2.set_ylabel("share kept")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

    path2, rel2 = ctx.figure("kstar")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, key in (("counted FLOPs", "counted"), ("ideal cost k/n (seed)", "ideal")):
        ax.step(LAMBDAS, kstar[key]["k"], where="mid", label=label)
        ax.fill_between(LAMBDAS, kstar[key]["lo"], kstar[key]["hi"], step="mid", alpha=0.2)
    ax.axvline(STATED_LAMBDA, color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("lambda (check-rate points per unit of FLOP ratio)")
    ax.set_ylabel(f"k* (tokens of {n_tokens})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path2, dpi=110)
    plt.close(fig)
    return [Figure(rel, "Left: oracle check pass rate vs counted cross-attention FLOPs per variant (error bars: paired "
                        "95% bootstrap interval of the difference to dense). Right: for top-k, the share of the dense "
                        "map's information and attention mass kept, and the check rate relative to dense, vs k/n."),
            Figure(rel2, "k*(lambda) from the measured top-k curve, counted FLOPs and the seed's ideal cost k/n; "
                         "bands: "
                         "95% bootstrap over images; dashed: the stated lambda.")]
