"""`t2ikit edit IMAGE --source TEXT --target TEXT | --instruction TEXT --out PATH`: text-guided editing."""

from __future__ import annotations

import sys



def register(subparsers) -> None:
    p = subparsers.add_parser("edit", help="edit an image by text: prompt swap, Prompt-to-Prompt, blended latents, masks")
    p.add_argument("image", help="PNG (or any image PIL reads) of a size the model takes")
    p.add_argument("--source", default=None, help="a prompt that describes the image")
    p.add_argument("--target", default=None, help="the prompt the edited image should match")
    p.add_argument("--instruction", default=None, help="e.g. 'change the red circle to a blue square'")
    p.add_argument("--preset", default=None, choices=["shapes-world"],
                   help="the best measured settings (docs/results/edit.md 8-9) for Shapes World images with the shipped "
                        "model: blend, guidance 5, detector mask, class-mask adapter, local prompt; size and relation "
                        "edits from fresh noise. Flags given as well override it")
    p.add_argument("--method", default=None, choices=["p2p", "swap", "blend"],
                   help="edit method (default p2p; blend: SDEdit + Blended Latent Diffusion, give it --guidance > 1, e.g. 5)")
    p.add_argument("--mode", default="auto", choices=["auto", "replace", "refine", "reweight"],
                   help="Prompt-to-Prompt alignment")
    p.add_argument("--cross-steps", type=int, default=None, help="p2p: steps of cross-attention injection")
    p.add_argument("--self-steps", type=int, default=None, help="p2p: steps of self-attention injection")
    p.add_argument("--reweight", action="append", default=None, metavar="WORD=FACTOR",
                   help="p2p: scale the attention to a target word (repeatable)")
    p.add_argument("--mask", default=None,
                   help="'auto' (DiffEdit), 'attention' (cross-attention of the edited words), 'detect' (Shapes World's "
                        "detector finds the edited object) or a mask PNG of the image's size (white = edit)")
    p.add_argument("--mask-snap", type=int, default=None, metavar="PX",
                   help="snap the mask to the image's objects, their boxes grown by PX pixels")
    p.add_argument("--strength", type=float, default=None, help="blend: fraction of the schedule re-noised (default 0.8)")
    p.add_argument("--start", default=None, choices=["inverted", "noise"],
                   help="blend: the masked region starts from the inverted latent (default) or the image freshly noised")
    p.add_argument("--sketch", type=float, default=0.0, metavar="SCALE",
                   help="blend: hold the source's outlines with the shipped sketch adapter at this scale (0: off)")
    p.add_argument("--target-outline", action="store_true",
                   help="blend + --sketch, shape/size edits: the sketch holds the target's outline, drawn from Shapes "
                        "World's shape vocabulary in the edited object's box (found inside --mask)")
    p.add_argument("--shape-mask", type=float, default=None, metavar="SCALE",
                   help="blend: hold the target shape's silhouette in the object's box with the shipped class-mask "
                        "adapter at this scale (0: off)")
    p.add_argument("--local-prompt", action="store_true", default=None,
                   help="blend: sample the masked object under its own phrase alone (with --uncond negative-prompt, "
                        "its source phrase the negative)")
    p.add_argument("--weighting", default="a1111", choices=["a1111", "compel", "none"],
                   help="prompt weighting syntax of --source and --target: a1111 '(word:1.3)', '[word]'; compel "
                        "'word++'; none = the text as written. Each prompt one 77-token text (no BREAK)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default 1 = none)")
    p.add_argument("--uncond", default=None, choices=["negative-prompt", "null-text", "none"],
                   help="swap/p2p: the inversion for guidance > 1 (default negative-prompt); blend: the CFG negative, "
                        "none = the empty prompt (default), negative-prompt = the source prompt")
    p.add_argument("--model", default=None, help="model folder or name (default: the shipped model)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--save-mask", default=None, help="also write the mask used to this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--json", action="store_true", help="print the written paths and parameters as JSON")
    from t2ikit.cli.models import add_loading_options

    add_loading_options(p)  # --device, --dtype, --lora, --embedding
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    p.set_defaults(func=_edit)


def _reweights(items) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for item in items:
        word, sep, factor = item.partition("=")
        try:
            out[word.strip()] = float(factor)
        except ValueError:
            raise ValueError(f"--reweight must be WORD=FACTOR, e.g. red=2; got {item!r}") from None
        if not sep or not word.strip():
            raise ValueError(f"--reweight must be WORD=FACTOR, e.g. red=2; got {item!r}")
    return out


def _edit_kind(args) -> str:
    """What a preset needs to know: "object", "size" or "relation" (t2ikit.world.edit_support.edit_kind)."""
    from t2ikit.world.edit_support import edit_kind
    from t2ikit.world.instructions import instruction_prompts, parse_instruction

    if args.instruction is not None:
        return edit_kind(*instruction_prompts(parse_instruction(args.instruction)))
    return edit_kind(args.source, args.target)


