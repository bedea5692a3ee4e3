"""`t2ikit report --out DIR`: the seed's eight questions answered by experiment (t2ikit.report).

Runs every experiment not finished yet in DIR (a killed report resumes: finished experiments and finished
units of work inside an experiment are kept), then writes DIR/report.md and DIR/report.html.
"""

from __future__ import annotations


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--questions takes numbers separated by commas, such as 2,5; not {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="answer the seed's eight questions by experiment (report.md/.html)")
    p.add_argument("--out", default=None, help="report folder (created; an existing report folder resumes); "
                                                "required unless --list")
    p.add_argument("--budget", choices=("quick", "full"), default="quick",
                   help="quick: <= 20 minutes on 2 CPU cores, indicative; full: the training questions at >= 3 "
                        "seeds (--list shows each experiment's planned minutes)")
    p.add_argument("--questions", default=None, help="only these questions, e.g. 2,5 (default: all eight)")
    p.add_argument("--experiments", default=None, help="only these experiments, e.g. q2.sparsity (see --list)")
    p.add_argument("--model", default=None, help="model folder or name for the inference questions "
                                                  "(default: the shipped model)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=1,
                   help="processes of one thread each: the mini runs of Q1 and Q8 train this many at a time, then "
                        "the other experiments run this many at a time (2 on 2 cores; work on one thread is not "
                        "bit-identical to work on --threads 2)")
    p.add_argument("--list", action="store_true", help="list the experiments and their minutes, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from pathlib import Path

    from t2ikit.report.runner import check_folder, finished, run_report, select

    questions = _ints(args.questions) if args.questions else None
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()] if args.experiments else None
    chosen = select(questions, experiments)
    out = Path(args.out) if args.out else None
    if args.list:  # with --out: which experiments of that folder are done
        done = finished(out) if out is not None and out.exists() else {}
        for e in chosen:
            state = "done" if e.id in done else ""
            print(f"{e.id:22s} Q{e.question}  quick {e.minutes.get('quick', '?')} min, full "
                  f"{e.minutes.get('full', '?')} min  {e.title}  {state}".rstrip())
        total = {b: sum(e.minutes.get(b, 0) for e in chosen) for b in ("quick", "full")}
        print(f"planned: quick {total['quick']:g} min, full {total['full']:g} min")
        return 0
    if out is None:
        raise ValueError("--out is required (the report folder) unless --list")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, not {args.threads}")
    if args.model is not None:
        from t2ikit.models.registry import resolve_model
        from t2ikit.pipeline import check_model_folder

        check_model_folder(resolve_model(args.model))
    check_folder(out, args.budget, args.model)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, not {args.workers}")
    result = run_report(out, args.budget, questions, experiments, args.model, args.threads, not args.quiet,
                        args.workers)
    print(out / "report.md")
    print(out / "report.html")
    return 1 if result["failed"] else 0
