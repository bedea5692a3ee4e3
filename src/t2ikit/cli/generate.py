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


DEFAULT_OUT_DIR = "outputs"
# Settings a PNG records only when they acted (GenerationSpec.settings): absent from a PNG means off. With
# --from, these values stand in for an absent key, not the model's defaults (which may turn a technique on).
OFF = dict(relation_guidance=0.0, excite=0.0, weighting="a1111", attention=None, adapter=[], scale=[], region=[],
           region_mode="attention", bootstrap=0.0, background="1,1,1", guidance_mode="composed", box=[],
           fast=False, cache_interval=1, layout="none", guidance_rescale=0.0)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate images from a prompt",
        description="Generate images and save them as PNGs that carry their parameters (`t2ikit info`). With no "
                    "--out, images go to --out-dir as NNNNN-SEED.png, numbered past the files there; an existing "
                    "file is never replaced without --overwrite. With no --seed, a random seed is drawn, printed "
                    "and stored in the PNG.")
    parser.add_argument("prompt", nargs="?", default=None,
                        help="the text prompt (\"\" for an unconditional image; with --from: the PNG's)")
    parser.add_argument("--from", dest="from_png", default=None, metavar="PNG",
                        help="re-run the parameters stored in a PNG (t2ikit's or AUTOMATIC1111's 'parameters' text); "
                             "the prompt and flags given as well override the PNG's")
    parser.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    parser.add_argument("--sampler", default=None,
                        help="a sampler key (ddim, dpmpp_2m, dpmpp_2m_karras, dpmpp_sde, euler, euler_a, heun, lms, "
                             "unipc, ...) or its AUTOMATIC1111 name ('DPM++ 2M Karras'), any case (default: the "
                             "model's)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 20)")
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale >= 0; 1 = none (default: the model's)")
    parser.add_argument("--guidance-interval", default=None, metavar="START,END",
                        help="CFG only on the steps from START to END (fractions of the steps); outside, the prompt's "
                             "prediction alone, one UNet row instead of two (e.g. 0,0.6; default: 0,1)")
    parser.add_argument("--guidance-rescale", type=float, default=None, metavar="PHI",
                        help="bring each CFG step's prediction toward the spread of the prompt's own prediction, "
                             "weight PHI in [0, 1] (Lin et al. 2024; against over-exposed or, on dark backgrounds, "
                             "darkened objects at high CFG; 0.7 the paper's; default: the model's, 0 = off)")
    parser.add_argument("--negative", default=None, help="negative prompt (default: none)")
    parser.add_argument("--relation-guidance", type=float, default=None, metavar="S",
                        help="step the latent in the first steps so that each stated relation (left of, right of, "
                             "above, below) holds in the cross-attention; S the step size, 0 = off (default: the "
                             "model's; prompts must be Shapes World captions)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first image; image k uses seed + k (default: a random seed, printed and "
                             "stored in the PNG)")
    parser.add_argument("--n", type=int, default=1, help="number of images")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's)")
    parser.add_argument("--out", default=None,
                        help="output PNG; with --n > 1, OUT-0.png, OUT-1.png, ... (default: OUT_DIR/NNNNN-SEED.png)")
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="the folder of numbered images when --out is not given")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--grid", action="store_true",
                        help="also write the images as one grid PNG (OUT-grid.png, or the next number in --out-dir)")
    parser.add_argument("--json", action="store_true", help="print the written paths and parameters as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    from t2ikit.cli.models import add_loading_options

    add_loading_options(parser)  # --device, --dtype, --lora, --embedding
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--attention", default=None, metavar="VARIANT",
                        help="sparse/hierarchical cross-attention: topk:K, topp:P, prune, prune:K, hier:W/P/S "
                             "(default: dense)")
    for name in ("sketch", "depth", "mask", "reference"):  # t2ikit.control: conditions through adapters
        parser.add_argument(f"--{name}", default=None, metavar="PNG", help=f"{name} condition image (image size)")
    parser.add_argument("--adapter", action="append", default=None, metavar="CONDITION=DIR",
                        help="adapter folder for a condition instead of the shipped one (repeatable)")
    parser.add_argument("--scale", action="append", default=None, metavar="NAME=S",
                        help="per-condition scale: text, regions, sketch, depth, mask, reference (repeatable)")
    parser.add_argument("--region", action="append", default=None, metavar="BOX_OR_MASK:PROMPT",
                        help="region prompt: 'x0,y0,x1,y1:a red circle' (pixels) or 'mask.png:...' (repeatable)")
    parser.add_argument("--region-layout", default=None, choices=["auto"],
                        help="auto: a region per object phrase of the prompt, its prompt that phrase, placed where "
                             "--layout auto would box it (seeded by each image's seed), the whole prompt as the base; "
                             "with --region, after those (default: none)")
    parser.add_argument("--region-mode", default=None, choices=["attention", "noise"],
                        help="regions by masked cross-attention or by noise-space blending (MultiDiffusion) "
                             "(default: attention)")
    parser.add_argument("--bootstrap", type=float, default=None, metavar="F",
                        help="with --region or --region-layout: for the first fraction F of the steps, reset the "
                             "latents outside every region to a plain background (MultiDiffusion's bootstrapping); "
                             "0 = off (default: 0)")
    parser.add_argument("--background", default=None, metavar="R,G,B",
                        help="the bootstrap's background colour, three numbers in [0, 1] (default: 1,1,1, white)")
    parser.add_argument("--weighting", default=None, choices=["a1111", "compel", "none"],
                        help="prompt weighting syntax of the prompt and --negative: a1111 '(word:1.3)', '[word]', "
                             "BREAK; compel 'word++', '(words)0.8'; none = the text as written (default: a1111)")
    parser.add_argument("--excite", type=float, default=None, metavar="S",
                        help="Attend-and-Excite: step the latent in the first steps so that every object noun gets "
                             "attention; S the step size, 0 = off (default: 0)")
    parser.add_argument("--guidance-mode", default=None, choices=["composed", "nested"],
                        help="how several conditions (regions in noise mode) combine: composed (Composable "
                             "Diffusion) or nested (InstructPix2Pix) (default: composed)")
    parser.add_argument("--box", action="append", default=None, metavar="X0,Y0,X1,Y1:PHRASE",
                        help="place a phrase of the prompt in a box, in pixels (repeatable; a phrase given several "
                             "boxes is asked for once in each): '0,0,32,32:a red circle'")
    parser.add_argument("--layout", default=None, choices=["none", "auto", "many", "many+relations"],
                        help="auto: plan a box per object of the prompt (counts, sizes, relations; seeded by each "
                             "image's seed; see `t2ikit layout`) and generate under it; many: only for prompts "
                             "naming several objects (a count above one, or three or more objects), which then take "
                             "no relation guidance; many+relations: also for prompts stating a relation, relation "
                             "guidance staying on; none: off (default: the model's, else none)")
    parser.add_argument("--box-guidance", type=float, default=None, metavar="S",
                        help="with --box: step size of the latent update that pulls each phrase's cross-attention "
                             "into its boxes, 0 = off (default: the model's, else 40; 20 for the shipped model)")
    parser.add_argument("--box-mask", type=float, default=None, metavar="F",
                        help="with --box: for the first fraction F of the steps, a phrase's tokens are not attended "
                             "outside its boxes, 0 = off (default: 0)")
    parser.add_argument("--fast", action="store_const", const=True, default=None,
                        help="the measured fast path (docs/FAST.md): classifier-free guidance on the first 70%% of "
                             "the steps only; a setting given explicitly wins")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="denoise through torch.compile's UNet: the first image compiles it, later ones run "
                             "faster (docs/FAST.md); pays with many images")
    parser.add_argument("--cache-interval", type=int, default=None, metavar="N",
                        help="DeepCache: the whole UNet every N-th step, its shallow branch between (default: 1 = off)")
    parser.add_argument("--cache-branch", default=None, choices=["layer", "block"],
                        help="with --cache-interval: the shallow branch recomputed between full steps (default: layer)")
    parser.add_argument("--latent-steps", type=int, default=None, metavar="K",
                        help="relation guidance / excite update the first K steps (default: 5)")
    parser.add_argument("--latent-iterations", type=int, default=None, metavar="I",
                        help="gradient steps per latent-guided step (default: 2)")
    parser.add_argument("--latent-layers", default=None, choices=["all", "encoder"],
                        help="cross-attention maps relation guidance / excite read: all (default), or the encoder's "
                             "only (down and mid blocks), a pass that stops after the mid block (cheaper)")
    parser.add_argument("--latent-pass", default=None, choices=["separate", "shared"],
                        help="relation guidance / excite / boxes: a UNet pass of each of their own beside each guided "
                             "step's prediction (separate, default), or one pass per gradient step for all of them "
                             "that also gives the step's prediction (shared: cheaper, the prediction a gradient step "
                             "behind)")
    parser.set_defaults(func=_generate)


