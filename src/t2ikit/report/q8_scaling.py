"""Q8: scaling laws in the mini protocol: CompBench error vs training compute over model sizes x data budgets.

Every run trains text encoder + UNet from scratch (t2ikit.report.mini) at one of the mini sizes (width multiples
of "xs", `mini.SIZES`) and one sample budget; it is scored on the mini CompBench. The error is 1 - accuracy (the
share of images failing some oracle check): the quantity the seed's question is about (does more compute make
the model follow prompts better?), and unlike the training loss it is comparable across sizes whatever their
noise-prediction floor. Compute C = 3 x UNet forward FLOPs x training images (forward + backward). The fit is
`scaling.fit.fit_power_law(C, error)` (error = k C^-e, or E + k C^-e when AICc prefers it) with a bootstrap over
runs; the loss fit is reported next to it. An error of 0 cannot be fitted on logs: it is floored at half an
image (0.5 / n).
"""

from __future__ import annotations

import numpy as np

from t2ikit.bench.progress import bar
from t2ikit.report import mini
from t2ikit.report.core import Figure, Finding, ReportContext, Table, experiment
from t2ikit.report.q1_fusion import plans, root, run_unit, shared_vae, train_ahead

SIZES = {  # (quick, full, smoke); at full the config's size (mini-m) at 9,600 images is q1.fusion's sequential runs
    # (same seeds, same evaluation: trained and scored once)
    "seeds": (1, 3, 1),
    "sizes": (("mini-s", "mini-m"), ("mini-xs", "mini-s", "mini-m"), ("mini-xs", "mini-m")),
    # training images per run: below ~9,600 a mini-m run passes almost no image (q1.fusion quick: 0 of 12 at 160;
    # full: 19% at 9,600), so the full grid spans 4,800-19,200 where the error can move
    "samples": ((80, 160), (4800, 9600, 19200), (4, 8)),
    "n_prompts": (4, 50, 1),  # mini CompBench prompts per category (full: q1.fusion's, so its runs are reused)
    "eval_steps": (10, 20, 2),  # sampler steps of the CompBench images
}
BOOTSTRAP = 500


def _size(ctx: ReportContext, name: str):
    quick, full, smoke = SIZES[name]
    return ctx.pick(quick, full, smoke)


def grid_runs(ctx: ReportContext) -> list[mini.MiniRun]:
    """q8.scaling's runs: seeds x sizes x sample budgets, seed-major (a stop leaves whole seeds); the config's own
    size is MiniRun(size=""), so its runs are q1's."""
    default = mini.train_config(mini.MiniRun()).model.size
    return [mini.MiniRun(seed=k, size="" if s == default else s, samples=b) for k in range(_size(ctx, "seeds"))
            for s in _size(ctx, "sizes") for b in _size(ctx, "samples")]


@plans("q8.scaling")
def _scaling_plan(ctx: ReportContext):
    return grid_runs(ctx), _size(ctx, "n_prompts"), _size(ctx, "eval_steps")


@experiment("q8.scaling", "Scaling in the mini protocol: CompBench error vs compute over sizes x data budgets",
            minutes={"quick": 0.5, "full": 65}, own_workers=True)
