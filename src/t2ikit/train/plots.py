"""Loss curves of a training run, drawn by matplotlib from its log.jsonl: one panel per stage (VAE, UNet).

Each panel plots the logged training loss (the mean over each log window) against the optimizer step, and,
where the run logged them, the per-term losses of a multi-loss UNet run (`loss_<term>`) on a second axis;
the learning rate is drawn faintly on a third axis so that warm-up and decay read next to the loss.

    python -m t2ikit.train.plots RUN/log.jsonl RUN/loss.png      # writes loss.png and loss.svg
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from t2ikit.bench.plots import figure, save_figure

STAGE_NAMES = {"vae": "VAE", "unet": "UNet"}


def read_log(path: str | Path) -> dict[str, list[dict]]:
    """{stage: [train records in step order]} of a trainer's log.jsonl (other events skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training log at {str(path)!r}")
    stages: dict[str, dict[int, dict]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n} is not a JSON line") from None
        if record.get("event") == "train":
            stages.setdefault(record["stage"], {})[record["step"]] = record  # a resumed run logs a step again
    return {stage: [by_step[s] for s in sorted(by_step)] for stage, by_step in stages.items()}


def plot_losses(log: str | Path, path: str | Path, title: str | None = None) -> list[Path]:
    """Write the loss curves of the run logged in `log` to PATH.png and PATH.svg."""
    stages = read_log(log)
    if not stages:
        raise ValueError(f"{log} has no training records to plot")
    fig = figure(5.5 * len(stages), 3.8)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, (stage, records) in zip(axes, stages.items()):
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["loss"] for r in records], color="tab:blue", lw=1.8, label="training loss")
        terms = sorted(k[len("loss_"):] for k in records[0] if k.startswith("loss_"))
        if terms:
            twin = ax.twinx()
            for term, colour in zip(terms, ("tab:orange", "tab:green", "tab:purple", "tab:brown")):
                twin.plot(steps, [r.get(f"loss_{term}", float("nan")) for r in records], color=colour, lw=1,
                          ls="--", label=f"{term} term")
            twin.set_ylabel("per-term loss (unweighted)")
            twin.legend(loc="center right", fontsize=7)
        lr = ax.twinx()
        lr.plot(steps, [r["lr"] for r in records], color="grey", lw=0.8, alpha=0.5, label="learning rate")
        lr.set_yticks([])
        lr.set_ylim(0, 1.1 * max(r["lr"] for r in records))
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (log scale)")
        ax.set_title(f"{STAGE_NAMES.get(stage, stage)} stage", fontsize=10)
        ax.grid(True, alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper right", fontsize=7)
    fig.suptitle(title or f"Training losses: {Path(log).name}", fontsize=11)
    return save_figure(fig, path)


def plot_run(folder: str | Path) -> list[Path]:
    """FOLDER/loss.png and loss.svg from FOLDER/log.jsonl; [] when the run logged no training step yet."""
    log = Path(folder) / "log.jsonl"
    if not log.is_file() or not read_log(log):
        return []
    return plot_losses(log, Path(folder) / "loss.png", title=f"Training losses: {Path(folder).resolve().name}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m t2ikit.train.plots LOG.jsonl OUT.png", file=sys.stderr)
        return 2
    for p in plot_losses(args[0], args[1]):
        print(p)
    return 0


__all__ = ["plot_losses", "plot_run", "read_log"]

if __name__ == "__main__":
    raise SystemExit(main())
