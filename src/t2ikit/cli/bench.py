"""`t2ikit bench SUITE`: measured benchmarks, one sub-verb each.

Adding a suite is one function: `_add_<suite>(verbs)` that builds its parser and sets `func`, listed in
SUITES. Handlers import what they need, so registration stays light.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def _add_oracle(verbs) -> None:
    p = verbs.add_parser("oracle", help="how accurate the oracle is on rendered scenes, clean and degraded")
    p.add_argument("--n", type=int, default=2000, help="scenes per category")
    p.add_argument("--resolution", type=int, default=64, help="render resolution")
    p.add_argument("--conditions", default="clean,noise,blur,random,wrong",
                   help="comma-separated subset of clean, noise, blur, random, wrong")
    p.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    p.add_argument("--out", default=None, help="also write oracle.json and oracle.md to this folder")
    p.set_defaults(func=_oracle)


def _oracle(args) -> int:
    from t2ikit.bench.oracle_bench import markdown, oracle_accuracy
    from t2ikit.world.categories import CATEGORIES

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    categories = CATEGORIES if args.categories is None else tuple(args.categories.split(","))
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown --categories {unknown}; allowed: {', '.join(CATEGORIES)}")
    conditions = tuple(c for c in args.conditions.split(",") if c)
    result = oracle_accuracy(args.n, categories=categories, conditions=conditions, resolution=args.resolution,
                             progress=not args.quiet)
    command = "t2ikit bench oracle " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "oracle"] else None
    result["command"] = command
    text = markdown(result) + f"\n\n{result['ms_per_image']:.2f} ms per image scored"
    _emit(args, result, text, "oracle")
    return 0


def _add_compbench(verbs) -> None:
    p = verbs.add_parser("compbench", help="compositional benchmark: the oracle over fixed prompt suites")
    p.add_argument("--generator", default="model", choices=["model", "ground-truth", "noise", "vae"],
                   help="what makes the images (ignored with --images): model (--model); ground-truth and noise, the "
                        "reference rows (100%% and 0%% by construction); vae: the ground truth through the model's "
                        "autoencoder (what the truth's own layouts keep in its latent space)")
    p.add_argument("--model", default=None, help="model folder for --generator model or vae (default: the shipped one)")
    p.add_argument("--split", default="train", choices=["train", "heldout"])
    p.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    p.add_argument("--prompts", default=None, help="a file of captions, one per line, instead of the suite")
    p.add_argument("--images", default=None, help="score a folder of images with a manifest.json instead")
    p.add_argument("--n-prompts", type=int, default=None, help="prompts per category (default: 50)")
    p.add_argument("--seeds", type=int, default=None, help="image seeds per prompt (default: 2)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps for --generator model")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT of --generator model's images (default: the model's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale for --generator model (default: the model's, 4.0 for the shipped model)")
    p.add_argument("--relation-guidance", type=float, default=None, metavar="S",
                   help="relation guidance step size for --generator model; 0 = off (default: the model's)")
    p.add_argument("--layout", default=None, choices=["none", "auto", "many", "many+relations"],
                   help="boxes planned from the prompt for --generator model, as generate's --layout (default: the "
                        "model's: many+relations for the shipped model)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generator call")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--out", default=None,
                   help="write compbench.json, compbench.md (and images with --save-images); while it runs, a journal "
                        "of finished batches there lets the same command, run again after a stop, resume")
    p.add_argument("--save-images", action="store_true", help="with --out: save every image and a manifest")
    p.set_defaults(func=_compbench)


def _journal(args) -> Path | None:
    """--out's journal for exactly these settings (a hash of every option but the output ones in its name): the
    same command resumes it, another starts its own."""
    import hashlib

    if not args.out:
        return None
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "json", "quiet", "verbose", "out")}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(args.out) / f"compbench.{digest}.journal.jsonl"


def _compbench(args) -> int:
    from t2ikit.bench import compbench as cb
    from t2ikit.cli.generate import parse_size

    suite_kwargs = {}
    if args.n_prompts is not None:
        suite_kwargs["n_prompts"] = args.n_prompts
    if args.seeds is not None:
        suite_kwargs["seeds"] = args.seeds
    if args.categories is not None:
        suite_kwargs["categories"] = tuple(args.categories.split(","))
    if args.images is not None:
        result = cb.evaluate_folder(args.images)
    else:
        if args.prompts is not None:
            suite = cb.suite_from_file(args.prompts, **{k: v for k, v in suite_kwargs.items() if k == "seeds"})
        else:
            suite = cb.make_suite(split=args.split, **suite_kwargs)
        if args.model is not None and args.generator not in ("model", "vae"):
            raise ValueError(f"--model applies to --generator model or vae, not {args.generator}")
        if args.size is not None and args.generator != "model":
            raise ValueError("--size applies to --generator model only")
        extra = {"size": parse_size(args.size)} if args.size is not None else {}
        if args.guidance is not None:
            if args.generator != "model":
                raise ValueError("--guidance applies to --generator model only")
            if not args.guidance >= 0 or args.guidance != args.guidance:
                raise ValueError(f"--guidance must be a number >= 0; got {args.guidance}")
            extra["guidance"] = args.guidance
        if args.relation_guidance is not None:
            if args.generator != "model":
                raise ValueError("--relation-guidance applies to --generator model only")
            if not args.relation_guidance >= 0 or args.relation_guidance == float("inf"):
                raise ValueError(f"--relation-guidance must be a finite number >= 0; got {args.relation_guidance}")
            extra["relation_guidance"] = args.relation_guidance
        if args.layout is not None:
            if args.generator != "model":
                raise ValueError("--layout applies to --generator model only")
            extra["layout"] = args.layout
        from t2ikit.models.registry import SHIPPED_MODEL

        generator = cb.make_generator(args.generator, model=args.model, steps=args.steps, device=args.device,
                                      dtype=args.dtype, **extra)
        save_dir = Path(args.out) / "images" if (args.out and args.save_images) else None
        name = args.generator if args.generator not in ("model", "vae") else f"{args.generator}:{args.model or SHIPPED_MODEL}"
        for key in ("guidance", "relation_guidance", "layout"):
            if args.generator == "model" and getattr(args, key) is not None:
                value = getattr(args, key)
                name += f",{key}={value:g}" if isinstance(value, float) else f",{key}={value}"
        journal = _journal(args)
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            if journal.exists():
                print(f"resuming from {journal}", file=sys.stderr)
        with warnings.catch_warnings():  # most categories state no relation; the suite is not a mistake
            warnings.filterwarnings("ignore", message="relation guidance: ")
            result = cb.run(suite, generator, batch_size=args.batch_size, save_images=save_dir, generator_name=name,
                            progress=not args.quiet, journal=journal)
    _emit(args, result, cb.markdown(result), "compbench")
    if args.images is None and journal is not None:
        journal.unlink()  # the result is written: nothing left to resume
    if args.out:
        from t2ikit.bench.plots import plot_compbench

        paths = plot_compbench(result, Path(args.out) / "compbench.png")
        print(f"wrote {' and '.join(map(str, paths))}", file=sys.stderr)
    return 0


def _add_fusion(verbs) -> None:
    from t2ikit.bench.fusion_budget import DEFAULT_STRATEGIES, Budget

    d = Budget()
    p = verbs.add_parser("fusion", help="fusion strategies trained on the same budget, or the gate study")
    p.add_argument("--strategies", default=";".join(DEFAULT_STRATEGIES),
                   help="';'-separated strategies (sequential, parallel, interleaved, gated, hierarchical:R=S,...)")
    p.add_argument("--steps", type=int, default=d.steps, help="training steps per strategy (the budget)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per training step")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate")
    p.add_argument("--model-size", default=d.size, help="named UNet size of t2ikit.models.sizes (xs, s, m, ...)")
    p.add_argument("--seed", type=int, default=d.seed, help="model, data and noise seed")
    p.add_argument("--n-prompts", type=int, default=d.n_prompts, help="CompBench prompts per category")
    p.add_argument("--seeds", type=int, default=d.seeds, help="CompBench images per prompt")
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="sampler steps for CompBench images")
    p.add_argument("--timing-rounds", type=int, default=d.timing_rounds,
                   help="rounds of interleaved step/UNet-call timing after training (0: phase medians only)")
    p.add_argument("--gates", action="store_true",
                   help="instead: retrofit the shipped model to gated fusion, fine-tune the gates --steps steps, record them")
    p.add_argument("--retrofit-check", action="store_true",
                   help="instead: max |retrofitted - original| UNet output on the shipped model for each retrofit strategy")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument("--out", default=None, help="write fusion.json, fusion.md (and gates*.png with --gates)")
    p.set_defaults(func=_fusion)


def _fusion(args) -> int:
    import torch

    from t2ikit.bench import fusion as fb
    from t2ikit.models.fusion import parse_fusion

    torch.set_num_threads(args.threads)
    if args.retrofit_check:
        result = {"retrofit": fb.retrofit_equality(seed=args.seed)}
        text = "\n".join(["| strategy | max abs diff | added params |", "|---|---|---|"]
                         + [f"| {k} | {v['max_abs_diff']:.2e} | {v['added_params']:,} |"
                            for k, v in result["retrofit"].items()])
    elif args.gates:
        result = fb.gate_study(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                               sample_steps=args.sample_steps, out=args.out, progress=not args.quiet)
        text = "\n".join(f"{k}: {v:.5f}" for k, v in result["summary"].items())
    else:
        strategies = [s.strip() for s in args.strategies.split(";") if s.strip()]
        for s in strategies:
            parse_fusion(s)  # a clear error before loading or training anything
        budget = fb.Budget(steps=args.steps, batch_size=args.batch_size, lr=args.lr, size=args.model_size, seed=args.seed,
                           n_prompts=args.n_prompts, seeds=args.seeds, sample_steps=args.sample_steps,
                           timing_rounds=args.timing_rounds)
        result = fb.compare(strategies, budget, progress=not args.quiet)
        text = fb.markdown(result)
    result["command"] = "t2ikit " + " ".join(sys.argv[1:])
    _emit(args, result, text, "fusion")
    return 0


def _add_decomposition(verbs) -> None:
    p = verbs.add_parser("decomposition", help="CompBench subset: plain prompt vs component timestep weighting")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--amplitude", type=float, default=0.3, help="weight swing of the linear schedule, in [0, 1)")
    p.add_argument("--n-prompts", type=int, default=20, help="prompts per category")
    p.add_argument("--seeds", type=int, default=2, help="image seeds per prompt")
    p.add_argument("--categories", default="colour_binding,spatial,complex", help="comma-separated categories")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--out", default=None, help="also write decomposition.json and decomposition.md here")
    p.set_defaults(func=_decomposition)


def _decomposition(args) -> int:
    from t2ikit.analysis.decomposition import LinearSchedule, compare_compbench, markdown
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import T2IPipeline

    LinearSchedule(args.amplitude)  # checks the amplitude before loading anything
    pipe = T2IPipeline.from_folder(resolve_model(args.model), device=args.device, dtype=args.dtype)
    result = compare_compbench(pipe, amplitude=args.amplitude, n_prompts=args.n_prompts, seeds=args.seeds,
                               categories=tuple(args.categories.split(",")), steps=args.steps)
    _emit(args, result, markdown(result), "decomposition")
    return 0


def _add_edit(verbs) -> None:
    p = verbs.add_parser("edit", help="text-guided editing: oracle-judged success and preservation per method")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--n", type=int, default=20, help="edits per kind")
    p.add_argument("--kinds", default=None, help="comma-separated: colour,shape,size,object,relation (default: all)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (t2ikit.bench.edit.METHODS: ground-truth, reconstruct, swap, p2p, "
                        "blend+FLAGS, ...; default: ground-truth,reconstruct,swap,p2p,blend+shapemask+local+detect)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale of the edits")
    p.add_argument("--mask-dilate", type=int, default=1, help="latent pixels the automatic mask is grown by")
    p.add_argument("--seed", type=int, default=None,
                   help="world seed of the edit suite (default: the bench's, 0xED17); another seed is a held-out suite")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--inversion", action="store_true",
                   help="instead: reconstruction PSNR at 20, 50, 100 steps and with guidance, and diffusers agreement")
    p.add_argument("--out", default=None, help="also write edit.json and edit.md to this folder")
    p.set_defaults(func=_edit)


def _edit(args) -> int:
    from t2ikit.bench import edit as eb

    kinds = eb.KINDS if args.kinds is None else tuple(args.kinds.split(","))
    methods = eb.DEFAULT_METHODS if args.methods is None else tuple(args.methods.split(","))
    bad = [k for k in kinds if k not in eb.KINDS] + [m for m in methods if m not in eb.METHODS]
    if bad:
        raise ValueError(f"unknown --kinds/--methods {bad}; kinds: {', '.join(eb.KINDS)}; methods: {', '.join(eb.METHODS)}")
    if args.n < 1 or args.steps < 1:
        raise ValueError(f"--n and --steps must be >= 1; got {args.n}, {args.steps}")
    eb.check_runs(kinds, methods)  # before the model loads
    if args.inversion:
        from t2ikit.cli.models import load_pipeline

        result = eb.run_inversion(load_pipeline(args.model, args.threads, args.device, args.dtype), n=min(args.n, 8),
                                  progress=not args.quiet)
        result["command"] = "t2ikit bench edit " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "edit"] else None
        _emit(args, result, eb.inversion_markdown(result), "inversion")
        return 0
    pipe = None
    if any(m != "ground-truth" for m in methods):
        from t2ikit.cli.models import load_pipeline

        pipe = load_pipeline(args.model, args.threads, args.device, args.dtype)
    result = eb.run(pipe, kinds, methods, n=args.n, steps=args.steps, guidance=args.guidance, progress=not args.quiet,
                    mask_dilate=args.mask_dilate, seed=eb.BENCH_SEED if args.seed is None else args.seed)
    result["command"] = "t2ikit bench edit " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "edit"] else None
    result["model"] = None if pipe is None else str(pipe.path)
    _emit(args, result, eb.markdown(result), "edit")
    return 0


def _add_sparse(verbs) -> None:
    p = verbs.add_parser("sparse", help="CompBench per sparse / hierarchical cross-attention variant")
    p.add_argument("variants", nargs="*", default=["dense", "topk:8", "topp:0.9", "prune", "hier:1/1/0"],
                   help="dense, topk:K, topp:P, prune (padding), prune:K, hier:W/P/S (default: a few of each)")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--n-prompts", type=int, default=16, help="prompts per category")
    p.add_argument("--seeds", type=int, default=1, help="image seeds per prompt")
    p.add_argument("--categories", default="colour_binding,shape_binding", help="comma-separated categories")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT of the images (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--out", default=None, help="also write sparse.json and sparse.md here")
    p.set_defaults(func=_sparse)


def _sparse(args) -> int:
    from t2ikit.attention.sparse import HookedPipeline
    from t2ikit.cli.generate import parse_size
    from t2ikit.attention.variants import hooks_from_spec
    from t2ikit.bench.compbench import evaluate
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import T2IPipeline

    for v in args.variants:
        hooks_from_spec(v)  # bad variants fail before the model loads
    size = {} if args.size is None else {"size": parse_size(args.size)}
    pipe = T2IPipeline.from_folder(resolve_model(args.model), device=args.device, dtype=args.dtype)
    cats = tuple(args.categories.split(","))
    result = {"config": {"n_prompts": args.n_prompts, "seeds": args.seeds, "steps": args.steps, "categories": cats},
              "variants": {}}
    lines = ["| variant | " + " | ".join(cats) + " |", "| --- |" + " --- |" * len(cats)]
    from t2ikit.bench.progress import Timer, summary

    timer = Timer()
    for v in args.variants:
        r = evaluate(HookedPipeline(pipe, lambda v=v: hooks_from_spec(v), v), "train", args.n_prompts, args.seeds,
                     cats, steps=args.steps, progress=not args.quiet, **size)
        result["variants"][v] = r["per_category"]
        cells = [f"{r['per_category'][c]['accuracy']:.3f} [{r['per_category'][c]['ci95'][0]:.2f}, "
                 f"{r['per_category'][c]['ci95'][1]:.2f}]" for c in cats]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    summary(f"bench sparse: {len(args.variants)} variants in {timer}", not args.quiet)
    _emit(args, result, "\n".join(lines), "sparse")
    return 0


def _add_control(verbs) -> None:
    p = verbs.add_parser("control", help="control: region prompts, recolouring one object, consistency with conditions")
    p.add_argument("--sections", default="regions,attribute,consistency,conflict", help="comma-separated subset")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--n", type=int, default=12, help="scenes per section")
    p.add_argument("--seeds", type=int, default=2, help="image seeds per scene (regions)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--adapter", action="append", default=[], metavar="CONDITION=DIR",
                   help="adapter folder for a condition (sketch, depth, mask, reference); default: every shipped one")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    p.add_argument("--out", default=None, help="also write control.json and control.md to this folder")
    p.set_defaults(func=_control)


def _control(args) -> int:
    import torch

    from t2ikit.bench import control as bc
    from t2ikit.control.compose import shipped_adapter
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import T2IPipeline

    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = set(sections) - set(bc.SECTIONS)
    if unknown:
        raise ValueError(f"unknown --sections {sorted(unknown)}; allowed: {', '.join(bc.SECTIONS)}")
    from t2ikit.control.encoders import CONDITIONS
    from t2ikit.control.compose import parse_adapter_args

    adapters = parse_adapter_args(args.adapter)
    if not args.adapter:
        adapters = {c: shipped_adapter(c) for c in CONDITIONS if shipped_adapter(c) is not None}
    torch.set_num_threads(1)  # small models on a shared CPU: one thread is the fast setting
    pipe = T2IPipeline.from_folder(resolve_model(args.model), device=args.device, dtype=args.dtype)
    result = bc.run(pipe, sections, n=args.n, seeds=args.seeds, steps=args.steps, adapters=adapters,
                    progress=not args.quiet)
    result["command"] = "t2ikit bench control " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "control"] else None
    _emit(args, result, bc.markdown(result), "control")
    return 0


def _add_binding(verbs) -> None:
    p = verbs.add_parser("binding", help="CompBench binding/spatial: plain sampler vs Attend-and-Excite or relation guidance")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--n-prompts", type=int, default=20, help="prompts per category")
    p.add_argument("--seeds", type=int, default=2, help="image seeds per prompt")
    p.add_argument("--categories", default="colour_binding,shape_binding,spatial", help="comma-separated categories")
    p.add_argument("--split", default="train", choices=("train", "heldout"), help="CompBench prompt split")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--excite-steps", type=int, default=None, help="first steps whose latent is updated")
    p.add_argument("--step-size", type=float, default=None, help="gradient step size on the latent")
    p.add_argument("--objective", default=None, choices=("excite", "relation", "both"),
                   help="excite: Attend-and-Excite (default); relation: stated relations' attention centroids")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--out", default=None, help="also write binding.json and binding.md here")
    p.set_defaults(func=_binding)


def _binding(args) -> int:
    import dataclasses

    import torch

    from t2ikit.analysis.excite import ExciteConfig, compare_binding, markdown
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import T2IPipeline

    given = {k: v for k, v in (("excite_steps", args.excite_steps), ("step_size", args.step_size),
                               ("objective", args.objective)) if v is not None}
    config = dataclasses.replace(ExciteConfig(), **given).validate()  # checked before loading anything
    torch.set_num_threads(1)
    pipe = T2IPipeline.from_folder(resolve_model(args.model), device=args.device, dtype=args.dtype)
    result = compare_binding(pipe, args.n_prompts, args.seeds, tuple(args.categories.split(",")), args.steps, config,
                             args.split)
    _emit(args, result, markdown(result), "binding")
    return 0


SUITES = [_add_oracle, _add_compbench, _add_fusion, _add_decomposition, _add_edit, _add_sparse, _add_control, _add_binding]  # more suites (fusion, control, edit) add one function here


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks: oracle accuracy, CompBench, ...")
    verbs = parser.add_subparsers(dest="bench_verb", metavar="SUITE", required=True)
    for add in SUITES:
        add(verbs)
    for suite in verbs.choices.values():  # every suite runs long enough to show progress
        suite.add_argument("--quiet", action="store_true", help="no progress bars or summary line on stderr")
    from t2ikit.cli.models import add_device_options

    for name in ("compbench", "decomposition", "edit", "sparse", "control", "binding"):  # the suites that run a model
        add_device_options(verbs.choices[name])


def _emit(args, result: dict, text: str, name: str) -> None:
    """Print JSON or Markdown; with --out also write both files."""
    print(json.dumps(result, indent=2) if args.json else text)
    if getattr(args, "out", None):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
        (out / f"{name}.md").write_text(text + "\n")
        print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}", file=sys.stderr)
