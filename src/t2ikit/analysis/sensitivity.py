"""Prompt sensitivity, word interactions, information contribution and the prompt-length curve.

For a prompt tau with words w_1..w_n and fixed seeds (every variant of one seed shares its noise):

    S(w_i)    = E_seed ||G(tau) - G(tau \\ w_i)||^2                                (seed's formula)
    I(w_i,w_j) = E_seed ||G(tau) - G(tau\\w_i) - G(tau\\w_j) + G(tau\\{w_i,w_j})||^2
        the second-order finite difference (zero when the two words act additively). The seed writes
        G(tau) - G(tau\\{i,j}) + G(tau\\i) + G(tau\\j), a sign slip: that is not zero for additive words.
    IC(w_i)   = I(W_i; Y | other words): W_i uniform over w_i and its Shapes World substitutes (other
        colours, other shapes, ...), Y the oracle's reading (the set of "colour shape" labels detected
        and the background), samples over seeds; plug-in entropies with the Miller-Madow correction
        (+ (m - 1) / 2N nats, m = occupied bins), in bits; at most log2 |substitutes|.
    L*        = argmax_L Quality(tau_L) - lambda * Cost(L), tau_L = the L words of highest pixel
        sensitivity in prompt order, Cost(L) = L / n, Quality = the oracle's share of passed checks
        against the full caption (Shapes World) or 1 - MSE(G(tau_L), G(tau)) / MSE(G(""), G(tau)).

G is measured twice: in pixel space (mean squared difference per pixel value, images in [0, 1]) and in
oracle space (the vector of counts of each "colour shape" label the oracle reads, plus background).
All variants are generated in batches of one seed each, so n words cost a few batched runs per seed.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

from t2ikit.bench.progress import summary
from t2ikit.text.spans import word_token_spans
from t2ikit.text.weighting import edit_prompt, encode_weighted, plain_text
from t2ikit.world import vocab
from t2ikit.world.caption import parse_caption
from t2ikit.world.oracle import MIN_RESOLUTION, detect, score

_SPACES = re.compile(r"\s+")


def drop_words(text: str, spans, drop) -> str:
    """`text` without the words of `spans` at the indices in `drop`, whitespace collapsed."""
    drop = set(drop)
    out, last = [], 0
    for k, s in enumerate(spans):
        if k in drop:
            out.append(text[last:s.start])
            last = s.end
    out.append(text[last:])
    return _SPACES.sub(" ", "".join(out)).strip()


def substitute(text: str, span, word: str) -> str:
    return text[:span.start] + word + text[span.end:]


_CLASSES = [
    list(vocab.COLOURS), list(vocab.SHAPES), list(vocab.PLURAL_SHAPES.values()), ["small", "large"],
    ["little", "big"], list(vocab.BACKGROUND_WORDS)[:3], ["above", "below", "over", "under"], ["left", "right"],
    [vocab.NUMBER_WORDS[k] for k in (2, 3, 4)], ["filled", "outlined"],
]


def substitutes(word: str) -> list[str]:
    """Other words of `word`'s Shapes World class (colours, shapes, sizes, ...), [] if it has none."""
    for cls in _CLASSES:
        if word.lower() in cls:
            return [w for w in cls if w != word.lower()]
    return []


# ----------------------------------------------------------------------------------------------------
# What the oracle reads, as a vector and as a discrete outcome

_LABELS = [f"{c} {s}" for c in vocab.COLOURS for s in (*vocab.SHAPES, None)]
_BGS = list(vocab.BACKGROUNDS)


def oracle_vector(reading) -> np.ndarray:
    """Counts of each detected "colour shape" label (shape None included) then a background one-hot."""
    v = np.zeros(len(_LABELS) + len(_BGS))
    for d in reading.detections:
        v[_LABELS.index(f"{d.colour} {d.shape}")] += 1
    v[len(_LABELS) + _BGS.index(reading.background)] = 1
    return v


def oracle_outcome(reading) -> tuple:
    """A hashable reading: the sorted set of detected labels and the background."""
    return (tuple(sorted({f"{d.colour} {d.shape}" for d in reading.detections})), reading.background)