# PNG setting -> generate's argument (t2ikit's names and AUTOMATIC1111's; GenerationSpec.settings writes them)
_FROM_SETTINGS = {"Steps": "steps", "CFG scale": "guidance", "Seed": "seed", "Size": "size", "Model": "model",
                  "Relation guidance": "relation_guidance", "Attend and excite": "excite", "Weighting": "weighting",
                  "Attention": "attention", "Region mode": "region_mode", "Bootstrap": "bootstrap",
                  "Background": "background", "Guidance mode": "guidance_mode", "Box guidance": "box_guidance",
                  "Box mask": "box_mask", "Layout": "layout", "Region layout": "region_layout", "Fast": "fast",
                  "Cache interval": "cache_interval", "Cache branch": "cache_branch",
                  "Latent layers": "latent_layers", "Latent pass": "latent_pass", "Compile": "compile",
                  "Guidance interval": "guidance_interval", "Guidance rescale": "guidance_rescale"}
_CONDITIONS = ("sketch", "depth", "mask", "reference")


def arguments_from_png(path) -> dict:
    """generate's arguments stored in the PNG at `path`: {"prompt", "negative", "steps", "sampler", ...}.

    Reads t2ikit's and AUTOMATIC1111's "parameters" text (t2ikit info). A setting that changes the image but that
    t2ikit does not have (A1111's "Clip skip", "Hires upscale", ...) is an error: the re-run would differ.
    """
    from t2ikit.cli.info import parse_parameters, read_parameters
    from t2ikit.diffusion.samplers import sampler_from_display_name

    parsed = parse_parameters(read_parameters(path))
    settings = dict(parsed["settings"])
    if not settings:
        raise ValueError(f"--from {path}: its parameters carry no settings line (Steps: ..., Seed: ...)")
    if "Edit source" in settings:
        raise ValueError(f"--from {path}: the image was made by `t2ikit edit`; --from re-runs generated images")
    out = {"prompt": parsed["prompt"], "negative": parsed["negative_prompt"] or None}
    sampler = str(settings.pop("Sampler", "DPM++ 2M"))
    schedule = str(settings.pop("Schedule type", ""))  # A1111 >= 1.9 names the sigma schedule apart
    if schedule.lower() == "karras" and not sampler.lower().endswith("karras"):
        sampler += " Karras"
    elif schedule and schedule.lower() not in ("automatic", "karras"):
        raise ValueError(f"--from {path}: schedule type {schedule!r} is not one t2ikit has (Karras or the sampler's own)")
    out["sampler"] = sampler_from_display_name(sampler)
    if out["sampler"] is None:
        raise ValueError(f"--from {path}: sampler {sampler!r} is not one t2ikit has; pass --sampler")
    for key, name in _FROM_SETTINGS.items():
        if key in settings:
            out[name] = settings.pop(key)
    for name in _CONDITIONS:  # "Sketch image: s.png" -> --sketch s.png; "Sketch adapter: DIR" -> --adapter sketch=DIR
        for key in (f"{name.capitalize()} image", f"{name.capitalize()} adapter"):
            if key not in settings:
                continue
            value = str(settings.pop(key))
            if value.startswith("<"):  # GenerationSpec.settings of an in-memory image or module
                raise ValueError(f"--from {path}: {key} was given as an object ({value}), not a file; pass --{name}")
            if key.endswith("image"):
                out[name] = value
            else:
                out.setdefault("adapter", []).append(f"{name}={value}")
    if "Condition scales" in settings:
        out["scale"] = str(settings.pop("Condition scales")).split()
    if "Regions" in settings:
        out["region"] = str(settings.pop("Regions")).split("; ")
    if "Boxes" in settings:
        out["box"] = str(settings.pop("Boxes")).split("; ")
    if "Latent guidance steps" in settings:  # "3x1": latent_steps x latent_iterations
        value = str(settings.pop("Latent guidance steps"))
        try:
            out["latent_steps"], out["latent_iterations"] = (int(v) for v in value.split("x"))
        except ValueError:
            raise ValueError(f"--from {path}: Latent guidance steps must read KxI; got {value!r}") from None
    for name in ("fast", "compile"):
        if name in out:
            out[name] = str(out[name]) == "True"
    if "LoRA" in settings:  # "a.safetensors:0.8; b.safetensors:1" -> --lora a.safetensors:0.8 --lora ...
        out["lora"] = str(settings.pop("LoRA")).split("; ")
    if "Embeddings" in settings:
        out["embedding"] = str(settings.pop("Embeddings")).split("; ")
    for key in list(settings):
        if key.endswith(("hash", "hashes")) or key in ("Version", "VAE"):
            settings.pop(key)  # records of which files were used, not settings
    if settings:
        raise ValueError(f"--from {path}: settings t2ikit does not have would change the image: "
                         f"{', '.join(f'{k}: {v}' for k, v in settings.items())}")
    for name in ("steps", "seed"):
        if name in out and not isinstance(out[name], int):
            raise ValueError(f"--from {path}: {name} must be an integer; got {out[name]!r}")
    return out


