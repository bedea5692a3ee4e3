"""Mutual information estimators, in nats, with intervals: the information-theoretic quantities the seed names.

- `discrete_mi(a, b)`: two discrete variables (a prompt's stated colour and the colour the oracle reads), the
  plug-in estimate from the joint histogram with the Miller-Madow bias correction (Miller 1955), floored at 0;
- `gaussian_mi(x, y)`: two continuous vectors (rows are samples) under a joint Gaussian model, from the
  canonical correlations rho_i of x and y: I = -1/2 sum_i log(1 - rho_i^2) (the linear dependence only);
- `ksg_mi(x, y, k)`: two continuous vectors, the Kraskov-Stoegbauer-Grassberger estimator (Kraskov et al. 2004,
  algorithm 1) from k-nearest-neighbour distances in the max-norm; consistent for nonlinear dependence;
- `mi_interval(estimator, x, y, rng)`: the estimate on all rows and an interval from the spread of resampled
  estimates around their mean, placed around the estimate: resamples are a bootstrap (rows with replacement)
  for the discrete and Gaussian estimators and, for KSG, whose neighbour distances collapse on duplicated rows,
  half-samples without replacement scaled by sqrt(1/2) to n rows (subsampling, Politis & Romano 1994). Centred
  so, the interval measures the estimator's variance, not its bias (a plain percentile interval of a plug-in
  estimate can exclude the estimate itself: duplicated rows add spurious information; KSG under-reads strong
  dependence).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from t2ikit.bench.stats import percentile_interval


def _rows(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (samples,) or (samples, features), not shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has a NaN or infinite value")
    return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _rows(x, "x"), _rows(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y need the same number of samples, not {len(x)} and {len(y)}")
    if len(x) < 3:
        raise ValueError(f"mutual information needs at least 3 samples, not {len(x)}")
    return x, y


def discrete_mi(a, b) -> float:
    """I(a; b) in nats of two discrete sequences (any hashable labels), Miller-Madow corrected, >= 0."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a and b need the same number of samples, not {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError(f"mutual information needs at least 2 samples, not {len(a)}")
    _, ai = np.unique(np.asarray(a, dtype=object).astype(str), return_inverse=True)
    _, bi = np.unique(np.asarray(b, dtype=object).astype(str), return_inverse=True)
    n = len(a)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)

    def entropy(counts):  # Miller-Madow: plug-in + (bins with mass - 1) / 2n
        counts = counts[counts > 0]
        p = counts / n
        return float(-(p * np.log(p)).sum() + (len(counts) - 1) / (2 * n))

    mi = entropy(joint.sum(1)) + entropy(joint.sum(0)) - entropy(joint.ravel())
    return max(0.0, mi)


def gaussian_mi(x, y, ridge: float = 1e-6) -> float:
    """I(x; y) in nats under a joint Gaussian model: -1/2 sum log(1 - rho_i^2) over canonical correlations.

    `ridge` (relative to each block's mean variance) keeps a rank-deficient covariance invertible; with more
    features than samples the estimate is meaningless and refused."""
    x, y = _pair(x, y)
    n = len(x)
    if x.shape[1] + y.shape[1] >= n:
        raise ValueError(f"gaussian_mi needs more samples ({n}) than features ({x.shape[1]} + {y.shape[1]})")
    x = x - x.mean(0)
    y = y - y.mean(0)

    def whiten(z):
        cov = z.T @ z / (n - 1)
        cov += np.eye(len(cov)) * ridge * max(np.trace(cov) / len(cov), 1e-12)
        vals, vecs = np.linalg.eigh(cov)
        return z @ vecs / np.sqrt(np.maximum(vals, 1e-300))

    rho = np.linalg.svd(whiten(x).T @ whiten(y) / (n - 1), compute_uv=False)
    rho = np.clip(rho, 0.0, 1 - 1e-12)
    return float(-0.5 * np.log1p(-rho**2).sum())


def ksg_mi(x, y, k: int = 3) -> float:
    """I(x; y) in nats by KSG estimator 1: psi(k) + psi(n) - <psi(n_x + 1) + psi(n_y + 1)>, max-norm."""
    x, y = _pair(x, y)
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, not {k}")
    joint = np.hstack([x, y])
    # distance to the k-th neighbour in the joint space (the point itself is neighbour 0)
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, k]
    # neighbours strictly closer than eps in each marginal (minus the point itself)
    radius = np.nextafter(eps, 0)
    nx = np.array([len(v) - 1 for v in cKDTree(x).query_ball_point(x, radius, p=np.inf)])
    ny = np.array([len(v) - 1 for v in cKDTree(y).query_ball_point(y, radius, p=np.inf)])
    mi = digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    return max(0.0, float(mi))


def mi_interval(estimator: Callable, x, y, rng: np.random.Generator, resamples: int = 200,
                confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate on all rows, lo, hi): the resampled estimates' spread around the estimate (module docstring)."""
    if resamples < 10:
        raise ValueError(f"resamples must be >= 10, not {resamples}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y need the same number of samples, not {n} and {len(y)}")
    x_arr, y_arr = np.asarray(x, dtype=object if estimator is discrete_mi else float), np.asarray(
        y, dtype=object if estimator is discrete_mi else float)
    estimate = estimator(x_arr, y_arr)
    half = estimator is ksg_mi
    draws = []
    for _ in range(resamples):
        idx = rng.choice(n, size=n // 2, replace=False) if half else rng.integers(0, n, size=n)
        draws.append(estimator(x_arr[idx], y_arr[idx]))
    spread = np.asarray(draws) - np.mean(draws)
    if half:
        spread *= np.sqrt((n // 2) / n)
    lo, hi = percentile_interval(estimate + spread, confidence)
    return float(estimate), max(0.0, lo), hi


__all__ = ["discrete_mi", "gaussian_mi", "ksg_mi", "mi_interval"]
