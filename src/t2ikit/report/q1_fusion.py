"""Q1: fusion strategies, and the training recipes (curricula, loss weightings), trained from scratch in the
mini protocol (t2ikit.report.mini), where a CPU run of minutes learns something CompBench can measure.

q1.fusion. Every fusion strategy of t2ikit.models.fusion (sequential, parallel, gated, interleaved and a
hierarchical map) is trained with the same mini budget and the same seeds (init, data, noise), each seed's runs
scored on the same mini CompBench items; per strategy: accuracy pooled over seeds (Wilson interval), the paired
difference to sequential (two-level bootstrap over seeds and items, `mini.paired_seed_difference`), UNet
parameters, forward GFLOPs, and the time of one training step and one sampling UNet call measured in interleaved
rounds (`bench.fusion.interleaved_timing`: load from other jobs hits every strategy alike). For gated fusion, the
information its output keeps of each path: I(o; c) and I(o; s), o = g c + (1 - g) s the gated mix of the
cross-attention output c (text gathered per image token) and the self-attention output s, per image token at the
top (16x16) level during sampling of mini prompts; Gaussian (canonical-correlation) estimator on the top-8
principal components of each, 95% bootstrap interval (`bench.information`).

q1.training. The same protocol for training recipes against the protocol's own recipe (configs/mini.toml: plain v
loss + grounding 0.02 + relation 0.05 with fixed weights; q1.fusion's sequential runs, shared): without the
auxiliary losses, with uncertainty weighting (Kendall et al. 2018) of the same terms, and with a complexity
curriculum (one object per scene for the first third of the steps).
"""

from __future__ import annotations

import numpy as np

from t2ikit.bench.progress import bar
from t2ikit.report import mini
from t2ikit.report.core import Figure, Finding, ReportContext, Table, experiment

STRATEGIES = ("sequential", "parallel", "gated", "interleaved", "hierarchical:16=gated,8=sequential")
SIZES = {  # (quick, full, smoke) of q1.fusion and q1.training (whose baseline is q1.fusion's sequential runs);
    # planned: quick 3 + 1.5 minutes, full 48 + 25 (15 + 9 runs of 9,600 images, 5-7.5 min each on a quiet core,
    # two at a time: docs/REPORT.md, "Budgets, measured")
    "seeds": (1, 3, 1),
    "samples": (160, 9600, 8),  # training images per run (configs/mini.toml's own budget is 19,200)
    "n_prompts": (4, 50, 1),  # mini CompBench prompts per category (3 categories), 1 image each
    "eval_steps": (10, 20, 2),  # sampler steps of the CompBench images
    "timing_rounds": (2, 10, 1),
    "gate_prompts": (1, 6, 1),
}
QUICK_VAE_STEPS = 200  # the shared VAE's steps at quick (full and smoke: the protocol's mini.VAE_STEPS)
RESAMPLES = 2000  # bootstrap resamples of the paired differences
MI_RESAMPLES = 200
MI_ROWS = 2000  # image tokens the MI estimates use (a random subset, the same for both paths)
MI_COMPONENTS = 8  # principal components of o, c and s kept for the Gaussian estimator


NOTHING_LEARNED = (" No run passed a single CompBench image, so the runs were too short for any difference to show: "
                   "no verdict (\"not measured\"), not \"no difference\"; the full budget's runs learn.")


def accuracy_cells(st: dict) -> list[str]:
    """A setting's table cells from `compare_rows`: pooled accuracy, the paired difference to the baseline (points),
    accuracy per seed and per category (%)."""
    d = st.get("vs_baseline")
    return [mini.fmt_interval(st["pooled"]["accuracy"], st["pooled"]["ci95"]),
            "-" if d is None else f"{100 * d['diff']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]",
            ", ".join(f"{100 * a:.0f}" for a in st["per_seed"]),
            " / ".join(f"{100 * st['per_category'][c]:.0f}" for c in st["per_category"])]


