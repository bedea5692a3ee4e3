"""report.md and report.html from the findings: per question the seed's claims, what was run (the exact
command of each experiment), the measured answer with its tables and figures, and whether the claim holds."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from t2ikit.report.core import Finding, write_atomic
from t2ikit.report.questions import QUESTIONS

_VERDICT_COLOUR = {"holds": "#1a7f37", "partly holds": "#9a6700", "does not hold": "#cf222e",
                   "no difference": "#57606a", "not measured": "#8c959f"}


def cell(value) -> str:
    """A table cell: floats to 3 significant digits, intervals [lo, hi] as such, the rest as text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{cell(float(value[0]))}, {cell(float(value[1]))}]"
    return str(value)


def _status(question: int, findings: dict, experiments: dict) -> list[tuple[str, str, dict | None]]:
    """(experiment id, title, record or None) for every experiment of the question."""
    ids = sorted({e.id for e in experiments.values() if e.question == question}
                 | {k for k, r in findings.items() if r["question"] == question})
    return [(i, findings[i]["title"] if i in findings else experiments[i].title, findings.get(i)) for i in ids]


def _manifest(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _ahead(rec: dict) -> str:
    """Whose runs an experiment trained ahead, when it did (their time is in its minutes, not in theirs)."""
    ahead = rec.get("trained_ahead") or []
    return f", including the runs of {', '.join(ahead)} trained ahead" if ahead else ""


def markdown(out: Path, findings: dict, experiments: dict) -> str:
    m = _manifest(out)
    lines = ["# t2ikit report: the eight questions, answered by experiment", "",
             f"Budget `{m.get('budget', '?')}`, model `{m.get('model') or 'shipped'}`, t2ikit {m.get('version', '?')}, "
             f"started {m.get('started', '?')}. Every number below was measured by the command named with it; "
             "intervals are 95%.", "", "| question | experiment | verdict on the seed's claim | minutes |",
             "| --- | --- | --- | --- |"]
    for q in QUESTIONS.values():
        for exp_id, title, rec in _status(q.number, findings, experiments) or [("", "(no experiment)", None)]:
            verdict = rec["finding"]["verdict"] if rec else "not run yet" if exp_id else "not measured"
            minutes = f"{rec['seconds'] / 60:.1f}{_ahead(rec)}" if rec else ""
            lines.append(f"| [Q{q.number}. {q.title}](#q{q.number}) | {title} | {verdict} | {minutes} |")
    for q in QUESTIONS.values():
        lines += ["", f'<a id="q{q.number}"></a>', "", f"## Q{q.number}. {q.title}", "", f"*{q.question}*", "",
                  "**The seed claims:**", ""]
        lines += [f"- {c}" for c in q.claims]
        if q.pages:
            lines += ["", "Earlier measurements: " + ", ".join(f"docs/{p}" for p in q.pages) + "."]
        status = _status(q.number, findings, experiments)
        if not status:
            lines += ["", "**Not measured**: no experiment is registered for this question."]
        for exp_id, title, rec in status:
            lines += ["", f"### {title} (`{exp_id}`)", ""]
            if rec is None:
                lines += [f"Not run yet: `t2ikit report --experiments {exp_id} --out {out}`."]
                continue
            f = Finding.from_json(rec["finding"])
            if f.what_was_run:
                lines += [f"**What was run:** {f.what_was_run}", ""]
            lines += [f"**Command:** `{rec['command']}` ({rec['seconds'] / 60:.1f} min{_ahead(rec)})", "",
                      f"**Answer:** {f.answer}", "", f"**Verdict:** {f.verdict}."]
            for t in f.tables:
                lines += ["", f"*{t.title}*", "", "| " + " | ".join(t.columns) + " |",
                          "|" + " --- |" * len(t.columns)]
                lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.rows]
                if t.note:
                    lines += ["", t.note]
            for fig in f.figures:
                lines += ["", f"![{fig.caption}]({fig.file})", "", f"*{fig.caption}*"]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:62rem;margin:2rem auto;padding:0 1rem;line-height:1.45;
