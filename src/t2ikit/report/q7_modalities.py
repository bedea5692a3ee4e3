"""Q7, multi-modal consistency: text with sketch / depth / mask / reference through the shipped adapters, pairs
of conditions at split scales, a deliberate conflict, and what each combination costs.

- Consistency: the scenes of `bench.control`'s consistency suite (world seed BENCH_SEED + 2), generated from
  the caption alone, with each condition through its adapter (scale 1), and with pairs at 0.5 each (the pair's
  residuals sum to one adapter's); every image is scored on every modality (`bench.consistency.consistency`:
  text checks, sketch edge F1, depth rank agreement, mask mIoU, reference F1); 95% bootstrap intervals over
  scenes. The same scenes and noise for every row, so differences are paired.
- Complementary conditions reinforce each other if a pair, on the two modalities it conditions, agrees better
  than either condition alone: per scene, mean(metric_a, metric_b) of the pair minus the better single's.
- Conflict: `bench.control.bench_conflict` (a circle's sketch, a caption saying square): how often each side
  wins at each (text guidance, sketch scale); the priority weighting claim holds if the scale moves the winner.
- Cost: the seconds of one image of every row (the fastest of a few rounds in which the rows take turns) and the
  floating-point operations per sampling step and per generation (torch's FlopCounterMode on one image,
  1 and 2 steps: per step = the difference, fixed = the rest: adapter encoders, text encoder, VAE decoder).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from t2ikit.bench.consistency import consistency
from t2ikit.bench.control import BENCH_SEED, bench_conflict
from t2ikit.bench.progress import bar
from t2ikit.bench.stats import bootstrap_interval
from t2ikit.control.compose import resolve_adapter
from t2ikit.control.encoders import CONDITIONS
from t2ikit.pipeline import PLAIN
from t2ikit.report.core import Figure, Finding, Table, experiment
from t2ikit.world.caption import write_caption
from t2ikit.world.conditions import from_modalities
from t2ikit.world.oracle import MIN_RESOLUTION
from t2ikit.world.render import render
from t2ikit.world.scene import sample_scene

IMAGE_SEED = 7000  # image seed of scene 0; scene i uses IMAGE_SEED + i in every row
MODALITIES = ("text", "sketch", "depth", "mask", "reference")
PAIRS = (("sketch", "depth"), ("depth", "mask"), ("mask", "reference"), ("sketch", "reference"))
RESAMPLES = 2000
BATCH = 16


def load_adapters(pipe) -> dict:
    """{condition: adapter module}: the shipped adapter of every condition (a test replaces this)."""
    return {name: resolve_adapter(pipe, name, None) for name in CONDITIONS}


def combinations_of(adapters: dict, full: bool, pairs=PAIRS) -> list[tuple[str, tuple, dict]]:
    """(label, conditions, scales) of every row: text only, each condition, each pair of `pairs` at 0.5 each (and,
    under the full budget, at 1 each)."""
    rows = [("text only", (), {})]
    rows += [(f"text + {a}", (a,), {a: 1.0}) for a in adapters]
    for pair in pairs:
        if all(p in adapters for p in pair):
            rows.append((f"text + {pair[0]} + {pair[1]} (0.5 each)", pair, {p: 0.5 for p in pair}))
            if full:
                rows.append((f"text + {pair[0]} + {pair[1]} (1 each)", pair, {p: 1.0 for p in pair}))
    return rows


def _size(pipe) -> int:
    return max(pipe.default_size[0], MIN_RESOLUTION)


def _spec(pipe, prompts, steps, adapters, names, scales, maps, idx):
    size = _size(pipe)
    return pipe.make_spec(prompts, None, steps, None, 0, 1, (size, size), None, **PLAIN,
                          adapters={k: adapters[k] for k in names}, scales=dict(scales),
                          **{k: [maps[k][i] for i in idx] for k in names})


def generate_row(pipe, scenes, mods, prompts, maps, adapters, names, scales, steps, idx) -> dict:
    """Consistency of each scene in `idx` for one row, and the row's generation seconds."""
    t0 = time.perf_counter()
    with torch.no_grad():
        gen = pipe.run(_spec(pipe, [prompts[i] for i in idx], steps, adapters, names, scales, maps, idx),
                       progress=False, seeds=[IMAGE_SEED + i for i in idx])
    seconds = time.perf_counter() - t0
    per = [consistency(im.permute(1, 2, 0).numpy(), scenes[i], mods[i], MODALITIES) for im, i in zip(gen.images, idx)]
    return {"metrics": per, "seconds": seconds}


