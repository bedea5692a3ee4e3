"""Figures of the benchmarks, drawn by matplotlib: the gate heat map (fusion) and CompBench bars.

Every figure is written twice, `NAME.png` (150 dpi) and `NAME.svg`, by `save_figure`. Figures are built with
`matplotlib.figure.Figure` directly, never pyplot, so no GUI backend is touched and nothing global changes
(PNG through Agg, SVG through matplotlib's SVG writer); the SVG carries no date, so the same data gives the
same file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

DPI = 150


def figure(width: float, height: float):
    """A matplotlib Figure of width x height inches with constrained layout (no pyplot, no GUI)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write `fig` as PATH.png and PATH.svg (PATH's own suffix, if any, is replaced); returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png, svg = path.with_suffix(".png"), path.with_suffix(".svg")
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(svg, metadata={"Date": None})
    return [png, svg]


def _short_layer(name: str) -> str:
    """`down_blocks.1.attentions.0.transformer_blocks.0.gate` -> `down1.att0.tb0.gate`: rows a reader can scan."""
    for long, short in (("down_blocks.", "down"), ("up_blocks.", "up"), ("mid_block", "mid"), ("attentions.", "att"),
                        ("transformer_blocks.", "tb"), ("attn2", "xattn")):
        name = name.replace(long, short)
    return name


def plot_gates(layers: list[str], steps: list[int], grid, path, title: str = "") -> list[Path]:
    """Heat map of the mean fusion gate g per gated layer (rows) and sampling step (columns, noisy -> clean)."""
    values = np.asarray(grid, dtype=float)  # (layers, steps)
    fig = figure(min(12.0, max(6.5, 4.0 + 0.3 * len(steps))), 1.6 + 0.28 * len(layers))
    ax = fig.add_subplot()
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_yticks(range(len(layers)), [_short_layer(n) for n in layers], fontsize=8)
    ax.set_xlabel("sampling step (0 = noisiest)")
    ax.set_ylabel("gated layer")
    ax.set_title(textwrap.fill(title or "Mean fusion gate per layer and step", 70), fontsize=10)
    fig.colorbar(image, ax=ax, label="mean gate g")
    return save_figure(fig, path)


def plot_compbench(result: dict, path, title: str | None = None) -> list[Path]:
    """Bars of CompBench accuracy per category (and all), with their 95% Wilson intervals as error bars."""
    rows = list(result["per_category"].items()) + [("all", result["overall"])]
    names = [name.replace("_", " ") for name, _ in rows]
    acc = np.array([100 * r["accuracy"] for _, r in rows])
    lo = np.array([100 * r["ci95"][0] for _, r in rows])
    hi = np.array([100 * r["ci95"][1] for _, r in rows])
    fig = figure(max(5.0, 0.8 * len(rows) + 2), 3.8)
    ax = fig.add_subplot()
    colours = ["tab:blue"] * (len(rows) - 1) + ["tab:gray"]
    ax.bar(names, acc, color=colours, label="accuracy (grey: all categories)")
    ax.errorbar(range(len(rows)), acc, yerr=[acc - lo, hi - acc], fmt="none", ecolor="black", capsize=3,
                label="95% Wilson interval")
    for x, (a, top, r) in enumerate(zip(acc, hi, (r for _, r in rows))):  # above the interval's top
        ax.text(x, top + 1.5, f"{a:.0f}%\nn={r['n']}", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("images passing every oracle check (%)")
    ax.set_xlabel("CompBench category")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)
    generator = result.get("config", {}).get("generator", "")
    ax.set_title(title or f"CompBench: {generator}", fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return save_figure(fig, path)


__all__ = ["figure", "plot_compbench", "plot_gates", "save_figure"]
