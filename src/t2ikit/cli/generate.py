"""`t2ikit generate PROMPT`: images from a model folder, saved as PNGs that carry their parameters."""

from __future__ import annotations

import sys
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be WIDTHxHEIGHT, e.g. 64x64; got {text!r}") from None
    return h, w


def output_paths(out: str, count: int) -> list[Path]:
    """`out` for one image; for several, `STEM-0.png`, `STEM-1.png`, ... beside it."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out must end in .png; got {out!r}")
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(count)]


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate images from a prompt")
    parser.add_argument("prompt", help="the text prompt (\"\" for an unconditional image)")
    parser.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    parser.add_argument("--sampler", default=None, help="ddim, dpmpp_2m, euler, euler_a, unipc (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 20)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale >= 0; 1 = none (default: the model's)")
    parser.add_argument("--negative", default=None, help="negative prompt")
    parser.add_argument("--relation-guidance", type=float, default=None, metavar="S",
                        help="step the latent in the first steps so that each stated relation (left of, right of, "
                             "above, below) holds in the cross-attention; S the step size, 0 = off (default: the "
                             "model's; prompts must be Shapes World captions)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image; image k uses seed + k")
    parser.add_argument("--n", type=int, default=1, help="number of images")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's)")
    parser.add_argument("--out", default="out.png", help="output PNG; with --n > 1, OUT-0.png, OUT-1.png, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--attention", default=None, metavar="VARIANT",
                        help="sparse/hierarchical cross-attention: topk:K, topp:P, prune, prune:K, hier:W/P/S")
    for name in ("sketch", "depth", "mask", "reference"):  # t2ikit.control: conditions through adapters
        parser.add_argument(f"--{name}", default=None, metavar="PNG", help=f"{name} condition image (image size)")
    parser.add_argument("--adapter", action="append", default=[], metavar="CONDITION=DIR",
                        help="adapter folder for a condition instead of the shipped one (repeatable)")
    parser.add_argument("--scale", action="append", default=[], metavar="NAME=S",
                        help="per-condition scale: text, regions, sketch, depth, mask, reference (repeatable)")
    parser.add_argument("--region", action="append", default=[], metavar="BOX_OR_MASK:PROMPT",
                        help="region prompt: 'x0,y0,x1,y1:a red circle' (pixels) or 'mask.png:...' (repeatable)")
    parser.add_argument("--region-mode", default="attention", choices=["attention", "noise"],
                        help="regions by masked cross-attention or by noise-space blending (MultiDiffusion)")
    parser.add_argument("--bootstrap", type=float, default=0.0, metavar="F",
                        help="with --region: for the first fraction F of the steps, reset the latents outside every "
                             "region to a plain background (MultiDiffusion's bootstrapping); 0 = off")
    parser.add_argument("--background", default="1,1,1", metavar="R,G,B",
                        help="the bootstrap's background colour, three numbers in [0, 1] (default white)")
    parser.add_argument("--weighting", default="a1111", choices=["a1111", "compel", "none"],
                        help="prompt weighting syntax of the prompt and --negative: a1111 '(word:1.3)', '[word]', "
                             "BREAK; compel 'word++', '(words)0.8'; none = the text as written")
    parser.add_argument("--excite", type=float, default=0.0, metavar="S",
                        help="Attend-and-Excite: step the latent in the first steps so that every object noun gets "
                             "attention; S the step size, 0 = off")
    parser.add_argument("--guidance-mode", default="composed", choices=["composed", "nested"],
                        help="how several conditions (regions in noise mode) combine: composed (Composable "
                             "Diffusion) or nested (InstructPix2Pix)")
    parser.set_defaults(func=_generate)


def parse_background(text: str) -> tuple[float, float, float]:
    """"R,G,B" in [0, 1] -> a triple."""
    try:
        rgb = tuple(float(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
        raise ValueError(f"--background must be R,G,B with each in [0, 1], e.g. 1,1,1; got {text!r}")
    return rgb


def _generate(args) -> int:
    import warnings

    from PIL.PngImagePlugin import PngInfo

    from t2ikit.attention.variants import hooks_from_spec
    from t2ikit.cli.info import PNG_KEY, format_parameters
    from t2ikit.cli.models import load_pipeline
    from t2ikit.cli.paths import check_output
    from t2ikit.control.compose import parse_adapter_args, parse_scales
    from t2ikit.control.regions import parse_region
    from t2ikit.diffusion.samplers import check_sampler
    from t2ikit.text.weighting import check_weighting

    # everything a user typed is checked before the model loads
    size = parse_size(args.size) if args.size is not None else None
    if args.sampler is not None:
        check_sampler(args.sampler)
    paths = [check_output(p, (".png",), "--out") for p in output_paths(args.out, args.n if args.n >= 1 else 1)]
    check_weighting([args.prompt] + ([args.negative] if args.negative else []), args.weighting)
    scales = parse_scales(args.scale)
    for r in args.region:
        parse_region(r)
    adapters = parse_adapter_args(args.adapter)
    for name, folder in adapters.items():
        if not getattr(args, name):
            raise ValueError(f"--adapter {name}={folder} given without --{name}")
    if args.attention is not None:
        hooks_from_spec(args.attention)
    techniques = dict(
        weighting=args.weighting, excite=args.excite, attention=args.attention, adapters=adapters, scales=scales,
        regions=args.region, region_mode=args.region_mode, bootstrap=args.bootstrap,
        background=parse_background(args.background), guidance_mode=args.guidance_mode,
        **{name: getattr(args, name) for name in ("sketch", "depth", "mask", "reference") if getattr(args, name)},
    )
    pipe = load_pipeline(args.model, args.threads, args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = pipe.make_spec(args.prompt, args.negative, args.steps, args.guidance, args.seed, args.n, size,
                              args.sampler, args.relation_guidance, **techniques)
        result = pipe.run(spec, progress=not args.quiet)
    for w in caught:  # prompt warnings as sentences, not as a source line of pipeline.py
        if issubclass(w.category, DeprecationWarning):  # libraries' notes to their own developers
            continue
        print(f"t2ikit generate: warning: {w.message}", file=sys.stderr)
    for path, image, seed in zip(paths, result.pil(), result.seeds):
        settings = {**spec.settings(), "Seed": seed, "Model": pipe.name}
        info = PngInfo()
        info.add_text(PNG_KEY, format_parameters(spec.prompts[0], args.negative, settings))
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, pnginfo=info)
        print(path)
    if not args.quiet:
        print(f"{len(paths)} image(s) from {pipe.path}", file=sys.stderr)
    return 0