def flops(pipe, prompt, adapters, names, scales, maps) -> dict:
    """Floating-point operations of one image: per sampling step and fixed (everything else)."""
    totals = {}
    for steps in (1, 2):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            pipe.run(_spec(pipe, [prompt], steps, adapters, names, scales, maps, [0]), progress=False, seeds=[0])
        totals[steps] = counter.get_total_flops()
    per_step = totals[2] - totals[1]
    return {"per_step": float(per_step), "fixed": float(totals[1] - per_step)}


def timings(pipe, prompts, maps, adapters, rows, steps, rounds: int) -> dict:
    """{label: seconds}: the fastest of `rounds` generations of one image per row, the rows taking turns in each
    round, so that a change of the machine's load falls on every row alike."""
    best = {label: float("inf") for label, _, _ in rows}
    for _ in range(rounds):
        for label, names, scales in rows:
            spec = _spec(pipe, [prompts[0]], steps, adapters, names, scales, maps, [0])
            t0 = time.perf_counter()
            with torch.no_grad():
                pipe.run(spec, progress=False, seeds=[IMAGE_SEED])
            best[label] = min(best[label], time.perf_counter() - t0)
    return best


def _mean_ci(values, rng) -> tuple[float, list]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), bootstrap_interval(v, rng, RESAMPLES)