def entropy_mm(counts) -> float:
    """Miller-Madow entropy estimate in bits of a discrete sample given as counts."""
    c = np.asarray([x for x in counts if x > 0], dtype=float)
    n = c.sum()
    p = c / n
    return float((-(p * np.log(p)).sum() + (len(c) - 1) / (2 * n)) / math.log(2))


def entropy_plugin(counts) -> float:
    c = np.asarray([x for x in counts if x > 0], dtype=float)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def mutual_information(outcomes_by_value: dict[str, list]) -> dict:
    """I(W; Y) in bits from {value of W: [outcome Y per seed]} (W uniform): plug-in and Miller-Madow."""
    all_y = [y for ys in outcomes_by_value.values() for y in ys]
    k = len(outcomes_by_value)
    cond_plugin = np.mean([entropy_plugin(Counter(ys).values()) for ys in outcomes_by_value.values()])
    cond_mm = np.mean([entropy_mm(Counter(ys).values()) for ys in outcomes_by_value.values()])
    total = Counter(all_y).values()
    return {"bits_miller_madow": entropy_mm(total) - float(cond_mm),
            "bits_plugin": entropy_plugin(total) - float(cond_plugin),
            "upper_bound_bits": math.log2(k), "values": k, "samples": len(all_y)}


# ----------------------------------------------------------------------------------------------------
# The analysis


