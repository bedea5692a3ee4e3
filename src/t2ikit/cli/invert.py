"""`t2ikit invert IMAGE --prompt TEXT --out latents.safetensors`: DDIM inversion of a real image."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("invert", help="DDIM-invert an image to the noise that regenerates it")
    p.add_argument("image", help="PNG (or any image PIL reads) of a size the model takes")
    p.add_argument("--prompt", required=True, help="a prompt that describes the image")
    p.add_argument("--out", required=True, help="output .safetensors: latents (x_T), trajectory, embeddings")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale it must hold under (1 = none)")
    p.add_argument("--uncond", default="null-text", choices=["null-text", "negative-prompt", "none"],
                   help="how guidance > 1 is kept on the inverted trajectory")
    p.add_argument("--check", action="store_true", help="also reconstruct and print the PSNR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the written path and parameters as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    from t2ikit.cli.models import add_loading_options

    add_loading_options(p)  # --device, --dtype, --lora, --embedding
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.set_defaults(func=_invert)


def _invert(args) -> int:
    import warnings

    from t2ikit.cli.logs import report_warnings
    from t2ikit.cli.models import load_pipeline
    from t2ikit.cli.paths import check_output, input_image_size
    from t2ikit.diffusion.inversion import invert, psnr, reconstruct, save_inversion
    from t2ikit.models.memory import check_memory

    check_output(args.out, (".safetensors",), "--out", case_sensitive=True,  # save_inversion checks it exactly
                 overwrite=args.overwrite)
    size = input_image_size(args.image)  # an unreadable file fails before the model loads; nothing decoded yet
    pipe = load_pipeline(args.model, args.threads, args.device, args.dtype, args.lora, args.embedding)
    guided = args.guidance != 1.0
    # one row, with gradients for null-text's optimisation; --check samples back (2 rows if guided) and decodes
    check_memory(pipe, 1, size, rows_per_image=2 if args.check and guided else 1, what="invert", encode=True,
                 decode=args.check, grad=guided and args.uncond == "null-text")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inv = invert(pipe, args.image, args.prompt, steps=args.steps, guidance=args.guidance, uncond=args.uncond,
                     progress=not args.quiet)
    report_warnings(caught, "invert")
    meta = {"model": pipe.name, "steps": args.steps, "image": str(args.image), "uncond": args.uncond}
    if args.check:
        meta["psnr"] = f"{float(psnr(reconstruct(pipe, inv), inv.images)[0]):.2f}"
        if not args.quiet and not args.json:
            print(f"reconstruction PSNR {meta['psnr']} dB", file=sys.stderr)
    path = save_inversion(inv, args.out, meta)
    if args.json:
        import json

        print(json.dumps({"latents": str(path), "prompt": args.prompt, "guidance": args.guidance, **meta}, indent=2))
    else:
        print(path)
    return 0
