"""Text-guided editing of real images: invert, then regenerate under the target prompt.

Methods (one `edit` call, `EditOptions.method`):

    swap  prompt swap in noise space: the inverted x_T is sampled under the target prompt
    p2p   Prompt-to-Prompt (Hertz et al. 2022): source and target sampled in one batch from x_T, the
          source's attention injected into the target (t2ikit.attention.p2p) for the first steps
    blend SDEdit + Blended Latent Diffusion (t2ikit.diffusion.blend): the inverted latent at `strength` of
          the schedule is sampled under the target prompt at real guidance (the source prompt as the
          negative), the latents outside the mask reset to the inverted source's at every step;
          optionally the shipped sketch adapter holds the source's outlines (`sketch`); for a shape or size
          edit the sketch can hold the target's outline, drawn from the shape vocabulary in the edited
          object's box (`target_outline`), and the class-mask adapter its silhouette (`shape_mask`;
          t2ikit.diffusion.outline)

Each can keep the image outside a mask (`EditOptions.mask`): "auto" is DiffEdit's mask (Couairon et
al. 2022, Sec. 3.1: where the noise predictions under the source and the target prompts differ),
"attention" the source's cross-attention to the edited words (P2P's local blend, Hertz et al. 2022,
Sec. 3.3), "detect" the boxes of the objects Shapes World's detector (the oracle's reader) finds for the
edited source phrase (a Grounded-SAM-style detector mask; Shapes World captions only), or a user mask.
`mask_snap` snaps a rough mask to the image's objects (`blend.snap_mask`). Inside the loop the target
latent outside the mask is reset to the inverted trajectory at every step, and the decoded image is
composited with the input outside the mask, so those pixels are exactly kept.

An instruction "change the red circle to a blue square" is read into source and target phrases with
Shapes World's caption parser (`parse_instruction`), and turned into prompts (`instruction_prompts`).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from t2ikit.diffusion.inversion import (UNCOND_MODES, Inversion, check_guidance, ddim_denoise, invert, item_noise,
                                        load_image, size_multiple)

METHODS = ("swap", "p2p", "blend")
MASKS = ("auto", "attention", "detect")  # automatic masks; anything else given is a user mask
MASK_SAMPLES = 8  # DiffEdit: noise draws averaged per mask
MASK_STRENGTH = 0.5  # DiffEdit: noise level (fraction of the schedule) at which predictions are compared
MASK_THRESHOLD = 0.5  # DiffEdit: fraction of the normalised difference above which a latent pixel is edited
MASK_DILATE = 1  # latent pixels the automatic mask is grown by: a thresholded mask clips the object's edge
ATTENTION_THRESHOLD = 0.5  # attention mask: fraction of the min-max normalised map above which a pixel is edited
BLEND_STRENGTH = 0.8  # blend: fraction of the schedule re-noised (SDEdit's t0)


class EditWarning(UserWarning):
    """An edit that may not do what was asked: e.g. the source prompt does not describe the image."""


# ----------------------------------------------------------------------------------------------------
# Instructions


@dataclass(frozen=True)
class Instruction:
    text: str
    source: object  # t2ikit.world.scene.Group: the object to change
    target: object  # Group: what it becomes
    source_phrase: str
    target_phrase: str
    relation: str | None = None  # a relation instruction ("move X to the left of Y"): X's new relation to Y
    other: object = None  # Group Y of a relation instruction


_VERBS = ("change", "turn", "make", "replace", "swap", "transform", "convert", "recolour", "recolor")
_JOINERS = (" into ", " to ", " with ", " for ")


def _group_from_phrase(phrase: str, what: str):
    """A Group from a noun phrase ("the red circle", "a small blue square", "red circles")."""
    from t2ikit.world import vocab
    from t2ikit.world.caption import CaptionError, parse_caption

    words = phrase.strip().rstrip(".").split()
    if words and words[0].lower() == "the":
        words = words[1:]
    if words and words[0].lower() not in ("a", "an", "one", "two", "three", "four"):
        plural = words[-1].lower() in vocab.PLURAL_SHAPES.values()
        words = (["two"] if plural else ["a"]) + words
    try:
        spec = parse_caption(" ".join(words))
    except CaptionError as err:
        raise ValueError(f"cannot read the {what} part {phrase.strip()!r} of the instruction as a Shapes World "
                         f"object: {str(err).splitlines()[0]}") from None
    if len(spec.groups) != 1 or spec.relations:
        raise ValueError(f"the {what} part {phrase.strip()!r} of the instruction must name one object, "
                         f"it names {len(spec.groups)}")
    return spec.groups[0]


def _target_group(phrase: str, source):
    """The target: a full object phrase, or attribute words that change the source ("blue", "a square", "large")."""
    from t2ikit.world import vocab

    words = [w for w in phrase.strip().rstrip(".").lower().split() if w not in ("a", "an", "the", "one")]
    if not words:
        raise ValueError(f"the target part {phrase.strip()!r} of the instruction is empty")
    changes = {}
    for w in words:
        if w in vocab.COLOURS:
            changes["colour"] = w
        elif w in vocab.SHAPES:
            changes["shape"] = w
        elif w in vocab.PLURAL_SHAPES.values():
            changes["shape"] = w[:-1]
        elif w in vocab.SIZE_WORDS:
            changes["size"] = vocab.SIZE_WORDS[w]
        else:
            raise ValueError(f"cannot read {w!r} in the target part {phrase.strip()!r} of the instruction: "
                             f"expected colours ({', '.join(vocab.COLOURS)}), shapes ({', '.join(vocab.SHAPES)}) "
                             f"or sizes ({', '.join(vocab.SIZE_WORDS)})")
    return replace(source, **changes)


_MOVE_VERBS = ("move", "put", "place")
_RELATION_WORDS = (("to the left of", "left of"), ("to the right of", "right of"), ("left of", "left of"),
                   ("right of", "right of"), ("above", "above"), ("over", "above"), ("below", "below"),
                   ("under", "below"), ("beneath", "below"))


def _parse_move(text: str, rest: str) -> Instruction:
    """"move the red circle to the left of the blue square": the object, its new relation, the other object."""
    lower = f" {rest.lower()} "
    found = [(lower.find(f" {w} "), w, r) for w, r in _RELATION_WORDS if lower.find(f" {w} ") >= 0]
    if not found:
        raise ValueError(f"cannot read the instruction {text!r}: expected a relation "
                         f"({', '.join(w for w, _ in _RELATION_WORDS)}) after the object, e.g. "
                         f"'move the red circle to the left of the blue square'")
    at, words, relation = min(found, key=lambda f: (f[0], -len(f[1])))
    source_phrase, other_phrase = rest[:max(at, 0)].strip(), rest[at + len(words) + 1:].strip()
    if not source_phrase:
        raise ValueError(f"cannot read the instruction {text!r}: no object to move before {words!r}")
    if not other_phrase:
        raise ValueError(f"cannot read the instruction {text!r}: no object after {words!r} to move it {relation}")
    source = _group_from_phrase(source_phrase, "source")
    other = _group_from_phrase(other_phrase, "reference object")
    return Instruction(text, source, source, source_phrase, f"{relation} {other_phrase}", relation, other)


def parse_instruction(text: str) -> Instruction:
    """Read "change the red circle to a blue square" / "make the red circle blue" / "turn X into Y", or a
    relation change "move the red circle to the left of the blue square" (also put, place; above, below...).

    ValueError names the part that cannot be read (the verb, the object to change, the target, the relation).
    """
    if not isinstance(text, str):
        raise TypeError(f"instruction must be a str; got {type(text).__name__}")
    s = " ".join(text.strip().split())
    m = re.match(r"(?i)^(\w+)\s+(.*)$", s)
    if m is not None and m.group(1).lower() in _MOVE_VERBS:
        return _parse_move(text, m.group(2))
    if m is None or m.group(1).lower() not in _VERBS:
        first = m.group(1) if m else s
        raise ValueError(f"cannot read the instruction {text!r}: it must start with a verb "
                         f"({', '.join(_VERBS + _MOVE_VERBS)}), not {first!r}; e.g. 'change the red circle to a "
                         f"blue square' or 'move the red circle to the left of the blue square'")
    rest = m.group(2)
    lower = f" {rest.lower()} "
    cut = [(lower.find(j), j) for j in _JOINERS if lower.find(j) >= 0]
    if cut:
        at, joiner = min(cut)
        source_phrase, target_phrase = rest[:max(at - 1, 0)], rest[at - 1 + len(joiner):]
    else:  # "make the red circle blue": the longest object phrase, then attribute words
        words = rest.split()
        for k in range(len(words) - 1, 0, -1):
            try:
                _group_from_phrase(" ".join(words[:k]), "source")
            except ValueError:
                continue
            source_phrase, target_phrase = " ".join(words[:k]), " ".join(words[k:])
            break
        else:
            raise ValueError(f"cannot read the instruction {text!r}: expected '<verb> <object> to <target>', "
                             f"e.g. 'change the red circle to a blue square'; no ' to '/' into ' found")
    source = _group_from_phrase(source_phrase, "source")
    try:
        target = _group_from_phrase(target_phrase, "target")
        if target.count != source.count and not re.match(r"(?i)\s*(two|three|four)\b", target_phrase):
            target = replace(target, count=source.count)
    except ValueError:
        target = _target_group(target_phrase, source)
    if target == source:
        raise ValueError(f"the instruction changes nothing: {target_phrase.strip()!r} is what the object already is")
    return Instruction(text, source, target, source_phrase.strip(), target_phrase.strip())


def _write_group(group) -> str:
    from t2ikit.world.caption import write_caption
    from t2ikit.world.scene import Spec

    return write_caption(Spec((group,)))


def instruction_prompts(instruction: Instruction | str, source_prompt: str | None = None) -> tuple[str, str]:
    """(source prompt, target prompt) of an instruction; the object is found in `source_prompt` if given."""
    from t2ikit.world.caption import CaptionError, decompose, parse_caption

    ins = parse_instruction(instruction) if isinstance(instruction, str) else instruction
    if ins.relation is not None:
        return _relation_prompts(ins, source_prompt)
    if source_prompt is None:
        return _write_group(ins.source), _write_group(ins.target)
    try:
        spec = parse_caption(source_prompt)
        parts = decompose(source_prompt)
    except CaptionError as err:
        raise ValueError(f"the source prompt {source_prompt!r} is not a Shapes World caption, so the "
                         f"instruction's object cannot be found in it: {str(err).splitlines()[0]}") from None
    s = ins.source
    for span in parts.objects:
        g = spec.groups[span.ref[0]]
        if (g.colour, g.shape) == (s.colour, s.shape) and (s.size is None or g.size == s.size):
            new = _write_group(replace(ins.target, count=g.count))
            if g.count == 1 and span.text.split()[0].lower() == "one":
                new = "one " + new.split(" ", 1)[1]
            target = source_prompt[:span.start] + new + source_prompt[span.end:]
            return source_prompt, target
    raise ValueError(f"the instruction's object {ins.source_phrase!r} is not in the source prompt {source_prompt!r}")


def _relation_prompts(ins: Instruction, source_prompt: str | None) -> tuple[str, str]:
    """A relation instruction's prompts: the target says "<object> <relation> <other>"; the source is
    `source_prompt` (which must name both objects) or the two objects joined by "and"."""
    from t2ikit.world.caption import CaptionError, parse_caption, write_caption
    from t2ikit.world.scene import Relation, Spec

    pair = (ins.source, ins.other)
    target = write_caption(Spec(pair, (Relation(0, ins.relation, 1),)))
    if source_prompt is None:
        return write_caption(Spec(pair)), target
    try:
        spec = parse_caption(source_prompt)
    except CaptionError as err:
        raise ValueError(f"the source prompt {source_prompt!r} is not a Shapes World caption, so the "
                         f"instruction's objects cannot be found in it: {str(err).splitlines()[0]}") from None
    seen = {(g.colour, g.shape) for g in spec.groups}
    for g in pair:
        if (g.colour, g.shape) not in seen:
            raise ValueError(f"the instruction's object '{g.colour} {g.shape}' is not in the source prompt "
                             f"{source_prompt!r}")
    if any((spec.groups[r.subject], spec.groups[r.object], r.relation) == (ins.source, ins.other, ins.relation)
           for r in spec.relations):
        raise ValueError(f"the instruction changes nothing: the source prompt {source_prompt!r} already has "
                         f"{ins.source_phrase!r} {ins.relation} the other object")
    return source_prompt, target


def describe_image(image) -> str | None:
    """A Shapes World caption of what the oracle reads in `image` (objects joined by 'and'), or None."""
    from t2ikit.world.caption import write_caption
    from t2ikit.world.oracle import detect
    from t2ikit.world.scene import Group, Spec

    reading = detect(image)
    seen: dict[tuple[str, str], int] = {}
    for d in reading.detections:
        if d.shape is not None:
            seen[(d.colour, d.shape)] = seen.get((d.colour, d.shape), 0) + 1
    if not seen:
        return None
    groups = tuple(Group(c, s, None, n) for (c, s), n in seen.items())
    try:
        return write_caption(Spec(groups).validate())
    except ValueError:
        return None


def check_source(images: torch.Tensor, prompts: list[str]) -> list[str]:
    """Warn (EditWarning) where the oracle disagrees with a Shapes World source prompt; the messages."""
    from t2ikit.world.caption import CaptionError, parse_caption
    from t2ikit.world.oracle import MIN_RESOLUTION, score

    messages = []
    for k, (image, prompt) in enumerate(zip(images, prompts)):
        if image.shape[-1] != image.shape[-2] or image.shape[-1] < MIN_RESOLUTION:
            continue
        try:
            spec = parse_caption(prompt)
        except (CaptionError, ValueError):
            continue  # not a Shapes World caption: nothing to check it against
        failures = score(image.permute(1, 2, 0).numpy(), spec).failures()
        if failures:
            msg = (f"the source prompt {prompt!r} may not describe image {k}: the oracle reads "
                   + "; ".join(f"{c.name}: {c.detail}" for c in failures[:3]))
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=3)
    return messages


# ----------------------------------------------------------------------------------------------------
# Masks


def load_mask(mask, shape: tuple[int, int], batch: int) -> torch.Tensor:
    """A user mask (path, PIL, (H, W) array/tensor, (B, 1, H, W) tensor; nonzero = edit) -> (B, 1, H, W) float."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__"):
        try:
            with Image.open(mask) as im:
                mask = np.asarray(im.convert("L"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"mask {str(mask)!r} cannot be read as an image: {err}") from None
    if type(mask).__module__.startswith("PIL"):
        mask = np.asarray(mask.convert("L"))
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be 'auto', a path, PIL image, array or tensor; got {type(mask).__name__}")
    m = mask.float()
    while m.ndim < 4:
        m = m[None]
    if tuple(m.shape[-2:]) != tuple(shape) or m.shape[1] != 1 or m.shape[0] not in (1, batch):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; it must be {shape[0]}x{shape[1]} pixels, "
                         f"the size of the image")
    return (m > 0.5).float().expand(batch, 1, *shape).clone()


