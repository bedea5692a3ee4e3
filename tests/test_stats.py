"""t2ikit.bench.stats against intervals computed by hand from their definitions."""

import math

import numpy as np
import pytest

from t2ikit.bench.stats import bootstrap_interval, mcnemar_p, percentile_interval, wilson_interval

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson 1927: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_wilson_interval_matches_the_formula():
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)  # k = 0: z^2 / (n + z^2)
    for k, n in [(1, 3), (7, 40), (39, 40), (250, 1000)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(3, 3)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_bootstrap_interval_is_the_percentile_bootstrap_of_the_mean():
    values = np.random.default_rng(1).normal(size=37).round(1)
    draws = np.random.default_rng(0).integers(0, 37, size=(2000, 37))  # what the bootstrap resamples
    expected = np.percentile(values[draws].mean(1), [2.5, 97.5])
    assert bootstrap_interval(values, np.random.default_rng(0), 2000) == pytest.approx(expected, abs=1e-12)
    # rows of a (k, n) array share the resamples (paired statistics of the same items)
    pair = np.stack([values, 2 * values])
    (a_lo, a_hi), (b_lo, b_hi) = bootstrap_interval(pair, np.random.default_rng(0), 2000)
    assert (b_lo, b_hi) == pytest.approx((2 * a_lo, 2 * a_hi), abs=1e-12)
    # one item: its value, and no draw taken from the generator
    rng = np.random.default_rng(5)
    assert bootstrap_interval([0.25], rng, 100) == [0.25, 0.25]
    assert rng.random() == np.random.default_rng(5).random()
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([], rng, 100)


def test_mcnemar_p_is_the_exact_binomial_test():
    for a, b in [(0, 12), (3, 9), (5, 5), (10, 1)]:
        n, k = a + b, min(a, b)
        by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        assert mcnemar_p(a, b) == pytest.approx(by_hand, rel=1e-12)
    assert mcnemar_p(0, 0) == 1.0


def test_percentile_interval():
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert percentile_interval(np.arange(101.0), 0.5) == pytest.approx((25.0, 75.0))