def resolved_arguments(args) -> dict:
    """The arguments of this run: the command line's, else with --from the PNG's (an absent technique = off),
    else None for the model's defaults."""
    names = ["prompt", "negative", "model", "sampler", "steps", "guidance", "seed", "size", "relation_guidance",
             "attention", *_CONDITIONS, "adapter", "scale", "region", "region_mode", "bootstrap", "background",
             "weighting", "excite", "guidance_mode", "box", "box_guidance", "box_mask", "layout", "region_layout",
             "fast", "compile", "cache_interval", "cache_branch", "latent_steps", "latent_iterations",
             "latent_layers", "latent_pass", "guidance_interval", "guidance_rescale"]
    given = {name: getattr(args, name) for name in names}
    stored = arguments_from_png(args.from_png) if args.from_png is not None else {}
    if stored and given["model"] is None and stored.get("model") is not None:
        from t2ikit.models.registry import resolve_model

        try:
            resolve_model(str(stored["model"]))
        except ValueError:
            raise ValueError(f"--from {args.from_png}: it was made with model {stored['model']!r}, which t2ikit "
                             "does not know; pass --model") from None
        stored["model"] = str(stored["model"])
    out = {}
    for name in names:
        if given[name] is not None:
            out[name] = given[name]
        elif name in stored:
            out[name] = stored[name]
        elif args.from_png is not None and name in OFF:
            out[name] = OFF[name]
        else:
            out[name] = None
    if out["prompt"] is None:
        raise ValueError("give a PROMPT (or --from PNG)")
    for name in ("lora", "embedding"):  # loading options: the command line's when given, else the PNG's
        out[name] = list(getattr(args, name)) or list(stored.get(name, []))
    for name, value in (("adapter", []), ("scale", []), ("region", []), ("region_mode", "attention"),
                        ("bootstrap", 0.0), ("background", "1,1,1"), ("weighting", "a1111"), ("excite", 0.0),
                        ("guidance_mode", "composed"), ("box", [])):
        if out[name] is None:
            out[name] = value
    return out


