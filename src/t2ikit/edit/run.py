"""Text-guided editing of real images: invert, then regenerate under the target prompt.

Methods (one `edit` call, `EditOptions.method`):

    swap  prompt swap in noise space: the inverted x_T is sampled under the target prompt
    p2p   Prompt-to-Prompt (Hertz et al. 2022): source and target sampled in one batch from x_T, the
          source's attention injected into the target (t2ikit.attention.p2p) for the first steps
    blend SDEdit + Blended Latent Diffusion (t2ikit.edit.blend): the inverted latent at `strength` of
          the schedule is sampled under the target prompt at real guidance (the source prompt as the
          negative), the latents outside the mask reset to the inverted source's at every step;
          optionally the shipped sketch adapter holds the source's outlines (`sketch`); for a shape or size
          edit the sketch can hold the target's outline, drawn in the edited object's box
          (`target_outline`), and the class-mask adapter its silhouette (`shape_mask`)

Each can keep the image outside a mask (`EditOptions.mask`): "auto" is DiffEdit's mask (Couairon et
al. 2022, Sec. 3.1: where the noise predictions under the source and the target prompts differ),
"attention" the source's cross-attention to the edited words (P2P's local blend, Hertz et al. 2022,
Sec. 3.3), "detect" the boxes of the objects a detector finds for the edited source phrase (a
Grounded-SAM-style detector mask), or a user mask (t2ikit.edit.masks). `mask_snap` snaps a rough mask to
the image's objects (`t2ikit.edit.outlines.snap_mask`). Inside the loop the target latent outside the
mask is reset to the inverted trajectory at every step, and the decoded image is composited with the
input outside the mask, so those pixels are exactly kept.

Instructions ("change the red circle to a blue square"), mask="detect", target_outline, shape_mask,
local_prompt and relation edits (a blend that moves an object) need a scene support that knows the
image's objects (t2ikit.edit.support; Shapes World's is registered by `import t2ikit`). Without one the
other options work on any model and image, and asking for these is a ValueError before any compute.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import torch
import torch.nn.functional as F

from t2ikit.attention.p2p import DEFAULT_CROSS_FRACTION, DEFAULT_SELF_FRACTION, PromptToPromptHook, align, resolve_steps
from t2ikit.attention.processor import AttentionController
from t2ikit.control import compose
from t2ikit.diffusion.conditioning import cat_added
from t2ikit.diffusion.inversion import (Inversion, added_at, added_rows, ddim_denoise, invert, load_image,
                                        size_multiple)
from t2ikit.edit.blend import blended_denoise
from t2ikit.edit.masks import attention_mask, diffedit_mask, edited_positions, load_mask, to_latent_mask
from t2ikit.edit.options import MASKS, EditOptions, EditResult, EditWarning
from t2ikit.edit.outlines import sketch_for_edit, snap_mask
from t2ikit.edit.support import SceneSupport, get_scene_support, scene_support_names
from t2ikit.text.parser import InstructionReader, get_instruction_reader
from t2ikit.text.weighting import check_token_aligned, check_weighted_prompt, plain_text


def _as_list(x, n: int, name: str) -> list[str]:
    items = [x] * n if isinstance(x, str) else list(x) if isinstance(x, (list, tuple)) else None
    if items is None or len(items) != n or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{name} must be a str or a list of {n} str (one per image); got {x!r}")
    return items


def instruction_reader(pipe, support: SceneSupport | None, instruction: str | None) -> InstructionReader | None:
    """The reader of `instruction`: the scene support's when it reads it, else the one registered for the model's
    prompt parser (`text.parser.get_instruction_reader`: English for a Stable Diffusion folder); None for no
    instruction or no reader (the support's ValueError, naming the unreadable part, when only it could read)."""
    if instruction is None:
        return None
    own = get_instruction_reader(getattr(pipe, "parser", None))
    if support is not None:
        try:
            support.instructions.read(instruction)
            return support.instructions
        except ValueError:
            if own is None:
                raise
    return own


def _prompts(support: SceneSupport | None, reader: InstructionReader | None, images: torch.Tensor, source, target,
             instruction: str | None) -> tuple[list[str], list[str]]:
    """The source and target prompt of each image: as given, or read from the instruction."""
    n = len(images)
    if instruction is None:
        if source is None or target is None:
            raise ValueError("give source and target prompts, or an instruction")
        return _as_list(source, n, "source"), _as_list(target, n, "target")
    if target is not None:
        raise ValueError("give either target or instruction, not both")
    ins = reader.read(instruction)
    if source is not None:
        pairs = [reader.prompts(ins, s) for s in _as_list(source, n, "source")]
    elif support is None or reader is not support.instructions:  # the instruction's object alone
        pairs = [reader.prompts(ins)] * n
    else:  # what the support reads in the image, else the instruction's object alone
        pairs = []
        for d in [support.describe(im) for im in images]:
            try:
                pairs.append(reader.prompts(ins, d) if d else reader.prompts(ins))
            except ValueError:
                pairs.append(reader.prompts(ins))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def edit(pipe, image, source: str | list[str] | None = None, target: str | list[str] | None = None,
         instruction: str | None = None, options: EditOptions | None = None, inversion: Inversion | None = None,
         progress: bool = False, **kwargs) -> EditResult:
    """Edit `image` (path, PIL, array, tensor or a (B, 3, H, W) batch) from `source` to `target` prompt.

    Or give `instruction` ("change the red circle to a blue square"; read by the scene support's
    InstructionReader), with or without `source` (without it the source prompt is what the scene support
    reads in the image, else the instruction's object alone).
    Options: an EditOptions, or its fields as keyword arguments. An `inversion` of the same images under
    the same source prompts (and steps, guidance) may be passed to edit again without inverting again.
    """
    if options is not None and kwargs:
        raise ValueError("give options either as an EditOptions or as keyword arguments, not both")
    opts = (options or EditOptions(**kwargs)).check()
    support = get_scene_support(opts.support)
    reader = instruction_reader(pipe, support, instruction)
    _check_support(support, opts, instruction, reader)
    images = load_image(image, size_multiple(pipe))
    n = len(images)
    if instruction is not None and source is not None:
        for s in _as_list(source, n, "source"):
            if plain_text(s, opts.weighting) != s:
                raise ValueError(f"an instruction reads the source prompt as plain text; {s!r} has weighting syntax: "
                                 "give it without, or give a target prompt instead of the instruction")
    written = _prompts(support, reader, images, source, target, instruction)  # as given: encoded with their weights
    for p in dict.fromkeys(written[0] + written[1]):
        check_weighted_prompt(pipe.tokenizer, p, opts.weighting)
    # what alignment, masks and the scene support read: the plain texts, token for token the weighted ones'
    sources, targets = ([check_token_aligned(pipe.tokenizer, p, opts.weighting, "edit") for p in side]
                        for side in written)
    if opts.local_prompt and (sources, targets) != written:
        raise ValueError("local_prompt samples under the edited object's phrase read from the plain prompts, so their "
                         "weights would be lost; give the prompts without weighting syntax or turn local_prompt off")
    result = _edit(pipe, opts, support, images, sources, targets, written, _auto_mask(opts), inversion, progress)
    return replace(result, source_prompts=written[0], target_prompts=written[1])


def _auto_mask(opts: EditOptions) -> str | None:
    """The automatic mask asked for ("auto", "attention", "detect"), None for none or a user mask."""
    return opts.mask if isinstance(opts.mask, str) and opts.mask in MASKS else None


def _edit(pipe, opts: EditOptions, support: SceneSupport | None, images, sources, targets, written, auto_mask,
          inversion: Inversion | None, progress: bool) -> EditResult:
    """`edit` after its checks: `sources`/`targets` the plain texts, `written` the prompts as given."""
    n = len(images)
    h, w = images.shape[-2:]
    user_mask = None if opts.mask is None or auto_mask else load_mask(opts.mask, (h, w), n)
    positions = names = moves = None
    if opts.method == "blend" and support is not None:  # a relation edit moves an object (support.plan_move)
        found = [support.relation_move(s, t) for s, t in zip(sources, targets)]
        if any(m is not None for m in found):
            if not all(m is not None for m in found):
                raise ValueError("this blend batch mixes relation edits (moves) with object edits; edit them in "
                                 "separate calls")
            if auto_mask != "detect" or not opts.shape_mask or opts.target_outline:
                raise ValueError("a relation edit with method='blend' moves its object: give mask='detect' (it finds "
                                 "both objects in the image) and shape_mask > 0 (the class-mask adapter "
                                 "holds the object at its new place); target_outline does not apply")
            moves = found
    if auto_mask == "attention":
        positions = [edited_positions(pipe.tokenizer, s, t) for s, t in zip(sources, targets)]
    elif auto_mask == "detect" and moves is None:  # the edited object of each image, by name
        names = [support.edited_object(s, t) for s, t in zip(sources, targets)]
    local = None  # the edited object's phrase alone, before and after
    if opts.target_outline or opts.shape_mask or opts.local_prompt:
        local = None if moves is not None else [support.local_prompts(s, t) for s, t in zip(sources, targets)]
    adapters = {}
    for name, scale in (("sketch", opts.sketch), ("mask", opts.shape_mask)):
        if scale:
            adapters[name] = compose.resolve_adapter(pipe, name, None)
    hook = None
    if opts.method == "p2p":
        alignments = []
        for s, t in zip(sources, targets):
            mode = opts.mode
            if mode == "auto":  # word swap when the token counts match, else refine; reweight applies to either
                mode = "replace" if len(pipe.tokenizer(s)["input_ids"]) == len(pipe.tokenizer(t)["input_ids"]) \
                    else "refine"
            alignments.append(align(pipe.tokenizer, s, t, mode, opts.reweight))
        hook = PromptToPromptHook(alignments,
                                  resolve_steps(opts.cross_steps, opts.steps, DEFAULT_CROSS_FRACTION, "cross_steps"),
                                  resolve_steps(opts.self_steps, opts.steps, DEFAULT_SELF_FRACTION, "self_steps"))
    elif opts.reweight or opts.cross_steps is not None or opts.self_steps is not None:
        raise ValueError("reweight, cross_steps and self_steps are Prompt-to-Prompt options; use method='p2p'")
    if inversion is not None:  # blend uses only the (unguided) trajectory, so any guidance's inversion serves
        if inversion.prompts != written[0] or inversion.schedule.steps != opts.steps or (
                inversion.guidance != opts.guidance and opts.method != "blend"):
            raise ValueError("the inversion passed was made with other prompts, steps or guidance than this edit")
    messages = [] if support is None else support.source_mismatches(images, sources)
    for msg in messages:
        warnings.warn(msg, EditWarning, stacklevel=2)

    # --- compute ---
    if inversion is None:
        blend = opts.method == "blend"
        inversion = invert(pipe, images, written[0], steps=opts.steps, guidance=1.0 if blend else opts.guidance,
                           uncond="negative-prompt" if blend else opts.uncond, progress=progress,
                           weighting=opts.weighting)
    schedule, traj = inversion.schedule, inversion.trajectory
    factor = pipe.vae_scale_factor
    target_cond = pipe._encode_each(written[1], opts.weighting)
    target_added = added_rows(pipe, written[1], (h, w), opts.weighting)  # SDXL's pooled text and time ids; else None
    if moves is not None:
        return _blend_moves(pipe, opts, support, images, inversion, sources, targets, written[1], moves, adapters,
                            messages, progress)
    if user_mask is not None:
        pixel_mask, latent_mask = user_mask, to_latent_mask(user_mask, factor)
    elif auto_mask == "detect":
        pixel_mask, missing = support.detect(images, sources, targets, opts.box_pad)
        for b in missing:
            msg = f"mask='detect': no {names[b]} found in image {b}; its mask is empty, so it is kept as it is"
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=2)
        latent_mask = to_latent_mask(pixel_mask, factor)
    elif auto_mask:
        if auto_mask == "auto":
            latent_mask = diffedit_mask(pipe, traj[-1], inversion.cond, target_cond, pipe.scheduler_config,
                                        opts.mask_samples, opts.mask_strength, opts.mask_threshold, opts.seed,
                                        inversion.added, target_added)
        else:
            latent_mask = attention_mask(pipe, inversion, positions, opts.attention_threshold)
        if opts.mask_dilate:
            latent_mask = F.max_pool2d(latent_mask, 2 * opts.mask_dilate + 1, stride=1, padding=opts.mask_dilate)
        pixel_mask = F.interpolate(latent_mask, scale_factor=factor, mode="nearest")
    else:
        pixel_mask = latent_mask = None
    if opts.mask_snap is not None and pixel_mask is not None and auto_mask != "detect":
        latent_mask = to_latent_mask(snap_mask(pixel_mask, images, opts.mask_snap), factor)
        pixel_mask = F.interpolate(latent_mask, scale_factor=factor, mode="nearest")
    if opts.method == "blend":
        negatives = None
        if opts.local_prompt:  # the masked region is one object: its phrase alone, without the others' words
            target_cond = pipe._encode_each([after for _, after in local])
            target_added = added_rows(pipe, [after for _, after in local], (h, w))
            negatives = [before for before, _ in local]
        return _blend(pipe, opts, support, images, inversion, sources, targets, (target_cond, target_added),
                      latent_mask, pixel_mask, adapters, messages, negatives)
    uncond, uncond_added = inversion.uncond, inversion.uncond_added
    if opts.method == "p2p":
        rows = torch.cat([torch.arange(n), torch.arange(n)])
        cond, added = torch.cat([inversion.cond, target_cond]), cat_added([inversion.added, target_added])
        noise = traj[0][rows]
        uncond, uncond_added = inversion.uncond_for(rows), added_at(uncond_added, rows)
        if opts.uncond == "negative-prompt" and opts.guidance != 1.0:  # the target's uncond is the source's cond
            uncond, uncond_added = inversion.cond[rows], added_at(inversion.added, rows)
    else:
        cond, added, noise = target_cond, target_added, traj[0]
    if opts.uncond == "negative-prompt" and opts.guidance != 1.0 and opts.method == "swap":
        uncond, uncond_added = inversion.cond, inversion.added

    def blend(i, x):  # keep the inverted trajectory outside the mask (latent level i + 1)
        if latent_mask is None:
            return x
        m = latent_mask.to(x)
        keep = traj[i + 1]
        if opts.method == "p2p":
            x = x.clone()
            x[n:] = m * x[n:] + (1 - m) * keep
            return x
        return m * x + (1 - m) * keep

    controller = AttentionController([hook]) if hook is not None else None
    if controller is not None:
        controller.install(pipe.unet)
    try:
        z = ddim_denoise(pipe.unet, schedule, noise, cond, uncond, opts.guidance, controller=controller,
                         after_step=blend, added=added, uncond_added=uncond_added)
    finally:
        if controller is not None:
            controller.uninstall()
            controller.reset_clock()
    out = pipe.decode(z[n:] if opts.method == "p2p" else z)
    if pixel_mask is not None:
        out = pixel_mask * out + (1 - pixel_mask) * images
    return EditResult(out, sources, targets, inversion, pixel_mask, messages)