def nothing_learned(stats: dict) -> bool:
    """True when every setting's pooled accuracy is 0: no effect could have shown under this budget."""
    return all(v["pooled"]["accuracy"] == 0 for v in stats.values())


def _size(ctx: ReportContext, name: str):
    quick, full, smoke = SIZES[name]
    return ctx.pick(quick, full, smoke)


def root(ctx: ReportContext):
    """Where every mini run of a report lives (shared by q1.fusion, q1.training and q8.scaling)."""
    return ctx.out / "work" / "mini-runs"


def shared_vae(ctx: ReportContext) -> int:
    """Train the report folder's shared VAE once (its steps by budget), before any run asks for it; its steps."""
    steps = ctx.pick(QUICK_VAE_STEPS, mini.VAE_STEPS, smoke=mini.VAE_STEPS)
    mini.shared_vae(root(ctx), steps=steps)
    return steps


# What each mini experiment trains: experiment id -> plan(ctx) -> (runs, n_prompts, eval_steps), so that the first
# of them to run trains (with --workers) the runs of every mini experiment still to come in one pool: no core idles
# at the end of one experiment's runs while the next experiment's wait.
PLANS: dict = {}


def plans(experiment_id: str):
    """Register a mini experiment's plan of runs (see PLANS)."""
    def register(fn):
        PLANS[experiment_id] = fn
        return fn
    return register


def train_ahead(ctx: ReportContext) -> None:
    """mini.train_ahead with ctx's workers: the runs of this experiment and of every planned mini experiment this
    report run still has to do (ctx.pending), longest first, each evaluated as run_unit evaluates it."""
    ids = [i for i in (ctx.experiment_id, *ctx.pending) if i in PLANS]
    groups: dict[tuple[int, int], dict[str, mini.MiniRun]] = {}
    for i in dict.fromkeys(ids):
        runs, n_prompts, eval_steps = PLANS[i](ctx)
        groups.setdefault((n_prompts, eval_steps), {}).update({r.key(): r for r in runs})
    trained = 0
    for (n_prompts, eval_steps), runs in groups.items():
        trained += mini.train_ahead(list(runs.values()), root(ctx), ctx.workers, progress=ctx.progress,
                                    evaluation={"n_prompts": n_prompts, "seeds": 1, "steps": eval_steps})
    if trained:  # this experiment's time includes theirs (the report says so next to its minutes)
        ctx.trained_ahead = tuple(i for i in dict.fromkeys(ids) if i != ctx.experiment_id)


def run_unit(ctx: ReportContext, run: mini.MiniRun, n_prompts: int, eval_steps: int) -> dict:
    """Train and evaluate one mini run as a unit of this experiment (cached; the run folder resumes too, and
    another experiment asking for the same run reads its folder instead of training it again)."""
    def work():
        return mini.train_and_evaluate(run, root(ctx), n_prompts=n_prompts, seeds=1, steps=eval_steps,
                                       threads=ctx.threads)

    return ctx.unit(f"run-{run.key()}-p{n_prompts}-e{eval_steps}", work)


