"""Scaling laws: power-law and Chinchilla fits on tables of runs, compute-optimal allocation (fit.py),
the frontier plot (plot.py). Sweeps that train the runs come later."""

from t2ikit.scaling.fit import (
    ChinchillaFit,
    FlopsRule,
    Interval,
    PowerLawFit,
    Runs,
    ScalingReport,
    analyse_runs,
    compute_optimal,
    fit_chinchilla,
    fit_power_law,
    flops_rule,
    read_runs,
    runs_from_columns,
    synthetic_runs,
    write_runs,
)

__all__ = ["ChinchillaFit", "FlopsRule", "Interval", "PowerLawFit", "Runs", "ScalingReport", "analyse_runs",
           "compute_optimal", "fit_chinchilla", "fit_power_law", "flops_rule", "read_runs", "runs_from_columns",
           "synthetic_runs", "write_runs"]
