"""`t2ikit analyze PROMPT --json --out DIR`: sensitivity, interactions, information, length curve."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="word sensitivity, interactions, information and prompt length")
    p.add_argument("prompt", help="the prompt to analyse")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1, averaged")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--lam", type=float, default=0.1, help="lambda, the cost weight of the length curve (>= 0)")
    p.add_argument("--no-interactions", action="store_true", help="skip word pairs (n^2/2 fewer variants)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: Markdown)")
    p.add_argument("--out", default=None, help="write report.json, report.md and interaction heat maps here")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from t2ikit.analysis.sensitivity import check_lambda

    check_lambda(args.lam)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if not args.prompt.strip():
        raise ValueError("the prompt is empty; there are no words to analyse")

    from t2ikit.analysis.sensitivity import analyze, markdown, write_report
    from t2ikit.cli.models import load_pipeline

    pipe = load_pipeline(args.model, threads=1)  # tiny models on shared CPUs: threads cost more than they give
    report = analyze(pipe, args.prompt, seeds=range(args.seeds), steps=args.steps, guidance=args.guidance,
                     lam=args.lam, interactions=not args.no_interactions)
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    if args.out:
        paths = write_report(report, args.out)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0