@torch.no_grad()
def diffedit_mask(pipe, latents: torch.Tensor, source_cond: torch.Tensor, target_cond: torch.Tensor,
                  schedule_config: dict, samples: int = MASK_SAMPLES, strength: float = MASK_STRENGTH,
                  threshold: float = MASK_THRESHOLD, seed: int = 0) -> torch.Tensor:
    """DiffEdit's mask (Couairon et al. 2022, Sec. 3.1): (B, 1, h, w) in {0, 1} at latent resolution.

    Noise the image latents to `strength` of the schedule `samples` times; |eps(target) - eps(source)|,
    averaged over channels and draws, normalised to [0, 1] per image, thresholded at `threshold`.
    """
    from diffusers import DDPMScheduler

    from t2ikit.diffusion.inversion import split_output

    config = {k: v for k, v in schedule_config.items() if not k.startswith("_")}
    sched = DDPMScheduler.from_config(config)
    t = torch.tensor(min(int(strength * sched.config.num_train_timesteps), sched.config.num_train_timesteps - 1))
    alpha = float(sched.alphas_cumprod[t])
    b = latents.shape[0]
    noise = item_noise((samples, *latents.shape[1:]), b, seed, dim=1).to(latents)  # (S, B, C, h, w)
    x = (alpha ** 0.5 * latents[None] + (1 - alpha) ** 0.5 * noise).flatten(0, 1)  # (S*B, C, h, w)
    embeds = torch.cat([source_cond.repeat(samples, 1, 1), target_cond.repeat(samples, 1, 1)])
    out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=embeds, return_dict=False)[0]
    eps_s, eps_t = (split_output(o, x, alpha, sched.config.prediction_type)[0] for o in out.chunk(2))
    diff = (eps_t - eps_s).abs().mean(1).view(samples, b, *latents.shape[-2:]).mean(0)  # (B, h, w)
    diff = diff / diff.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    return (diff >= threshold).float()[:, None]


