"""`t2ikit world sample`: look at Shapes World; `t2ikit world score`: the oracle's verdict on any image."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("world", help="look at Shapes World")
    verbs = parser.add_subparsers(dest="world_verb", metavar="WORLD_VERB", required=True)
    sample = verbs.add_parser("sample", help="write a captioned grid of scenes")
    sample.add_argument("--n", type=int, default=16, help="number of scenes")
    sample.add_argument("--out", default="grid.png", help="output PNG")
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sample.add_argument("--seed", type=int, default=0, help="world seed")
    sample.add_argument("--start", type=int, default=0, help="index of the first scene")
    sample.add_argument("--category", default=None, help="a CompBench category (default: the training mix)")
    sample.add_argument("--split", default="train", choices=["train", "heldout"])
    sample.add_argument("--resolution", type=int, default=64)
    sample.add_argument("--modalities", action="store_true",
                        help="one row per scene: rgb, depth, sketch, instances, classes, reference")
    sample.add_argument("--columns", type=int, default=4)
    sample.set_defaults(func=_sample)
    score = verbs.add_parser(
        "score", help="the oracle's checks of images against a Shapes World prompt",
        description="Read each image with the oracle (objects, colours, sizes, positions, background, fill) and "
                    "check every statement of the prompt. The prompt is --prompt, or else the one `t2ikit "
                    "generate` stored in the PNG; weighting syntax is read as its plain text. Exit status 0 when "
                    "every image passes, 1 when one fails.")
    score.add_argument("images", nargs="+", metavar="IMAGE", help="square images, at least 32 px (PNG, JPEG, ...)")
    score.add_argument("--prompt", default=None, help="the caption to check (default: the PNG's stored prompt)")
    score.add_argument("--json", action="store_true", help="print one JSON object per image")
    score.set_defaults(func=_score)


def _sample(args) -> int:
    import numpy as np

    from t2ikit.world.caption import write_caption
    from t2ikit.world.categories import CATEGORIES
    from t2ikit.world.grid import captioned_grid
    from t2ikit.world.render import class_colour_map, render
    from t2ikit.world.scene import sample_scene, scene_rng

    from t2ikit.cli.paths import check_output

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    check_output(args.out, (".png",), "--out", overwrite=args.overwrite)
    if args.category is not None and args.category not in CATEGORIES:
        raise ValueError(f"unknown --category {args.category!r}; allowed: {', '.join(CATEGORIES)}")
    images, captions = [], []
    for i in range(args.start, args.start + args.n):
        scene = sample_scene(args.seed, i, category=args.category, split=args.split)
        caption = write_caption(scene.spec, scene_rng(args.seed ^ 0xC0FFEE, i))
        m = render(scene, args.resolution)
        if args.modalities:
            grey = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
            row = [m.rgb, grey(m.depth), grey(m.sketch), grey(m.instances / 4.0), class_colour_map(m.classes),
                   m.reference]
            names = ["rgb: " + caption, "depth", "sketch", "instances", "classes", "reference"]
            images += row
            captions += names
        else:
            images.append(m.rgb)
            captions.append(caption)
    columns = 6 if args.modalities else args.columns
    captioned_grid(images, captions, columns=columns).save(args.out)
    print(f"wrote {args.out}: {args.n} scenes (seed {args.seed}, {args.category or 'training mix'}, {args.split})")
    return 0


def _prompt_of(path: str, given: str | None) -> str:
    """--prompt, else the prompt of the PNG's "parameters" chunk (t2ikit info); plain text of weighted syntax."""
    from t2ikit.text.weighting import parse_weighted

    if given is None:
        from PIL import Image

        from t2ikit.cli.info import PNG_KEY, parse_parameters

        with Image.open(path) as im:
            text = im.info.get(PNG_KEY)
        if not text:
            raise ValueError(f"{path}: no --prompt given and the image stores none (t2ikit generate writes it "
                             "into its PNGs); pass --prompt TEXT")
        given = parse_parameters(text)["prompt"]
    return parse_weighted(given).plain


def score_file(path: str, prompt: str | None = None) -> dict:
    """The oracle's verdict on one image file: {"image", "prompt", "passed", "checks", "background", "objects"};
    ValueError naming the file for an unreadable image, a wrong size, or a prompt the world cannot read."""
    from dataclasses import asdict

    from t2ikit.diffusion.inversion import load_image
    from t2ikit.world.caption import parse_caption
    from t2ikit.world.oracle import as_reference_rgb, score

    pixels = load_image(path)[0]  # ValueError naming a missing or unreadable file
    text = _prompt_of(path, prompt)
    try:
        spec = parse_caption(text)
        image = as_reference_rgb(pixels)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    result = score(image, spec)
    return {
        "image": str(path),
        "prompt": text,
        "passed": result.all_passed,
        "checks": [{"name": c.name, "kind": c.kind, "passed": c.passed, "detail": c.detail} for c in result.checks],
        "background": result.reading.background,
        "objects": [asdict(d) for d in result.reading.detections],
    }


def _score(args) -> int:
    import json

    results = [score_file(path, args.prompt) for path in args.images]  # every file checked before printing
    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        n_ok = sum(c["passed"] for c in r["checks"])
        print(f"{r['image']}: {'PASS' if r['passed'] else 'FAIL'} ({n_ok}/{len(r['checks'])} checks) {r['prompt']!r}")
        for c in r["checks"]:
            print(f"  {'ok  ' if c['passed'] else 'MISS'} {c['name']}: {c['detail']}")
        seen = "; ".join(f"{d['size']} {d['colour']} {d['shape'] or 'blob'} at ({d['centre'][0]:.0f}, "
                         f"{d['centre'][1]:.0f})" for d in r["objects"]) or "no objects"
        print(f"  seen: {r['background']} background; {seen}")
    return 0 if all(r["passed"] for r in results) else 1  # 1: a check failed