def check_lambda(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda (the cost weight of the length curve) must be a finite number >= 0, got {lam!r}")
    return float(lam)


def _generate(pipe, texts: list[str], seeds: list[int], steps, guidance, sampler, size=None,
              weighting: str = "none", progress: bool = False, desc: str = "analyze") -> dict:
    """{(text, seed): (3, H, W) image}: seed-major batches, each distinct text encoded once (syntax of `weighting`)."""
    from t2ikit.analysis.runner import sample_embeds

    embeds = encode_weighted(pipe.tokenizer, pipe.text_encoder, texts, weighting)  # (V, T, D)
    V = len(texts)
    cond = embeds.repeat(len(seeds), 1, 1)  # seed-major: rows s*V .. s*V + V - 1 share seed s
    all_seeds = [s for s in seeds for _ in range(V)]
    images = sample_embeds(pipe, cond, all_seeds, steps, guidance, sampler, batch_size=min(V, 64), size=size,
                           progress=progress, desc=desc, prompts=[plain_text(texts[k % V], weighting)
                                                                  for k in range(len(all_seeds))])
    return {(texts[k % V], all_seeds[k]): images[k] for k in range(len(all_seeds))}


def analyze(pipe, prompt: str, seeds=(0, 1, 2, 3), steps: int | None = None, guidance: float | None = None,
            sampler: str | None = None, lam: float = 0.1, interactions: bool = True,
            size: tuple[int, int] | None = None, weighting: str = "a1111", progress: bool = False) -> dict:
    """Sensitivity, interactions, information and length curve of `prompt` (module docstring) as a dict.

    `weighting`: the prompt's weighting syntax (`t2ikit.text.weighting`); the words are those of its plain
    text, and every variant keeps the weights of the words it keeps.

    Oracle-space measures need images of at least the oracle's minimum resolution (32 px); below it they
    are None and the length curve uses the pixel quality. `progress`: sampling bars and a summary on stderr.
    """
    from t2ikit.analysis.attribution import word_labels

    lam = check_lambda(lam)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    plain = plain_text(prompt, weighting)
    spans = [s for s in word_token_spans(pipe.tokenizer, plain) if not s.truncated]
    if not spans:
        raise ValueError(f"prompt {prompt!r} has no words (within the context) to analyse")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct ints, got {seeds!r}")
    spec = pipe.make_spec(prompt, None, steps, guidance, 0, 1, size, sampler, weighting=weighting)  # validates the rest

    use_oracle = min(spec.size) >= MIN_RESOLUTION
    try:
        truth = parse_caption(plain) if use_oracle else None
    except ValueError:
        truth = None
    n = len(spans)
    labels = word_labels(spans)
    t0 = time.perf_counter()

    def drop(idx):  # `prompt` without the words at idx (drop_words), the other words' weights kept
        return edit_prompt(prompt, weighting, [(spans[k].start, spans[k].end, "") for k in idx], collapse_spaces=True)

    drop1 = [drop([i]) for i in range(n)]
    drop2 = {(i, j): drop([i, j]) for i, j in combinations(range(n), 2)} if interactions else {}
    subs = {i: [edit_prompt(prompt, weighting, [(spans[i].start, spans[i].end, w)]) for w in substitutes(spans[i].word)]
            for i in range(n)}
    texts = list(dict.fromkeys([prompt, "", *drop1, *drop2.values(), *(t for v in subs.values() for t in v)]))
    img = _generate(pipe, texts, seeds, spec.steps, spec.guidance, spec.sampler, spec.size, weighting, progress,
                    f"analyze: {len(texts)} variants x {len(seeds)} seeds")
    readings = {key: detect(im.permute(1, 2, 0).numpy()) for key, im in img.items()} if use_oracle else {}
    vec = {key: oracle_vector(r) for key, r in readings.items()}

    def pix(a, b):  # mean squared difference per pixel value
        return float(((a - b) ** 2).mean())

    def stats(values):
        v = np.asarray(values, dtype=float)
        return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None}

    sens = []
    for i in range(n):
        sens.append({
            "word": labels[i],
            "pixel": stats([pix(img[prompt, s], img[drop1[i], s]) for s in seeds]),
            "oracle": stats([float(((vec[prompt, s] - vec[drop1[i], s]) ** 2).sum()) for s in seeds]) if use_oracle else None,
        })
    inter_pix = np.zeros((n, n))
    inter_orc = np.zeros((n, n))
    for (i, j), t in drop2.items():
        inter_pix[i, j] = inter_pix[j, i] = np.mean(
            [float(((img[prompt, s] - img[drop1[i], s] - img[drop1[j], s] + img[t, s]) ** 2).mean()) for s in seeds])
        if use_oracle:
            inter_orc[i, j] = inter_orc[j, i] = np.mean(
                [float(((vec[prompt, s] - vec[drop1[i], s] - vec[drop1[j], s] + vec[t, s]) ** 2).sum()) for s in seeds])
    info = {}
    for i in range(n):
        if not subs[i] or not use_oracle:
            info[labels[i]] = None
            continue
        by_value = {prompt: [oracle_outcome(readings[prompt, s]) for s in seeds]}
        for t in subs[i]:
            by_value[t] = [oracle_outcome(readings[t, s]) for s in seeds]
        info[labels[i]] = mutual_information(by_value)

    # Length curve: tau_L keeps the L most pixel-sensitive words (ties: prompt order).
    order = sorted(range(n), key=lambda i: (-sens[i]["pixel"]["mean"], i))
    prefixes = {L: drop(order[L:]) for L in range(0, n + 1)}
    extra = [t for t in dict.fromkeys(prefixes.values()) if t not in texts]
    if extra:
        img.update(_generate(pipe, extra, seeds, spec.steps, spec.guidance, spec.sampler, spec.size, weighting,
                             progress, f"analyze: {len(extra)} prompt-length variants"))

    def quality(text):
        """(mean, standard error) over seeds."""
        if truth is not None:
            per_seed = [(lambda sc: sc.n_passed / len(sc.checks))(score(img[text, s].permute(1, 2, 0).numpy(), truth))
                        for s in seeds]
        else:
            ref = np.mean([pix(img["", s], img[prompt, s]) for s in seeds])
            per_seed = [1 - pix(img[text, s], img[prompt, s]) / ref if ref > 0 else 1.0 for s in seeds]
        q = stats(per_seed)
        return q["mean"], q["se"]

    curve = []
    for L, t in prefixes.items():
        q, se = quality(t)
        curve.append({"L": L, "prompt": t, "quality": q, "quality_se": se, "cost": L / n, "objective": q - lam * L / n})
    best = max(curve, key=lambda c: (c["objective"], -c["L"]))
    summary(f"analyze: {len(img)} images of {n} words in {time.perf_counter() - t0:.1f} s; "
            f"most sensitive word {labels[order[0]]!r}, best length {best['L']}", progress)
    return {
        "prompt": prompt, "words": labels, "seeds": seeds,
        "config": {"steps": spec.steps, "guidance": spec.guidance, "sampler": spec.sampler, "lambda": lam,
                   "model": getattr(pipe, "name", None)},
        "sensitivity": sens,
        "interactions": {"pixel": inter_pix.tolist(), "oracle": inter_orc.tolist() if use_oracle else None,
                         "formula": "G(t) - G(t\\i) - G(t\\j) + G(t\\{i,j}), squared norm, mean over seeds"}
        if interactions else None,
        "information": info,
        "information_estimator": "I(W;Y) = H(Y) - H(Y|W), W uniform over the word and its substitutes, Y the oracle's "
                                 "reading (label set, background) per seed; Miller-Madow corrected, bits",
        "length_curve": curve, "best_length": best["L"], "best_prompt": best["prompt"],
        "quality_measure": "oracle checks passed (full caption)" if truth is not None else "1 - MSE to G(tau) / MSE of G('')",
        "images_generated": len(img), "seconds": round(time.perf_counter() - t0, 2),
    }


