"""`t2ikit world sample`: look at Shapes World."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("world", help="look at Shapes World")
    verbs = parser.add_subparsers(dest="world_verb", metavar="WORLD_VERB", required=True)
    sample = verbs.add_parser("sample", help="write a captioned grid of scenes")
    sample.add_argument("--n", type=int, default=16, help="number of scenes")
    sample.add_argument("--out", default="grid.png", help="output PNG")
    sample.add_argument("--seed", type=int, default=0, help="world seed")
    sample.add_argument("--start", type=int, default=0, help="index of the first scene")
    sample.add_argument("--category", default=None, help="a CompBench category (default: the training mix)")
    sample.add_argument("--split", default="train", choices=["train", "heldout"])
    sample.add_argument("--resolution", type=int, default=64)
    sample.add_argument("--modalities", action="store_true",
                        help="one row per scene: rgb, depth, sketch, instances, classes, reference")
    sample.add_argument("--columns", type=int, default=4)
    sample.set_defaults(func=_sample)


def _sample(args) -> int:
    import numpy as np

    from t2ikit.world.caption import write_caption
    from t2ikit.world.categories import CATEGORIES
    from t2ikit.world.grid import captioned_grid
    from t2ikit.world.render import class_colour_map, render
    from t2ikit.world.scene import sample_scene, scene_rng

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
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
