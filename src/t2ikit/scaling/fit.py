"""Scaling-law fits on a table of training runs: power laws, the Chinchilla form, compute-optimal allocation.

A run table has one row per training run and the columns of `RUN_COLUMNS`: model size N (`params`),
training samples seen D (`samples`), training compute C (`flops`), final `loss`, CompBench `accuracy`
in [0, 1] (error = 1 - accuracy) and `wall_s`. Everything here is a pure function of arrays; each fit
returns a dataclass. Bootstrap intervals resample runs with replacement, refit, and take the 2.5 and
97.5 percentiles of each parameter.

Model forms, all fitted on log values:
- power law            y = k x^-e
- with irreducible     y = E + k x^-e            (kept when AICc prefers it, see `fit_power_law`)
- Chinchilla           L = E + A/N^alpha + B/D^beta   (Hoffmann et al. 2022, Sec. 3.3 and App. D.2)
- compute-optimal      min L(N, D) subject to C = k N D  ->  N* = G (C/k)^a, D* = (C/k)^b / G
                       with a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta))
                       (Hoffmann et al. 2022, Eq. 4). k = 6 (Kaplan et al. 2020: ~6 FLOPs per parameter per
                       training example, forward + backward) unless the run table's flops column gives a
                       consistent k = C / (N D).
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from t2ikit.bench.stats import percentile_interval

RUN_COLUMNS = ("params", "samples", "flops", "loss", "accuracy", "wall_s")
AXES = {"params": "N", "samples": "D", "flops": "C"}  # the x axes of the single-variable power laws
TARGETS = ("loss", "error")
DEFAULT_FLOPS_PER_PARAM_SAMPLE = 6.0  # C = 6 N D, Kaplan et al. 2020, Sec. 2.1
FLOPS_RATIO_TOLERANCE = 0.10  # the CSV's C/(N D) counts as one k when every run is within 10% of the median
HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, App. D.2
CI_LEVEL = 0.95


# --------------------------------------------------------------------------------------------------
# Run tables
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runs:
    """One array per column of a run table, in file order; `rows` are the CSV line numbers (for errors)."""

    params: np.ndarray
    samples: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    wall_s: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    @property
    def error(self) -> np.ndarray:
        return 1.0 - self.accuracy

    def target(self, name: str) -> np.ndarray:
        if name not in TARGETS:
            raise ValueError(f"unknown target {name!r}; allowed: {', '.join(TARGETS)}")
        return self.loss if name == "loss" else self.error


def runs_from_columns(columns: dict[str, list], rows: list[int] | None = None) -> Runs:
    """Validate a run table given as columns (name -> values) and return `Runs`.

    Raises ValueError naming the missing columns, or the row and column of a non-numeric, non-finite or
    non-positive value (all of N, D, C, loss and error = 1 - accuracy are taken logs of), or an accuracy
    outside [0, 1].
    """
    missing = [c for c in RUN_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"run table is missing column(s) {', '.join(missing)}; "
                         f"required: {', '.join(RUN_COLUMNS)} (got: {', '.join(columns) or 'none'})")
    n = len(columns[RUN_COLUMNS[0]])
    rows = list(range(2, n + 2)) if rows is None else list(rows)  # line 1 of a CSV is the header
    arrays = {}
    for name in RUN_COLUMNS:
        values = columns[name]
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values but {RUN_COLUMNS[0]!r} has {n}")
        out = np.empty(n)
        for i, v in enumerate(values):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"row {rows[i]}, column {name!r}: {v!r} is not a number") from None
            if not math.isfinite(out[i]):
                raise ValueError(f"row {rows[i]}, column {name!r}: {v!r} is not a finite number")
        arrays[name] = out
    for name in ("params", "samples", "flops", "loss"):
        bad = np.flatnonzero(arrays[name] <= 0)
        if bad.size:
            i = bad[0]
            raise ValueError(f"row {rows[i]}, column {name!r}: {arrays[name][i]:g} is not positive; "
                             f"the fits take log({name}), so every value must be > 0")
    acc = arrays["accuracy"]
    bad = np.flatnonzero((acc < 0) | (acc > 1))
    if bad.size:
        i = bad[0]
        raise ValueError(f"row {rows[i]}, column 'accuracy': {acc[i]:g} is outside [0, 1] "
                         f"(CompBench accuracy is a fraction, not a percentage)")
    bad = np.flatnonzero(acc >= 1)
    if bad.size:
        i = bad[0]
        raise ValueError(f"row {rows[i]}, column 'accuracy': {acc[i]:g} gives error = 1 - accuracy = 0; "
                         f"the error power laws take log(error), so accuracy must be < 1")
    return Runs(**arrays, rows=np.asarray(rows))


def read_runs(path: str | Path) -> Runs:
    """Read and validate a run table CSV (header row with the `RUN_COLUMNS`; extra columns are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"run table {str(path)!r} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        columns: dict[str, list] = {h: [] for h in header}
        rows = []
        for record in reader:
            if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
                continue  # blank line
            rows.append(reader.line_num)
            for key, value in record.items():
                if key is not None:
                    columns[key.strip()].append(value.strip() if isinstance(value, str) else value)
    if not rows and header:
        raise ValueError(f"run table {str(path)!r} has a header but no runs")
    return runs_from_columns(columns, rows)


def write_runs(path: str | Path, runs: Runs) -> None:
    with Path(path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RUN_COLUMNS)
        for i in range(len(runs)):
            writer.writerow([repr(float(getattr(runs, c)[i])) for c in RUN_COLUMNS])


def subset(runs: Runs, index: np.ndarray) -> Runs:
    return Runs(**{c: getattr(runs, c)[index] for c in (*RUN_COLUMNS, "rows")})


# --------------------------------------------------------------------------------------------------
# The one fitter: log y_hat = LSE(c_j - e_j log x_j, [log E]) under Huber or squared loss on log values
# --------------------------------------------------------------------------------------------------
# theta = (c_1, e_1, ..., c_m, e_m[, log E]). One term with no E is a plain power law; one term with E is
# a power law with an irreducible term; two terms with E is the Chinchilla form.

def _terms(theta: np.ndarray, logx: np.ndarray, with_e: bool) -> np.ndarray:
    """The LSE's arguments, (..., n, m[+1]) for theta (..., P): several thetas are scored at once."""
    theta = np.asarray(theta, float)
    m = logx.shape[1]
    t = theta[..., None, 0:2 * m:2] - theta[..., None, 1:2 * m:2] * logx  # (..., n, m)
    if with_e:
        t = np.concatenate([t, np.broadcast_to(theta[..., None, None, -1], t.shape[:-1] + (1,))], axis=-1)
    return t


def _log_predict(theta: np.ndarray, logx: np.ndarray, with_e: bool) -> np.ndarray:
    return logsumexp(_terms(theta, logx, with_e), axis=-1)


def _huber(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Huber_delta(r) / delta (squared loss / 2 when delta is None), so the scale does not shrink with delta."""
    if delta is None:
        return 0.5 * r ** 2
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r ** 2 / delta, a - 0.5 * delta)


def _objective(theta, logx, logy, with_e, delta):
    """Sum of Huber_delta (or squared, delta=None) log residuals, and its gradient in theta."""
    t = _terms(theta, logx, with_e)  # (n, m[+1])
    top = t.max(axis=1, keepdims=True)
    e = np.exp(t - top)
    s = e.sum(axis=1)
    r = top[:, 0] + np.log(s) - logy  # log L_hat - log L
    w = e / s[:, None]  # d LSE / d term
    dr = r if delta is None else np.clip(r, -delta, delta) / delta
    m = logx.shape[1]
    grad = np.empty_like(theta)
    grad[0:2 * m:2] = dr @ w[:, :m]
    grad[1:2 * m:2] = -(dr @ (w[:, :m] * logx))
    if with_e:
        grad[-1] = dr @ w[:, m]
    return float(_huber(r, delta).sum()), grad


def _scores(thetas: np.ndarray, logx, logy, with_e, delta) -> np.ndarray:
    """The objective at many thetas (G, P) at once, to rank initialisations."""
    return _huber(_log_predict(thetas, logx, with_e) - logy, delta).sum(axis=-1)


def _minimise(starts: np.ndarray, logx, logy, with_e, delta) -> tuple[np.ndarray, float]:
    """L-BFGS from each start; the best end point and its objective."""
    # L-BFGS-B calls BLAS on 5-vectors; OpenBLAS spreading those over all cores made fits ~50x slower on a
    # busy machine (measured here: 21 s against 0.46 s), so BLAS runs on one thread for the fit.
    with threadpool_limits(limits=1, user_api="blas"):
        return _minimise_each(starts, logx, logy, with_e, delta)


def _minimise_each(starts, logx, logy, with_e, delta):
    best, best_value = None, np.inf
    for theta0 in starts:
        res = minimize(_objective, theta0, args=(logx, logy, with_e, delta), jac=True, method="L-BFGS-B",
                       options={"maxiter": 300, "ftol": 1e-10, "gtol": 1e-8})
        if np.all(np.isfinite(res.x)) and res.fun < best_value:
            best, best_value = res.x, float(res.fun)
    if best is None:
        raise ValueError("the fit did not converge from any initialisation")
    return best, best_value


def _grid(logx: np.ndarray, logy: np.ndarray, with_e: bool) -> np.ndarray:
    """Initialisations scaled to the data, in the spirit of Hoffmann et al.'s grid (App. D.2).

    Their grid is in absolute units (log A in 0..25, log E in -1..1) suited to LM losses; here the
    irreducible term starts at a fraction of the smallest y and each power-law term at a share of the
    median y, so the grid works for any loss scale.
    """
    m = logx.shape[1]
    exponents = (0.1, 0.3, 0.6, 1.0, 1.5)
    e_fractions = (0.05, 0.5, 0.9) if with_e else (None,)
    shares = (0.2, 0.5, 0.8) if m > 1 else (1.0,)
    y_med, y_min, logx_med = np.exp(np.median(logy)), np.exp(logy.min()), np.median(logx, axis=0)
    starts = []
    for exps in itertools.product(exponents, repeat=m):
        for ef in e_fractions:
            free = y_med - (ef * y_min if with_e else 0.0)
            for share in shares:
                theta = []
                for j, e in enumerate(exps):
                    s = share if j == 0 else (1 - share) / (m - 1)
                    theta += [math.log(s * free) + e * logx_med[j], e]
                if with_e:
                    theta.append(math.log(ef * y_min))
                starts.append(theta)
    return np.asarray(starts)


def _r2_log(logy: np.ndarray, log_pred: np.ndarray) -> float:
    ss_tot = float(np.sum((logy - logy.mean()) ** 2))
    ss_res = float(np.sum((logy - log_pred) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _need(n: int, n_params: int, what: str, names: str) -> None:
    # One more point than parameters, so a residual is left to judge the fit by.
    if n < n_params + 1:
        raise ValueError(f"{what} has {n_params} parameters ({names}) and needs at least {n_params + 1} runs "
                         f"(one more than its parameters); got {n}")


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval (None when no bootstrap was run)."""

    value: float
    ci95: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return {"value": _finite_or_none(self.value), "ci95": list(self.ci95) if self.ci95 else None}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN


def _interval(value: float, samples: np.ndarray | None) -> Interval:
    if samples is not None:
        samples = samples[np.isfinite(samples)]
    if samples is None or len(samples) == 0:
        return Interval(float(value))
    return Interval(float(value), percentile_interval(samples, CI_LEVEL))


@dataclass(frozen=True)
class BootstrapInfo:
    resamples: int  # successful refits the intervals come from
    seed: int
    redrawn: int  # resamples drawn again because they had too few distinct runs to fit


def _bootstrap_indices(n: int, n_params: int, resamples: int, seed: int, distinct_axes: list[np.ndarray]):
    """Resample runs with replacement; redraw resamples that cannot identify the fit."""
    rng = np.random.default_rng(seed)
    redrawn = 0
    out = []
    while len(out) < resamples:
        idx = rng.integers(0, n, n)
        if len(np.unique(idx)) < n_params + 1 or any(len(np.unique(a[idx])) < 2 for a in distinct_axes):
            redrawn += 1
            if redrawn > 20 * resamples:
                raise ValueError("bootstrap resamples keep having too few distinct runs; add runs")
            continue
        out.append(idx)
    return out, redrawn


# --------------------------------------------------------------------------------------------------
# Power laws in one variable
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PowerLawFit:
    """y = E + k x^-exponent fitted by least squares on log y; E is None for the plain power law."""

    x: str  # column name of x: params, samples or flops
    y: str  # loss or error
    k: Interval
    exponent: Interval
    E: Interval | None
    r2_log: float
    n: int
    residuals_log: list[float]  # log y - log y_hat, one per run in table order
    aicc: dict[str, float]  # AICc of each form tried; the lower one was kept
    bootstrap: BootstrapInfo | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.E.value if self.E else 0.0) + self.k.value * np.asarray(x, float) ** -self.exponent.value

    def to_json(self) -> dict:
        return {"form": "y = E + k x^-e" if self.E else "y = k x^-e", "x": self.x, "y": self.y,
                "k": self.k.to_json(), "exponent": self.exponent.to_json(),
                "E": self.E.to_json() if self.E else None, "r2_log": self.r2_log, "n": self.n,
                "residuals_log": self.residuals_log, "aicc": self.aicc,
                "bootstrap": asdict(self.bootstrap) if self.bootstrap else None}


def _aicc(rss: float, n: int, p: int) -> float:
    # Gaussian log-likelihood of the log residuals; small-sample correction (Hurvich & Tsai 1989).
    if n - p - 1 <= 0:
        return float("inf")
    return n * math.log(max(rss, 1e-300) / n) + 2 * p + 2 * p * (p + 1) / (n - p - 1)


def _fit_power_law_theta(logx, logy, with_e, warm=None):
    if not with_e:  # ordinary least squares on logs: log y = c - e log x
        slope, c = np.polyfit(logx[:, 0], logy, 1)
        return np.array([c, -slope])
    starts = _grid(logx, logy, True) if warm is None else np.vstack([warm, _grid(logx, logy, True)[::9]])
    theta, _ = _minimise(starts, logx, logy, True, None)
    return theta


def fit_power_law(x, y, *, x_name: str = "x", y_name: str = "y", irreducible: str | bool = "auto",
                  bootstrap: int = 0, seed: int = 0) -> PowerLawFit:
    """Fit y = k x^-e, or y = E + k x^-e, by least squares on log y.

    irreducible: "auto" fits both and keeps the form with the lower AICc (the irreducible term needs at
    least 5 runs for AICc to be defined); True or False forces a form. bootstrap: number of resamples for
    the percentile intervals (0: none).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of one length; got shapes {x.shape} and {y.shape}")
    for name, a in ((x_name, x), (y_name, y)):
        if np.any(~np.isfinite(a)) or np.any(a <= 0):
            i = int(np.flatnonzero(~(np.isfinite(a) & (a > 0)))[0])
            raise ValueError(f"{name}[{i}] = {a[i]:g}: a power law is fitted on logs, so values must be > 0")
    if irreducible not in ("auto", True, False):
        raise ValueError(f"irreducible must be 'auto', True or False; got {irreducible!r}")
    n = len(x)
    _need(n, 3 if irreducible is True else 2, f"a power law of {y_name} in {x_name}",
          "E, k, e" if irreducible is True else "k, e")
    if len(np.unique(x)) < 2:
        raise ValueError(f"{x_name} takes one value in every run; a power law in it needs at least two")
    logx, logy = np.log(x)[:, None], np.log(y)

    thetas, aicc = {}, {}
    for with_e in ((False, True) if irreducible == "auto" else (bool(irreducible),)):
        if with_e and irreducible == "auto" and n < 5:
            continue
        theta = _fit_power_law_theta(logx, logy, with_e)
        rss = float(np.sum((_log_predict(theta, logx, with_e) - logy) ** 2))
        key = "E + k x^-e" if with_e else "k x^-e"
        thetas[with_e], aicc[key] = theta, _aicc(rss, n, 3 if with_e else 2)
    with_e = min(thetas, key=lambda w: aicc["E + k x^-e" if w else "k x^-e"])
    theta = thetas[with_e]

    samples, info = None, None
    if bootstrap:
        p = 3 if with_e else 2
        indices, redrawn = _bootstrap_indices(n, p, bootstrap, seed, [x])
        samples = np.array([_fit_power_law_theta(logx[i], logy[i], with_e, warm=theta) for i in indices])
        info = BootstrapInfo(len(indices), seed, redrawn)

    def col(j):
        return None if samples is None else samples[:, j]

    log_pred = _log_predict(theta, logx, with_e)
    return PowerLawFit(
        x=x_name, y=y_name,
        k=_interval(math.exp(theta[0]), None if samples is None else np.exp(col(0))),
        exponent=_interval(theta[1], col(1)),
        E=_interval(math.exp(theta[2]), None if samples is None else np.exp(col(2))) if with_e else None,
        r2_log=_r2_log(logy, log_pred), n=n, residuals_log=(logy - log_pred).tolist(), aicc=aicc, bootstrap=info)


# --------------------------------------------------------------------------------------------------
# The Chinchilla form and compute-optimal allocation
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChinchillaFit:
    """L = E + A/N^alpha + B/D^beta, fitted by Huber loss on log L (Hoffmann et al. 2022, App. D.2)."""

    E: Interval
    A: Interval
    alpha: Interval
    B: Interval
    beta: Interval
    r2_log: float
    n: int
    residuals_log: list[float]  # log L - log L_hat, one per run in table order
    huber_delta: float
    objective: float  # sum of Huber_delta(log residual) / delta at the optimum
    target: str = "loss"
    bootstrap: BootstrapInfo | None = None
    samples: np.ndarray | None = field(default=None, repr=False)  # (resamples, 5): E, A, alpha, B, beta

    @property
    def point(self) -> np.ndarray:
        return np.array([self.E.value, self.A.value, self.alpha.value, self.B.value, self.beta.value])

    def predict(self, n, d) -> np.ndarray:
        E, A, alpha, B, beta = self.point
        return E + A / np.asarray(n, float) ** alpha + B / np.asarray(d, float) ** beta

    def to_json(self) -> dict:
        return {"form": "L = E + A/N^alpha + B/D^beta", "target": self.target,
                **{p: getattr(self, p).to_json() for p in ("E", "A", "alpha", "B", "beta")},
                "r2_log": self.r2_log, "n": self.n, "residuals_log": self.residuals_log,
                "huber_delta": self.huber_delta, "objective": self.objective,
                "bootstrap": asdict(self.bootstrap) if self.bootstrap else None}


def _chinchilla_theta_to_params(theta: np.ndarray) -> np.ndarray:
    # theta = (log A, alpha, log B, beta, log E) -> (E, A, alpha, B, beta). A bootstrap resample that
    # barely constrains a term can drive its log past float range: cap it, so that term's interval reads
    # as unbounded (~1e304) instead of the fit crashing with OverflowError.
    e = lambda v: float(np.exp(min(float(v), _MAX_LOG)))  # noqa: E731
    return np.array([e(theta[4]), e(theta[0]), theta[1], e(theta[2]), theta[3]])


_MAX_LOG = 700.0  # exp(700) ~ 1e304, still a finite float64


def fit_chinchilla(n_params, n_samples, loss, *, huber_delta: float = HUBER_DELTA, bootstrap: int = 0,
                   seed: int = 0, target: str = "loss", n_starts: int | None = 16,
                   bootstrap_starts: int = 1) -> ChinchillaFit:
    """Fit L = E + A/N^alpha + B/D^beta: minimise sum Huber_delta(log L_hat - log L), with
    log L_hat = LSE(log A - alpha log N, log B - beta log D, log E), by L-BFGS from a grid of
    initialisations, keeping the best (Hoffmann et al. 2022, App. D.2).

    n_starts: run L-BFGS from the `n_starts` grid points with the lowest objective (None: from all 225,
    as Hoffmann et al. do; on test data every one of the best 16 reaches the same optimum).
    bootstrap: number of resamples (runs drawn with replacement) for percentile intervals; each refit
    starts from the full-data optimum and the `bootstrap_starts` grid points best on that resample.
    """
    N, D, L = (np.asarray(a, float) for a in (n_params, n_samples, loss))
    if not (N.shape == D.shape == L.shape) or N.ndim != 1:
        raise ValueError(f"N, D and L must be 1-D arrays of one length; got {N.shape}, {D.shape}, {L.shape}")
    for name, a in (("N", N), ("D", D), (target, L)):
        if np.any(~np.isfinite(a)) or np.any(a <= 0):
            i = int(np.flatnonzero(~(np.isfinite(a) & (a > 0)))[0])
            raise ValueError(f"{name}[{i}] = {a[i]:g}: the Chinchilla fit takes logs, so values must be > 0")
    if huber_delta <= 0:
        raise ValueError(f"huber_delta must be > 0; got {huber_delta}")
    n = len(N)
    _need(n, 5, "the Chinchilla form", "E, A, alpha, B, beta")
    for name, a in (("params (N)", N), ("samples (D)", D)):
        if len(np.unique(a)) < 2:
            raise ValueError(f"{name} takes one value in every run; the Chinchilla form needs at least two")
    logx, logy = np.log(np.stack([N, D], axis=1)), np.log(L)

    grid = _grid(logx, logy, True)
    ranked = grid[np.argsort(_scores(grid, logx, logy, True, huber_delta))]
    theta, value = _minimise(ranked if n_starts is None else ranked[:n_starts], logx, logy, True, huber_delta)

    samples, info = None, None
    if bootstrap:
        indices, redrawn = _bootstrap_indices(n, 5, bootstrap, seed, [N, D])
        thetas = []
        for idx in indices:
            lx, ly = logx[idx], logy[idx]
            scores = _scores(grid, lx, ly, True, huber_delta)
            starts = np.vstack([theta, grid[np.argsort(scores)[:bootstrap_starts]]])
            thetas.append(_minimise(starts, lx, ly, True, huber_delta)[0])
        samples = np.array([_chinchilla_theta_to_params(t) for t in thetas])
        info = BootstrapInfo(len(indices), seed, redrawn)

    params = _chinchilla_theta_to_params(theta)
    log_pred = _log_predict(theta, logx, True)
    names = ("E", "A", "alpha", "B", "beta")
    intervals = {p: _interval(params[j], None if samples is None else samples[:, j]) for j, p in enumerate(names)}
    return ChinchillaFit(**intervals, r2_log=_r2_log(logy, log_pred), n=n, residuals_log=(logy - log_pred).tolist(),
                         huber_delta=huber_delta, objective=value, target=target, bootstrap=info, samples=samples)


@dataclass(frozen=True)
class FlopsRule:
    """C = k N D: the FLOPs spent per parameter per training sample, and where k came from."""

    k: float
    source: str  # "default" (k = 6) or "csv" (median of flops / (N D)) or "given"
    csv_median: float  # median of flops / (params * samples) over the runs
    csv_spread: float  # max relative deviation of a run's ratio from that median

    @property
    def rule(self) -> str:
        return f"C = {self.k:.6g} N D"

    def to_json(self) -> dict:
        return {"rule": self.rule, **asdict(self)}


def flops_rule(runs: Runs, k: float | str = "auto") -> FlopsRule:
    """Choose k in C = k N D.

    "auto": the CSV's own k (the median of flops / (N D)) when every run is within 10% of it, else the
    6 N D rule (Kaplan et al. 2020). "csv" insists on the CSV's k (ValueError if inconsistent); a number
    is used as given.
    """
    ratio = runs.flops / (runs.params * runs.samples)
    median = float(np.median(ratio))
    spread = float(np.max(np.abs(ratio / median - 1)))
    consistent = spread <= FLOPS_RATIO_TOLERANCE
    if k == "auto":
        return FlopsRule(median if consistent else DEFAULT_FLOPS_PER_PARAM_SAMPLE,
                         "csv" if consistent else "default", median, spread)
    if k == "csv":
        if not consistent:
            i = int(np.argmax(np.abs(ratio / median - 1)))
            raise ValueError(f"flops / (params * samples) is not one constant: row {runs.rows[i]} has "
                             f"{ratio[i]:.4g} against a median of {median:.4g} ({spread:.0%} off, allowed "
                             f"{FLOPS_RATIO_TOLERANCE:.0%}); pass a number for k or use 'auto'")
        return FlopsRule(median, "csv", median, spread)
    try:
        value = float(k)
    except (TypeError, ValueError):
        raise ValueError(f"k must be 'auto', 'csv' or a positive number; got {k!r}") from None
    if not value > 0:
        raise ValueError(f"k must be a positive number; got {k!r}")
    return FlopsRule(value, "given", median, spread)


def compute_optimal(params: np.ndarray, budgets, k: float) -> dict[str, np.ndarray]:
    """N*(C), D*(C) and L*(C) minimising E + A/N^alpha + B/D^beta subject to C = k N D (Hoffmann Eq. 4).

    params: (E, A, alpha, B, beta), or an array (..., 5) of them; budgets: FLOPs, any shape (broadcast).
    """
    p = np.asarray(params, float)
    # one parameter set: scalars; a stack (S, 5): columns (S, 1) against budgets (n,) -> (S, n)
    E, A, alpha, B, beta = (p[j] for j in range(5)) if p.ndim == 1 else (p[..., j, None] for j in range(5))
    c = np.asarray(budgets, float) / k  # N D
    with np.errstate(all="ignore"):  # a bootstrap refit can land on alpha or beta <= 0: no optimum (nan)
        g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
        n_opt = g * c ** (beta / (alpha + beta))
        d_opt = c / n_opt
        loss = E + A / n_opt ** alpha + B / d_opt ** beta
        bad = (alpha <= 0) | (beta <= 0)
    n_opt, d_opt, loss = (np.where(bad, np.nan, a) for a in (n_opt, d_opt, loss))
    return {"N": n_opt, "D": d_opt, "loss": loss}


def default_budgets(flops: np.ndarray) -> np.ndarray:
    """Decades of compute from below the smallest run to 100x the largest (the extrapolation users ask for)."""
    lo, hi = math.floor(math.log10(flops.min())), math.ceil(math.log10(flops.max())) + 2
    return 10.0 ** np.arange(lo, hi + 1)


# --------------------------------------------------------------------------------------------------
# The whole analysis of a run table
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScalingReport:
    n_runs: int
    target: str
    chinchilla: ChinchillaFit
    flops: FlopsRule
    exponents: dict[str, Interval]  # a = beta/(alpha+beta) in N* ~ C^a, b = alpha/(alpha+beta) in D* ~ C^b
    frontier: list[dict]  # one per budget: C, N, D, loss, with 95% intervals
    power_laws: dict[str, dict[str, PowerLawFit]]  # target -> x column -> fit
    notes: list[str] = field(default_factory=list)  # what could not be computed, and why

    def to_json(self) -> dict:
        return {
            "n_runs": self.n_runs, "target": self.target,
            "chinchilla": self.chinchilla.to_json(),
            "compute_optimal": {"flops_rule": self.flops.to_json(),
                                "form": "N* = G (C/k)^a, D* = (C/k)^b / G",
                                **{k: v.to_json() for k, v in self.exponents.items()},
                                "frontier": self.frontier},
            "power_laws": {t: {x: f.to_json() for x, f in fits.items()} for t, fits in self.power_laws.items()},
            "notes": self.notes,
        }


def analyse_runs(runs: Runs, *, target: str = "loss", k: float | str = "auto", bootstrap: int = 200,
                 seed: int = 0, budgets=None, huber_delta: float = HUBER_DELTA) -> ScalingReport:
    """Every fit of the issue on one run table: power laws of loss and error in N, D and C; the
    Chinchilla form of `target` in (N, D); the compute-optimal frontier at `budgets` (default: decades
    spanning the runs and 100x beyond), all with bootstrap intervals."""
    y = runs.target(target)
    fit = fit_chinchilla(runs.params, runs.samples, y, huber_delta=huber_delta, bootstrap=bootstrap, seed=seed,
                         target=target)
    rule = flops_rule(runs, k)
    budgets = default_budgets(runs.flops) if budgets is None else np.asarray(budgets, float)

    # The frontier exists only where both terms fall with scale (alpha, beta > 0); a bootstrap refit
    # without it is left out of the intervals, and counted in the notes.
    point = fit.point
    alpha, beta = point[2], point[4]
    notes = []
    if not (alpha > 0 and beta > 0):
        notes.append(f"no compute-optimal frontier: the fit has alpha = {alpha:.3g}, beta = {beta:.3g}; it needs "
                     f"both > 0 ({target} must fall with both N and D)")
    a_samples = b_samples = band = None
    if fit.samples is not None:
        s = fit.samples[(fit.samples[:, 2] > 0) & (fit.samples[:, 4] > 0)]
        if len(s) < len(fit.samples):
            notes.append(f"{len(fit.samples) - len(s)} of {len(fit.samples)} bootstrap refits have alpha or beta "
                         f"<= 0 and are left out of the frontier's intervals")
        a_samples, b_samples = s[:, 4] / (s[:, 2] + s[:, 4]), s[:, 2] / (s[:, 2] + s[:, 4])
        band = compute_optimal(s, budgets, rule.k)
    exponents = {"a": _interval(beta / (alpha + beta), a_samples), "b": _interval(alpha / (alpha + beta), b_samples)}
    if notes and not (alpha > 0 and beta > 0):
        exponents = {key: Interval(float("nan")) for key in exponents}
        band = None
    best = compute_optimal(point, budgets, rule.k)
    frontier = []
    for j, c in enumerate(budgets):
        row = {"C": float(c)}
        for key in ("N", "D", "loss"):
            iv = _interval(best[key][j], None if band is None else band[key][:, j])
            row[key], row[f"{key}_ci95"] = _finite_or_none(iv.value), list(iv.ci95) if iv.ci95 else None
        frontier.append(row)

    power_laws = {
        t: {x: fit_power_law(getattr(runs, x), runs.target(t), x_name=x, y_name=t, bootstrap=bootstrap, seed=seed)
            for x in AXES}
        for t in TARGETS
    }
    return ScalingReport(len(runs), target, fit, rule, exponents, frontier, power_laws, notes)


# --------------------------------------------------------------------------------------------------
# Synthetic runs with known exponents (to check the fits, and to try the command without a GPU)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SyntheticLaw:
    E: float = 0.08  # irreducible loss
    A: float = 40.0
    alpha: float = 0.35
    B: float = 60.0
    beta: float = 0.30
    error_k: float = 3.0  # CompBench error = error_E + error_k N^-error_e (kept in (0, 1))
    error_e: float = 0.15
    error_E: float = 0.05
    k: float = 6.0  # FLOPs per parameter per sample
    noise: float = 0.02  # sigma of the multiplicative log-normal noise on loss and error


def synthetic_runs(law: SyntheticLaw = SyntheticLaw(), *, sizes=(1e5, 3e5, 1e6, 3e6, 1e7, 3e7),
                   samples=(1e5, 1e6, 1e7, 1e8, 1e9), seed: int = 0) -> Runs:
    """A grid of runs (every size x every sample count) drawn from `law` with multiplicative noise."""
    rng = np.random.default_rng(seed)
    N, D = (a.ravel() for a in np.meshgrid(np.asarray(sizes, float), np.asarray(samples, float), indexing="ij"))
    loss = (law.E + law.A / N ** law.alpha + law.B / D ** law.beta) * np.exp(law.noise * rng.standard_normal(N.size))
    error = (law.error_E + law.error_k * N ** -law.error_e) * np.exp(law.noise * rng.standard_normal(N.size))
    error = np.clip(error, 1e-6, 1 - 1e-6)
    flops = law.k * N * D
    wall = flops / 1e12  # a nominal 1 TFLOP/s
    return Runs(params=N, samples=D, flops=flops, loss=loss, accuracy=1 - error, wall_s=wall,
                rows=np.arange(2, N.size + 2))
