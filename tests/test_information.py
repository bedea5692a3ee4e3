"""The mutual information estimators recover known values and refuse what they cannot estimate."""

import numpy as np
import pytest

from t2ikit.bench.information import discrete_mi, gaussian_mi, ksg_mi, mi_interval


def _gaussian_pair(rng, rho, n):
    x = rng.normal(size=n)
    return x, rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_continuous_estimators_recover_a_gaussian_pairs_information(rho):
    x, y = _gaussian_pair(np.random.default_rng(0), rho, 2000)
    true = -0.5 * np.log(1 - rho**2)
    assert gaussian_mi(x, y) == pytest.approx(true, rel=0.05)
    assert ksg_mi(x, y) == pytest.approx(true, abs=0.04)  # its sampling spread at n = 2000 is ~0.015


def test_independent_variables_carry_about_no_information():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(500, 2)), rng.normal(size=(500, 3))
    assert gaussian_mi(x, y) < 0.02 and ksg_mi(x, y) < 0.05
    a, b = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert discrete_mi(a, b) < 0.02


def test_discrete_information_of_a_copy_is_the_entropy():
    a = np.repeat(["red", "green", "blue", "yellow"], 250)
    assert discrete_mi(a, a) == pytest.approx(np.log(4), abs=0.01)


def test_ksg_sees_a_dependence_that_is_not_linear():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    y = x**2 + 0.1 * rng.normal(size=400)
    assert gaussian_mi(x, y) < 0.1 < 1.0 < ksg_mi(x, y)


@pytest.mark.parametrize("estimator", [gaussian_mi, ksg_mi, discrete_mi])
def test_intervals_contain_the_estimate_and_are_reproducible(estimator):
    rng = np.random.default_rng(3)
    x, y = _gaussian_pair(rng, 0.7, 300)
    if estimator is discrete_mi:
        x, y = (x > 0).astype(int), (y > 0).astype(int)
    a = mi_interval(estimator, x, y, np.random.default_rng(4), resamples=30)
    b = mi_interval(estimator, x, y, np.random.default_rng(4), resamples=30)
    assert a == b
    estimate, lo, hi = a
    assert lo <= estimate <= hi and hi - lo > 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same number of samples"):
        gaussian_mi(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="more samples"):
        gaussian_mi(np.zeros((5, 4)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        ksg_mi([1.0, np.nan, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="k must be"):
        ksg_mi(np.arange(5.0), np.arange(5.0), k=5)
