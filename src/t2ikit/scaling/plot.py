"""The compute-optimal frontier as a PNG (PIL only): N*(C), D*(C) and L*(C) on log-log axes, with the runs.

Three panels share the compute axis (x = each run's flops column). Each draws the runs as dots
(coloured by their loss or error, dark = low),
the frontier of the fitted Chinchilla form as a line, and its bootstrap 95% band as a shaded area.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from t2ikit.scaling.fit import Runs, ScalingReport, compute_optimal

PANEL = (360, 300)  # width, height of one panel in pixels
MARGIN = (62, 18, 18, 44)  # left, top, right, bottom: room for tick labels and titles
LINE = (200, 40, 40)
BAND = (240, 190, 190)
AXIS = (60, 60, 60)
GRIDLINE = (225, 225, 225)


class _LogAxes:
    """Maps (x, y) in data units to pixels on a log-log panel whose top-left corner is `origin`."""

    def __init__(self, origin, xlim, ylim):
        self.x0, self.y0 = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
        self.w = PANEL[0] - MARGIN[0] - MARGIN[2]
        self.h = PANEL[1] - MARGIN[1] - MARGIN[3]
        self.xlim = [math.log10(v) for v in xlim]
        self.ylim = [math.log10(v) for v in ylim]

    def __call__(self, x, y):
        fx = (math.log10(x) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (math.log10(y) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return self.x0 + fx * self.w, self.y0 + (1 - fy) * self.h

    def grid(self, draw, font):
        """Decade gridlines and tick labels (drawn first, under the data)."""
        for axis, (lo, hi) in (("x", self.xlim), ("y", self.ylim)):
            ticks = list(range(math.ceil(lo), math.floor(hi) + 1))
            step = max(1, len(ticks) // 6)
            for t in ticks[::step]:
                if axis == "x":
                    px = self.x0 + (t - lo) / (hi - lo) * self.w
                    draw.line([(px, self.y0), (px, self.y0 + self.h)], fill=GRIDLINE)
                    draw.text((px - 10, self.y0 + self.h + 4), f"1e{t}", fill=AXIS, font=font)
                else:
                    py = self.y0 + (1 - (t - lo) / (hi - lo)) * self.h
                    draw.line([(self.x0, py), (self.x0 + self.w, py)], fill=GRIDLINE)
                    draw.text((self.x0 - 34, py - 5), f"1e{t}", fill=AXIS, font=font)
        if self.ylim[1] - self.ylim[0] < 1.5:  # less than ~one decade: label the ends too
            for v in self.ylim:
                py = self.y0 + (1 - (v - self.ylim[0]) / (self.ylim[1] - self.ylim[0])) * self.h
                py = py - 12 if py > self.y0 + 6 else py + 2  # inside the frame
                draw.text((self.x0 + 3, py), f"{10 ** v:.3g}", fill=AXIS, font=font)

    def outline(self, draw, font, title, xlabel):
        draw.rectangle([self.x0, self.y0, self.x0 + self.w, self.y0 + self.h], outline=AXIS)
        draw.text((self.x0, self.y0 - 14), title, fill=(0, 0, 0), font=font)
        draw.text((self.x0 + self.w // 2 - 45, self.y0 + self.h + 20), xlabel, fill=AXIS, font=font)


def _limits(*arrays, pad: float = 0.15) -> tuple[float, float]:
    values = np.concatenate([np.ravel(a) for a in arrays])
    values = np.log10(values[np.isfinite(values) & (values > 0)])
    lo, hi = values.min(), values.max()
    span = max(hi - lo, 0.2)
    return 10 ** (lo - pad * span), 10 ** (hi + pad * span)


def _colour(t: float) -> tuple[int, int, int]:
    # dark blue (low loss) to yellow (high loss)
    a, b = np.array([30, 40, 120]), np.array([235, 200, 40])
    return tuple(int(v) for v in a + (b - a) * t)


def plot_frontier(report: ScalingReport, runs: Runs, path: str | Path, points: int = 60) -> None:
    """Write the three-panel frontier plot of `report` (fitted on `runs`) to `path`."""
    from PIL import Image, ImageDraw, ImageFont

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
    rank = (np.log(y) - np.log(y).min()) / max(np.ptp(np.log(y)), 1e-12)
    panels = [("N", runs.params, f"params N; line: N*(C) for {report.flops.rule}"),
              ("D", runs.samples, "samples D; line: D*(C)"),
              ("loss", y, f"{report.target}; line: {report.target} at N*(C), D*(C)")]

    image = Image.new("RGB", (PANEL[0] * len(panels), PANEL[1]), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for p, (key, data, title) in enumerate(panels):
        extra = [best[key]] + ([band[key]] if band is not None else [])
        ax = _LogAxes((p * PANEL[0], 0), _limits(c, runs.flops, pad=0.03), _limits(data, *extra))
        ax.grid(draw, font)
        if band is not None:
            ok = np.all(np.isfinite(band[key]), axis=0) & np.all(band[key] > 0, axis=0)
            upper = [ax(ci, v) for ci, v in zip(c[ok], band[key][1][ok])]
            lower = [ax(ci, v) for ci, v in zip(c[ok], band[key][0][ok])]
            if len(upper) > 1:
                draw.polygon(upper + lower[::-1], fill=BAND)
        for i in range(len(runs)):
            px, py = ax(runs.flops[i], data[i])
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=_colour(float(rank[i])))
        line = [ax(ci, v) for ci, v in zip(c, best[key]) if np.isfinite(v) and v > 0]  # none without a frontier
        if len(line) > 1:
            draw.line(line, fill=LINE, width=2)
        ax.outline(draw, font, title, "compute C (FLOPs)")
    image.save(path)