def compare_rows(rows: dict[str, list[dict]], baseline: str, seed: int = 0) -> dict[str, dict]:
    """Per setting: pooled accuracy over seeds and the paired difference to `baseline`."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, runs in rows.items():
        entry = {"pooled": mini.pooled_accuracy([r["items"] for r in runs]),
                 "per_seed": [r["accuracy"] for r in runs],
                 "per_category": {c: float(np.mean([r["per_category"][c] for r in runs])) for c in runs[0]["per_category"]}}
        if name != baseline:
            entry["vs_baseline"] = mini.paired_seed_difference([r["items"] for r in rows[baseline]],
                                                               [r["items"] for r in runs], rng, RESAMPLES)
        out[name] = entry
    return out


def _difference_words(name: str, d: dict, baseline: str) -> str:
    lo, hi = d["ci95"]
    verdict = "better than" if lo > 0 else "worse than" if hi < 0 else "no different from"
    return (f"{name} {verdict} {baseline} ({100 * d['diff']:+.1f} points, 95% interval "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}])")


# ----------------------------------------------------------------------------------------------------
# q1.fusion


def timing_unit(ctx: ReportContext, strategies, rounds: int) -> dict:
    """Median seconds of one training forward+backward (batch of the config) and one sampling UNet call (CFG
    pair), per strategy, measured in interleaved rounds on freshly built UNets (weights do not change the cost)."""
    import torch

    from t2ikit.bench.fusion import interleaved_timing
    from t2ikit.diffusion.schedules import training_scheduler

    def work():
        from t2ikit.models.retrofit import retrofit
        from t2ikit.models.sizes import build_unet, count_params, model_size, unet_flops, vae_size

        torch.set_num_threads(ctx.threads)
        unets, flops, params = [], [], []
        for strategy in strategies:
            t = mini.train_config(mini.MiniRun(fusion=strategy))
            v = vae_size(t.model.vae)
            latent = t.model.resolution // v.factor
            unet = build_unet(t.model.size, latent_channels=v.latent_channels, sample_size=latent, seed=0)
            if strategy != "sequential":
                retrofit(unet, strategy, seed=0, from_scratch=True)
            unets.append(unet)
            flops.append(unet_flops(unet, (v.latent_channels, latent, latent), text_tokens=t.model.max_tokens))
            params.append(count_params(unet))
        g = torch.Generator().manual_seed(0)
        batch = t.unet_train.batch_size
        hidden = model_size(t.model.size).text_hidden
        latents = torch.randn(batch, v.latent_channels, latent, latent, generator=g)
        states = torch.randn(batch, t.model.max_tokens, hidden, generator=g)
        schedule = training_scheduler(__import__("dataclasses").asdict(t.diffusion))
        times = interleaved_timing(unets, (latents, states), schedule, rounds, guided=True)
        return {s: {"train_step_s": a, "unet_call_s": b, "gflops_per_call": f / 1e9, "params": p}
                for s, (a, b), f, p in zip(strategies, times, flops, params)}

    return ctx.unit(f"timing-r{rounds}", work)


def gate_information_unit(ctx: ReportContext, run: mini.MiniRun, n_prompts: int) -> dict:
    """I(o; c) and I(o; s) of the top-level gated blocks of a trained gated run (see the module docstring)."""
    def work():
        import torch

        from t2ikit.bench.compbench import make_suite
        from t2ikit.bench.information import gaussian_mi, mi_interval
        from t2ikit.models.fusion import FusionBlock

        torch.set_num_threads(ctx.threads)
        pipe = mini.ema_pipeline(run, root(ctx))
        blocks = [m for m in pipe.unet.modules() if isinstance(m, FusionBlock) and m.strategy == "gated"]
        if not blocks:
            raise ValueError(f"run {run.key()} has no gated fusion block")
        widest = max(b.dim for b in blocks)
        blocks = [b for b in blocks if b.dim == widest]  # the top (highest-resolution) level
        store = {"s": [], "c": [], "g": []}

        def keep_self(module, inputs, output) -> None:  # a hook that returns None leaves the output alone
            store["s"].append(output.detach())

        def keep_gate(module, inputs, output) -> None:
            store["c"].append(inputs[1].detach())
            store["g"].append(output.detach())

        handles = []
        for b in blocks:
            handles.append(b.attn1.register_forward_hook(keep_self))
            handles.append(b.gate.register_forward_hook(keep_gate))
        suite = make_suite(n_prompts=n_prompts, seeds=1, world=mini.WORLD)
        prompts = [it.prompt for it in suite.items]
        try:
            with torch.no_grad():
                mini.generator(pipe)(prompts, [it.seed for it in suite.items])
        finally:
            for h in handles:
                h.remove()
        # Self-attention runs once per block call, before the gate: the lists pair up in order.
        s = torch.cat([x.reshape(-1, x.shape[-1]) for x in store["s"]]).numpy()
        c = torch.cat([x.reshape(-1, x.shape[-1]) for x in store["c"]]).numpy()
        g = torch.cat([x.reshape(-1, x.shape[-1]) for x in store["g"]]).numpy()
        o = g * c + (1 - g) * s
        rng = np.random.default_rng(0)
        rows = rng.choice(len(o), size=min(MI_ROWS, len(o)), replace=False)

        def pcs(z):
            z = z[rows] - z[rows].mean(0)
            _, _, vt = np.linalg.svd(z, full_matrices=False)
            return z @ vt[:MI_COMPONENTS].T

        po, pc, ps = pcs(o), pcs(c), pcs(s)
        text = mi_interval(gaussian_mi, po, pc, np.random.default_rng(1), resamples=MI_RESAMPLES)
        image = mi_interval(gaussian_mi, po, ps, np.random.default_rng(2), resamples=MI_RESAMPLES)
        paired = []
        drng = np.random.default_rng(3)
        for _ in range(MI_RESAMPLES):  # the difference, on the same resampled rows
            idx = drng.integers(0, len(po), len(po))
            paired.append(gaussian_mi(po[idx], pc[idx]) - gaussian_mi(po[idx], ps[idx]))
        lo, hi = np.percentile(paired, [2.5, 97.5])
        return {"I_text": list(text), "I_image": list(image), "diff": [text[0] - image[0], float(lo), float(hi)],
                "gate_mean": float(g.mean()), "gate_std_tokens": float(g.mean(-1).std()), "rows": int(len(rows)),
                "layers": len(blocks), "prompts": len(prompts)}

    return ctx.unit(f"gate-information-{run.key()}-p{n_prompts}", work)


def fusion_runs(ctx: ReportContext) -> dict[str, list[mini.MiniRun]]:
    """q1.fusion's runs: per strategy, one per seed."""
    seeds, samples = _size(ctx, "seeds"), _size(ctx, "samples")
    return {s: [mini.MiniRun(seed=k, fusion=s, samples=samples) for k in range(seeds)] for s in STRATEGIES}


