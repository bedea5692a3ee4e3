"""`t2ikit layout PROMPT`: the boxes layout-first generation would place (control.layout), as JSON and a PNG.

The plan is what `t2ikit generate PROMPT --layout auto --seed S` generates under; edit it and pass the boxes
back with `--box` to generate under your own plan.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("layout", help="plan boxes for a prompt's objects (layout-first generation)")
    p.add_argument("prompt", help="the prompt whose objects, counts, sizes and relations are planned")
    p.add_argument("--model", default=None, help="model folder or name whose prompt parser reads the prompt "
                                                  "(default: the shipped model, Shapes World's grammar)")
    p.add_argument("--parser", default=None, help="read the prompt with this parser instead of the model's "
                                                  "(shapes-world, english)")
    p.add_argument("--seed", type=int, default=0, help="the plan's seed (generate --layout auto uses the image's)")
    p.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default: the model's)")
    p.add_argument("--out", default=None, help="also draw the plan into this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_layout)


def _layout(args) -> int:
    import json

    from t2ikit.cli.generate import parse_size
    from t2ikit.cli.paths import check_output
    from t2ikit.control.layout import check_gap, check_sides, draw_layout, plan_layout
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import check_model_folder, default_parser_name, read_folder_config
    from t2ikit.text.parser import PromptParseError, get_parser

    out = check_output(args.out, (".png",), "--out", overwrite=args.overwrite) if args.out else None
    folder = check_model_folder(resolve_model(args.model))
    config = read_folder_config(folder)
    parser = get_parser(args.parser or default_parser_name(config))
    # the model's own box sizes and gap between boxes, as generate plans them
    sides, gap = check_sides(config["t2ikit"].get("layout_sides")), check_gap(config["t2ikit"].get("layout_gap"))
    if args.size is not None:
        size = parse_size(args.size)
    else:  # the model's own image size, read from its UNet and VAE configs (no weights loaded)
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        side = unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1)
        size = (side, side)
    try:
        structure = parser.parse(args.prompt)
    except PromptParseError as err:
        raise ValueError(f"the {parser.name} parser cannot read the prompt: {err}") from None
    boxes = plan_layout(structure, size, args.seed, sides, gap)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_layout(boxes, size).save(out)
    if args.json:
        print(json.dumps({"prompt": args.prompt, "parser": parser.name, "seed": args.seed,
                          "size": f"{size[1]}x{size[0]}",
                          "boxes": [{"box": list(b.xyxy), "phrase": b.phrase, "arg": b.spec()} for b in boxes]},
                         indent=2))
    else:
        for b in boxes:
            print(f"--box '{b.spec()}'")
        if out is not None:
            print(out, file=sys.stderr)
    return 0
