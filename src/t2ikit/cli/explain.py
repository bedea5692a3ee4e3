"""`t2ikit explain PROMPT --out maps.png`: per-word attribution maps (DAAM-style) over the generated image.

The prompt may carry weights, `a (red:1.5) circle`. With --overlap, score maps of object words against
the oracle-detected object boxes over a fixed set of Shapes World prompts instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="per-word attention maps of a prompt, overlaid on its image")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (weights allowed: (word:1.3))")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0, help="image seed")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's)")
    from t2ikit.cli.models import add_loading_options

    add_loading_options(p)  # --device, --dtype, --lora, --embedding
    from t2ikit.text.weighting import DEFAULT_WEIGHTING, MODES

    p.add_argument("--weighting", default=DEFAULT_WEIGHTING, choices=MODES,
                   help="prompt weighting syntax: a1111 '(word:1.3)', compel 'word+', none (literal)")
    p.add_argument("--out", default="maps.png", help="output PNG of the image and one overlay per word")
    p.add_argument("--maps", default=None, help="also save the raw maps as JSON here")
    p.add_argument("--phrases", action="store_true",
                   help="also one map per object phrase the model's parser reads (\"a red circle\"); a prompt it "
                        "cannot read is an error naming the part")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out and --maps files")
    p.add_argument("--overlap", action="store_true",
                   help="instead: mean share of object-word map mass inside oracle-detected object boxes")
    p.add_argument("--n-prompts", type=int, default=10, help="with --overlap: prompts per category")
    p.add_argument("--seeds", type=int, default=2, help="with --overlap: seeds per prompt")
    p.add_argument("--json", action="store_true", help="with --overlap: print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=handler)


def overlap_prompts(n_prompts: int) -> list[str]:
    """The fixed prompt set of the overlap check: CompBench's single, colour_binding and spatial suites."""
    from t2ikit.bench.compbench import make_suite

    suite = make_suite("train", n_prompts, 1, ("single", "colour_binding", "spatial"))
    return [it.prompt for it in suite.items]


def handler(args) -> int:
    from t2ikit.cli.models import load_pipeline
    from t2ikit.cli.paths import check_output
    from t2ikit.models.memory import check_memory

    if args.overlap:
        if args.n_prompts < 1 or args.seeds < 1:
            raise ValueError(f"--n-prompts and --seeds must be >= 1, got {args.n_prompts}, {args.seeds}")
        if args.size:
            raise ValueError("--overlap scores the model's own size on the oracle's images; --size is for a PROMPT")
    else:
        if args.prompt is None:
            raise ValueError("give a PROMPT (or --overlap)")
        check_output(args.out, (".png",), "--out", overwrite=args.overwrite)
        if args.maps:
            check_output(args.maps, (), "--maps", overwrite=args.overwrite)
        from t2ikit.text.weighting import plain_text

        if not plain_text(args.prompt, args.weighting).strip():
            raise ValueError(f"prompt {args.prompt!r} is empty; nothing to explain")

    from t2ikit.analysis.attribution import attribution_overlap, explain, overlay

    from t2ikit.cli.generate import parse_size

    size = parse_size(args.size) if args.size else None
    # one thread: tiny models on shared CPUs, where threads cost more than they give
    pipe = load_pipeline(args.model, 1, args.device, args.dtype, args.lora, args.embedding)
    size = pipe.default_size if size is None else size
    guidance = pipe.defaults["guidance"] if args.guidance is None else args.guidance
    prompts = overlap_prompts(args.n_prompts) if args.overlap else [args.prompt]
    # one batch of every prompt x seed at the model's size, its cross-attention captured (AttentionStore)
    check_memory(pipe, len(prompts) * (args.seeds if args.overlap else 1), size,
                 rows_per_image=2 if guidance != 1.0 else 1, attention_maps=True, what="explain",
                 hint="use fewer --n-prompts or --seeds" if args.overlap else None)
    if args.overlap:
        result = attribution_overlap(pipe, prompts, list(range(args.seeds)), args.steps, args.guidance,
                                     progress=not args.quiet)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"object-word map mass inside the oracle-detected object box ({result['prompts']} prompts x "
                  f"{len(result['seeds'])} seeds; {result['objects_missed_by_oracle']} objects not detected):")
            for kind in ("colour", "shape", "all"):
                r = result[kind]
                if r["n"]:
                    print(f"  {kind:6s} n={r['n']:4d} overlap {r['overlap']:.3f} [{r['overlap_ci'][0]:.3f}, "
                          f"{r['overlap_ci'][1]:.3f}]  box share (uniform map) {r['baseline']:.3f}  "
                          f"lift {r['lift']:.2f} [{r['lift_ci'][0]:.2f}, {r['lift_ci'][1]:.2f}]")
        return 0
    parser = None
    if args.phrases:
        if pipe.parser is None:
            raise ValueError("--phrases reads the prompt with the model's parser, and this model names none")
        parser = pipe.parser
    attr = explain(pipe, args.prompt, seed=args.seed, steps=args.steps, guidance=args.guidance, mode=args.weighting,
                   size=size, progress=not args.quiet, parser=parser)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay(attr).save(out)
    if args.maps:
        Path(args.maps).write_text(json.dumps({k: v.tolist() for k, v in attr.maps.items()}))
    print(f"wrote {out}: image and maps of {', '.join(attr.maps)}", file=sys.stderr)
    return 0