@plans("q1.fusion")
def _fusion_plan(ctx: ReportContext):
    return ([r for rs in fusion_runs(ctx).values() for r in rs], _size(ctx, "n_prompts"), _size(ctx, "eval_steps"))


@experiment("q1.fusion", "Fusion strategies trained from scratch in the mini protocol: CompBench, cost, gate information",
            minutes={"quick": 3, "full": 48}, own_workers=True)
def fusion(ctx: ReportContext) -> Finding:
    seeds, samples, n_prompts = _size(ctx, "seeds"), _size(ctx, "samples"), _size(ctx, "n_prompts")
    vae_steps = shared_vae(ctx)
    runs = fusion_runs(ctx)
    train_ahead(ctx)
    rows = {}
    progress = bar(total=len(STRATEGIES) * seeds, desc="q1.fusion runs", enabled=ctx.progress, unit="run")
    for strategy, rs in runs.items():
        rows[strategy] = []
        for run in rs:
            rows[strategy].append(run_unit(ctx, run, n_prompts, _size(ctx, "eval_steps")))
            progress.update()
    progress.close()
    stats = compare_rows(rows, "sequential")
    timing = timing_unit(ctx, STRATEGIES, _size(ctx, "timing_rounds"))
    gate = gate_information_unit(ctx, runs["gated"][0], _size(ctx, "gate_prompts"))

    table_rows = []
    for s in STRATEGIES:
        st, tm = stats[s], timing[s]
        table_rows.append([
            s, *accuracy_cells(st), f"{tm['params']:,}", f"{tm['gflops_per_call']:.4f}",
            f"{1e3 * tm['train_step_s']:.0f}", f"{1e3 * tm['unet_call_s']:.1f}",
            f"{np.mean([r['wall_s'] for r in rows[s]]):.0f}", f"{np.mean([r['final_loss'] for r in rows[s]]):.4f}"])
    cats = " / ".join(rows["sequential"][0]["per_category"])
    table = Table(
        "Fusion strategies in the mini protocol (accuracy = all oracle checks pass)",
        ["strategy", "CompBench (pooled, Wilson 95%)", "vs sequential, points (95%)", "per seed %",
         f"per category % ({cats})", "UNet params", "GFLOPs / UNet call", "train step ms", "sampling call ms",
         "run wall s", "final loss"],
        table_rows,
        note=(f"{seeds} seed(s) x {rows['sequential'][0]['samples']} training images per run; "
              f"{rows['sequential'][0]['n']} CompBench images per run. Differences: two-level bootstrap over seeds "
              "and items. Step and call times: interleaved rounds on this shared CPU (median); run wall time "
              f"includes other jobs' load. Command: {ctx.command()}"))
    gate_table = Table(
        "Gated fusion: what the gated output keeps of each path (top level, nats)",
        ["quantity", "estimate", "95% interval"],
        [["I(o; c), c = cross-attention (text) path", f"{gate['I_text'][0]:.3f}",
          f"[{gate['I_text'][1]:.3f}, {gate['I_text'][2]:.3f}]"],
         ["I(o; s), s = self-attention (image) path", f"{gate['I_image'][0]:.3f}",
          f"[{gate['I_image'][1]:.3f}, {gate['I_image'][2]:.3f}]"],
         ["I(o; c) - I(o; s)", f"{gate['diff'][0]:+.3f}", f"[{gate['diff'][1]:+.3f}, {gate['diff'][2]:+.3f}]"],
         ["mean gate g (share given to c)", f"{gate['gate_mean']:.3f}", "-"]],
        note=(f"Gaussian (canonical-correlation) estimator on the top {MI_COMPONENTS} principal components of each, "
              f"{gate['rows']} image tokens drawn from {gate['prompts']} mini prompts x {mini.EVAL_STEPS} sampling "
              f"steps (CFG pairs), {gate['layers']} top-level gated block(s), seed 0's gated run; percentile "
              f"bootstrap over tokens ({MI_RESAMPLES} resamples)."))
    figure = _fusion_figure(ctx, stats, timing)

    seq = stats["sequential"]["pooled"]
    diffs = {s: stats[s]["vs_baseline"] for s in STRATEGIES if s != "sequential"}
    better = [s for s, d in diffs.items() if d["ci95"][0] > 0]
    worse = [s for s, d in diffs.items() if d["ci95"][1] < 0]
    quick_note = (" This is the quick budget (1 seed, short runs): indicative only; the full budget trains "
                  f"{SIZES['seeds'][1]} seeds x {SIZES['samples'][1]:,} images per strategy.") if ctx.budget != "full" else ""
    parallel_cheaper = timing["parallel"]["gflops_per_call"] < timing["sequential"]["gflops_per_call"]
    answer = (
        f"Trained from scratch in the mini protocol, sequential fusion (the shipped model's) reaches "
        f"{mini.fmt_interval(seq['accuracy'], seq['ci95'])} CompBench. "
        + "; ".join(_difference_words(s, d, "sequential") for s, d in diffs.items()) + ". "
        f"Cost per UNet call: " + ", ".join(f"{s.split(':')[0]} {timing[s]['gflops_per_call']:.4f} GFLOPs" for s in STRATEGIES)
        + ". Gated fusion's output keeps "
        f"I(o; text path) = {gate['I_text'][0]:.2f} [{gate['I_text'][1]:.2f}, {gate['I_text'][2]:.2f}] nats and "
        f"I(o; image path) = {gate['I_image'][0]:.2f} [{gate['I_image'][1]:.2f}, {gate['I_image'][2]:.2f}] nats "
        f"(mean gate {gate['gate_mean']:.2f})."
        + (" Parallel fusion computes the same attention as sequential, so it costs no fewer FLOPs: the seed's speed "
           "argument holds only for latency on hardware that runs the two attentions concurrently."
           if not parallel_cheaper else "")
        + " On the shipped model's frozen encoders (docs/results/fusion.md) every strategy scored 0/32 at 200 steps, "
        "so no ranking could be compared there; here the ranking is measured." + quick_note)
    # The seed: sequential for quality, parallel for speed. Quality: no strategy may beat sequential, some should
    # fall below it; speed: parallel must cost less per UNet call.
    if nothing_learned(stats):
        verdict = "not measured"
        answer += NOTHING_LEARNED
    elif better:
        verdict = "does not hold"
    elif worse:
        verdict = "holds" if parallel_cheaper else "partly holds"
    else:
        verdict = "no difference"
    numbers = {"seeds": seeds, "samples": rows["sequential"][0]["samples"],
               "accuracy": {s: stats[s]["pooled"] for s in STRATEGIES},
               "vs_sequential": diffs, "timing": timing, "gate_information": gate}
    return Finding(answer=answer, verdict=verdict, tables=[table, gate_table], figures=[figure], numbers=numbers,
                   what_was_run=(f"Mini protocol (configs/mini.toml, world 'mini', 32 px, text encoder + UNet from "
                                 f"scratch on a shared xs VAE of {vae_steps} steps): {len(STRATEGIES)} fusion "
                                 f"strategies x {seeds} seed(s), {rows['sequential'][0]['samples']} images each; mini "
                                 f"CompBench {n_prompts} prompts per category, {_size(ctx, 'eval_steps')} DPM-Solver++ "
                                 f"steps, guidance {mini.EVAL_GUIDANCE}."))


