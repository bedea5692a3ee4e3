"""The whole report path end to end on tiny models: `run_report` over every registered experiment at the smoke
budget (Q2-Q7 on a tiny random SD folder given as --model, Q1 and Q8 training mini runs at test sizes), then
report.md / report.html with a section per question and every figure they show, then a rerun that computes
nothing because every unit is cached. The default suite runs the same path over one experiment (rendering the
figures twice is most of its time)."""

import json
import re
import shutil

import pytest
from report_helpers import tiny_adapters

from t2ikit.report import runner
from t2ikit.report.core import VERDICTS, Finding

EVERY = ("q1.fusion", "q1.training", "q2.sparsity", "q3.hierarchical", "q4.prompts", "q5.binding",
         "q6.decomposition", "q7.modalities", "q8.scaling")
FAST = ("q6.decomposition",)  # the cheapest with figures: ~5 s for both runs (mini runs: test_report_mini.py)


@pytest.fixture
def smoke(tiny_protocol, monkeypatch):
    """Test-only cuts beyond the smoke budget: images the oracle can read from a 16 px model, untrained adapters
    for Q7 (the shipped model's trained ones do not fit a tiny UNet), fewer bootstrap resamples."""
    from t2ikit.report import q1_fusion, q2_sparsity, q6_decomposition, q7_modalities, q8_scaling

    monkeypatch.setattr(q2_sparsity, "IMAGE_SIZE", (32, 32))  # Q3 samples through Q2's generator too
    monkeypatch.setattr(q6_decomposition, "IMAGE_SIZE", (32, 32))
    monkeypatch.setattr(q7_modalities, "load_adapters", tiny_adapters)
    monkeypatch.setattr(q1_fusion, "MI_RESAMPLES", 20)
    monkeypatch.setattr(q8_scaling, "BOOTSTRAP", 20)


def _fail(what):
    def refuse(*args, **kwargs):
        pytest.fail(f"the rerun computed again: {what}")

    return refuse


def check_report(out, ids):
    """Every experiment of `ids` finished with a valid Finding, no error left, both pages rendered with a
    section per question, every figure they reference on disk; the findings by id."""
    assert not (out / "errors").exists() or not any((out / "errors").iterdir())
    records = {i: json.loads((out / "findings" / f"{i}.json").read_text()) for i in ids}
    for i, rec in records.items():
        finding = Finding.from_json(rec["finding"])  # raises on a verdict outside VERDICTS
        assert finding.verdict in VERDICTS and finding.answer and finding.what_was_run and finding.tables, i
        assert rec["command"].startswith(f"t2ikit report --budget smoke --experiments {i} --model ")
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for q in range(1, 9):
        assert f'<a id="q{q}"></a>' in md and f"## Q{q}." in md and f"<h2 id='q{q}'>" in html
    for i in ids:
        assert f"(`{i}`)" in md and f"<code>{i}</code>" in html
    shown_md = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    shown_html = re.findall(r"<img src='([^']+)'", html)
    figures = [f.file for rec in records.values() for f in Finding.from_json(rec["finding"]).figures]
    assert figures and sorted(shown_md) == sorted(shown_html) == sorted(figures)
    assert all((out / f).is_file() and (out / f).stat().st_size > 1000 for f in figures)
    return records


def run_twice(tmp_path, folder, monkeypatch, ids):
    """Run the report over `ids`, check it, then drop the findings and run again with generation and training
    refused: every unit is read back, none is written again, and the findings come out the same."""
    out = tmp_path / "report"
    result = runner.run_report(out, "smoke", experiments=list(ids), model=str(folder), show_progress=False)
    assert result == {"done": sorted(ids), "failed": {}}
    first = check_report(out, ids)

    units = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.json")}
    assert {p.relative_to(out / "work").parts[0] for p in units} >= set(ids)  # every experiment keeps units
    shutil.rmtree(out / "findings")
    from t2ikit.pipeline import T2IPipeline
    from t2ikit.train.trainer import Trainer

    monkeypatch.setattr(T2IPipeline, "run", _fail("an image was generated"))
    monkeypatch.setattr(Trainer, "run", _fail("a model was trained"))
    result = runner.run_report(out, "smoke", experiments=list(ids), model=str(folder), show_progress=False)
    assert result == {"done": sorted(ids), "failed": {}}
    again = check_report(out, ids)
    assert {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.json")} == units
    for i in ids:
        assert again[i]["finding"]["numbers"] == first[i]["finding"]["numbers"], i
        assert again[i]["finding"]["verdict"] == first[i]["finding"]["verdict"], i


def test_every_experiment_is_registered():
    assert tuple(runner.load_experiments()) == EVERY


@pytest.mark.slow  # 40-60 s on the shared 2-core CPU (37-49 s measured, plus the tiny folder)
def test_the_whole_report_runs_end_to_end_and_resumes_from_its_units(tmp_path, folder, smoke, monkeypatch):
    run_twice(tmp_path, folder, monkeypatch, EVERY)


def test_the_report_path_end_to_end_on_one_experiment(tmp_path, folder, smoke, monkeypatch):
    run_twice(tmp_path, folder, monkeypatch, FAST)