@experiment("q7.modalities", "Modalities: pairs, conflicts and their compute cost", minutes={"quick": 1.5, "full": 7})
def run(ctx) -> Finding:
    n = ctx.pick(6, 24, smoke=2)
    steps = ctx.pick(10, 20, smoke=2)
    n_conflict = ctx.pick(6, 24, smoke=2)
    pipe = ctx.pipe()
    adapters = load_adapters(pipe)
    size = _size(pipe)
    scenes = [sample_scene(BENCH_SEED + 2, i) for i in range(n)]
    mods = [render(sc, size) for sc in scenes]
    prompts = [write_caption(sc.spec) for sc in scenes]
    maps = {name: [from_modalities(m, name) for m in mods] for name in adapters}
    rows = combinations_of(adapters, ctx.budget == "full", ctx.pick(PAIRS, PAIRS, smoke=PAIRS[:1]))
    batches = [list(range(s, min(s + BATCH, n))) for s in range(0, n, BATCH)]
    progress = bar(total=len(rows) * len(batches) + len(rows) + 2, desc="q7.modalities", enabled=ctx.progress,
                   unit="run")  # the rows' batches, their FLOP counts, the timing turns, the conflict
    metrics = {label: [] for label, _, _ in rows}
    seconds = {label: 0.0 for label, _, _ in rows}
    for b, idx in enumerate(batches):  # batch-major: every row's batch b runs side by side in time
        for label, names, scales in rows:
            key = f"row-{label.replace(' ', '_').replace('(', '').replace(')', '')}-b{b}-n{n}-steps{steps}"
            u = ctx.unit(key, lambda names=names, scales=scales, idx=idx: generate_row(
                pipe, scenes, mods, prompts, maps, adapters, names, scales, steps, idx))
            metrics[label] += u["metrics"]
            seconds[label] += u["seconds"]
            progress.update()
    flop = {}
    for label, names, scales in rows:
        flop[label] = ctx.unit(f"flops-{label.replace(' ', '_').replace('(', '').replace(')', '')}",
                               lambda names=names, scales=scales: flops(pipe, prompts[0], adapters, names, scales, maps))
        progress.update()
    rounds = ctx.pick(2, 5, smoke=1)
    timing = ctx.unit(f"timing-r{rounds}-steps{steps}",
                      lambda: timings(pipe, prompts, maps, adapters, rows, steps, rounds))
    progress.update()
    conflict = None
    if "sketch" in adapters:
        conflict = ctx.unit(f"conflict-n{n_conflict}-steps{steps}",
                            lambda: bench_conflict(pipe, n_conflict, steps, {"sketch": adapters["sketch"]}))
    progress.update()
    progress.close()

    rng = np.random.default_rng(0)
    stats = {label: {m: _mean_ci([p[m] for p in metrics[label]], rng) for m in MODALITIES} for label, _, _ in rows}
    base_t, base_f = timing["text only"], flop["text only"]
    table = []
    for label, names, scales in rows:
        cells = [f"{stats[label][m][0]:.3f} [{stats[label][m][1][0]:.3f}, {stats[label][m][1][1]:.3f}]"
                 for m in MODALITIES]
        table.append([label, *cells, f"{timing[label]:.2f}", f"{timing[label] / base_t:.2f}",
                      f"{flop[label]['per_step'] / 1e9:.3f}", f"{flop[label]['per_step'] / base_f['per_step']:.3f}",
                      f"{flop[label]['fixed'] / 1e9:.3f}"])

    # complementary pairs: the pair at 0.5 each vs the better single, on the pair's own two modalities
    reinforce, reinforce_rows = {}, []
    for label, names, scales in rows:
        if len(names) != 2:
            continue
        a, b = names
        pair = np.array([(p[a] + p[b]) / 2 for p in metrics[label]])
        singles = {s: np.array([(p[a] + p[b]) / 2 for p in metrics[f"text + {s}"]]) for s in names}
        best = max(singles, key=lambda s: singles[s].mean())
        d = pair - singles[best]
        dt = np.array([p["text"] for p in metrics[label]]) - np.array([p["text"] for p in metrics["text only"]])
        ci, ci_t = bootstrap_interval(np.stack([d, dt]), rng, RESAMPLES)
        reinforce[label] = {"diff": float(d.mean()), "ci": ci, "better_single": best, "text_diff": float(dt.mean()),
                            "text_ci": ci_t}
        reinforce_rows.append([label, f"text + {best}", f"{pair.mean():.3f}", f"{singles[best].mean():.3f}",
                               f"{d.mean():+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]",
                               f"{dt.mean():+.3f} [{ci_t[0]:+.3f}, {ci_t[1]:+.3f}]"])

    conflict_rows = []
    if conflict:
        for label, r in conflict.items():
            if not isinstance(r, dict) or "text_scale" not in r:
                continue
            sq, ci_ = r["square (text wins)"], r["circle (sketch wins)"]
            f1 = r["sketch edge F1"]
            conflict_rows.append([r["text_scale"], r["sketch_scale"],
                                  f"{sq['rate']:.2f} [{sq['ci95'][0]:.2f}, {sq['ci95'][1]:.2f}]",
                                  f"{ci_['rate']:.2f} [{ci_['ci95'][0]:.2f}, {ci_['ci95'][1]:.2f}]",
                                  f"{f1['mean']:.3f} [{f1['ci95'][0]:.3f}, {f1['ci95'][1]:.3f}]"])

    # figure: consistency per modality and row; the conflict; the cost
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), gridspec_kw={"width_ratios": [2.2, 1, 1]})
    ax = axes[0]
    width = 0.8 / len(rows)
    for j, (label, _, _) in enumerate(rows):
        vals = np.array([stats[label][m][0] for m in MODALITIES])
        lo = np.array([stats[label][m][1][0] for m in MODALITIES])
        hi = np.array([stats[label][m][1][1] for m in MODALITIES])
        ax.bar(np.arange(len(MODALITIES)) + (j - (len(rows) - 1) / 2) * width, vals, width, label=label,
               yerr=[vals - lo, hi - vals], capsize=1.5)
    ax.set_xticks(range(len(MODALITIES)), ["text\n(checks)", "sketch\n(edge F1)", "depth\n(rank agr.)", "mask\n(mIoU)",
                                           "reference\n(F1)"], fontsize=8)
    ax.set_ylabel("consistency with the condition (1 = exact)")
    ax.set_ylim(0, 1.5)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=6, ncol=3, loc="upper center")
    ax.set_title(f"{n} scenes, {steps} steps, 95% bootstrap intervals", fontsize=9)
    ax = axes[1]
    if conflict_rows:
        pts = [r for r in conflict.values() if isinstance(r, dict) and r.get("text_scale") == 4.0]
        xs = [r["sketch_scale"] for r in pts]
        for key, lab in (("circle (sketch wins)", "circle: sketch wins"), ("square (text wins)", "square: text wins")):
            ys = np.array([r[key]["rate"] for r in pts])
            lo, hi = np.array([r[key]["ci95"][0] for r in pts]), np.array([r[key]["ci95"][1] for r in pts])
            ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], marker="o", capsize=3, label=lab)
        ys = np.array([r["sketch edge F1"]["mean"] for r in pts])
        lo = np.array([r["sketch edge F1"]["ci95"][0] for r in pts])
        hi = np.array([r["sketch edge F1"]["ci95"][1] for r in pts])
        ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], marker="s", ls="--", capsize=3, label="edge F1 with the sketch")
        ax.set_xlabel("sketch adapter scale (text guidance 4)")
        ax.set_ylabel("share of images / edge F1")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        ax.set_title(f"conflict: circle sketch, 'square' caption ({n_conflict} scenes)", fontsize=9)
    ax = axes[2]
    labels = [label for label, _, _ in rows]
    ax.barh(range(len(rows)), [timing[lab] / base_t for lab in labels], 0.4, label="time per image")
    ax.barh(np.arange(len(rows)) + 0.4, [flop[lab]["per_step"] / base_f["per_step"] for lab in labels], 0.4,
            label="FLOPs per step")
    ax.set_yticks(np.arange(len(rows)) + 0.2, labels, fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("ratio to text only")
    ax.legend(fontsize=8)
    fig.suptitle(pipe.name)
    fig.tight_layout()
    path, rel = ctx.figure("modalities")
    fig.savefig(path, dpi=110)
    plt.close(fig)

    # verdicts: conflict -> the scale is a priority knob; complementary pairs -> reinforce; cost
    priority = None
    if conflict:
        lo_s, hi_s = conflict.get("text 4, sketch 0.5"), conflict.get("text 4, sketch 2")
        if lo_s and hi_s:
            a, b = lo_s["circle (sketch wins)"], hi_s["circle (sketch wins)"]
            fa, fb = lo_s["sketch edge F1"], hi_s["sketch edge F1"]
            priority = {"sketch_wins_at_0.5": a["rate"], "ci_0.5": a["ci95"], "sketch_wins_at_2": b["rate"],
                        "ci_2": b["ci95"], "winner_moves": b["ci95"][0] > a["ci95"][1],
                        "edge_f1_at_0.5": fa["mean"], "edge_ci_0.5": fa["ci95"], "edge_f1_at_2": fb["mean"],
                        "edge_ci_2": fb["ci95"], "outline_moves": fb["ci95"][0] > fa["ci95"][1]}
            priority["separated"] = priority["winner_moves"] or priority["outline_moves"]
    up = [k for k, v in reinforce.items() if v["ci"][0] > 0]
    down = [k for k, v in reinforce.items() if v["ci"][1] < 0]
    own = {a: stats[f"text + {a}"][a] for a in adapters}
    lifts = {a: (own[a][0] - stats["text only"][a][0]) for a in adapters}
    max_step = max(flop[lab]["per_step"] / base_f["per_step"] for lab in labels)
    max_time = max(timing[lab] / base_t for lab in labels)
    if priority and priority["separated"] and up and not down:
        verdict = "holds"
    elif (priority and priority["separated"]) or up:
        verdict = "partly holds"
    else:
        verdict = "no difference" if not down else "does not hold"
    pr_txt = (f"In the conflict (a circle's sketch, a caption saying square) the sketch wins "
              f"{priority['sketch_wins_at_0.5']:.0%} [{priority['ci_0.5'][0]:.0%}, {priority['ci_0.5'][1]:.0%}] of "
              f"{n_conflict} images at sketch scale 0.5 and {priority['sketch_wins_at_2']:.0%} [{priority['ci_2'][0]:.0%}, "
              f"{priority['ci_2'][1]:.0%}] at 2 (text guidance 4)"
              + (", outside the noise" if priority["winner_moves"] else ", no change we can claim")
              + f"; the outline's agreement with the sketch (edge F1) goes from {priority['edge_f1_at_0.5']:.2f} "
              f"[{priority['edge_ci_0.5'][0]:.2f}, {priority['edge_ci_0.5'][1]:.2f}] to {priority['edge_f1_at_2']:.2f} "
              f"[{priority['edge_ci_2'][0]:.2f}, {priority['edge_ci_2'][1]:.2f}]"
              + (": the scale weights the sketch, " + ("and decides the conflict. " if priority["winner_moves"] else
                 "but the caption keeps the shape. ") if priority["outline_moves"] else ", no change we can claim. ")
              ) if priority else "The conflict was not measured. "
    re_txt = "; ".join(f"{k}: {v['diff']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] vs {v['better_single']} alone, "
                       f"text {v['text_diff']:+.3f} [{v['text_ci'][0]:+.3f}, {v['text_ci'][1]:+.3f}]"
                       for k, v in reinforce.items())
    answer = (
        f"On {pipe.name} with the shipped adapters ({n} scenes), each condition lifts its own agreement over text alone: "
        + ", ".join(f"{a} {stats['text only'][a][0]:.2f} -> {own[a][0]:.2f} [{own[a][1][0]:.2f}, {own[a][1][1]:.2f}]"
                    for a in adapters)
        + f". Pairs at 0.5 each against the better single condition on the pair's own two modalities (and text "
        f"agreement against text only): {re_txt}. "
        + (f"Reinforcing outside the noise: {', '.join(up)}. " if up else "No pair reinforces beyond the noise. ")
        + (f"Worse than the better single: {', '.join(down)}. " if down else "")
        + pr_txt
        + f"Cost: a condition multiplies the FLOPs per step by at most {max_step:.3f} (adapter residuals are computed "
        f"once per generation and added; the reference tokens lengthen every cross-attention's context) and the "
        f"measured time per image by at most {max_time:.2f} (the fastest of {rounds} turns per row, the rows "
        f"taking turns on the same machine)."
    )
    return Finding(
        answer=answer, verdict=verdict,
        tables=[Table("Consistency per modality (mean [95% bootstrap]) and cost",
                      ["images", *MODALITIES, "s per image", "time vs text", "GFLOPs per step", "FLOPs/step vs text",
                       "fixed GFLOPs"], table,
                      note="Text: share of the caption's oracle checks passed; sketch: edge F1 (1 px); depth: Spearman "
                           "rank agreement mapped to [0, 1]; mask: mIoU of shape classes; reference: F1 of (colour, "
                           "shape) multisets. FLOPs: torch FlopCounterMode on one image (per step = 2-step minus "
                           "1-step run; fixed = encoders, adapters, decoder)."),
                Table("Do complementary conditions reinforce each other?",
                      ["pair (0.5 each)", "better single", "pair, mean of its 2 metrics", "single, same",
                       "difference [95% paired]", "text vs text only [95% paired]"], reinforce_rows),
                Table("Conflict: circle sketch, caption 'a <colour> square'",
                      ["text guidance", "sketch scale", "square: text wins [95%]", "circle: sketch wins [95%]",
                       "sketch edge F1 [95%]"], conflict_rows, note="bench.control.bench_conflict, Wilson intervals.")],
        figures=[Figure(rel, f"Left: consistency of each modality per combination; middle: who wins the conflict "
                             f"against the sketch scale; right: time and FLOPs per step relative to text only. "
                             f"`{ctx.command()}`")],
        numbers={"scenes": n, "steps": steps, "conflict_scenes": n_conflict,
                 "consistency": {k: {m: {"mean": v[m][0], "ci": v[m][1]} for m in MODALITIES} for k, v in stats.items()},
                 "reinforce": reinforce, "priority": priority,
                 "time_ratio": {lab: timing[lab] / base_t for lab in labels},
                 "seconds_per_image": {lab: timing[lab] for lab in labels},
                 "generation_seconds": sum(seconds.values()),
                 "flops_per_step": {lab: flop[lab]["per_step"] for lab in labels},
                 "flops_fixed": {lab: flop[lab]["fixed"] for lab in labels},
                 "own_lift": lifts},
        what_was_run=(f"{pipe.name}, shipped adapters {', '.join(adapters)}; {n} scenes of the control bench's "
                      f"consistency suite (world seed {BENCH_SEED + 2:#x}, image seed {IMAGE_SEED}+i in every row), "
                      f"{steps} steps, relation guidance off; conflict: bench.control.bench_conflict on {n_conflict} "
                      f"scenes."),
    )