def edited_positions(tokenizer, source: str, target: str) -> list[int]:
    """Token positions (BOS is 0) in `source` of the object the edit changes: its changed words and its noun.

    ValueError if the target changes no word of the source (nothing to locate).
    """
    from t2ikit.diffusion.blend import changed_words
    from t2ikit.text.phrases import phrase_token_spans
    from t2ikit.text.spans import word_token_spans

    removed, _ = changed_words(source, target)
    if not removed:
        raise ValueError(f"the attention mask needs a word of the source prompt {source!r} that the target "
                         f"{target!r} changes; it only adds words (use mask='auto')")
    words = [w for w in word_token_spans(tokenizer, source) if not w.truncated]
    positions = []
    for ps in phrase_token_spans(tokenizer, source):
        if any(w.lower() in removed for w in ps.phrase.words):
            positions += [p for w in words if ps.phrase.start <= w.start < ps.phrase.end
                          and (w.word.lower() in removed or w.word == ps.phrase.head) for p in w.positions]
    if not positions:  # a changed word outside any noun phrase
        positions = [p for w in words if w.word.lower() in removed for p in w.positions]
    return sorted(set(positions))


@torch.no_grad()
def attention_mask(pipe, inversion: Inversion, positions: list[list[int]],
                   threshold: float = ATTENTION_THRESHOLD) -> torch.Tensor:
    """The source's cross-attention to the edited words (P2P's local blend): (B, 1, h, w) in {0, 1}.

    The inverted noise is sampled back under the source prompt (guidance 1) while an AttentionStore sums
    the cross-attention of every layer below the full latent resolution (the full-resolution layers of this
    model spread over the whole image); per image the map of `positions[b]` is min-max normalised and
    thresholded at `threshold`.
    """
    from t2ikit.attention.capture import AttentionStore
    from t2ikit.attention.processor import AttentionController

    last = len(pipe.unet.config.up_block_types) - 1
    store = AttentionStore(layers=lambda name: not name.startswith(("down_blocks.0.", f"up_blocks.{last}.")))
    with AttentionController([store]).install(pipe.unet) as controller:
        ddim_denoise(pipe.unet, inversion.schedule, inversion.noise, inversion.cond, controller=controller)
    maps = store.mean_maps(tuple(inversion.noise.shape[-2:]))  # (B, Nk, h, w)
    m = torch.stack([maps[b, pos].sum(0) for b, pos in enumerate(positions)])  # (B, h, w)
    lo, hi = m.flatten(1).amin(1)[:, None, None], m.flatten(1).amax(1)[:, None, None]
    return ((m - lo) / (hi - lo).clamp_min(1e-8) >= threshold).float()[:, None]


