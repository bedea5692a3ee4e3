"""The objects of an edit in Shapes World: which one a prompt edit changes, where the detector finds it, and
what the oracle reads in the image.

The edit (`t2ikit.edit`) reaches these through Shapes World's scene support (`t2ikit.world.edit_support`).
"""

from __future__ import annotations

import warnings

import torch

from t2ikit.edit.changes import changed_spans
from t2ikit.edit.options import EditWarning
from t2ikit.text.phrases import noun_phrases
from t2ikit.world.caption import CaptionError, parse_caption, write_caption
from t2ikit.world.instructions import group_from_phrase
from t2ikit.world.oracle import MIN_RESOLUTION, detect, score
from t2ikit.world.spec import Group, Spec


def describe_image(image) -> str | None:
    """A Shapes World caption of what the oracle reads in `image` (H, W, 3) (objects joined by 'and'), or None."""
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


def source_mismatches(images: torch.Tensor, prompts: list[str]) -> list[str]:
    """Where the oracle disagrees with a Shapes World source prompt: one sentence per image (B, 3, H, W)."""
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
            messages.append(f"the source prompt {prompt!r} may not describe image {k}: the oracle reads "
                            + "; ".join(f"{c.name}: {c.detail}" for c in failures[:3]))
    return messages


def check_source(images: torch.Tensor, prompts: list[str]) -> list[str]:
    """Warn (EditWarning) where the oracle disagrees with a Shapes World source prompt; the messages."""
    messages = source_mismatches(images, prompts)
    for msg in messages:
        warnings.warn(msg, EditWarning, stacklevel=2)
    return messages


def edited_group(source: str, target: str) -> Group:
    """The Shapes World object (Group) of `source` that the edit changes; ValueError if there is none."""
    removed, _ = changed_spans(source, target)  # by place: "large" may be in both phrases, changed in one
    phrases = [ph.text for ph in noun_phrases(source) if any(ph.start <= i < ph.end for i, _ in removed)]
    if len(phrases) != 1:
        raise ValueError(f"mask='detect' needs the edit to change one object of the source prompt {source!r}; "
                         f"the target {target!r} changes {len(phrases)} noun phrases")
    return group_from_phrase(phrases[0], "edited")


def edited_groups(source: str, target: str) -> tuple[Group, Group]:
    """(source Group, target Group) of the one object the edit changes; ValueError when there is not one."""
    before = edited_group(source, target)
    _, added = changed_spans(source, target)
    phrases = [ph.text for ph in noun_phrases(target) if any(ph.start <= i < ph.end for i, _ in added)]
    if len(phrases) != 1:
        raise ValueError(f"the target outline needs the edit to change one object; the target {target!r} "
                         f"brings in {len(phrases)} changed noun phrases")
    return before, group_from_phrase(phrases[0], "target")


def detect_mask(images: torch.Tensor, groups: list[Group], pad: int = 2) -> tuple[torch.Tensor, list[int]]:
    """(B, 1, H, W) boxes, grown by `pad` px, of the objects Shapes World's detector reads as `groups[b]`
    (colour and shape); and the indices of the images where it found none (their mask is empty)."""
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


__all__ = ["check_source", "describe_image", "detect_mask", "edited_group", "edited_groups", "source_mismatches"]