def _fusion_figure(ctx: ReportContext, stats: dict, timing: dict) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure("accuracy-vs-cost")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in stats:
        p = stats[s]["pooled"]
        x = timing[s]["gflops_per_call"]
        ax.errorbar([x], [100 * p["accuracy"]], yerr=[[100 * (p["accuracy"] - p["ci95"][0])],
                                                      [100 * (p["ci95"][1] - p["accuracy"])]],
                    marker="o", capsize=3, label=s.split(":")[0])
    ax.set_xlabel("GFLOPs per UNet call (16x16x4 latent)")
    ax.set_ylabel("mini CompBench accuracy, % (95% Wilson)")
    ax.set_title("Fusion strategies: accuracy vs cost (mini protocol)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(rel, f"Accuracy (pooled over seeds) vs forward cost per fusion strategy. {ctx.command()}")


# ----------------------------------------------------------------------------------------------------
# q1.training


BASELINE = "protocol recipe"


def recipes(steps: int) -> dict[str, dict]:
    """The training recipes compared, as MiniRun overrides of configs/mini.toml (`steps`: the run's UNet steps).
    The protocol's own recipe (plain v loss + grounding 0.02 + relation 0.05, fixed weights) is the baseline."""
    third = max(1, steps // 3)
    return {
        BASELINE: {},
        "no auxiliary losses": {"losses": {"grounding": 0.0, "relation": 0.0}},
        "uncertainty weighting": {"losses": {"weighting": "uncertainty"}},
        "complexity curriculum": {"curriculum": {"complexity": [[0, 1], [third, 2]]}},
    }


def recipe_runs(ctx: ReportContext) -> dict[str, list[mini.MiniRun]]:
    """q1.training's runs: per recipe, one per seed (the protocol recipe's are q1.fusion's sequential runs)."""
    seeds, samples = _size(ctx, "seeds"), _size(ctx, "samples")
    steps = mini.train_config(mini.MiniRun(samples=samples)).unet_train.steps
    return {name: [mini.MiniRun(seed=k, samples=samples, **overrides) for k in range(seeds)]
            for name, overrides in recipes(steps).items()}


@plans("q1.training")
def _training_plan(ctx: ReportContext):
    return ([r for rs in recipe_runs(ctx).values() for r in rs], _size(ctx, "n_prompts"), _size(ctx, "eval_steps"))


@experiment("q1.training", "Curricula and loss weightings vs plain training in the mini protocol",
            minutes={"quick": 1.5, "full": 25}, own_workers=True)
def training(ctx: ReportContext) -> Finding:
    seeds, n_prompts = _size(ctx, "seeds"), _size(ctx, "n_prompts")
    shared_vae(ctx)
    plan = recipe_runs(ctx)
    train_ahead(ctx)
    rows = {}
    progress = bar(total=len(plan) * seeds, desc="q1.training runs", enabled=ctx.progress, unit="run")
    for name, runs in plan.items():
        rows[name] = []
        for run in runs:
            rows[name].append(run_unit(ctx, run, n_prompts, _size(ctx, "eval_steps")))
            progress.update()
    progress.close()
    stats = compare_rows(rows, BASELINE)
    table_rows = []
    for name in plan:
        st = stats[name]
        table_rows.append([
            name, *accuracy_cells(st), f"{np.mean([r['wall_s'] for r in rows[name]]):.0f}"])
    cats = " / ".join(rows[BASELINE][0]["per_category"])
    table = Table("Training recipes in the mini protocol",
                  ["recipe", "CompBench (pooled, Wilson 95%)", "vs the protocol recipe, points (95%)", "per seed %",
                   f"per category % ({cats})", "run wall s"], table_rows,
                  note=(f"{seeds} seed(s) x {rows[BASELINE][0]['samples']} training images per run, "
                        f"{rows[BASELINE][0]['n']} CompBench images per run; paired two-level bootstrap over seeds and "
                        f"items. Wall time includes other jobs' load. Command: {ctx.command()}"))
    diffs = {n: stats[n]["vs_baseline"] for n in plan if n != BASELINE}
    # The seed's claim, per recipe: curricula and adaptive weighting help, so they should be above the baseline;
    # the auxiliary losses help, so dropping them should be below it.
    sign = {n: -1 if n == "no auxiliary losses" else 1 for n in diffs}
    better = [n for n, d in diffs.items() if (d["ci95"][0] > 0 if sign[n] > 0 else d["ci95"][1] < 0)]
    worse = [n for n, d in diffs.items() if (d["ci95"][1] < 0 if sign[n] > 0 else d["ci95"][0] > 0)]
    plain = stats[BASELINE]["pooled"]
    quick_note = (" Quick budget (1 seed, short runs): indicative only.") if ctx.budget != "full" else ""
    answer = (f"The protocol's recipe (plain v loss + grounding and relation terms, fixed weights) reaches "
              f"{mini.fmt_interval(plain['accuracy'], plain['ci95'])} mini CompBench; "
              + "; ".join(_difference_words(n, d, "the protocol recipe") for n, d in diffs.items()) + "."
              + quick_note)
    verdict = ("not measured" if nothing_learned(stats) else "holds" if len(better) == len(diffs)
               else "partly holds" if better else "does not hold" if worse else "no difference")
    if verdict == "not measured":
        answer += NOTHING_LEARNED
    return Finding(answer=answer, verdict=verdict, tables=[table],
                   numbers={"seeds": seeds, "samples": rows[BASELINE][0]["samples"],
                            "accuracy": {n: stats[n]["pooled"] for n in plan}, "vs_baseline": diffs},
                   what_was_run=(f"Mini protocol (configs/mini.toml): {len(plan)} recipes x {seeds} seed(s), "
                                 f"{rows[BASELINE][0]['samples']} images each, sequential fusion; mini CompBench "
                                 f"{n_prompts} prompts per category."))