def _blend_moves(pipe, opts: EditOptions, support: SceneSupport, images, inversion: Inversion, sources, targets,
                 written_targets, moves, adapters, messages, progress: bool = False) -> EditResult:
    """Relation edits by blend: each image's object(s) placed where the target relation holds
    (support.plan_move), one blend per placement; a trade of places takes a second blend on the first's
    result (inverted again under the target prompt). `written_targets`: the targets as given (encoded with
their weights); `targets` their plain texts."""
    plans = [support.plan_move(im, m) for im, m in zip(images, moves)]
    for b, plan in enumerate(plans):
        if plan is None:
            msg = (f"relation edit of image {b}: {moves[b]} were not each found once by the detector; the image is "
                   f"kept as it is")
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=3)
    out, mask = images.clone(), torch.zeros(len(images), 1, *images.shape[-2:])
    for step in (0, 1):
        rows = [b for b, plan in enumerate(plans) if plan is not None and len(plan) > step]
        if not rows:
            continue
        index = torch.tensor(rows)
        made = support.placement_conditions(out[index], [plans[b][step] for b in rows], opts.box_pad)
        if step == 0:
            inv = inversion if len(rows) == len(images) else inversion.at(index)
        else:
            inv = invert(pipe, out[index], [written_targets[b] for b in rows], steps=opts.steps, guidance=1.0,
                         uncond="negative-prompt", progress=progress, weighting=opts.weighting)
        size = tuple(images.shape[-2:])
        if opts.local_prompt:
            target = (pipe._encode_each(made.prompts), added_rows(pipe, made.prompts, size))
        else:
            texts = [written_targets[b] for b in rows]
            target = (pipe._encode_each(texts, opts.weighting), added_rows(pipe, texts, size, opts.weighting))
        r = _blend(pipe, opts, support, out[index], inv, [sources[b] for b in rows], [targets[b] for b in rows], target,
                   to_latent_mask(made.mask, pipe.vae_scale_factor), made.mask, adapters, messages, moved=made,
                   seeds=[opts.seed + b for b in rows])  # an item's noise does not depend on the rest of the batch
        out[index] = r.images
        mask[index] = torch.maximum(mask[index], made.mask)
    return EditResult(out, sources, targets, inversion, mask, messages)