def scaling(ctx: ReportContext) -> Finding:
    from t2ikit.scaling.fit import fit_power_law

    sizes, budgets, seeds = _size(ctx, "sizes"), _size(ctx, "samples"), _size(ctx, "seeds")
    n_prompts, eval_steps = _size(ctx, "n_prompts"), _size(ctx, "eval_steps")
    shared_vae(ctx)
    grid = grid_runs(ctx)
    train_ahead(ctx)
    rows = []
    progress = bar(total=len(grid), desc="q8.scaling runs", enabled=ctx.progress, unit="run")
    for run in grid:
        rows.append({**run_unit(ctx, run, n_prompts, eval_steps), "seed": run.seed})
        progress.update()
    progress.close()
    flops = np.array([r["flops"] for r in rows], float)
    n_images = np.array([r["n"] for r in rows], float)
    error = np.array([1 - r["accuracy"] for r in rows], float)
    floored = np.maximum(error, 0.5 / n_images)
    loss = np.array([r["final_loss"] for r in rows], float)
    fit = fit_power_law(flops, floored, x_name="flops", y_name="error", irreducible="auto", bootstrap=BOOTSTRAP)
    loss_fit = fit_power_law(flops, loss, x_name="flops", y_name="loss", irreducible="auto", bootstrap=BOOTSTRAP)
    e = fit.exponent
    excludes_zero = e.ci95 is not None and (e.ci95[0] > 0 or e.ci95[1] < 0)
    table = Table(
        f"Mini-protocol runs ({seeds} seed(s))",
        ["seed", "size", "UNet params", "text params", "images", "compute (FLOPs)", "CompBench (Wilson 95%)", "error",
         "final loss", "wall s"],
        [[r["seed"], r["size"], f"{r['params']:,}", f"{r['text_params']:,}", r["samples"], f"{r['flops']:.3g}",
          mini.fmt_interval(r["accuracy"], r["ci95"]), f"{1 - r['accuracy']:.3f}", f"{r['final_loss']:.4f}",
          f"{r['wall_s']:.0f}"] for r in rows],
        note=f"Wall time includes the load of other jobs on the shared CPU. Command: {ctx.command()}")

    def fit_row(name, f):
        ci = f.exponent.ci95
        return [name, f"{f.exponent.value:.3f}", "-" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]",
                f"{f.k.value:.3g}", "-" if f.E is None else f"{f.E.value:.3g}", f"{f.r2_log:.3f}", f.n]

    fit_table = Table("Power-law fits vs compute (scaling.fit.fit_power_law, bootstrap over runs)",
                      ["target", "exponent e", "95% interval", "k", "E (irreducible)", "R^2 (log)", "runs"],
                      [fit_row("error = 1 - CompBench", fit), fit_row("final training loss", loss_fit)],
                      note=f"{BOOTSTRAP} bootstrap resamples of the runs; form chosen by AICc.")
    figure = _figure(ctx, rows, fit, floored)
    quick_note = (" Quick budget (1 seed, a 2 x 2 grid of short runs): indicative only; the full budget fits "
                  f"{SIZES['seeds'][1] * len(SIZES['sizes'][1]) * len(SIZES['samples'][1])} runs (3 seeds).") if ctx.budget != "full" else ""
    ci = e.ci95
    answer = (f"Over {len(rows)} mini runs ({', '.join(sizes)} x {', '.join(map(str, budgets))} images), the "
              f"CompBench error follows error ~ C^(-e) with e = {e.value:.3f}"
              + (f" (95% interval [{ci[0]:.3f}, {ci[1]:.3f}], " + ("excluding 0" if excludes_zero else "including 0")
                 + ")" if ci else "") + f" (e > 0: more compute, fewer errors), R^2 on logs {fit.r2_log:.2f}; the "
              f"training loss has e = {loss_fit.exponent.value:.3f}"
              + (f" [{loss_fit.exponent.ci95[0]:.3f}, {loss_fit.exponent.ci95[1]:.3f}]" if loss_fit.exponent.ci95 else "")
              + ". The shipped model's size and data (docs/results/scaling.md) are far outside this range, and its "
              "CPU sweep measured CompBench 0 in every run, so the two rankings cannot be compared; within the mini "
              "protocol the ranking by compute is measured." + quick_note)
    if all(r["accuracy"] == 0 for r in rows):  # every error is 1: there is no trend to fit
        verdict = "not measured"
        answer = (f"No run of the {len(rows)} passed a single CompBench image (error 1 everywhere), so the runs were "
                  "too short for a scaling of the error to show: no verdict. The training loss has e = "
                  f"{loss_fit.exponent.value:.3f}"
                  + (f" [{loss_fit.exponent.ci95[0]:.3f}, {loss_fit.exponent.ci95[1]:.3f}]"
                     if loss_fit.exponent.ci95 else "") + "." + quick_note)
    elif ci is None:
        verdict = "not measured"
    elif ci[0] > 0:
        verdict = "holds"
    elif ci[1] < 0:
        verdict = "does not hold"
    else:
        verdict = "no difference"
    numbers = {"exponent": e.to_json(), "loss_exponent": loss_fit.exponent.to_json(), "fit": fit.to_json(),
               "loss_fit": loss_fit.to_json(), "runs": [{k: r[k] for k in ("seed", "size", "params", "samples", "flops",
                                                                             "accuracy", "ci95", "final_loss")}
                                                        for r in rows]}
    return Finding(answer=answer, verdict=verdict, tables=[table, fit_table], figures=[figure], numbers=numbers,
                   what_was_run=(f"Mini protocol (configs/mini.toml), {seeds} seed(s): sizes {', '.join(sizes)} x budgets "
                                 f"{', '.join(map(str, budgets))} training images; mini CompBench {n_prompts} prompts "
                                 f"per category; fit of error vs compute with {BOOTSTRAP} bootstrap resamples."))


def _figure(ctx: ReportContext, rows: list[dict], fit, floored) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure("error-vs-compute")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for size in dict.fromkeys(r["size"] for r in rows):
        pts = [(r, f) for r, f in zip(rows, floored) if r["size"] == size]
        x = [r["flops"] for r, _ in pts]
        y = [f for _, f in pts]
        lo = [f - (1 - r["ci95"][1]) for r, f in pts]
        hi = [(1 - r["ci95"][0]) - f for r, f in pts]
        ax.errorbar(x, y, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", capsize=3, label=size)
    xs = np.geomspace(min(r["flops"] for r in rows), max(r["flops"] for r in rows), 50)
    ax.plot(xs, fit.predict(xs), "k--", label=f"fit: e = {fit.exponent.value:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs, 3 x forward x images)")
    ax.set_ylabel("CompBench error = 1 - accuracy (95% Wilson)")
    ax.set_title("Mini protocol: error vs compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Figure(rel, f"CompBench error vs training compute per size, with the power-law fit. {ctx.command()}")


__all__ = ["scaling", "root"]