# ----------------------------------------------------------------------------------------------------
# Drawing


def matrix_heatmap(matrix, labels: list[str], cell: int = 28, title: str = ""):
    """A PIL heat map of a square matrix with word labels (rows left, columns written vertically on top)."""
    from PIL import Image, ImageDraw

    from t2ikit.analysis.attribution import heat_rgb

    m = np.asarray(matrix, dtype=float)
    n = len(labels)
    if m.shape != (n, n):
        raise ValueError(f"matrix of shape {m.shape} for {n} labels")
    left, top = 8 + 7 * max(len(w) for w in labels), 8 + 7 * max(len(w) for w in labels) + 14
    img = Image.new("RGB", (left + n * cell + 4, top + n * cell + 4), "white")
    draw = ImageDraw.Draw(img)
    draw.text((2, 1), title, fill="black")
    rgb = (heat_rgb(m) * 255).astype(np.uint8)
    for i in range(n):
        draw.text((4, top + i * cell + cell // 3), labels[i], fill="black")
        col = Image.new("RGB", (top - 16, cell), "white")
        ImageDraw.Draw(col).text((2, cell // 3), labels[i], fill="black")
        img.paste(col.rotate(90, expand=True), (left + i * cell, 14))
        for j in range(n):
            draw.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1],
                           fill=tuple(int(x) for x in rgb[i, j]))
    return img


def write_report(report: dict, out) -> list:
    """Write report.json, sensitivity.md and the interaction heat maps into folder `out`; their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json"]
    paths[0].write_text(json.dumps(report, indent=2))
    if report.get("interactions"):
        for space in ("pixel", "oracle"):
            if report["interactions"][space] is None:
                continue
            p = out / f"interactions_{space}.png"
            matrix_heatmap(report["interactions"][space], report["words"], title=f"interaction ({space})").save(p)
            paths.append(p)
    p = out / "report.md"
    p.write_text(markdown(report))
    paths.append(p)
    return paths


def markdown(report: dict) -> str:
    lines = [f"# Prompt analysis: {report['prompt']!r}", "",
             f"seeds {report['seeds']}, {report['config']}", "",
             "| word | S pixel (mean ± se) | S oracle (mean ± se) | I(w; image | rest), bits (MM) |", "|---|---|---|---|"]
    for s in report["sensitivity"]:
        info = report["information"].get(s["word"])

        def ms(x):
            if x is None:
                return "–"
            return f"{x['mean']:.4f} ± {x['se']:.4f}" if x["se"] is not None else f"{x['mean']:.4f}"

        lines.append(f"| {s['word']} | {ms(s['pixel'])} | {ms(s['oracle'])} | "
                     + (f"{info['bits_miller_madow']:.2f} (≤ {info['upper_bound_bits']:.2f})" if info else "–") + " |")
    lines += ["", f"Length curve (quality: {report['quality_measure']}):", "", "| L | prompt | quality | objective |",
              "|---|---|---|---|"]
    for c in report["length_curve"]:
        se = f" ± {c['quality_se']:.3f}" if c.get("quality_se") is not None else ""
        lines.append(f"| {c['L']} | {c['prompt']!r} | {c['quality']:.3f}{se} | {c['objective']:.3f} |")
    lines += ["", f"best L = {report['best_length']}: {report['best_prompt']!r}"]
    return "\n".join(lines) + "\n"
