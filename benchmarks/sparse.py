"""Sparse and hierarchical cross-attention: compute saved vs information kept, in one process.

    python benchmarks/sparse.py --json             attention time, sparse vs dense, image tokens 256..4096 x
                                                   text tokens 16..256, with FLOP ratios beside the time ratios
    python benchmarks/sparse.py --quality --json   on shapes-v1: relative output error, KL of the rows and kept
                                                   mass per strategy and sparsity level (captured q, k, v),
                                                   and the learned keep-scorer's training
    python benchmarks/sparse.py --unet --json      shapes-v1 UNet forward time: dense, sparse hooks, ToMe (tomesd)
    python benchmarks/sparse.py --compbench --json CompBench (colour_binding, shape_binding) on shapes-v1 per
                                                   variant: sparse strategies, ToMe, hierarchical vs word-only

Timings take the fastest of repeated runs with torch.set_num_threads(1) (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import math
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
    """The fastest of `reps` runs: on a shared machine the other engineers' load only ever adds time."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.pipeline import T2IPipeline

    return T2IPipeline.from_folder(shipped_model_path())


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
    gates = sp.relative_gates(scorer(pipe.encode_text(prompts)))
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
        "hier:1/1/0": lambda: [HierarchicalHook((1, 1, 0))],
        "hier:1/0.5/0.25": lambda: [HierarchicalHook((1, 0.5, 0.25))],
    }