def image_grid(images: list):
    """One PIL image of `images` (all one size) in rows of ceil(sqrt(N)), left to right, top to bottom."""
    import math

    from PIL import Image

    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for k, image in enumerate(images):
        grid.paste(image, ((k % columns) * w, (k // columns) * h))
    return grid


def parse_interval(text: str) -> tuple[float, float]:
    """"START,END" fractions of the steps -> a pair."""
    from t2ikit.diffusion.conditioning import check_guidance_interval

    try:
        return check_guidance_interval(tuple(float(v) for v in str(text).split(",")))
    except ValueError as err:
        raise ValueError(f"--guidance-interval {text!r}: {err} (write START,END, e.g. 0,0.6)") from None


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
    import json
    import logging
    import secrets
    import warnings

    from PIL.PngImagePlugin import PngInfo

    from t2ikit.attention.variants import hooks_from_spec
    from t2ikit.cli.info import PNG_KEY, format_parameters
    from t2ikit.cli.logs import report_warnings
    from t2ikit.cli.models import load_pipeline
    from t2ikit.cli.paths import check_output, numbered_paths
    from t2ikit.control.boxes import parse_box
    from t2ikit.control.compose import parse_adapter_args, parse_scales
    from t2ikit.control.regions import parse_region
    from t2ikit.diffusion.samplers import check_sampler
    from t2ikit.text.weighting import check_weighting

    log = logging.getLogger("t2ikit.cli.generate")
    # everything a user typed (or a PNG stored) is checked before the model loads
    a = resolved_arguments(args)
    size = parse_size(a["size"]) if a["size"] is not None else None
    sampler = check_sampler(a["sampler"]) if a["sampler"] is not None else None
    count = args.n if args.n >= 1 else 1
    random_seed = a["seed"] is None
    seed = secrets.randbelow(2**32) if random_seed else a["seed"]
    if args.out is not None:
        paths = output_paths(args.out, count)
        grid_path = paths[0].with_name(f"{Path(args.out).stem}-grid.png") if args.grid else None
    else:
        paths, grid_path = numbered_paths(args.out_dir, [seed + k for k in range(count)], args.grid)
    for p in paths + ([grid_path] if grid_path else []):
        check_output(p, (".png",), "--out", overwrite=args.overwrite)
    check_weighting([a["prompt"]] + ([a["negative"]] if a["negative"] else []), a["weighting"])
    scales = parse_scales(a["scale"])
    for r in a["region"]:
        parse_region(r)
    adapters = parse_adapter_args(a["adapter"])
    for name, folder in adapters.items():
        if not a[name]:
            raise ValueError(f"--adapter {name}={folder} given without --{name}")
    if a["attention"] is not None:
        hooks_from_spec(a["attention"])
    boxes = [parse_box(b, size) for b in a["box"]]
    interval = parse_interval(a["guidance_interval"]) if a["guidance_interval"] is not None else None
    if (a["box_guidance"] is not None or a["box_mask"] is not None) and not boxes and a["layout"] in (None, "none"):
        raise ValueError("--box-guidance and --box-mask act on boxes: give --box or a --layout too")
    techniques = dict(boxes=boxes, layout=a["layout"], region_layout=a["region_layout"], guidance_interval=interval,
                      **{k: a[k] for k in ("box_guidance", "box_mask", "fast", "compile", "cache_interval",
                                           "cache_branch", "latent_steps", "latent_iterations", "latent_layers",
                                           "latent_pass", "guidance_rescale")
                         if a[k] is not None},
        weighting=a["weighting"], excite=a["excite"], attention=a["attention"], adapters=adapters, scales=scales,
        regions=a["region"], region_mode=a["region_mode"], bootstrap=a["bootstrap"],
        background=parse_background(a["background"]), guidance_mode=a["guidance_mode"],
        **{name: a[name] for name in _CONDITIONS if a[name]},
    )
    pipe = load_pipeline(a["model"], args.threads, args.device, args.dtype, a["lora"], a["embedding"])
    log.info("model %s from %s on %s (%s)", pipe.name, pipe.path, pipe.device, pipe.dtype)
    if random_seed and not args.quiet and not args.json:
        print(f"seed {seed} (random; --seed {seed} makes the same image)", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = pipe.make_spec(a["prompt"], a["negative"], a["steps"], a["guidance"], seed, args.n, size,
                              sampler, a["relation_guidance"], **techniques)
        result = pipe.run(spec, progress=not args.quiet)
    report_warnings(caught, "generate")  # prompt warnings as sentences, not as a source line of pipeline.py
    images = result.pil()
    records = []
    for path, image, image_seed in zip(paths, images, result.seeds):
        settings = {**spec.settings(), "Seed": image_seed, "Model": pipe.name, **pipe.weights_settings()}
        text = format_parameters(spec.prompts[0], a["negative"], settings)
        info = PngInfo()
        info.add_text(PNG_KEY, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, pnginfo=info)
        records.append({"path": str(path), "seed": image_seed, "parameters": text})
        log.info("wrote %s (seed %d)", path, image_seed)
    if grid_path is not None:
        info = PngInfo()
        info.add_text(PNG_KEY, format_parameters(spec.prompts[0], a["negative"],
                                                   {**spec.settings(), "Model": pipe.name, **pipe.weights_settings()}))
        grid_path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(images).save(grid_path, pnginfo=info)
    if args.json:
        print(json.dumps({"images": records, "grid": str(grid_path) if grid_path else None, "prompt": spec.prompts[0],
                          "negative_prompt": a["negative"], "seed": seed, "random_seed": random_seed,
                          "settings": {**spec.settings(), "Model": pipe.name, **pipe.weights_settings()}, "model_path": str(pipe.path)},
                         indent=2))
    else:
        for r in records:
            print(r["path"])
        if grid_path is not None:
            print(grid_path)
    if not args.quiet and not args.json:
        print(f"{len(paths)} image(s) from {pipe.path}", file=sys.stderr)
    return 0