def edited_group(source: str, target: str):
    """The Shapes World object (Group) of `source` that the edit changes; ValueError if there is none."""
    from t2ikit.diffusion.blend import changed_spans
    from t2ikit.text.phrases import noun_phrases

    removed, _ = changed_spans(source, target)  # by place: "large" may be in both phrases, changed in one
    phrases = [ph.text for ph in noun_phrases(source) if any(ph.start <= i < ph.end for i, _ in removed)]
    if len(phrases) != 1:
        raise ValueError(f"mask='detect' needs the edit to change one object of the source prompt {source!r}; "
                         f"the target {target!r} changes {len(phrases)} noun phrases")
    return _group_from_phrase(phrases[0], "edited")


def detect_mask(images: torch.Tensor, groups: list, pad: int = 2) -> tuple[torch.Tensor, list[int]]:
    """(B, 1, H, W) boxes, grown by `pad` px, of the objects Shapes World's detector reads as `groups[b]`
    (colour and shape); and the indices of the images where it found none (their mask is empty)."""
    from t2ikit.world.oracle import detect

    out = torch.zeros(images.shape[0], 1, *images.shape[-2:])
    missing = []
    for b, (im, g) in enumerate(zip(images, groups)):
        scale = im.shape[-1] / 64.0  # the detector's positions are on the 64 px reference canvas
        found = [d for d in detect(im.permute(1, 2, 0).numpy()).detections if (d.colour, d.shape) == (g.colour, g.shape)]
        for d in found:
            x0, y0, x1, y1 = (int(round(v * scale)) for v in d.bbox)
            out[b, 0, max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = 1
        if not found:
            missing.append(b)
    return out, missing


def _to_latent_mask(pixel_mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A latent pixel is edited if any of its image pixels is."""
    return F.max_pool2d(pixel_mask, factor)


# ----------------------------------------------------------------------------------------------------
# Editing


# Named option sets per kind of edit (edit_kind): the best measured settings (docs/results/edit.md sections 8-9).
# "shapes-world": blend at guidance 5 in the detector's box of the edited object (snapped 2 px), the shipped
# class-mask adapter holding its silhouette, the object's own phrase as the prompt; a size change or a relation
# edit (which moves an object) is drawn from fresh noise. Needs a Shapes World image and the shipped model.
_SHAPES_WORLD = dict(method="blend", guidance=5.0, mask="detect", mask_snap=2, shape_mask=1.0, local_prompt=True)
_FRESH = {**_SHAPES_WORLD, "strength": 1.0, "start": "noise"}
PRESETS = {"shapes-world": {"object": _SHAPES_WORLD, "size": _FRESH, "relation": _FRESH}}
EDIT_KINDS = ("object", "size", "relation")


def edit_kind(source: str, target: str) -> str:
    """"relation" when the target restates the source's objects in a new relation, "size" when it changes the
    edited object's size, else "object" (colour, shape: anything the presets treat alike)."""
    from t2ikit.diffusion.outline import edited_groups, relation_move

    if relation_move(source, target) is not None:
        return "relation"
    try:
        before, after = edited_groups(source, target)
    except ValueError:
        return "object"
    return "size" if after.size is not None and after.size != before.size else "object"


@dataclass
class EditOptions:
    """How to edit; validated by `check` before any compute."""

    method: str = "p2p"  # "swap" | "p2p" | "blend"
    mode: str = "auto"  # p2p alignment: "replace" | "refine" | "reweight" | "auto" (replace if it can, else refine)
    cross_steps: int | float | None = None  # p2p: steps (int) or fraction (float) with cross-attention injected; None: 0.8
    self_steps: int | float | None = None  # p2p: steps or fraction with self-attention injected; None: 0.4
    reweight: dict[str, float] | None = None  # p2p: {target word: factor} for attention re-weighting
    mask: object = None  # None (whole image), "auto" (DiffEdit), "attention", "detect" or a mask (path, array, tensor; nonzero = edit)
    steps: int = 20  # DDIM steps of inversion and editing
    guidance: float = 1.0  # CFG scale of the edit; > 1 uses `uncond` inversion (blend: uncond is its negative)
    uncond: str | None = None  # swap/p2p: how guidance > 1 stays on the inverted trajectory (inversion.py; None:
    #   "negative-prompt"); blend: its CFG negative, "none" = the empty prompt (None: this), "negative-prompt" = the
    #   source prompt (with local_prompt the source phrase), which overshoots: from "red" to "orange" it draws yellow
    strength: float = BLEND_STRENGTH  # blend: fraction of the schedule re-noised (1: from x_T)
    start: str = "inverted"  # blend: the masked region starts from the inverted latent or the image freshly noised ("noise")
    sketch: float = 0.0  # blend: scale of the shipped sketch adapter holding the source's outlines (0: off)
    target_outline: bool = False  # blend + sketch: the sketch holds the target's outline (shape vocabulary) in the object's box
    shape_mask: float = 0.0  # blend: scale of the shipped class-mask adapter holding the target's silhouette there (0: off)
    local_prompt: bool = False  # blend: sample under the edited object's phrase alone (uncond "negative-prompt": its source phrase the negative)
    mask_snap: int | None = None  # snap the mask to the image's objects, their boxes grown by this many px (None: off)
    attention_threshold: float = ATTENTION_THRESHOLD
    mask_samples: int = MASK_SAMPLES
    mask_strength: float = MASK_STRENGTH
    mask_threshold: float = MASK_THRESHOLD
    mask_dilate: int = MASK_DILATE  # latent pixels the automatic mask is grown by (0: DiffEdit as published)
    seed: int = 0  # of DiffEdit's noise draws and blend's start="noise"; item b of a batch uses seed + b

    @property
    def box_pad(self) -> int:
        """Pixels the detector's object boxes are grown by (mask="detect", outlines, moves): mask_snap, else 2."""
        return self.mask_snap if self.mask_snap is not None else 2

    @classmethod
    def preset(cls, name: str, kind: str = "object", **overrides) -> EditOptions:
        """The options of a named preset (PRESETS) for a kind of edit (EDIT_KINDS; `edit_kind(source, target)`
        tells it); keyword arguments override the preset's fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown edit preset {name!r}; presets: {', '.join(PRESETS)}")
        if kind not in EDIT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EDIT_KINDS)}; got {kind!r}")
        fields = dict(PRESETS[name][kind])
        return cls(**{**fields, **overrides}).check()

    def check(self) -> EditOptions:
        from t2ikit.attention.p2p import MODES

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.mode not in MODES + ("auto",):
            raise ValueError(f"mode must be one of {', '.join(MODES + ('auto',))}; got {self.mode!r}")
        if self.uncond is None:  # the method's default (see the field)
            return replace(self, uncond="none" if self.method == "blend" else "negative-prompt").check()
        if self.uncond not in UNCOND_MODES:
            raise ValueError(f"uncond must be one of {', '.join(UNCOND_MODES)} (or None: the method's default); "
                             f"got {self.uncond!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {self.steps!r}")
        check_guidance(self.guidance)
        if isinstance(self.mask, str) and self.mask not in MASKS and not self.mask.strip():
            raise ValueError(f"mask must be None, one of {', '.join(MASKS)} or a mask image")
        if self.method == "blend":
            from t2ikit.diffusion.blend import STARTS, start_level

            start_level(self.steps, self.strength)
            if self.start not in STARTS:
                raise ValueError(f"start must be one of {', '.join(STARTS)}; got {self.start!r}")
            if self.uncond == "null-text":
                raise ValueError("blend takes uncond 'negative-prompt' (the source prompt as the negative) or "
                                 "'none' (the empty prompt); null-text inversion is for swap and p2p")
            if self.mode != "auto":
                raise ValueError("mode is a Prompt-to-Prompt option; use method='p2p'")
        elif self.strength != BLEND_STRENGTH or self.start != "inverted" or self.sketch or self.target_outline \
                or self.shape_mask or self.local_prompt:
            raise ValueError("strength, start, sketch, target_outline, shape_mask and local_prompt are blend options; "
                             "use method='blend'")
        for name in ("sketch", "shape_mask"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e3):
                raise ValueError(f"{name} must be an adapter scale >= 0 (0: off); got {v!r}")
        for name in ("target_outline", "local_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.target_outline and not self.sketch:
            raise ValueError("target_outline draws the target's outline into the sketch condition; give sketch > 0")
        if (self.target_outline or self.shape_mask) and self.mask is None:
            raise ValueError("target_outline and shape_mask draw the target in the edited object's box, which is "
                             "found inside the mask; give a mask ('detect', 'auto', 'attention' or a mask image)")
        if self.mask_snap is not None and not (isinstance(self.mask_snap, int) and self.mask_snap >= 0):
            raise ValueError(f"mask_snap must be None or an int >= 0 (px); got {self.mask_snap!r}")
        if not 0.0 < self.attention_threshold < 1.0:
            raise ValueError(f"attention_threshold must be in (0, 1); got {self.attention_threshold!r}")
        if not (isinstance(self.mask_samples, int) and self.mask_samples >= 1):
            raise ValueError(f"mask_samples must be an int >= 1; got {self.mask_samples!r}")
        if not 0.0 < self.mask_strength < 1.0:
            raise ValueError(f"mask_strength must be in (0, 1); got {self.mask_strength!r}")
        if not (isinstance(self.mask_dilate, int) and self.mask_dilate >= 0):
            raise ValueError(f"mask_dilate must be an int >= 0; got {self.mask_dilate!r}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1); got {self.mask_threshold!r}")
        return self


@dataclass
class EditResult:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]: the edited images
    source_prompts: list[str]
    target_prompts: list[str]
    inversion: Inversion
    mask: torch.Tensor | None = None  # (B, 1, H, W) pixel mask that was edited (None: whole image)
    warnings: list[str] = field(default_factory=list)

    def pil(self) -> list:
        from t2ikit.pipeline import to_pil

        return to_pil(self.images)


def _as_list(x, n: int, name: str) -> list[str]:
    items = [x] * n if isinstance(x, str) else list(x) if isinstance(x, (list, tuple)) else None
    if items is None or len(items) != n or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{name} must be a str or a list of {n} str (one per image); got {x!r}")
    return items


def edit(pipe, image, source: str | list[str] | None = None, target: str | list[str] | None = None,
         instruction: str | None = None, options: EditOptions | None = None, inversion: Inversion | None = None,
         progress: bool = False, **kwargs) -> EditResult:
    """Edit `image` (path, PIL, array, tensor or a (B, 3, H, W) batch) from `source` to `target` prompt.

    Or give `instruction` ("change the red circle to a blue square"), with or without `source` (without it
    the source prompt is what the oracle reads in the image, else the instruction's object alone).
    Options: an EditOptions, or its fields as keyword arguments. An `inversion` of the same images under
    the same source prompts (and steps, guidance) may be passed to edit again without inverting again.
    """
    from t2ikit.attention.p2p import PromptToPromptHook, align, resolve_steps
    from t2ikit.attention.processor import AttentionController
    from t2ikit.text.check import check_prompt

    if options is not None and kwargs:
        raise ValueError("give options either as an EditOptions or as keyword arguments, not both")
    opts = (options or EditOptions(**kwargs)).check()
    images = load_image(image, size_multiple(pipe))
    n = len(images)
    if instruction is not None:
        if target is not None:
            raise ValueError("give either target or instruction, not both")
        ins = parse_instruction(instruction)
        if source is None:
            described = [describe_image(im.permute(1, 2, 0).numpy()) if im.shape[-1] == im.shape[-2] >= 32
                         else None for im in images]
            pairs = []
            for d in described:
                try:
                    pairs.append(instruction_prompts(ins, d) if d else instruction_prompts(ins))
                except ValueError:
                    pairs.append(instruction_prompts(ins))
        else:
            pairs = [instruction_prompts(ins, s) for s in _as_list(source, n, "source")]
        sources, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        if source is None or target is None:
            raise ValueError("give source and target prompts, or an instruction")
        sources, targets = _as_list(source, n, "source"), _as_list(target, n, "target")
    for p in dict.fromkeys(sources + targets):
        check_prompt(pipe.tokenizer, p)
    h, w = images.shape[-2:]
    auto_mask = opts.mask if isinstance(opts.mask, str) and opts.mask in MASKS else None
    user_mask = None if opts.mask is None or auto_mask else load_mask(opts.mask, (h, w), n)
    positions = groups = moves = None
    if opts.method == "blend":  # a relation edit moves an object (t2ikit.diffusion.outline.plan_move)
        from t2ikit.diffusion.outline import relation_move

        found = [relation_move(s, t) for s, t in zip(sources, targets)]
        if any(m is not None for m in found):
            if not all(m is not None for m in found):
                raise ValueError("this blend batch mixes relation edits (moves) with object edits; edit them in "
                                 "separate calls")
            if auto_mask != "detect" or not opts.shape_mask or opts.target_outline:
                raise ValueError("a relation edit with method='blend' moves its object: give mask='detect' (it finds "
                                 "both objects in a Shapes World image) and shape_mask > 0 (the class-mask adapter "
                                 "holds the object at its new place); target_outline does not apply")
            moves = found
    if auto_mask == "attention":
        positions = [edited_positions(pipe.tokenizer, s, t) for s, t in zip(sources, targets)]
    elif auto_mask == "detect" and moves is None:
        groups = [edited_group(s, t) for s, t in zip(sources, targets)]
    local = None
    if opts.target_outline or opts.shape_mask or opts.local_prompt:
        from t2ikit.diffusion.outline import edited_groups

        local = None if moves is not None else [edited_groups(s, t) for s, t in zip(sources, targets)]
    adapters = {}
    for name, scale in (("sketch", opts.sketch), ("mask", opts.shape_mask)):
        if scale:
            from t2ikit.control.generate import _resolve_adapter

            adapters[name] = _resolve_adapter(pipe, name, None)
    hook = None
    if opts.method == "p2p":
        alignments = []
        for s, t in zip(sources, targets):
            mode = opts.mode
            if mode == "auto":  # word swap when the token counts match, else refine; reweight applies to either
                mode = "replace" if len(pipe.tokenizer(s)["input_ids"]) == len(pipe.tokenizer(t)["input_ids"]) \
                    else "refine"
            alignments.append(align(pipe.tokenizer, s, t, mode, opts.reweight))
        hook = PromptToPromptHook(alignments, resolve_steps(opts.cross_steps, opts.steps, 0.8, "cross_steps"),
                                  resolve_steps(opts.self_steps, opts.steps, 0.4, "self_steps"))
    elif opts.reweight or opts.cross_steps is not None or opts.self_steps is not None:
        raise ValueError("reweight, cross_steps and self_steps are Prompt-to-Prompt options; use method='p2p'")
    if inversion is not None:  # blend uses only the (unguided) trajectory, so any guidance's inversion serves
        if inversion.prompts != sources or inversion.schedule.steps != opts.steps or (
                inversion.guidance != opts.guidance and opts.method != "blend"):
            raise ValueError("the inversion passed was made with other prompts, steps or guidance than this edit")
    messages = check_source(images, sources)

    # --- compute ---
    if inversion is None:
        blend = opts.method == "blend"
        inversion = invert(pipe, images, sources, steps=opts.steps, guidance=1.0 if blend else opts.guidance,
                           uncond="negative-prompt" if blend else opts.uncond, progress=progress)
    schedule, traj = inversion.schedule, inversion.trajectory
    factor = pipe.vae_scale_factor
    target_cond = pipe._encode_each(targets)
    if moves is not None:
        return _blend_moves(pipe, opts, images, inversion, sources, targets, moves, adapters, messages, progress)
    if user_mask is not None:
        pixel_mask, latent_mask = user_mask, _to_latent_mask(user_mask, factor)
    elif auto_mask == "detect":
        pixel_mask, missing = detect_mask(images, groups, opts.box_pad)
        for b in missing:
            msg = (f"mask='detect': no {groups[b].colour} {groups[b].shape} found in image {b}; "
                   f"its mask is empty, so it is kept as it is")
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=2)
        latent_mask = _to_latent_mask(pixel_mask, factor)
    elif auto_mask:
        if auto_mask == "auto":
            latent_mask = diffedit_mask(pipe, traj[-1], inversion.cond, target_cond, pipe.scheduler_config,
                                        opts.mask_samples, opts.mask_strength, opts.mask_threshold, opts.seed)
        else:
            latent_mask = attention_mask(pipe, inversion, positions, opts.attention_threshold)
        if opts.mask_dilate:
            latent_mask = F.max_pool2d(latent_mask, 2 * opts.mask_dilate + 1, stride=1, padding=opts.mask_dilate)
        pixel_mask = F.interpolate(latent_mask, scale_factor=factor, mode="nearest")
    else:
        pixel_mask = latent_mask = None
    if opts.mask_snap is not None and pixel_mask is not None and auto_mask != "detect":
        from t2ikit.diffusion.blend import snap_mask

        latent_mask = _to_latent_mask(snap_mask(pixel_mask, images, opts.mask_snap), factor)
        pixel_mask = F.interpolate(latent_mask, scale_factor=factor, mode="nearest")
    if opts.method == "blend":
        negatives = None
        if opts.local_prompt:  # the masked region is one object: its phrase alone, without the others' words
            target_cond = pipe._encode_each([_write_group(after) for _, after in local])
            negatives = [_write_group(b) for b, _ in local]
        return _blend(pipe, opts, images, inversion, sources, targets, target_cond, latent_mask, pixel_mask,
                      adapters, messages, negatives)
    uncond = inversion.uncond
    if opts.method == "p2p":
        rows = torch.cat([torch.arange(n), torch.arange(n)])
        cond = torch.cat([inversion.cond, target_cond])
        noise = traj[0][rows]
        uncond = inversion.uncond_for(rows)
        if opts.uncond == "negative-prompt" and opts.guidance != 1.0:  # the target's uncond is the source's cond
            uncond = inversion.cond[rows]
    else:
        cond, noise = target_cond, traj[0]
    if opts.uncond == "negative-prompt" and opts.guidance != 1.0 and opts.method == "swap":
        uncond = inversion.cond

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
                         after_step=blend)
    finally:
        if controller is not None:
            controller.uninstall()
            controller.reset_clock()
    out = pipe.decode(z[n:] if opts.method == "p2p" else z)
    if pixel_mask is not None:
        out = pixel_mask * out + (1 - pixel_mask) * images
    return EditResult(out, sources, targets, inversion, pixel_mask, messages)


def _blend_moves(pipe, opts: EditOptions, images, inversion: Inversion, sources, targets, moves, adapters, messages,
                 progress: bool = False) -> EditResult:
    """Relation edits by blend: each image's object(s) placed where the target relation holds
    (outline.plan_move), one blend per placement; a trade of places takes a second blend on the first's
    result (inverted again under the target prompt)."""
    from t2ikit.diffusion.outline import placement_conditions, plan_move

    plans = [plan_move(im, m) for im, m in zip(images, moves)]
    for b, plan in enumerate(plans):
        if plan is None:
            m = moves[b]
            msg = (f"relation edit of image {b}: the {m.subject.colour} {m.subject.shape} and the {m.other.colour} "
                   f"{m.other.shape} were not each found once by the detector; the image is kept as it is")
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=3)
    out, mask = images.clone(), torch.zeros(len(images), 1, *images.shape[-2:])
    for step in (0, 1):
        rows = [b for b, plan in enumerate(plans) if plan is not None and len(plan) > step]
        if not rows:
            continue
        index = torch.tensor(rows)
        made = placement_conditions(out[index], [plans[b][step] for b in rows], opts.box_pad)
        if step == 0:
            inv = inversion if len(rows) == len(images) else _subset(inversion, index)
        else:
            inv = invert(pipe, out[index], [targets[b] for b in rows], steps=opts.steps, guidance=1.0,
                         uncond="negative-prompt", progress=progress)
        cond = pipe._encode_each(made.prompts if opts.local_prompt else [targets[b] for b in rows])
        r = _blend(pipe, opts, out[index], inv, [sources[b] for b in rows], [targets[b] for b in rows], cond,
                   _to_latent_mask(made.mask, pipe.vae_scale_factor), made.mask, adapters, messages, moved=made,
                   seeds=[opts.seed + b for b in rows])  # an item's noise does not depend on the rest of the batch
        out[index] = r.images
        mask[index] = torch.maximum(mask[index], made.mask)
    return EditResult(out, sources, targets, inversion, mask, messages)


def _subset(inversion: Inversion, index: torch.Tensor) -> Inversion:
    """The inversion of the images at `index` only."""
    return replace(inversion, trajectory=inversion.trajectory[:, index], cond=inversion.cond[index],
                   uncond=inversion.uncond_for(index),
                   prompts=[inversion.prompts[b] for b in index.tolist()], images=inversion.images[index])


def _blend(pipe, opts: EditOptions, images, inversion: Inversion, sources, targets, target_cond, latent_mask,
           pixel_mask, adapters, messages, negative_prompts=None, moved=None, seeds=None) -> EditResult:
    """The blend method (t2ikit.diffusion.blend): masks are made; sample, decode, composite. `moved`: the
    conditions of a relation edit's placement (outline.placement_conditions), already made; `seeds`: per
    image noise seeds (default opts.seed + b)."""
    from t2ikit.diffusion.blend import ResidualUNet, blended_denoise, sketch_for_edit

    conds = {}
    if moved is not None:
        conds["mask"] = moved.classes
    elif opts.target_outline or opts.shape_mask:  # t2ikit.diffusion.outline: the target drawn in the object's box
        from t2ikit.diffusion.outline import target_conditions

        made = target_conditions(images, pixel_mask, sources, targets, opts.box_pad)
        for b in made.missing:
            msg = f"no object found inside the mask of image {b}: no target outline drawn there"
            messages.append(msg)
            warnings.warn(msg, EditWarning, stacklevel=3)
        if not torch.equal(made.mask, pixel_mask):  # grown to hold the target's box (a size edit)
            pixel_mask, latent_mask = made.mask, _to_latent_mask(made.mask, pipe.vae_scale_factor)
        conds["mask"] = made.classes
        if opts.target_outline:
            conds["sketch"] = made.sketch
    if "sketch" in adapters and "sketch" not in conds:
        conds["sketch"] = sketch_for_edit(images, pixel_mask, sources, targets)
    unet = pipe.unet
    scales = {"sketch": float(opts.sketch), "mask": float(opts.shape_mask)}
    residuals = None
    for name, adapter in adapters.items():  # several adapters: residuals summed per level (T2I-Adapter's composition, Mou et al. 2023)
        res = adapter(conds[name].to(pipe.device, pipe.dtype), scales[name])
        residuals = res if residuals is None else [a + r for a, r in zip(residuals, res)]
    if residuals is not None:
        unet = ResidualUNet(pipe.unet, residuals)
    if opts.uncond == "negative-prompt":
        negative = inversion.cond if negative_prompts is None else pipe._encode_each(negative_prompts)
    else:
        negative = pipe._encode_each([""] * len(sources))
    z = blended_denoise(unet, inversion.schedule, inversion.trajectory, target_cond, negative, opts.guidance,
                        latent_mask, opts.strength, opts.start, opts.seed if seeds is None else seeds)
    out = pipe.decode(z)
    if pixel_mask is not None:
        out = pixel_mask * out + (1 - pixel_mask) * images
    return EditResult(out, sources, targets, inversion, pixel_mask, messages)


__all__ = ["EDIT_KINDS", "EditOptions", "EditResult", "EditWarning", "Instruction", "PRESETS", "edit_kind", "check_source", "describe_image",
           "attention_mask", "detect_mask", "diffedit_mask", "edit", "edited_group", "edited_positions", "instruction_prompts", "load_mask", "parse_instruction"]
