"""`t2ikit scaling sweep|fit`: train a grid of runs (t2ikit.scaling.sweep) and fit scaling laws to its table.

Each sub-verb is one `_add_<name>(verbs)` function that adds its parser and handler; adding `sweep`
means adding `_add_sweep` to `SUBVERBS`.
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("scaling", help="scaling laws: fit power laws and compute-optimal allocation")
    verbs = parser.add_subparsers(dest="scaling_verb", metavar="SCALING_VERB", required=True)
    for add in SUBVERBS:
        add(verbs)


def _add_fit(verbs) -> None:
    fit = verbs.add_parser(
        "fit", help="fit power laws and the Chinchilla form to a CSV of runs",
        description="Fit y = k x^-e (and y = E + k x^-e where AICc prefers it) in N, D and C for loss and "
                    "CompBench error; the Chinchilla form L = E + A/N^alpha + B/D^beta (Huber on log L); "
                    "bootstrap 95% intervals; the compute-optimal N*(C), D*(C) under C = k N D.")
    fit.add_argument("runs", help="CSV with columns params, samples, flops, loss, accuracy, wall_s")
    fit.add_argument("--json", action="store_true", help="print the full result as JSON")
    fit.add_argument("--plot", default=None, metavar="PNG", help="write the frontier plot here")
    fit.add_argument("--overwrite", action="store_true", help="replace existing --plot files")
    fit.add_argument("--target", default="loss", choices=["loss", "error"],
                     help="what the Chinchilla form and frontier model (error = 1 - accuracy)")
    fit.add_argument("--flops-k", default="auto", metavar="K",
                     help="k in C = k N D: 'auto' (the CSV's flops/(N D) if within 10%% for every run, "
                          "else 6), 'csv', or a number")
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the 95%% intervals")
    fit.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    fit.add_argument("--budgets", default=None, metavar="C1,C2,...",
                     help="FLOPs budgets for the frontier table (default: decades from the runs to 100x beyond)")
    fit.set_defaults(func=_fit)


def _add_sweep(verbs) -> None:
    sweep = verbs.add_parser(
        "sweep", help="train a grid of model sizes x budgets and write the run table (runs.csv)",
        description="Train every (size, budget) run of a sweep config on Shapes World (text encoder + UNet on "
                    "one shared, frozen VAE) and write OUT/runs.csv with params, samples, flops (= 3 x UNet "
                    "forward FLOPs per sample x samples), loss, accuracy, wall_s. Resumable: rerun the same "
                    "command after a kill; finished runs are skipped, an unfinished one resumes its checkpoint.")
    sweep.add_argument("--config", required=True, help="sweep TOML (see configs/sweep-cpu.toml)")
    sweep.add_argument("--out", default=None, metavar="DIR", help="sweep folder (default: sweep.out of the config)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar or summary line on stderr")
    sweep.set_defaults(func=_sweep)


SUBVERBS = [_add_fit, _add_sweep]


def _sweep(args) -> int:
    from t2ikit.scaling.sweep import load_sweep_config, run_sweep

    path = run_sweep(load_sweep_config(args.config), out=args.out, echo=lambda m: print(m, flush=True),
                     progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def _fit(args) -> int:
    import json

    from t2ikit.scaling.fit import analyse_runs, read_runs

    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    budgets = None
    if args.budgets:
        try:
            budgets = [float(b) for b in args.budgets.split(",")]
        except ValueError:
            raise ValueError(f"--budgets must be comma-separated numbers, got {args.budgets!r}") from None
        if any(not b > 0 for b in budgets):
            raise ValueError(f"--budgets must be positive FLOPs, got {args.budgets!r}")
    if args.plot:
        from t2ikit.cli.paths import check_output

        for suffix in (".png", ".svg"):  # plot_frontier writes both
            check_output(Path(args.plot).with_suffix(suffix), (), "--plot", overwrite=args.overwrite)
    runs = read_runs(args.runs)
    report = analyse_runs(runs, target=args.target, k=args.flops_k, bootstrap=args.bootstrap, seed=args.seed,
                          budgets=budgets)
    if args.plot:
        from t2ikit.scaling.plot import plot_frontier

        plot_frontier(report, runs, args.plot)
    if args.json:
        out = report.to_json()
        out["config"] = {"runs": args.runs, "target": args.target, "flops_k": args.flops_k,
                         "bootstrap": args.bootstrap, "seed": args.seed, "budgets": budgets}
        print(json.dumps(out, indent=2))
    else:
        print(format_report(report))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _iv(iv) -> str:
    return f"{iv.value:.4g}" + (f" [{iv.ci95[0]:.4g}, {iv.ci95[1]:.4g}]" if iv.ci95 else "")


def _frontier_defined(report) -> bool:
    return all(row["N"] is not None for row in report.frontier)


def format_report(report) -> str:
    """A human-readable summary of a `ScalingReport` (values with bootstrap 95% intervals)."""
    f = report.chinchilla
    boot = f"{f.bootstrap.resamples} bootstrap resamples" if f.bootstrap else "no bootstrap"
    lines = [f"{report.n_runs} runs; 95% intervals from {boot}",
             f"Chinchilla fit of {report.target}: L = E + A/N^alpha + B/D^beta  (Huber delta {f.huber_delta:g} "
             f"on log L, R^2 on log = {f.r2_log:.4f})"]
    lines += [f"  {p:<6} {_iv(getattr(f, p))}" for p in ("E", "A", "alpha", "B", "beta")]
    lines.append(f"compute-optimal under {report.flops.rule} (k from {report.flops.source}; CSV flops/(N D): "
                 f"median {report.flops.csv_median:.4g}, max deviation {report.flops.csv_spread:.1%})")
    lines += [f"  note: {note}" for note in report.notes]
    lines.append(f"  N* ~ C^a, a = {_iv(report.exponents['a'])};  D* ~ C^b, b = {_iv(report.exponents['b'])}")
    lines.append(f"  {'C':>10} {'N*':>10} {'D*':>10} {report.target + '*':>10}   N* 95%")
    for row in report.frontier if _frontier_defined(report) else []:
        ci = f"[{row['N_ci95'][0]:.3g}, {row['N_ci95'][1]:.3g}]" if row["N_ci95"] else ""
        lines.append(f"  {row['C']:>10.3g} {row['N']:>10.3g} {row['D']:>10.3g} {row['loss']:>10.4g}   {ci}")
    lines.append("power laws (y = [E +] k x^-e, least squares on log y):")
    for target, fits in report.power_laws.items():
        for x, p in fits.items():
            e = f", E = {_iv(p.E)}" if p.E else ""
            lines.append(f"  {target:<5} in {x:<7}  e = {_iv(p.exponent)}, k = {p.k.value:.4g}{e}  "
                         f"(R^2 log {p.r2_log:.3f})")
    return "\n".join(lines)
