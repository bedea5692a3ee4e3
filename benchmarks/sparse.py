"""Sparse and hierarchical cross-attention: compute saved vs information kept, in one process.

    python benchmarks/sparse.py --json             attention time, sparse vs dense, image tokens 256..4096 x
                                                   text tokens 16..256, with FLOP ratios beside the time ratios
    python benchmarks/sparse.py --quality --json   on shapes-v1: relative output error, KL of the rows and kept
                                                   mass per strategy and sparsity level (captured q, k, v),
                                                   and the learned keep-scorer's training
    python benchmarks/sparse.py --unet --json      shapes-v1 UNet forward time: dense, sparse hooks, ToMe (tomesd)
    python benchmarks/sparse.py --compbench --json CompBench (colour_binding, shape_binding) on shapes-v1 per
                                                   variant: sparse strategies, ToMe, hierarchical vs word-only

Timings take the median of repeated runs with torch.set_num_threads(1) (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from t2ikit.attention import sparse as sp

IMAGE_TOKENS = (256, 1024, 4096)
TEXT_TOKENS = (16, 64, 256)
HEADS, HEAD_DIM, BATCH = 8, 40, 2  # SD 1.x's first level: 320 channels as 8 heads of 40
KEEP_FRACTION = 0.25  # k = n/4 for top-k, pruning and learned in the timing table
TOPP = 0.9


def timeit(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def flops(strategy: str, Nq: int, n: int, k: float, stride: int = sp.DEFAULT_MASS_STRIDE) -> float:
    """Multiply-adds per head of the attention (QK^T and probs @ V; selection and softmax not counted)."""
    return {
        "dense": 2 * Nq * n,
        "topk": Nq * n + Nq * k,  # every score, then k values gathered per query
        "topp": Nq * n + Nq * k,  # k: the largest set any query keeps (gathered up to it)
        "prune": Nq / stride * n + 2 * Nq * k,  # strided mass estimate, then attention over k keys
        "learned": 2 * Nq * k,  # the keep scores come from the text alone, once per prompt
        "masked-topk": 2 * Nq * n + Nq * n,  # a mask over all n: no saving (the seed's M * A_full)
    }[strategy] * HEAD_DIM


@torch.no_grad()
def timing() -> dict:
    rows = []
    for Nq in IMAGE_TOKENS:
        for n in TEXT_TOKENS:
            g = torch.Generator().manual_seed(0)
            q = torch.randn(BATCH, HEADS, Nq, HEAD_DIM, generator=g)
            k = torch.randn(BATCH, HEADS, n, HEAD_DIM, generator=g)
            v = torch.randn(BATCH, HEADS, n, HEAD_DIM, generator=g)
            keep = max(1, int(n * KEEP_FRACTION))
            idx = torch.arange(keep)[None, None].expand(BATCH, HEADS, keep)
            _, k_topp = sp.topp_attention(q, k, v, TOPP, return_k=True)
            kmax = int(sp._topp_sorted((q @ k.transpose(-1, -2)) / HEAD_DIM ** 0.5, TOPP)[0].sum(-1).max())
            runs = {
                "dense": lambda: F.scaled_dot_product_attention(q, k, v),
                "topk": lambda: sp.topk_attention(q, k, v, keep),
                "topp": lambda: sp.topp_attention(q, k, v, TOPP),
                "prune": lambda: F.scaled_dot_product_attention(q, *sp.prune_tokens(q, k, v, keep)),
                "learned": lambda: F.scaled_dot_product_attention(q, sp.gather_tokens(k, idx), sp.gather_tokens(v, idx)),
                "masked-topk": lambda: _masked_topk(q, k, v, keep),
            }
            t = {name: timeit(fn, reps=3 if Nq * n >= 4096 * 64 else 5) for name, fn in runs.items()}
            kk = {"topk": keep, "topp": kmax, "prune": keep, "learned": keep, "masked-topk": keep}
            row = {"image_tokens": Nq, "text_tokens": n, "k": keep, "topp_mean_k": round(k_topp, 2),
                   "topp_max_k": kmax, "dense_ms": round(1e3 * t["dense"], 3)}
            for name in kk:
                row[name] = {"time_ratio": round(t[name] / t["dense"], 3),
                             "flop_ratio": round(flops(name, Nq, n, kk[name]) / flops("dense", Nq, n, n), 3)}
            rows.append(row)
            print(f"Nq={Nq:5d} n={n:4d} " + " ".join(f"{m}={row[m]['time_ratio']:.2f}/{row[m]['flop_ratio']:.2f}"
                                                     for m in kk), file=sys.stderr)
    return {"config": {"heads": HEADS, "head_dim": HEAD_DIM, "batch": BATCH, "keep_fraction": KEEP_FRACTION,
                       "p": TOPP, "threads": torch.get_num_threads()}, "rows": rows}


def _masked_topk(q, k, v, keep):
    scores = (q @ k.transpose(-1, -2)) / HEAD_DIM ** 0.5
    mask = sp.selection_mask(scores, "topk", keep)
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


# ---------------------------------------------------------------------------------------------------
# shapes-v1: information kept, learned scorer, UNet time, CompBench
# ---------------------------------------------------------------------------------------------------

LEVELS = {"topk": (1, 2, 4, 8, 16), "topp": (0.5, 0.8, 0.9, 0.95, 0.99), "prune": (4, 8, 12, 16, 24),
          "learned": (4, 8, 12, 16, 24)}
CAPTURE_STEPS = {0, 5, 10, 15, 19}


def load_pipe():
    from t2ikit.bench.compbench import default_model_path
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(default_model_path())


def prompts_of(split: str, n: int, categories, bench_seed: int | None = None) -> list[str]:
    from t2ikit.bench.compbench import BENCH_SEED, make_suite

    suite = make_suite(split, n, 1, categories, bench_seed=BENCH_SEED if bench_seed is None else bench_seed)
    return [it.prompt for it in suite.items]


def capture(pipe, prompts: list[str], steps: int = 20):
    cap = sp.QKVCapture(steps=CAPTURE_STEPS)
    pipe.generate(prompts, seed=0, steps=steps, progress=False, hooks=[cap])
    return cap.records


def train_scorer(pipe, steps: int = 150, sparsity: float = 0.05):
    """Learned keep-scores: trained on captured q, k, v of prompts from another world seed than the bench."""
    from t2ikit.world.categories import CATEGORIES

    prompts = prompts_of("train", 2, CATEGORIES, bench_seed=7)
    records = capture(pipe, prompts)
    samples = [(q, k, v) for _, step, q, k, v in records if step in (0, 10, 19)]
    with torch.no_grad():
        embeds = pipe.encode_text(prompts)
    scorer, history = sp.train_keep_scorer(embeds, samples, steps=steps, sparsity=sparsity, lr=3e-3)
    return scorer, {"prompts": len(prompts), "samples": len(samples), "steps": steps, "sparsity": sparsity,
                    "first": history[0], "last": history[-1]}


@torch.no_grad()
def quality(pipe, scorer) -> dict:
    from t2ikit.world.categories import CATEGORIES

    prompts = prompts_of("train", 2, CATEGORIES)
    records = capture(pipe, prompts)
    allowed = sp.content_tokens(pipe.tokenizer, prompts)  # (B, n)
    gates = torch.sigmoid(scorer(pipe.encode_text(prompts)))
    table = {}
    levels = dict(LEVELS, **{"prune-padding": (None,)})
    for strategy, lv in levels.items():
        for level in lv:
            acc = []
            for _, _, q, k, v in records:
                scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
                if strategy == "prune-padding":
                    mask = sp.selection_mask(scores, "prune", int(allowed.sum(-1).max()), allowed=allowed)
                elif strategy == "prune":
                    mask = sp.selection_mask(scores, "prune", level, allowed=allowed)
                elif strategy == "learned":
                    mask = sp.selection_mask(scores, "learned", level, allowed=gates)
                else:
                    mask = sp.selection_mask(scores, strategy, level)
                acc.append((q.shape[2] * q.shape[1], sp.information_kept(q, k, v, mask)))
            w = sum(a for a, _ in acc)
            table[f"{strategy}:{level}"] = {m: round(sum(a * r[m] for a, r in acc) / w, 4)
                                            for m in ("rel_error", "kl", "kept_mass", "kept_tokens")}
            print(f"{strategy}:{level} {table[f'{strategy}:{level}']}", file=sys.stderr)
    return {"prompts": len(prompts), "calls": len(records), "text_tokens": pipe.tokenizer.model_max_length,
            "mean_content_tokens": round(allowed.sum(-1).float().mean().item(), 2), "levels": table}


def variants(pipe, scorer):
    """name -> make_hooks (None: plain pipeline)."""
    from t2ikit.attention.hierarchical import HierarchicalHook

    return {
        "dense": lambda: [],
        "topk:4": lambda: [sp.TopKHook(4)],
        "topk:8": lambda: [sp.TopKHook(8)],
        "topp:0.9": lambda: [sp.DynamicHook(0.9)],
        "prune-padding": lambda: [sp.PruneHook()],
        "prune:8": lambda: [sp.PruneHook(keep=8)],
        "learned:8": lambda: [sp.LearnedPruneHook(scorer, keep=8)],
        "hier:1,1,0": lambda: [HierarchicalHook((1, 1, 0))],
        "hier:1,0.5,0.25": lambda: [HierarchicalHook((1, 0.5, 0.25))],
    }


@torch.no_grad()
def unet_time(pipe, scorer) -> dict:
    import tomesd

    from t2ikit.attention.processor import AttentionController

    prompts = prompts_of("train", 1, ("colour_binding", "shape_binding", "spatial", "complex"))
    n = len(prompts)
    embeds = torch.cat([pipe.encode_text([""] * n), pipe.encode_text(prompts)])
    x = torch.randn(2 * n, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.full((2 * n,), 500)
    ref = pipe.unet(x, t, encoder_hidden_states=embeds).sample

    def call():
        return pipe.unet(x, t, encoder_hidden_states=embeds).sample

    out = {"batch": 2 * n, "latent": [16, 16]}
    base = timeit(call)
    out["diffusers-default"] = {"ms": round(1e3 * base, 2), "ratio": 1.0, "rel_error": 0.0}
    for name, make in variants(pipe, scorer).items():
        hooks = make()
        for h in hooks:
            if isinstance(h, sp._TextBound):
                h.bind(pipe, prompts, [""] * n)
        c = AttentionController(hooks)
        c.guided = True
        c.install(pipe.unet)
        try:
            tt, y = timeit(call), call()
        finally:
            c.uninstall()
        out[name] = {"ms": round(1e3 * tt, 2), "ratio": round(tt / base, 3),
                     "rel_error": round(((y - ref).norm() / ref.norm()).item(), 4)}
        print(name, out[name], file=sys.stderr)
    for ratio in (0.25, 0.5):
        tomesd.apply_patch(pipe.unet, ratio=ratio)
        try:
            tt, y = timeit(call), call()
        finally:
            tomesd.remove_patch(pipe.unet)
        out[f"tomesd:{ratio}"] = {"ms": round(1e3 * tt, 2), "ratio": round(tt / base, 3),
                                  "rel_error": round(((y - ref).norm() / ref.norm()).item(), 4)}
        print(f"tomesd:{ratio}", out[f"tomesd:{ratio}"], file=sys.stderr)
    return out


def compbench(pipe, scorer, n_prompts: int, seeds: int, steps: int, only: list[str] | None = None) -> dict:
    import tomesd

    from t2ikit.bench.compbench import evaluate

    cats = ("colour_binding", "shape_binding")
    out = {"categories": cats, "n_prompts": n_prompts, "seeds": seeds, "steps": steps, "results": {}}
    todo = dict(variants(pipe, scorer))
    todo["tomesd:0.5"] = None
    for name, make in todo.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        if make is None:
            tomesd.apply_patch(pipe.unet, ratio=0.5)
            try:
                r = evaluate(pipe, "train", n_prompts, seeds, cats, steps=steps)
            finally:
                tomesd.remove_patch(pipe.unet)
        else:
            r = evaluate(sp.HookedPipeline(pipe, make, name), "train", n_prompts, seeds, cats, steps=steps)
        out["results"][name] = {"per_category": r["per_category"], "overall": r["overall"],
                                "seconds": round(time.perf_counter() - t0, 1)}
        print(name, json.dumps({c: r["per_category"][c]["accuracy"] for c in cats}), file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--quality", action="store_true", help="information kept on shapes-v1 (and learned training)")
    ap.add_argument("--unet", action="store_true", help="shapes-v1 UNet forward time incl. tomesd")
    ap.add_argument("--compbench", action="store_true", help="CompBench binding per variant on shapes-v1")
    ap.add_argument("--n-prompts", type=int, default=16, help="CompBench prompts per category")
    ap.add_argument("--seeds", type=int, default=1, help="CompBench image seeds per prompt")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--only", default=None, help="comma-separated CompBench variants")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = {"command": "python benchmarks/sparse.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if not (args.quality or args.unet or args.compbench):
        result["timing"] = timing()
    else:
        torch.manual_seed(0)
        pipe = load_pipe()
        scorer, result["learned_training"] = train_scorer(pipe)
        if args.quality:
            result["quality"] = quality(pipe, scorer)
        if args.unet:
            result["unet"] = unet_time(pipe, scorer)
        if args.compbench:
            result["compbench"] = compbench(pipe, scorer, args.n_prompts, args.seeds, args.steps,
                                            args.only.split(",") if args.only else None)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
