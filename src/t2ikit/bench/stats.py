"""Intervals for every measured number: one function per kind, computed by scipy where it has them.

- `wilson_interval`: a pass rate (k of n), the Wilson score interval (Wilson 1927);
- `bootstrap_interval`: a mean of per-item values (or per-item differences, for paired comparisons), the
  percentile bootstrap over items (Efron & Tibshirani 1993, Ch. 13);
- `mcnemar_p`: whether two methods differ on the same items, McNemar's exact test on the discordant pairs;
- `percentile_interval`: the central interval of draws already made (refits of a bootstrap, posterior samples).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilson_interval(passed: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion passed / n; (0, 1) when n = 0 (nothing measured)."""
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(passed, n).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(values, rng: np.random.Generator, resamples: int, confidence: float = 0.95) -> list:
    """Percentile bootstrap interval of the mean over the last axis, items resampled with replacement.

    values: (n,) -> [lo, hi]; (k, n) -> k intervals [[lo, hi], ...] from the same resamples (statistics of
    the same items stay paired). n = 1 gives [v, v] and draws nothing from `rng`.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    if n == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if n == 1:  # scipy needs two items; one item's mean never varies
        return np.stack([values[..., 0], values[..., 0]], -1).tolist()
    res = stats.bootstrap((values,), np.mean, n_resamples=resamples, axis=-1, confidence_level=confidence,
                          method="percentile", rng=rng)
    return np.stack([res.confidence_interval.low, res.confidence_interval.high], -1).tolist()


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value (McNemar 1947): items only a passes vs items only b passes are
    Binomial(a_only + b_only, 1/2) under no difference; 1 when there is no discordant item."""
    n = a_only + b_only
    return float(stats.binomtest(a_only, n, 0.5).pvalue) if n else 1.0


def percentile_interval(samples, confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` share of `samples` (linear interpolation between order statistics)."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(np.asarray(samples, dtype=float), [tail, 100 - tail])
    return float(lo), float(hi)
