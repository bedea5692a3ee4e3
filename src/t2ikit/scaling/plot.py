"""The compute-optimal frontier, drawn by matplotlib: N*(C), D*(C) and L*(C) on log-log axes, with the runs.

Three panels share the compute axis (x = each run's flops column). Each draws the runs as dots coloured by
their loss or error (colour bar), the frontier of the fitted Chinchilla form as a line, and its bootstrap 95%
band as a shaded area. Written as PNG and SVG (`t2ikit.bench.plots.save_figure`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from t2ikit.bench.plots import figure, save_figure
from t2ikit.scaling.fit import Runs, ScalingReport, compute_optimal


def plot_frontier(report: ScalingReport, runs: Runs, path: str | Path, points: int = 60) -> list[Path]:
    """Write the three-panel frontier plot of `report` (fitted on `runs`) to PATH.png and PATH.svg."""
    fit, k = report.chinchilla, report.flops.k
    budgets_in = [row["C"] for row in report.frontier]
    c = np.logspace(math.log10(min(runs.flops.min(), *budgets_in)), math.log10(max(runs.flops.max(), *budgets_in)),
                    points)
    best = compute_optimal(fit.point, c, k)
    band = None
    if fit.samples is not None:
        boot = compute_optimal(fit.samples, c, k)
        if np.all(np.isfinite(best["N"])):
            with np.errstate(all="ignore"):
                band = {key: np.nanpercentile(boot[key], [2.5, 97.5], axis=0) for key in boot}

    y = runs.target(report.target)
    panels = [("N", runs.params, "parameters N", f"N*(C), {report.flops.rule}"),
              ("D", runs.samples, "training samples D (images seen)", "D*(C)"),
              ("loss", y, f"{report.target} (dimensionless)", f"{report.target} at N*(C), D*(C)")]
    fig = figure(13.0, 4.2)
    axes = fig.subplots(1, len(panels))
    for ax, (key, data, ylabel, line_label) in zip(axes, panels):
        if band is not None:
            ok = np.all(np.isfinite(band[key]), axis=0) & np.all(band[key] > 0, axis=0)
            if ok.sum() > 1:
                ax.fill_between(c[ok], band[key][0][ok], band[key][1][ok], color="tab:red", alpha=0.2, lw=0,
                                label="bootstrap 95% band")
        dots = ax.scatter(runs.flops, data, c=y, cmap="viridis", norm="log", s=18, edgecolors="none",
                          label="runs", zorder=3)
        ok = np.isfinite(best[key]) & (best[key] > 0)  # none without a frontier
        if ok.sum() > 1:
            ax.plot(c[ok], best[key][ok], color="tab:red", lw=2, label=line_label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.colorbar(dots, ax=axes, label=f"run's {report.target}", shrink=0.9)
    fig.suptitle(f"Compute-optimal frontier of the Chinchilla fit ({report.n_runs} runs, target {report.target})",
                 fontsize=11)
    return save_figure(fig, path)
