"""Scaling fits on synthetic runs with known exponents, the compute-optimal closed form, bad input, the CLI."""

import json

import numpy as np
import pytest

from t2ikit.cli import main
from t2ikit.scaling.fit import (
    RUN_COLUMNS,
    SyntheticLaw,
    compute_optimal,
    fit_chinchilla,
    fit_power_law,
    flops_rule,
    read_runs,
    runs_from_columns,
    synthetic_runs,
    write_runs,
)

LAW = SyntheticLaw()


def _inside(interval, truth):
    lo, hi = interval.ci95
    return lo <= truth <= hi


def _columns(n=8, **override):
    runs = synthetic_runs(sizes=np.logspace(5, 7, n), samples=(1e7,))
    columns = {c: list(getattr(runs, c)) for c in RUN_COLUMNS}
    columns.update(override)
    return columns


# ---------------------------------------------------------------- recovery of known laws

def test_chinchilla_recovers_known_exponents_within_bootstrap_intervals():
    runs = synthetic_runs(LAW, seed=0)  # 6 sizes x 5 sample counts, 2% multiplicative noise
    fit = fit_chinchilla(runs.params, runs.samples, runs.loss, bootstrap=60, seed=0)
    assert _inside(fit.alpha, LAW.alpha) and _inside(fit.beta, LAW.beta)
    assert _inside(fit.E, LAW.E)
    assert fit.alpha.value == pytest.approx(LAW.alpha, abs=0.03)
    assert fit.beta.value == pytest.approx(LAW.beta, abs=0.03)
    assert fit.r2_log > 0.99 and fit.n == 30 and len(fit.residuals_log) == 30
    assert fit.samples.shape == (60, 5)


def test_noise_free_chinchilla_is_exact():
    runs = synthetic_runs(SyntheticLaw(noise=0.0))
    fit = fit_chinchilla(runs.params, runs.samples, runs.loss)
    np.testing.assert_allclose(fit.point, [LAW.E, LAW.A, LAW.alpha, LAW.B, LAW.beta], rtol=1e-3)


def test_plain_power_law_recovers_exponent():
    rng = np.random.default_rng(1)
    x = np.logspace(4, 9, 12)
    y = 3.0 * x ** -0.4 * np.exp(0.03 * rng.standard_normal(x.size))
    fit = fit_power_law(x, y, irreducible=False, bootstrap=100, seed=0)
    assert fit.E is None
    assert _inside(fit.exponent, 0.4) and fit.exponent.value == pytest.approx(0.4, abs=0.02)
    assert fit.k.value == pytest.approx(3.0, rel=0.3)


def test_irreducible_term_is_kept_when_the_data_have_one():
    rng = np.random.default_rng(2)
    x = np.logspace(4, 9, 16)
    y = (0.5 + 20.0 * x ** -0.5) * np.exp(0.01 * rng.standard_normal(x.size))
    fit = fit_power_law(x, y, bootstrap=60, seed=0)  # irreducible="auto": chosen by AICc
    assert fit.E is not None and set(fit.aicc) == {"k x^-e", "E + k x^-e"}
    assert fit.aicc["E + k x^-e"] < fit.aicc["k x^-e"]
    assert _inside(fit.exponent, 0.5) and _inside(fit.E, 0.5)


def test_compute_optimal_matches_a_brute_force_search_along_the_budget():
    params, k, c = np.array([0.1, 40.0, 0.35, 60.0, 0.3]), 6.0, 1e16
    best = compute_optimal(params, [c], k)
    n = np.logspace(3, 12, 200001)
    d = c / (k * n)
    loss = params[0] + params[1] / n ** params[2] + params[3] / d ** params[4]
    assert best["N"][0] == pytest.approx(n[np.argmin(loss)], rel=1e-3)
    assert best["loss"][0] == pytest.approx(loss.min(), rel=1e-9)
    # N* ~ C^(beta / (alpha + beta))
    ratio = compute_optimal(params, [c * 10], k)["N"][0] / best["N"][0]
    assert np.log10(ratio) == pytest.approx(0.3 / 0.65)


def test_flops_rule_uses_the_csv_k_only_when_consistent():
    runs = synthetic_runs(SyntheticLaw(k=2.0 * 64 * 64))  # per-sample cost of a UNet at 64x64, say
    assert flops_rule(runs).k == pytest.approx(2.0 * 64 * 64) and flops_rule(runs).source == "csv"
    columns = {c: list(getattr(runs, c)) for c in RUN_COLUMNS}
    columns["flops"][3] *= 3
    uneven = runs_from_columns(columns)
    rule = flops_rule(uneven)
    assert rule.k == 6.0 and rule.source == "default" and rule.rule == "C = 6 N D"
    with pytest.raises(ValueError, match="row 5"):
        flops_rule(uneven, "csv")
    assert flops_rule(uneven, 4.5).k == 4.5