color:#1f2328}table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;
text-align:left}th{background:#f6f8fa}code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px;font-size:90%}
.verdict{font-weight:600;padding:.1rem .5rem;border-radius:1rem;color:white}img{max-width:100%;border:1px solid
#d0d7de}figure{margin:1rem 0}figcaption{color:#57606a;font-size:90%}h2{border-bottom:1px solid #d0d7de}
.claims{background:#f6f8fa;padding:.5rem 1rem;border-left:4px solid #8c959f}"""


def _badge(verdict: str) -> str:
    colour = _VERDICT_COLOUR.get(verdict, "#8c959f")
    return f'<span class="verdict" style="background:{colour}">{html.escape(verdict)}</span>'


def _table_html(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def to_html(out: Path, findings: dict, experiments: dict) -> str:
    m = _manifest(out)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>t2ikit report</title><style>{_CSS}"
             "</style></head><body><h1>t2ikit report: the eight questions, answered by experiment</h1>",
             f"<p>Budget <code>{e(str(m.get('budget', '?')))}</code>, model <code>{e(str(m.get('model') or 'shipped'))}"
             f"</code>, t2ikit {e(str(m.get('version', '?')))}, started {e(str(m.get('started', '?')))}. Every number "
             "was measured by the command named with it; intervals are 95%.</p>"]
    index = []
    for q in QUESTIONS.values():
        for exp_id, title, rec in _status(q.number, findings, experiments) or [("", "(no experiment)", None)]:
            verdict = rec["finding"]["verdict"] if rec else "not run yet" if exp_id else "not measured"
            index.append([f"Q{q.number}. {q.title}", title, verdict])
    parts.append("<table><tr><th>question</th><th>experiment</th><th>verdict</th></tr>" + "".join(
        f"<tr><td><a href='#q{r[0][1]}'>{e(r[0])}</a></td><td>{e(r[1])}</td><td>{_badge(r[2])}</td></tr>"
        for r in index) + "</table>")
    for q in QUESTIONS.values():
        parts.append(f"<h2 id='q{q.number}'>Q{q.number}. {e(q.title)}</h2><p><em>{e(q.question)}</em></p>"
                     "<div class='claims'><strong>The seed claims:</strong><ul>"
                     + "".join(f"<li>{e(c)}</li>" for c in q.claims) + "</ul></div>")
        status = _status(q.number, findings, experiments)
        if not status:
            parts.append(f"<p>{_badge('not measured')} no experiment is registered for this question.</p>")
        for exp_id, title, rec in status:
            parts.append(f"<h3>{e(title)} <code>{e(exp_id)}</code></h3>")
            if rec is None:
                parts.append(f"<p>Not run yet: <code>t2ikit report --experiments {e(exp_id)} --out {e(str(out))}"
                             "</code></p>")
                continue
            f = Finding.from_json(rec["finding"])
            if f.what_was_run:
                parts.append(f"<p><strong>What was run:</strong> {e(f.what_was_run)}</p>")
            parts.append(f"<p><strong>Command:</strong> <code>{e(rec['command'])}</code> "
                         f"({rec['seconds'] / 60:.1f} min{e(_ahead(rec))})</p><p>{_badge(f.verdict)} {e(f.answer)}</p>")
            for t in f.tables:
                parts.append(f"<p><em>{e(t.title)}</em></p>" + _table_html(t.columns, t.rows)
                             + (f"<p>{e(t.note)}</p>" if t.note else ""))
            for fig in f.figures:
                parts.append(f"<figure><img src='{e(fig.file)}' alt='{e(fig.caption)}'>"
                             f"<figcaption>{e(fig.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(out: Path, findings: dict, experiments: dict) -> None:
    """Write report.md and report.html (atomically) from the findings so far."""
    out = Path(out)
    write_atomic(out / "report.md", markdown(out, findings, experiments))
    write_atomic(out / "report.html", to_html(out, findings, experiments))


__all__ = ["cell", "markdown", "render", "to_html"]