def _blend(pipe, opts: EditOptions, support: SceneSupport | None, images, inversion: Inversion, sources, targets,
           target, latent_mask, pixel_mask, adapters, messages, negative_prompts=None, moved=None,
           seeds=None) -> EditResult:
    """The blend method (t2ikit.edit.blend): masks are made; sample, decode, composite. `target`: the target
    prompts' (states, SDXL's added conditioning or None). `moved`: the
    conditions of a relation edit's placement (support.placement_conditions), already made; `seeds`: per
    image noise seeds (default opts.seed + b)."""
    conds = {}
    if moved is not None:
        conds["mask"] = moved.classes
    elif opts.target_outline or opts.shape_mask:  # the support draws the target in the object's box
        made = support.target_conditions(images, pixel_mask, sources, targets, opts.box_pad)
        for b in made.missing:
            msg = f"no object found inside the mask of image {b}: no target outline drawn there"
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=3)
        if not torch.equal(made.mask, pixel_mask):  # grown to hold the target's box (a size edit)
            pixel_mask, latent_mask = made.mask, to_latent_mask(made.mask, pipe.vae_scale_factor)
        conds["mask"] = made.classes
        if opts.target_outline:
            conds["sketch"] = made.sketch
    if "sketch" in adapters and "sketch" not in conds:
        colours = () if support is None else support.colour_words
        conds["sketch"] = sketch_for_edit(images, pixel_mask, sources, targets, colours)
    scales = {"sketch": float(opts.sketch), "mask": float(opts.shape_mask)}
    residuals = None
    for name, adapter in adapters.items():  # several adapters: residuals summed per level (T2I-Adapter's composition, Mou et al. 2023)
        res = adapter(conds[name].to(pipe.device, pipe.dtype), scales[name])
        residuals = res if residuals is None else [a + r for a, r in zip(residuals, res)]
    size = tuple(images.shape[-2:])
    if opts.uncond == "negative-prompt" and negative_prompts is None:
        negative, negative_added = inversion.cond, inversion.added
    else:
        texts = negative_prompts if opts.uncond == "negative-prompt" else [""] * len(sources)
        negative, negative_added = pipe._encode_each(texts), added_rows(pipe, texts, size)
    target_cond, target_added = target
    z = blended_denoise(pipe.unet, inversion.schedule, inversion.trajectory, target_cond, negative, opts.guidance,
                        latent_mask, opts.strength, opts.start, opts.seed if seeds is None else seeds,
                        residuals=residuals, added=target_added, uncond_added=negative_added)
    out = pipe.decode(z)
    if pixel_mask is not None:
        out = pixel_mask * out + (1 - pixel_mask) * images
    return EditResult(out, sources, targets, inversion, pixel_mask, messages)


def _check_support(support: SceneSupport | None, opts: EditOptions, instruction: str | None,
                   reader: InstructionReader | None = None) -> None:
    """ValueError when an option that needs a scene support is asked for and there is none (an instruction needs
    none when the model's prompt parser has an instruction reader)."""
    asked = [what for what, on in (("an instruction", instruction is not None and reader is None),
                                   ("mask='detect'", isinstance(opts.mask, str) and opts.mask == "detect"),
                                   ("target_outline", opts.target_outline), ("shape_mask", bool(opts.shape_mask)),
                                   ("local_prompt", opts.local_prompt)) if on]
    if asked and support is None:
        registered = scene_support_names()
        why = "none is registered" if not registered else \
            f"several are registered ({', '.join(registered)}): name one with support="
        raise ValueError(f"{asked[0]} needs a scene support that knows the image's objects (t2ikit.edit.support), "
                         f"and {why}")


__all__ = ["edit"]
