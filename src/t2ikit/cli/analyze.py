"""`t2ikit analyze PROMPT --json --out DIR`: sensitivity, interactions, information, length curve."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="word sensitivity, interactions, information and prompt length")
    from t2ikit.text.weighting import DEFAULT_WEIGHTING, MODES

    p.add_argument("prompt", help="the prompt to analyse (weights allowed, see --weighting)")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--seeds", type=int, default=4, help="seeds 0..N-1, averaged")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's)")
    from t2ikit.cli.models import add_loading_options

    add_loading_options(p)  # --device, --dtype, --lora, --embedding
    p.add_argument("--lam", type=float, default=0.1, help="lambda, the cost weight of the length curve (>= 0)")
    p.add_argument("--no-interactions", action="store_true", help="skip word pairs (n^2/2 fewer variants)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: Markdown)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary line on stderr")
    p.add_argument("--out", default=None, help="write report.json, report.md and interaction heat maps here")
    p.add_argument("--weighting", default=DEFAULT_WEIGHTING, choices=MODES,
                   help="prompt weighting syntax: a1111 '(word:1.3)', compel 'word+', none (literal); each variant "
                        "keeps the weights of the words it keeps")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from t2ikit.analysis.sensitivity import check_lambda

    check_lambda(args.lam)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    from t2ikit.text.weighting import check_weighting, plain_text

    check_weighting([args.prompt], args.weighting)
    if not plain_text(args.prompt, args.weighting).strip():
        raise ValueError("the prompt is empty; there are no words to analyse")
    if args.out:
        from t2ikit.cli.paths import check_output

        # a folder of named files (report.json, report.md, heat maps), rewritten by a rerun
        check_output(Path(args.out) / "report.json", (".json",), "--out", overwrite=True)

    from t2ikit.analysis.sensitivity import analyze, markdown, substitutes, write_report
    from t2ikit.cli.models import load_pipeline
    from t2ikit.models.memory import check_memory
    from t2ikit.text.spans import word_token_spans

    from t2ikit.cli.generate import parse_size

    size = parse_size(args.size) if args.size else None
    # one thread: tiny models on shared CPUs, where threads cost more than they give
    pipe = load_pipeline(args.model, 1, args.device, args.dtype, args.lora, args.embedding)
    size = pipe.default_size if size is None else size
    # analyze samples its variants in batches of up to 64 (analysis.sensitivity._generate): at most the prompt,
    # "", one per word dropped, one per pair dropped and one per substitute
    spans = word_token_spans(pipe.tokenizer, plain_text(args.prompt, args.weighting))
    words = [s.word for s in spans if not s.truncated]
    variants = 2 + len(words) + sum(len(substitutes(w)) for w in words)
    variants += 0 if args.no_interactions else len(words) * (len(words) - 1) // 2
    guidance = pipe.defaults["guidance"] if args.guidance is None else args.guidance
    check_memory(pipe, min(variants, 64), size, rows_per_image=2 if guidance != 1.0 else 1,
                 what="analyze")
    report = analyze(pipe, args.prompt, seeds=range(args.seeds), steps=args.steps, guidance=args.guidance,
                     lam=args.lam, interactions=not args.no_interactions, weighting=args.weighting, size=size,
                     progress=not args.quiet)
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    if args.out:
        paths = write_report(report, args.out)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0
