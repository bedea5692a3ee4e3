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
from t2ikit.report.core import BUDGETS, Finding, ReportContext, die_with_parent, registered, write_atomic
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
    # with workers: the experiments that spread their own work over the workers (the mini runs) run here first;
    # the rest then run `workers` at a time, each in its own process on one thread, longest first
    pooled = [e for e in todo if not e.own_workers]
    if workers < 2 or len(pooled) < 2:
        pooled = []
    here = [e for e in todo if e not in pooled]
    bar = progress.bar(total=len(todo), desc="report", enabled=show_progress, unit="experiment")
    for exp in here:
        ctx.pending = tuple(e.id for e in todo[todo.index(exp) + 1:])
        error = run_one(ctx, exp)
        if error:
            failed[exp.id] = error
        render(out, finished(out), load_experiments())
        bar.update()
    if pooled:
        failed.update(_run_pooled(ctx, pooled, bar))
    bar.close()
    render(out, finished(out), load_experiments())
    progress.summary(f"report: {len(todo) - len(failed)} experiments run in {timer}, {len(failed)} failed; "
                     f"{out / 'report.md'} and {out / 'report.html'}", show_progress)
    return {"done": sorted(finished(out)), "failed": failed}


def run_one(ctx: ReportContext, exp) -> str | None:
    """Run one experiment into ctx.out: its finding (or its traceback under errors/); the error line or None."""
    ctx.experiment_id, ctx.reused_seconds, ctx.trained_ahead = exp.id, 0.0, ()
    start = time.perf_counter()
    progress.write(f"{exp.id}: {exp.title}") if ctx.progress else None
    out = ctx.out
    try:
        finding = exp.run(ctx)
        if not isinstance(finding, Finding):
            raise TypeError(f"experiment {exp.id} returned {type(finding).__name__}, not a Finding")
    except Exception as err:  # one failing experiment must not cost the others; it reruns next time
        error = f"{type(err).__name__}: {err}"
        write_atomic(out / "errors" / f"{exp.id}.txt", traceback.format_exc())
        progress.write(f"{exp.id} failed: {error} (traceback in {out / 'errors' / (exp.id + '.txt')})")
        return error
    # seconds: this run's plus the compute of the units it read back from earlier runs (a resumed experiment
    # reports what it cost in all, not just its last stretch)
    record = {"finding": finding.to_json(), "seconds": round(time.perf_counter() - start + ctx.reused_seconds, 1),
              "command": ctx.command(), "question": exp.question, "title": exp.title, "budget": ctx.budget,
              "trained_ahead": list(ctx.trained_ahead)}
    write_atomic(out / "findings" / f"{exp.id}.json", json.dumps(record, indent=1))
    (out / "errors" / f"{exp.id}.txt").unlink(missing_ok=True)
    return None


def _run_in_worker(out: str, budget: str, model: str | None, module: str, experiment_id: str) -> str | None:
    """run_one in a worker process, on one torch thread, without progress bars (the runner shows one line per
    experiment); `module` registers the experiment when imported."""
    import torch

    torch.set_num_threads(1)
    importlib.import_module(module)
    ctx = ReportContext(Path(out), budget, model, threads=1, progress=False)
    return run_one(ctx, registered()[experiment_id])


def _run_pooled(ctx: ReportContext, todo: list, bar) -> dict:
    """The experiments of `todo`, ctx.workers at a time in processes of one thread each, longest first (by their
    planned minutes): independent experiments use both cores of a 2-core machine, where one experiment on two
    threads does not. Returns {experiment id: error} of those that failed."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    todo = sorted(todo, key=lambda e: -e.minutes.get(ctx.budget, 0))
    workers, show_progress, failed = min(ctx.workers, len(todo)), ctx.progress, {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        futures = {pool.submit(_run_in_worker, str(ctx.out), ctx.budget, ctx.model, e.run.__module__, e.id): e
                   for e in todo}
        if show_progress:
            progress.write(f"running {', '.join(e.id for e in todo)}: {workers} at a time, one thread each")
        for future in as_completed(futures):
            exp = futures[future]
            try:
                error = future.result()
            except Exception as err:  # the worker itself died (killed, out of memory)
                error = f"{type(err).__name__}: {err}"
            if error:
                failed[exp.id] = error
                progress.write(f"{exp.id} failed: {error}") if show_progress else None
            elif show_progress:
                progress.write(f"{exp.id}: done")
            render(ctx.out, finished(ctx.out), load_experiments())
            bar.update()
    return failed


__all__ = ["EXPERIMENT_MODULES", "check_folder", "finished", "load_experiments", "run_one", "run_report", "select"]
