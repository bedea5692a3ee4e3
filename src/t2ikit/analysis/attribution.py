"""Attribution maps per prompt word, in the spirit of DAAM (Tang et al. 2023, "What the DAAM").

A word's map is the cross-attention probability that image tokens give to the word's tokens, averaged
over heads, layers (each upsampled bilinearly to the image size) and sampling steps of the conditional
branch (`AttentionStore`), summed over the word's tokens. On Shapes World we check the maps against the
truth: the share of a word's map mass that falls inside the oracle-detected box of the object it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from t2ikit.analysis.runner import sample_embeds
from t2ikit.attention.capture import AttentionStore
from t2ikit.bench.stats import bootstrap_interval
from t2ikit.text.spans import word_token_spans
from t2ikit.text.weighting import plain_text
from t2ikit.world import vocab
from t2ikit.world.caption import decompose, parse_caption
from t2ikit.world.oracle import detect


@dataclass
class Attribution:
    prompt: str  # the prompt as written (may carry weights)
    text: str  # the text the model read (weights removed)
    image: torch.Tensor  # (3, H, W) in [0, 1]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)  # word label -> (H, W), label unique per word
    words: list = field(default_factory=list)  # WordSpan of each label, in prompt order


def word_labels(spans) -> list[str]:
    """Unique labels for the words of a prompt: the word, with '#k' from its second occurrence on."""
    seen: dict[str, int] = {}
    labels = []
    for s in spans:
        k = seen.get(s.word, 0) + 1
        seen[s.word] = k
        labels.append(s.word if k == 1 else f"{s.word}#{k}")
    return labels


def _check_text(tokenizer, text: str, prompt: str):
    spans = [s for s in word_token_spans(tokenizer, text) if s.positions and not s.truncated]
    if not spans:
        raise ValueError(f"prompt {prompt!r} has no words the model reads; nothing to attribute")
    return spans


def explain(pipe, prompt: str, seed: int = 0, steps: int | None = None, guidance: float | None = None,
            sampler: str | None = None, mode: str = "a1111", layers=None, step_indices=None,
            parser=None, progress: bool = False, size: tuple[int, int] | None = None,
            relation_guidance: float | None = None) -> Attribution:
    """Generate `prompt` (weights allowed) with seed `seed` at `size` (H, W; None: the model's) and return its
    image and per-word maps.

    `layers`, `step_indices`: which cross-attention layers (substrings of their names) and sampling steps the
    maps average over (AttentionStore; None: all). `parser` (a text.parser.Parser): also one map per object
    phrase it reads ("a red circle"), the sum of its words' maps, labelled with the phrase.
    `relation_guidance`: None samples with the model's default, as `generate` does, so a seed explains the
    image `generate` made with it.
    """
    text = plain_text(prompt, mode)
    spans = _check_text(pipe.tokenizer, text, prompt)  # before any compute
    phrases = parser.parse(text).objects if parser is not None else ()  # PromptParseError before compute too
    store = AttentionStore(layers=layers, steps=step_indices)
    spec = pipe.make_spec(prompt, None, steps, guidance, seed, 1, size, sampler, relation_guidance, weighting=mode)
    images = pipe.run(spec, progress=progress, hooks=[store]).images  # progress: a sampling bar on stderr
    size = tuple(images.shape[-2:])
    labels = word_labels(spans)
    words = {lab: s.positions for lab, s in zip(labels, spans)}
    for o in phrases:
        inside = [p for s in spans if o.start <= s.start and s.end <= o.end for p in s.positions]
        if len(inside) > 1 and text[o.start:o.end] not in words:
            words[text[o.start:o.end]] = inside
    maps = store.word_maps(words, size, batch_index=-1)
    return Attribution(prompt, text, images[0], maps, spans)


# ----------------------------------------------------------------------------------------------------
# Drawing


def heat_rgb(m: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) in [0, 1]: min-max normalised, dark blue -> red -> yellow."""
    m = m.astype(np.float64)
    span = m.max() - m.min()
    x = (m - m.min()) / span if span > 0 else np.zeros_like(m)
    return np.stack([np.clip(2 * x, 0, 1), np.clip(2 * x - 1, 0, 1), np.clip(0.6 - 1.2 * x, 0, 1)], axis=-1)


def overlay_tiles(attr: Attribution, tile: int = 128, alpha: float = 0.6) -> list:
    """[(label, PIL tile)]: ("image", the generated image), then each map over it."""
    base = (attr.image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    tiles = [("image", Image.fromarray(base).resize((tile, tile), Image.NEAREST))]
    for label, m in attr.maps.items():
        blend = (1 - alpha) * base / 255.0 + alpha * heat_rgb(m.numpy())
        tiles.append((label, Image.fromarray((blend * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)))
    return tiles


def overlay(attr: Attribution, tile: int = 128, alpha: float = 0.6):
    """A PIL image: the generated image, then each word's map over it, labelled."""
    tiles = overlay_tiles(attr, tile, alpha)
    pad = 14
    sheet = Image.new("RGB", (tile * len(tiles), tile + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (label, im) in enumerate(tiles):
        sheet.paste(im, (k * tile, pad))
        draw.text((k * tile + 3, 1), label, fill="black")
    return sheet


# ----------------------------------------------------------------------------------------------------
# Checking the maps against Shapes World truth


def _object_words(caption: str):
    """[(group index, colour word span, shape word span)] from the caption's object spans."""
    shape_words = set(vocab.SHAPES) | set(vocab.PLURAL_SHAPES.values())
    out = []
    for span in decompose(caption).objects:
        offset = span.start
        colour = shape = None
        for w in span.text.split():
            pos = caption.index(w, offset)
            offset = pos + len(w)
            if w in vocab.COLOURS:
                colour = (w, pos)
            elif w in shape_words:
                shape = (w, pos)
        out.append((span.ref[0], colour, shape))
    return out


def _box_mask(detections, size: tuple[int, int]) -> np.ndarray:
    H, W = size
    ref = vocab.REFERENCE_RESOLUTION  # the detections' canvas side
    mask = np.zeros((H, W), dtype=bool)
    for d in detections:
        x0, y0, x1, y1 = d.bbox
        mask[int(np.floor(y0 * H / ref)):int(np.ceil(y1 * H / ref)), int(np.floor(x0 * W / ref)):int(np.ceil(x1 * W / ref))] = True
    return mask


def attribution_overlap(pipe, prompts: list[str], seeds: list[int], steps: int | None = None,
                        guidance: float | None = None, sampler: str | None = None, progress: bool = False) -> dict:
    """Mean share of each object word's map mass inside the oracle-detected box of its object.

    For every (prompt, seed) and every object of the caption, the colour word and the shape word are
    scored against the union of the boxes of detections with that colour and shape; objects the oracle
    does not find are counted (`missed`) but not scored. `baseline` is the box's share of the image
    (what a uniform map scores); `lift` = overlap / baseline. Intervals: 95% bootstrap over instances.
    """
    if not prompts or not seeds:
        raise ValueError("attribution_overlap needs at least one prompt and one seed")
    specs = [parse_caption(p) for p in prompts]  # CaptionError (a ValueError) before any compute
    items = [(p, s) for p in prompts for s in seeds]
    spec0 = pipe.make_spec("x", None, steps, guidance, 0, 1, None, sampler)
    store = AttentionStore()
    cond = pipe.encode_text([p for p, _ in items])
    images = sample_embeds(pipe, cond, [s for _, s in items], spec0.steps, spec0.guidance, spec0.sampler,
                           hooks=[store], batch_size=len(items), progress=progress,
                           desc=f"explain --overlap: {len(items)} images", prompts=[p for p, _ in items])
    size = tuple(images.shape[-2:])
    maps = store.mean_maps(size)  # (2N or N, Nk, H, W)
    offset = len(items) if maps.shape[0] == 2 * len(items) else 0  # the conditional half comes second
    rows = {"colour": [], "shape": []}
    missed = 0
    for k, ((prompt, _), image) in enumerate(zip(items, images)):
        spec = specs[prompts.index(prompt)]
        reading = detect(image.permute(1, 2, 0).numpy())
        spans = {s.start: s for s in word_token_spans(pipe.tokenizer, prompt)}
        for g, colour, shape in _object_words(prompt):
            group = spec.groups[g]
            found = [d for d in reading.detections if d.colour == group.colour and d.shape == group.shape]
            if not found:
                missed += 1
                continue
            mask = torch.from_numpy(_box_mask(found, size))
            for kind, word in (("colour", colour), ("shape", shape)):
                if word is None:
                    continue
                m = maps[offset + k, list(spans[word[1]].positions)].sum(0)
                rows[kind].append((float(m[mask].sum() / m.sum()), float(mask.float().mean())))
    result = {"prompts": len(prompts), "seeds": list(seeds), "objects_missed_by_oracle": missed}
    rng = np.random.default_rng(0)
    for kind in ("colour", "shape", "all"):
        r = np.array(rows["colour"] + rows["shape"] if kind == "all" else rows[kind]).reshape(-1, 2)
        if not len(r):
            result[kind] = {"n": 0}
            continue
        ov, base = r[:, 0], r[:, 1]
        lift = ov / base
        overlap_ci, lift_ci = bootstrap_interval(np.stack([ov, lift]), rng, 1000)  # the same resamples
        result[kind] = {
            "n": int(len(r)),
            "overlap": float(ov.mean()), "overlap_ci": overlap_ci,
            "baseline": float(base.mean()),
            "lift": float(lift.mean()), "lift_ci": lift_ci,
        }
    return result
