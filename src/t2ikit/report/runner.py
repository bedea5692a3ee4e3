"""Run the report's experiments into a folder, resumably, and render what is finished after each one.

Folder layout (`OUT`):
    manifest.json           budget, model, package version, start time (a folder keeps one budget and model)
    work/<experiment>/      units of work, one JSON each (ReportContext.unit), reused after any interruption
    findings/<experiment>.json   a finished experiment: its Finding, seconds, command; never run again
    errors/<experiment>.txt      the traceback of an experiment that failed (it runs again next time)
    figures/                PNGs the findings show
    report.md, report.html  rendered from findings/ after every experiment
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
import traceback
from pathlib import Path

from t2ikit.bench import progress
from t2ikit.report.core import BUDGETS, Finding, ReportContext, registered, write_atomic
from t2ikit.report.render import render

# The experiment modules; each registers its experiments with @experiment when imported.
EXPERIMENT_MODULES = ("q1_fusion", "q2_sparsity", "q3_hierarchical", "q4_prompts", "q5_binding",
                      "q6_decomposition", "q7_modalities", "q8_scaling")


def load_experiments() -> dict:
    """Every registered experiment, by id, in question order (a question without a module has none, and the
    report says it was not measured)."""
    for name in EXPERIMENT_MODULES:
        if importlib.util.find_spec(f"t2ikit.report.{name}") is not None:
            importlib.import_module(f"t2ikit.report.{name}")
    return dict(sorted(registered().items(), key=lambda kv: (kv[1].question, kv[0])))


def select(questions=None, experiments=None) -> list:
    """The experiments asked for: by question numbers, by ids, or all of them; unknown ones are an error."""
    known = load_experiments()
    if experiments:
        unknown = [e for e in experiments if e not in known]
        if unknown:
            raise ValueError(f"unknown experiment {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = [known[e] for e in experiments]
    else:
        chosen = list(known.values())
    if questions:
        bad = [q for q in questions if not 1 <= q <= 8]
        if bad:
            raise ValueError(f"questions are numbered 1 to 8, not {', '.join(map(str, bad))}")
        chosen = [e for e in chosen if e.question in set(questions)]
    if not chosen:
        raise ValueError("nothing to run: no experiment matches the --questions / --experiments given")
    return chosen


def check_folder(out: Path, budget: str, model: str | None) -> None:
    """A report folder keeps the budget and model it was started with (its units would not mix)."""
    manifest = Path(out) / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())
        if old.get("budget") != budget or old.get("model") != model:
            raise ValueError(f"{out} holds a report with --budget {old.get('budget')} and model "
                             f"{old.get('model') or 'shipped'}; resume it with those or give another --out")
    elif Path(out).exists() and any(Path(out).iterdir()):
        raise ValueError(f"{out} exists and is not a report folder; give an empty or new --out")


def finished(out: Path) -> dict[str, dict]:
    """The findings written so far, by experiment id."""
    folder = Path(out) / "findings"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def run_report(out, budget: str = "quick", questions=None, experiments=None, model: str | None = None,
               threads: int = 1, show_progress: bool = True, workers: int = 1) -> dict:
    """Run what is not finished yet, render report.md/.html; returns {"done": [...], "failed": {...}}."""
    if budget not in BUDGETS + ("smoke",):
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, not {budget!r}")
    out = Path(out)
    chosen = select(questions, experiments)
    check_folder(out, budget, model)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    if not manifest.exists():
        from t2ikit.cli import version

        write_atomic(manifest, json.dumps({"budget": budget, "model": model, "version": version(),
                                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    import torch

    torch.set_num_threads(threads)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = ReportContext(out, budget, model, threads, show_progress, workers=workers)
    done = finished(out)
    todo = [e for e in chosen if e.id not in done]
    minutes = sum(e.minutes.get(budget, 0) for e in todo)
    progress.summary(f"report: {len(chosen) - len(todo)} of {len(chosen)} experiments already done; "
                     f"running {len(todo)} (about {minutes:g} CPU minutes at --budget {budget})", show_progress)
    failed = {}
    timer = progress.Timer()
    for k, exp in enumerate(progress.bar(todo, desc="report", enabled=show_progress, unit="experiment")):
        ctx.experiment_id, ctx.pending, ctx.reused_seconds = exp.id, tuple(e.id for e in todo[k + 1:]), 0.0
        ctx.trained_ahead = ()
        start = time.perf_counter()
        progress.write(f"{exp.id}: {exp.title}") if show_progress else None
        try:
            finding = exp.run(ctx)
            if not isinstance(finding, Finding):
                raise TypeError(f"experiment {exp.id} returned {type(finding).__name__}, not a Finding")
        except Exception as err:  # one failing experiment must not cost the others; it reruns next time
            failed[exp.id] = f"{type(err).__name__}: {err}"
            write_atomic(out / "errors" / f"{exp.id}.txt", traceback.format_exc())
            progress.write(f"{exp.id} failed: {failed[exp.id]} (traceback in {out / 'errors' / (exp.id + '.txt')})")
            continue
        # seconds: this run's plus the compute of the units it read back from earlier runs (a resumed experiment
        # reports what it cost in all, not just its last stretch)
        record = {"finding": finding.to_json(), "seconds": round(time.perf_counter() - start + ctx.reused_seconds, 1),
                  "command": ctx.command(), "question": exp.question, "title": exp.title, "budget": budget,
                  "trained_ahead": list(ctx.trained_ahead)}
        write_atomic(out / "findings" / f"{exp.id}.json", json.dumps(record, indent=1))
        (out / "errors" / f"{exp.id}.txt").unlink(missing_ok=True)
        render(out, finished(out), load_experiments())
    render(out, finished(out), load_experiments())
    progress.summary(f"report: {len(todo) - len(failed)} experiments run in {timer}, {len(failed)} failed; "
                     f"{out / 'report.md'} and {out / 'report.html'}", show_progress)
    return {"done": sorted(finished(out)), "failed": failed}


__all__ = ["EXPERIMENT_MODULES", "check_folder", "finished", "load_experiments", "run_report", "select"]
