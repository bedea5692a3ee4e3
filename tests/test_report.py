"""`t2ikit report`'s machinery: experiments run once, units of work survive kill -9, findings render to
report.md/.html, a failing experiment costs only itself, bad input is refused before anything runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from t2ikit.cli import main
from t2ikit.report import core, runner
from t2ikit.report.core import Figure, Finding, ReportContext, Table, experiment
from t2ikit.report.render import cell


@pytest.fixture
def registry(monkeypatch):
    """An empty experiment registry and no experiment modules: the test registers its own."""
    monkeypatch.setattr(core, "_REGISTRY", {})
    monkeypatch.setattr(runner, "EXPERIMENT_MODULES", ())
    return core._REGISTRY


def _register_counting(calls: list, fail: bool = False):
    @experiment("q2.counting", "counts its units", minutes={"quick": 0.1, "full": 1})
    def run(ctx):
        values = [ctx.unit(f"u{i}", lambda i=i: calls.append(i) or i * ctx.pick(1, 10, smoke=2)) for i in range(3)]
        if fail:
            raise RuntimeError("the model went away")
        path, rel = ctx.figure("bars")
        path.write_bytes(b"\x89PNG fake")
        return Finding(answer=f"sum {sum(values)}", verdict="holds", numbers={"sum": sum(values)},
                       tables=[Table("values", ["unit", "value"], [[i, v] for i, v in enumerate(values)])],
                       figures=[Figure(rel, "the values")], what_was_run="three units")


def test_units_run_once_and_a_finished_experiment_is_not_run_again(registry, tmp_path):
    calls = []
    _register_counting(calls)
    result = runner.run_report(tmp_path / "r", "smoke", show_progress=False)
    assert result == {"done": ["q2.counting"], "failed": {}} and calls == [0, 1, 2]
    runner.run_report(tmp_path / "r", "smoke", show_progress=False)
    assert calls == [0, 1, 2]
    record = json.loads((tmp_path / "r" / "findings" / "q2.counting.json").read_text())
    assert record["finding"]["numbers"] == {"sum": 6}  # smoke sizes: 0 + 2 + 4
    assert record["command"].startswith("t2ikit report --budget smoke --experiments q2.counting")


def test_a_resumed_experiment_reports_the_compute_of_the_units_it_read_back(registry, tmp_path):
    attempts = []

    @experiment("q2.slow", "one slow unit, then a failure the first time", minutes={"quick": 0.1, "full": 1})
    def run(ctx):
        value = ctx.unit("slow", lambda: time.sleep(0.3) or 1)
        attempts.append(value)
        if len(attempts) == 1:
            raise RuntimeError("killed")
        return Finding(answer="done", verdict="holds", what_was_run="one unit")

    assert runner.run_report(tmp_path / "r", "quick", show_progress=False)["failed"]
    assert runner.run_report(tmp_path / "r", "quick", show_progress=False)["failed"] == {}
    record = json.loads((tmp_path / "r" / "findings" / "q2.slow.json").read_text())
    assert record["seconds"] >= 0.3  # the second run took ~0 s itself; the unit's 0.3 s count


def test_a_failing_experiment_keeps_its_units_and_reruns(registry, tmp_path):
    calls = []
    _register_counting(calls, fail=True)
    result = runner.run_report(tmp_path / "r", "quick", show_progress=False)
    assert "RuntimeError: the model went away" in result["failed"]["q2.counting"]
    assert "Traceback" in (tmp_path / "r" / "errors" / "q2.counting.txt").read_text()
    assert "Not run yet" in (tmp_path / "r" / "report.md").read_text()
    registry.clear()
    _register_counting(calls)
    assert runner.run_report(tmp_path / "r", "quick", show_progress=False)["failed"] == {}
    assert calls == [0, 1, 2]  # the units of the failed run were reused
    assert not (tmp_path / "r" / "errors" / "q2.counting.txt").exists()


def test_the_report_shows_claims_commands_answers_tables_and_figures(registry, tmp_path):
    _register_counting([])
    runner.run_report(tmp_path / "r", "quick", show_progress=False)
    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    for q in range(1, 9):
        assert f"## Q{q}." in md and f"id='q{q}'" in html
    assert "k* = argmin" in md  # Q2's claim, from the seed
    assert "**Answer:** sum 3" in md and "**Verdict:** holds." in md
    assert "`t2ikit report --budget quick --experiments q2.counting" in md
    assert "| 2 | 2 |" in md and "![the values](figures/q2.counting-bars.png)" in md
    assert "<img src='figures/q2.counting-bars.png'" in html and "<td>2</td>" in html
    assert md.count("not measured") >= 7  # the questions without an experiment say so


def test_an_experiment_sees_those_after_it_and_its_minutes_say_whose_runs_it_trained_ahead(registry, tmp_path):
    seen = {}

    @experiment("q1.first", "trains the runs of a later experiment too", minutes={"quick": 0.1, "full": 1})
    def first(ctx):
        seen["q1.first"] = ctx.pending
        ctx.trained_ahead = ("q8.later",)  # as q1_fusion.train_ahead sets it
        return Finding(answer="trained", verdict="holds")

    @experiment("q8.later", "reads the runs trained for it", minutes={"quick": 0.1, "full": 1})
    def later(ctx):
        seen["q8.later"] = (ctx.pending, ctx.trained_ahead)
        return Finding(answer="read", verdict="holds")

    runner.run_report(tmp_path / "r", "quick", show_progress=False)
    assert seen == {"q1.first": ("q8.later",), "q8.later": ((), ())}
    record = json.loads((tmp_path / "r" / "findings" / "q1.first.json").read_text())
    assert record["trained_ahead"] == ["q8.later"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "min, including the runs of q8.later trained ahead)" in md and md.count("trained ahead") == 2  # + table


def test_a_report_folder_keeps_its_budget_and_bad_input_is_refused(registry, tmp_path, capsys):
    _register_counting([])
    runner.run_report(tmp_path / "r", "quick", show_progress=False)
    with pytest.raises(ValueError, match="--budget quick"):
        runner.run_report(tmp_path / "r", "full", show_progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert main(["report", "--out", str(tmp_path / "other")]) == 2
    assert "not a report folder" in capsys.readouterr().err
    assert main(["report", "--questions", "9", "--out", str(tmp_path / "n")]) == 2
    assert "numbered 1 to 8" in capsys.readouterr().err
    assert main(["report", "--experiments", "q2.nope", "--out", str(tmp_path / "n")]) == 2
    assert "unknown experiment q2.nope" in capsys.readouterr().err
    assert main(["report", "--questions", "a,b", "--out", str(tmp_path / "n")]) == 2
    assert main(["report", "--workers", "0", "--out", str(tmp_path / "n")]) == 2
    assert not (tmp_path / "n").exists()  # refused before anything was written
    assert not (tmp_path / "n").exists()
    with pytest.raises(ValueError, match="verdict must be one of"):
        Finding(answer="", verdict="maybe")
    with pytest.raises(ValueError, match="look like"):
        experiment("sparsity", "no question")
    with pytest.raises(ValueError, match="budget"):
        ReportContext(tmp_path, budget="huge")


def test_cells_read_like_numbers():
    assert cell(0.123456) == "0.123" and cell([0.1, 0.25]) == "[0.1, 0.25]" and cell(float("nan")) == "n/a"
    assert cell(3) == "3" and cell("sequential") == "sequential" and cell(None) == ""


def test_a_report_killed_mid_experiment_resumes_without_redoing_finished_units(tmp_path):
    """kill -9 while the second unit sleeps; the rerun computes only the units not finished."""
    log = tmp_path / "computed.txt"
    script = tmp_path / "report_run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from t2ikit.report import core, runner
        from t2ikit.report.core import Finding, experiment
        runner.EXPERIMENT_MODULES = ()

        def compute(i):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{i}}\\n")
            if i == 1 and sys.argv[1] == "slow":
                time.sleep(60)
            return i

        @experiment("q4.slow", "slow units")
        def run(ctx):
            return Finding(answer=str(sum(ctx.unit(f"u{{i}}", lambda i=i: compute(i)) for i in range(3))),
                           verdict="no difference")

        runner.run_report({str(tmp_path / "r")!r}, "quick", show_progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script), "slow"], start_new_session=True)
    deadline = time.time() + 60
    while not (log.exists() and log.read_text().count("\n") == 2) and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert log.read_text() == "0\n1\n"
    subprocess.run([sys.executable, str(script), "fast"], check=True)
    assert log.read_text() == "0\n1\n1\n2\n"  # unit 0 reused, 1 (killed) and 2 computed
    record = json.loads((tmp_path / "r" / "findings" / "q4.slow.json").read_text())
    assert record["finding"]["answer"] == "3"


def test_the_context_loads_the_reports_model_once(tmp_path):
    from t2ikit.models.registry import shipped_model_path

    ctx = ReportContext(tmp_path)
    pipe = ctx.pipe()
    assert pipe.path == shipped_model_path() and ctx.pipe() is pipe


POOLED_MODULE = '''
import os
import torch
from t2ikit.report.core import Finding, experiment

def _record(ctx):
    ctx.unit("u", lambda: 1)
    return Finding(answer="ran", verdict="holds", numbers={"pid": os.getpid(), "threads": torch.get_num_threads()})

@experiment("q1.mini", "spreads its own work over the workers", minutes={"quick": 9}, own_workers=True)
def mini(ctx):
    finding = _record(ctx)
    finding.numbers["pending"] = list(ctx.pending)
    return finding

@experiment("q2.a", "runs in a worker", minutes={"quick": 1})
def a(ctx):
    return _record(ctx)

@experiment("q3.b", "runs in the other worker", minutes={"quick": 2})
def b(ctx):
    return _record(ctx)

@experiment("q4.c", "fails in its worker", minutes={"quick": 1})
def c(ctx):
    raise RuntimeError("no model here")
'''


def test_with_workers_the_other_experiments_run_in_processes_of_one_thread_after_those_with_their_own(
        registry, tmp_path, monkeypatch):
    (tmp_path / "pooled_experiments.py").write_text(POOLED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # a spawned worker imports the module from the same path
    import importlib

    importlib.import_module("pooled_experiments")
    result = runner.run_report(tmp_path / "r", "quick", show_progress=False, threads=2, workers=2)
    assert result["done"] == ["q1.mini", "q2.a", "q3.b"] and "RuntimeError: no model here" in result["failed"]["q4.c"]
    numbers = {e: json.loads((tmp_path / "r" / "findings" / f"{e}.json").read_text())["finding"]["numbers"]
               for e in result["done"]}
    assert numbers["q1.mini"]["pid"] == os.getpid() and numbers["q1.mini"]["pending"] == ["q2.a", "q3.b", "q4.c"]
    assert {numbers[e]["pid"] for e in ("q2.a", "q3.b")}.isdisjoint({os.getpid()})
    assert numbers["q2.a"]["threads"] == numbers["q3.b"]["threads"] == 1
    assert "Traceback" in (tmp_path / "r" / "errors" / "q4.c.txt").read_text()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Answer:** ran" in md and md.count("**Answer:** ran") == 3
    # a rerun runs only the failed one again (its units and the finished findings are kept)
    assert set(runner.run_report(tmp_path / "r", "quick", show_progress=False, workers=2)["failed"]) == {"q4.c"}