# ---------------------------------------------------------------- bad input

def test_missing_columns_are_named():
    columns = _columns()
    del columns["flops"], columns["wall_s"]
    with pytest.raises(ValueError, match="missing column.*flops, wall_s"):
        runs_from_columns(columns)


@pytest.mark.parametrize("column", ["params", "samples", "flops", "loss"])
def test_non_positive_value_names_row_and_column(column):
    columns = _columns()
    columns[column][2] = 0.0
    with pytest.raises(ValueError, match=f"row 4, column '{column}'.*not positive"):
        runs_from_columns(columns)


@pytest.mark.parametrize("value", [1.2, -0.1])
def test_accuracy_outside_unit_interval(value):
    columns = _columns()
    columns["accuracy"][1] = value
    with pytest.raises(ValueError, match=r"row 3, column 'accuracy'.*outside \[0, 1\]"):
        runs_from_columns(columns)


def test_accuracy_of_one_has_no_log_error():
    columns = _columns()
    columns["accuracy"][0] = 1.0
    with pytest.raises(ValueError, match="row 2, column 'accuracy'.*error = 1 - accuracy = 0"):
        runs_from_columns(columns)


def test_non_number_names_row_and_column(tmp_path):
    runs = synthetic_runs(sizes=(1e5, 1e6), samples=(1e6, 1e7))
    path = tmp_path / "runs.csv"
    write_runs(path, runs)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[3], "nan?", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="row 4, column 'loss'"):
        read_runs(path)


def test_too_few_runs_says_how_many_are_needed():
    runs = synthetic_runs(sizes=(1e5, 1e6), samples=(1e6, 1e7))  # 4 runs
    with pytest.raises(ValueError, match="5 parameters.*at least 6 runs.*got 4"):
        fit_chinchilla(runs.params, runs.samples, runs.loss)
    with pytest.raises(ValueError, match="at least 3 runs.*got 2"):
        fit_power_law([1.0, 2.0], [1.0, 0.5])
    with pytest.raises(ValueError, match="at least 4 runs.*got 3"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, 0.5, 0.4], irreducible=True)


def test_a_single_model_size_cannot_give_alpha():
    runs = synthetic_runs(sizes=(1e6,), samples=np.logspace(5, 9, 8))
    with pytest.raises(ValueError, match="params .N. takes one value"):
        fit_chinchilla(runs.params, runs.samples, runs.loss)


# ---------------------------------------------------------------- the command

def test_cli_fit_json_and_plot(tmp_path, capsys):
    path, png = tmp_path / "runs.csv", tmp_path / "frontier.png"
    write_runs(path, synthetic_runs(seed=3))
    assert main(["scaling", "fit", str(path), "--json", "--bootstrap", "8", "--plot", str(png),
                 "--budgets", "1e15,1e18"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_runs"] == 30 and out["chinchilla"]["alpha"]["ci95"] is not None
    assert [row["C"] for row in out["compute_optimal"]["frontier"]] == [1e15, 1e18]
    assert out["compute_optimal"]["flops_rule"]["rule"] == "C = 6 N D"
    assert set(out["power_laws"]) == {"loss", "error"}
    assert set(out["power_laws"]["error"]) == {"params", "samples", "flops"}
    from PIL import Image

    assert Image.open(png).size[0] > 0


def test_cli_bad_csv_is_a_sentence(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("params,samples,loss\n1,2,3\n")
    assert main(["scaling", "fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s) flops, accuracy, wall_s" in err


def test_no_frontier_when_the_target_does_not_fall_with_data():
    from t2ikit.scaling.fit import analyse_runs

    # synthetic error depends on N only: beta is not positive, so there is no compute-optimal split
    report = analyse_runs(synthetic_runs(seed=0), target="error", bootstrap=0)
    assert report.notes and "no compute-optimal frontier" in report.notes[0]
    assert all(row["N"] is None for row in report.frontier)
    json.dumps(report.to_json(), allow_nan=False)


def test_diverging_bootstrap_term_does_not_overflow():
    from t2ikit.scaling.fit import _chinchilla_theta_to_params

    params = _chinchilla_theta_to_params(np.array([1000.0, 0.3, 2.0, 0.4, -1.0]))  # log A far past float range
    assert np.all(np.isfinite(params)) and params[1] > 1e300