@torch.no_grad()
def unet_time(pipe, scorer, rounds: int = 3) -> dict:
    """UNet forward time per variant; variants interleaved over `rounds` rounds, fastest run kept."""
    import tomesd

    from t2ikit.attention.processor import AttentionController

    prompts = prompts_of("train", 1, ("colour_binding", "shape_binding", "spatial", "complex"))
    n = len(prompts)
    embeds = torch.cat([pipe.encode_text([""] * n), pipe.encode_text(prompts)])
    x = torch.randn(2 * n, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.full((2 * n,), 500)

    def call():
        return pipe.unet(x, t, encoder_hidden_states=embeds).sample

    def with_hooks(make):
        def install():
            hooks = make()
            for h in hooks:
                if isinstance(h, sp._TextBound):
                    h.bind(pipe, prompts, [""] * n)
            c = AttentionController(hooks)
            c.guided = True
            return c.install(pipe.unet), c.uninstall
        return install

    def with_tome(ratio):
        def install():
            tomesd.apply_patch(pipe.unet, ratio=ratio)
            return None, lambda: tomesd.remove_patch(pipe.unet)
        return install

    setups = {"diffusers-default": lambda: (None, lambda: None)}
    setups.update({name: with_hooks(make) for name, make in variants(pipe, scorer).items()})
    setups.update({f"tomesd:{r}": with_tome(r) for r in (0.25, 0.5)})
    ref = call()
    best, err = {}, {}
    for _ in range(rounds):
        for name, install in setups.items():
            _, undo = install()
            try:
                best[name] = min(best.get(name, float("inf")), timeit(call, reps=2))
                err[name] = ((call() - ref).norm() / ref.norm()).item()
            finally:
                undo()
    base = best["diffusers-default"]
    out = {"batch": 2 * n, "latent": [16, 16], "rounds": rounds}
    for name in setups:
        out[name] = {"ms": round(1e3 * best[name], 2), "ratio": round(best[name] / base, 3),
                     "rel_error": round(err[name], 4)}
        print(name, out[name], file=sys.stderr)
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


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    out = []
    if "timing" in result:
        t = result["timing"]
        names = ("topk", "topp", "prune", "learned", "masked-topk")
        out += [f"Attention time / dense time (FLOP ratio in brackets); heads {t['config']['heads']} x d "
                f"{t['config']['head_dim']}, batch {t['config']['batch']}, k = n/4, p = {t['config']['p']}, "
                f"{t['config']['threads']} thread.", "",
                "| image tokens | text tokens | dense ms | " + " | ".join(names) + " |",
                "| ---: | ---: | ---: |" + " ---: |" * len(names)]
        for r in t["rows"]:
            out.append(f"| {r['image_tokens']} | {r['text_tokens']} | {r['dense_ms']:.2f} | " + " | ".join(
                f"{r[m]['time_ratio']:.2f} ({r[m]['flop_ratio']:.2f})" for m in names) + " |")
        out.append("")
    if "learned_training" in result:
        lt = result["learned_training"]
        out += [f"Learned keep-scorer: {lt['steps']} Adam steps on {lt['samples']} captured cross-attention calls "
                f"of {lt['prompts']} prompts, sparsity penalty {lt['sparsity']}: mean gate "
                f"{lt['first']['mean_gate']:.3f} -> {lt['last']['mean_gate']:.3f}, relative error "
                f"{lt['first']['error']:.4f} -> {lt['last']['error']:.4f}.", ""]
    if "quality" in result:
        qd = result["quality"]
        out += [f"Information kept on shapes-v1 ({qd['calls']} captured cross-attention calls, {qd['prompts']} "
                f"prompts, n = {qd['text_tokens']} tokens of which {qd['mean_content_tokens']} non-padding on "
                "average):", "", "| strategy:level | kept tokens / query | kept mass | KL(sparse‖dense) | "
                "rel. output error |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, r in qd["levels"].items():
            out.append(f"| {name} | {r['kept_tokens']:.1f} | {r['kept_mass']:.3f} | {r['kl']:.4f} | "
                       f"{r['rel_error']:.4f} |")
        out.append("")
    if "unet" in result:
        u = result["unet"]
        out += [f"shapes-v1 UNet forward (batch {u['batch']}, latent 16x16), vs diffusers' default processor:", "",
                "| variant | ms | time ratio | rel. error of the UNet output |", "| --- | ---: | ---: | ---: |"]
        for name, r in u.items():
            if isinstance(r, dict):
                out.append(f"| {name} | {r['ms']:.1f} | {r['ratio']:.2f} | {r['rel_error']:.4f} |")
        out.append("")
    if "compbench" in result:
        c = result["compbench"]
        cats = c["categories"]
        out += [f"CompBench on shapes-v1 ({c['n_prompts']} prompts x {c['seeds']} seed per category, {c['steps']} "
                "steps; accuracy with 95% Wilson interval):", "",
                "| variant | " + " | ".join(cats) + " | all | checks: present | colour | size |",
                "| --- |" + " ---: |" * (len(cats) + 4)]
        for name, r in c["results"].items():
            cells = [r["per_category"][k] for k in cats] + [r["overall"]]
            checks = r["overall"]["checks"]
            out.append(f"| {name} | " + " | ".join(f"{x['accuracy']:.3f} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}]"
                                                    for x in cells)
                       + " | " + " | ".join(f"{checks.get(k, float('nan')):.3f}" for k in ("present", "colour", "size"))
                       + " |")
        out.append("")
    if all(key in result for key in ("quality", "unet", "compbench")):
        qd, u, c = result["quality"]["levels"], result["unet"], result["compbench"]["results"]
        out += ["One table (strategy at the CompBench level; information kept from the quality run, UNet time "
                "ratio vs diffusers' default processor, CompBench colour_binding and the colour check):", "",
                "| variant | kept tokens / 48 | KL | rel. attention error | rel. UNet error | UNet time | "
                "colour_binding | colour check |", "| --- |" + " ---: |" * 7]
        for name, r in c.items():
            key = {"prune-padding": "prune-padding:None"}.get(name, name)
            info = qd.get(key, {"kept_tokens": 48.0, "kl": 0.0, "rel_error": 0.0} if name == "dense" else None)
            cells = ([f"{info['kept_tokens']:.1f}", f"{info['kl']:.3f}", f"{info['rel_error']:.3f}"] if info
                     else ["-", "-", "-"])
            cells += [f"{u[name]['rel_error']:.3f}", f"{u[name]['ratio']:.2f}"] if name in u else ["-", "-"]
            cb = r["per_category"]["colour_binding"]
            cells += [f"{cb['accuracy']:.2f} [{cb['ci95'][0]:.2f}, {cb['ci95'][1]:.2f}]",
                      f"{cb['checks'].get('colour', float('nan')):.3f}"]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


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
    ap.add_argument("--render", nargs="+", default=None, help="print Markdown tables of saved JSON results")
    args = ap.parse_args(argv)
    if args.render:
        print("\n".join(markdown(json.loads(Path(f).read_text())) for f in args.render))
        return 0
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
    print(text if args.json else markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
