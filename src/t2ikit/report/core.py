"""The report's machinery: experiments, their context, resumable units of work and their findings.

An experiment is a function `run(ctx) -> Finding` registered under an id such as `"q2.sparsity"`. It does its
work in units (`ctx.unit(key, fn)`): each unit's JSON result is written atomically under
`OUT/work/<experiment>/<key>.json` the moment it is done, and a later run (after kill -9 too) reads it back
instead of computing it again. A finished experiment's `Finding` is written to `OUT/findings/<experiment>.json`
and is not run again; `report.md` and `report.html` are rendered from the findings alone.

The budget (`quick` <= 20 minutes on 2 CPU cores, `full` <= 3 hours) picks sizes with `ctx.pick(quick, full)`;
a third, `smoke`, exists for the tests only (the smallest sizes that still run every line of an experiment);
the context's `command(...)` is the exact command that reproduces one experiment (figures and tables name it).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

BUDGETS = ("quick", "full")  # what a user asks for; "smoke" is the tests' budget
VERDICTS = ("holds", "partly holds", "does not hold", "no difference", "not measured")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Figure:
    file: str  # relative to the report folder, e.g. "figures/q2.sparsity-curve.png"
    caption: str


@dataclass
class Finding:
    """What one experiment measured and what it says about the seed's claim.

    answer: the measured answer in a few sentences, every number with its interval;
    verdict: one of VERDICTS, about the seed's claim that this experiment tests;
    numbers: the headline numbers, machine-readable (tests and the index read them).
    """

    answer: str
    verdict: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    what_was_run: str = ""  # the protocol in one or two sentences (model, prompts, seeds, steps)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {self.verdict!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Finding":
        data = dict(data)
        data["tables"] = [Table(**t) for t in data.get("tables", [])]
        data["figures"] = [Figure(**f) for f in data.get("figures", [])]
        return cls(**data)


@dataclass(frozen=True)
class Experiment:
    id: str  # "q<question>.<name>"
    question: int
    title: str
    run: Callable[["ReportContext"], Finding]
    minutes: dict = field(default_factory=dict)  # CPU minutes per budget, for the plan line (full: measured)
    # True: the experiment spreads its own work over ctx.workers (the mini runs), so the runner runs it in its own
    # process, before the others; False: with --workers >= 2 it runs in one of the runner's worker processes
    own_workers: bool = False


_REGISTRY: dict[str, Experiment] = {}
_ID = re.compile(r"^q[1-8]\.[a-z0-9_]+$")


def experiment(id: str, title: str, minutes: dict | None = None, own_workers: bool = False):
    """Decorator: register `run(ctx) -> Finding` as the experiment `id` ("q2.sparsity") of its question
    (`own_workers`: see Experiment)."""
    if not _ID.match(id):
        raise ValueError(f"experiment id {id!r} must look like 'q2.sparsity'")

    def register(fn):
        if id in _REGISTRY:
            raise ValueError(f"experiment {id!r} is registered twice")
        _REGISTRY[id] = Experiment(id, int(id[1]), title, fn, dict(minutes or {}), own_workers)
        return fn

    return register


def registered() -> dict[str, Experiment]:
    return dict(_REGISTRY)


def write_atomic(path: Path, text: str) -> None:
    """Write text to path through a temporary file and a rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def die_with_parent() -> None:
    """A worker process ends when the process that started it does (Linux), so that a report killed with kill -9
    leaves no worker computing on its own while the resumed report computes the same work again."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the worker only notices when it next talks to the pool
        pass


@dataclass
class ReportContext:
    """What an experiment gets: where to write, the budget, the model, and resumable units of work."""

    out: Path
    budget: str = "quick"
    model: str | None = None  # a model folder or registry name; None = the shipped model
    threads: int = 1
    progress: bool = True
    workers: int = 1  # mini runs trained this many at a time, in processes of one thread each (mini.train_ahead)
    experiment_id: str = ""  # set by the runner for the experiment running now
    pending: tuple = ()  # set by the runner: the ids of the experiments it runs after this one
    trained_ahead: tuple = ()  # set by q1_fusion.train_ahead: later experiments whose runs this one trained
    questions: tuple = ()  # what the whole run was asked for (for the command line)
    _pipes: dict = field(default_factory=dict)
    reused_seconds: float = 0.0  # compute seconds of the units read back from an earlier run (set to 0 per experiment)

    def __post_init__(self):
        if self.budget not in BUDGETS + ("smoke",):
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, not {self.budget!r}")
        self.out = Path(self.out)

    # --- budget -------------------------------------------------------------------------------------------
    def pick(self, quick, full, smoke=None):
        """The quick value under --budget quick, the full value under --budget full; under the tests' smoke
        budget `smoke` (the quick value when not given)."""
        if self.budget == "smoke":
            return quick if smoke is None else smoke
        return quick if self.budget == "quick" else full

    # --- the model ----------------------------------------------------------------------------------------
    def pipe(self, model: str | None = None):
        """The loaded T2IPipeline of `model` (default: the report's model), loaded once per report run."""
        key = model or self.model or "shipped"
        if key not in self._pipes:
            from t2ikit.models.registry import resolve_model
            from t2ikit.pipeline import T2IPipeline

            self._pipes[key] = T2IPipeline.from_folder(resolve_model(model or self.model))
        return self._pipes[key]

    # --- resumable work -----------------------------------------------------------------------------------
    def work_dir(self, experiment_id: str | None = None) -> Path:
        d = self.out / "work" / (experiment_id or self.experiment_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def unit(self, key: str, fn: Callable[[], Any]) -> Any:
        """fn()'s JSON-able result, computed once: cached in work/<experiment>/<key>.json (atomic), read back
        by any later run of the same report folder."""
        if not re.match(r"^[A-Za-z0-9_.=+-]+$", key):
            raise ValueError(f"unit key {key!r}: use letters, digits and _ . = + -")
        path = self.work_dir() / f"{key}.json"
        if path.exists():
            data = json.loads(path.read_text())
            self.reused_seconds += data.get("seconds", 0.0)  # its compute counts in the experiment's time
            return data["value"]
        start = time.perf_counter()
        value = fn()
        write_atomic(path, json.dumps({"value": value, "seconds": round(time.perf_counter() - start, 1)}))
        return value

    def figure(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, path relative to the report folder) of this experiment's figure `name`."""
        rel = f"figures/{self.experiment_id}-{name}.png"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, rel

    def command(self) -> str:
        """The command that reproduces this experiment (and its figures and tables) into the same folder."""
        model = f" --model {self.model}" if self.model else ""
        return f"t2ikit report --budget {self.budget} --experiments {self.experiment_id}{model} --out {self.out}"


__all__ = ["BUDGETS", "VERDICTS", "Experiment", "Figure", "Finding", "ReportContext", "Table", "experiment",
           "die_with_parent", "registered", "write_atomic"]