def _read_instruction(args) -> None:
    """Read --instruction before the model loads, as the edit will: with Shapes World's reader, else with the
    reader of the model folder's prompt parser (English for a Stable Diffusion folder); ValueError names the part."""
    from t2ikit.models.registry import resolve_model
    from t2ikit.pipeline import check_model_folder, default_parser_name, read_folder_config
    from t2ikit.text.parser import get_instruction_reader
    from t2ikit.world.instructions import parse_instruction

    try:
        parse_instruction(args.instruction)
    except ValueError:
        reader = get_instruction_reader(default_parser_name(read_folder_config(check_model_folder(
            resolve_model(args.model)))))
        if reader is None:
            raise
        reader.read(args.instruction)


def _check_memory(pipe, options, size: tuple[int, int]) -> None:
    """Refuse an edit of an image of `size` the device cannot hold. Its passes run one after another
    (t2ikit.edit.run), so each is checked: the inversion (null-text's optimisation runs with gradients),
    DiffEdit's mask (2 x mask_samples rows in one UNet call) or the attention mask (cross-attention captured),
    and the edit itself (Prompt-to-Prompt samples source and target rows and reads their attention)."""
    from t2ikit.models.memory import check_memory

    guided = options.guidance != 1.0
    p2p = options.method == "p2p"
    check_memory(pipe, 1, size, rows_per_image=1, what="edit", encode=True, decode=False,
                 grad=guided and options.method != "blend" and options.uncond == "null-text")
    if options.mask == "auto":
        check_memory(pipe, 1, size, rows_per_image=2 * options.mask_samples, what="edit", decode=False)
    elif options.mask == "attention":
        check_memory(pipe, 1, size, rows_per_image=1, attention_maps=True, what="edit", decode=False)
    check_memory(pipe, 1, size, rows_per_image=(2 if p2p else 1) * (2 if guided else 1), attention_maps=p2p,
                 self_attention_probs=p2p, what="edit")


def _edit(args) -> int:
    import warnings

    from t2ikit.cli.logs import report_warnings
    from t2ikit.cli.models import load_pipeline
    from t2ikit.cli.paths import check_output, input_image_size
    from t2ikit.edit import EditOptions, edit
    out = check_output(args.out, (".png",), "--out", overwrite=args.overwrite)
    if args.save_mask:
        check_output(args.save_mask, (".png",), "--save-mask", overwrite=args.overwrite)
    if args.instruction is None and (args.source is None or args.target is None):
        raise ValueError("give --source and --target, or --instruction")
    if args.instruction is not None:
        if args.target is not None:
            raise ValueError("give --target or --instruction, not both")
        _read_instruction(args)  # before the model loads
    from t2ikit.text.weighting import check_weighting

    check_weighting([p for p in (args.source, args.target) if p is not None], args.weighting)  # caret errors
    size = input_image_size(args.image)  # an unreadable file fails before the model loads; nothing decoded yet
    given = {k: v for k, v in dict(method=args.method, mask=args.mask, guidance=args.guidance, start=args.start,
                                   mask_snap=args.mask_snap, shape_mask=args.shape_mask, local_prompt=args.local_prompt,
                                   strength=args.strength).items() if v is not None}
    common = dict(mode=args.mode, cross_steps=args.cross_steps, self_steps=args.self_steps, steps=args.steps,
                  reweight=_reweights(args.reweight), uncond=args.uncond, sketch=args.sketch,
                  target_outline=args.target_outline, weighting=args.weighting)
    if args.preset is not None:
        options = EditOptions.preset(args.preset, kind=_edit_kind(args), **common, **given)
    else:
        options = EditOptions(**common, **given).check()
    pipe = load_pipeline(args.model, args.threads, args.device, args.dtype, args.lora, args.embedding)
    _check_memory(pipe, options, size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = edit(pipe, args.image, args.source, args.target, instruction=args.instruction, options=options,
                      progress=not args.quiet)
    report_warnings(caught, "edit")
    from PIL.PngImagePlugin import PngInfo

    from t2ikit.cli.info import PNG_KEY, format_parameters

    settings = {**options.settings(), "Edit source": result.source_prompts[0], "Edit image": str(args.image),
                "Model": pipe.name, **pipe.weights_settings()}
    if args.instruction is not None:
        settings["Edit instruction"] = args.instruction
    text = format_parameters(result.target_prompts[0], None, settings)
    info = PngInfo()
    info.add_text(PNG_KEY, text)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.pil()[0].save(out, pnginfo=info)
    mask_written = None
    if args.save_mask and result.mask is not None:
        from PIL import Image

        Image.fromarray((result.mask[0, 0].numpy() * 255).astype("uint8")).save(args.save_mask)
        mask_written = args.save_mask
    if args.json:
        import json

        print(json.dumps({"image": str(out), "mask": mask_written, "source_prompt": result.source_prompts[0],
                          "target_prompt": result.target_prompts[0], "settings": settings, "parameters": text},
                         indent=2))
        return 0
    if not args.quiet:
        print(f"{result.source_prompts[0]!r} -> {result.target_prompts[0]!r}", file=sys.stderr)
    print(out)
    return 0
