"""Q4, optimal prompt design: how much each added word constrains the image, in accuracy and in information.

For every base scene (one object: a shape, a colour, a size, a background and a fill drawn at random) the prompt
grows one attribute at a time, "" -> "a circle" -> "a red circle" -> "a small red circle" -> "... on a gray
background" -> "..., drawn in outline, ...", and every prompt of a scene is generated from the same noise. The
oracle reads the image's main object (its largest detection) and the background; per level:

- accuracy: the share of the prompt's stated attributes the oracle reads back (bootstrap over scenes), and the
  share of all five of the scene's attributes it reads back (stated or not; chance for the unstated ones);
- information: I(tau; x) >= sum_a I(A_a; R_a), the scene's value of each attribute A_a against the value the
  oracle reads R_a (`bench.information.discrete_mi`, Miller-Madow, nats, minus its mean over shuffles of the
  scenes against the reads: the bias left at this sample size). The attributes are drawn independently, so the
  sum is a lower bound of I(stated attributes; oracle reading), itself <= I(tau; x) (data processing); an unstated
  attribute's true term is 0, so the empty prompt's row shows what is left of the bias;
- cost: the prompt's tokens (the model's tokenizer, no BOS/EOS); a generation's compute does not change with
  them (the context is padded to its fixed length), so tokens are the only cost a prompt adds.

Intervals: bootstrap over scenes (scenes resampled jointly across levels, so the level-to-level gains are paired);
percentile intervals for accuracies, and for information the percentile interval centred on the estimate
(`centred_interval`: resampling duplicates scenes, which biases a plug-in MI upward in every draw).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from t2ikit.bench.information import discrete_mi
from t2ikit.bench.progress import bar
from t2ikit.bench.stats import percentile_interval
from t2ikit.pipeline import PLAIN
from t2ikit.report.core import Figure, Finding, Table, experiment
from t2ikit.world import vocab
from t2ikit.world.caption import write_caption
from t2ikit.world.oracle import MIN_RESOLUTION, detect
from t2ikit.world.spec import Group, Spec, Style

Q4_SEED = 0x0404  # world seed of the base scenes
IMAGE_SEED = 4000  # image seed of scene 0; scene i uses IMAGE_SEED + i at every level
RESAMPLES = 400
MID = 3  # the level that splits the prompt in two for the per-token rates (shape, colour, size | background, fill)
PERMUTATIONS = 50  # shuffles per (level, attribute) for the estimator's bias
BATCH = 24  # images per pipeline call
ATTRIBUTES = ("shape", "colour", "size", "background", "fill")  # the order in which the prompt states them
VALUES = {"shape": vocab.SHAPES, "colour": tuple(vocab.COLOURS), "size": tuple(vocab.SIZES),
          "background": tuple(vocab.BACKGROUNDS), "fill": vocab.FILLS}


# ----------------------------------------------------------------------------------------------------
# Scenes and their prompts


def base_scenes(n: int) -> list[dict]:
    """n scenes {attribute: value}, each attribute drawn uniformly and independently (seeded)."""
    rng = np.random.default_rng(Q4_SEED)
    return [{a: str(VALUES[a][int(rng.integers(len(VALUES[a])))]) for a in ATTRIBUTES} for _ in range(n)]


def prompt_at(scene: dict, level: int) -> str:
    """The prompt stating the first `level` attributes of ATTRIBUTES, in the caption grammar's wording."""
    if not 0 <= level <= len(ATTRIBUTES):
        raise ValueError(f"level must be in [0, {len(ATTRIBUTES)}], got {level!r}")
    if level == 0:
        return ""
    if level == 1:
        return f"a {scene['shape']}"
    group = Group(scene["colour"], scene["shape"], scene["size"] if level >= 3 else None, 1)
    style = Style(background=scene["background"] if level >= 4 else None, fill=scene["fill"] if level >= 5 else None)
    return write_caption(Spec(groups=(group,), style=style))


def read_attributes(rgb: np.ndarray) -> dict:
    """What the oracle reads: the largest detected object's shape, colour, size and fill, and the background
    ("none" where there is no object or the oracle cannot tell)."""
    reading = detect(rgb)
    main = max(reading.detections, key=lambda d: d.area, default=None)
    out = {"background": reading.background}
    for a in ("shape", "colour", "size", "fill"):
        value = getattr(main, a) if main is not None else None
        out[a] = value if value is not None else "none"
    return out


def token_count(tokenizer, prompt: str) -> int:
    return len(tokenizer(prompt).input_ids) - 2  # without BOS and EOS


# ----------------------------------------------------------------------------------------------------
# The curves


def information(scenes: list[dict], reads: list[dict]) -> dict:
    """{attribute: discrete_mi(scene value, read value)} in nats."""
    return {a: discrete_mi([s[a] for s in scenes], [r[a] for r in reads]) for a in ATTRIBUTES}


def centred_interval(estimate: float, draws) -> list:
    """The bootstrap percentile interval moved to centre on `estimate`: a plug-in MI's bootstrap draws carry more
    bias than the full sample (resampling duplicates rows), so their raw percentiles can miss the estimate."""
    draws = np.asarray(draws, dtype=float)
    lo, hi = percentile_interval(draws)
    shift = estimate - float(draws.mean())
    return [lo + shift, hi + shift]


def permutation_bias(scenes: list[dict], reads: list[dict], rng: np.random.Generator,
                     permutations: int = PERMUTATIONS) -> dict:
    """{attribute: mean discrete_mi with the scenes shuffled against the reads}: what the estimator reports
    when there is no dependence, at this sample size and these marginals (subtracted from every estimate)."""
    out = {}
    for a in ATTRIBUTES:
        values, read = [s[a] for s in scenes], [r[a] for r in reads]
        out[a] = float(np.mean([discrete_mi(list(rng.permutation(values)), read) for _ in range(permutations)]))
    return out


def curves(scenes: list[dict], reads: list[list[dict]], rng: np.random.Generator, resamples: int = RESAMPLES) -> list:
    """Per level: accuracy (stated, all), information (total, per attribute) with bootstrap intervals over scenes;
    `reads[level][i]` is what the oracle read from scene i's image at that level. Information is Miller-Madow
    minus the permutation bias of the full sample (`permutation_bias`, held fixed over the bootstrap)."""
    n, levels = len(scenes), len(reads)
    match = np.array([[[reads[L][i][a] == scenes[i][a] for a in ATTRIBUTES] for i in range(n)]
                      for L in range(levels)], dtype=float)  # (levels, scenes, attributes)
    bias = [permutation_bias(scenes, reads[L], rng) for L in range(levels)]

    def stats(idx):
        sc = [scenes[i] for i in idx]
        info = [information(sc, [reads[L][i] for i in idx]) for L in range(levels)]
        total = np.array([sum(x[a] - bias[L][a] for a in ATTRIBUTES) for L, x in enumerate(info)])
        stated = np.array([match[L][idx, :L].mean() if L else np.nan for L in range(levels)])
        return total, stated, match[:, idx].mean((1, 2)), info

    total, stated, all_attr, info = stats(np.arange(n))
    draws = [stats(rng.integers(0, n, n))[:3] for _ in range(resamples)]
    out = []
    for L in range(levels):
        def ci(k, lag=0):  # information (k = 0) centred on its estimate, accuracies plain percentile
            vals = np.array([d[k][L] - (d[k][L - lag] if lag else 0) for d in draws])
            vals = vals[np.isfinite(vals)]
            if k == 0:
                return centred_interval(float(total[L] - (total[L - lag] if lag else 0)), vals)
            return list(percentile_interval(vals))
        out.append({
            "level": L, "info_nats": float(total[L]), "info_ci": ci(0),
            "gain_nats": float(total[L] - total[L - 1]) if L else None, "gain_ci": ci(0, 1) if L else None,
            "stated_accuracy": None if L == 0 else float(stated[L]), "stated_ci": None if L == 0 else ci(1),
            "all_accuracy": float(all_attr[L]), "all_ci": ci(2),
            "info_by_attribute": info[L], "bias_by_attribute": bias[L],
            "info_draws": [float(d[0][L]) for d in draws],
        })
    return out


def entropy_nats(attribute: str) -> float:
    """H(A) of a uniformly drawn attribute: the most its term can carry."""
    return float(np.log(len(VALUES[attribute])))


# ----------------------------------------------------------------------------------------------------
# The experiment


def _size(pipe) -> int:
    return max(pipe.default_size[0], MIN_RESOLUTION)


@experiment("q4.prompts", "Prompt length vs accuracy and information", minutes={"quick": 1.5, "full": 4})
def run(ctx) -> Finding:
    n_scenes = ctx.pick(12, 48, smoke=4)
    steps = ctx.pick(10, 20, smoke=2)
    pipe = ctx.pipe()
    size = _size(pipe)
    scenes = base_scenes(n_scenes)
    levels = len(ATTRIBUTES) + 1
    prompts = [[prompt_at(s, L) for s in scenes] for L in range(levels)]
    jobs = [(L, start) for L in range(levels) for start in range(0, n_scenes, BATCH)]
    progress = bar(total=len(jobs), desc="q4.prompts", enabled=ctx.progress, unit="batch")

    def generate(L, start):
        idx = list(range(start, min(start + BATCH, n_scenes)))
        t0 = time.perf_counter()
        with torch.no_grad():
            gen = pipe.run(pipe.make_spec([prompts[L][i] for i in idx], None, steps, None, 0, 1, (size, size), None,
                                          **PLAIN), progress=False, seeds=[IMAGE_SEED + i for i in idx])
        return {"reads": [read_attributes(im.permute(1, 2, 0).numpy()) for im in gen.images],
                "seconds": time.perf_counter() - t0}

    reads, seconds = [[] for _ in range(levels)], [0.0] * levels
    for L, start in jobs:
        unit = ctx.unit(f"level{L}-scenes{start}-{n_scenes}-steps{steps}", lambda: generate(L, start))
        reads[L] += unit["reads"]
        seconds[L] += unit["seconds"]
        progress.update()
    progress.close()

    rows = curves(scenes, reads, np.random.default_rng(0), ctx.pick(RESAMPLES, RESAMPLES, smoke=20))
    tokens = [float(np.mean([token_count(pipe.tokenizer, p) for p in prompts[L]])) for L in range(levels)]
    bound = np.cumsum([0.0] + [entropy_nats(a) for a in ATTRIBUTES])
    bias = [float(sum(r["bias_by_attribute"].values())) for r in rows]  # subtracted from each level's raw sum

    def f(x, ci=None, sign=False):
        if x is None:
            return "–"
        s = f"{x:+.2f}" if sign else f"{x:.2f}"
        return s + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if sign else f" [{ci[0]:.2f}, {ci[1]:.2f}]") if ci else s

    def corrected(L, a):  # attribute a's information at level L, shuffle bias removed
        return rows[L]["info_by_attribute"][a] - rows[L]["bias_by_attribute"][a]

    # each addition's gain split: the added attribute's own information, and the change of all the others
    own = [None] + [corrected(L, ATTRIBUTES[L - 1]) - corrected(L - 1, ATTRIBUTES[L - 1]) for L in range(1, levels)]
    others = [None] + [rows[L]["gain_nats"] - own[L] for L in range(1, levels)]
    table_rows = []
    for L, r in enumerate(rows):
        added = ATTRIBUTES[L - 1] if L else "(empty prompt)"
        eff = r["gain_nats"] / entropy_nats(added) if L else None
        table_rows.append([L, added, repr(prompts[L][0]), f"{tokens[L]:.1f}", f(r["stated_accuracy"], r["stated_ci"]),
                           f(r["all_accuracy"], r["all_ci"]), f(r["info_nats"], r["info_ci"]),
                           f"{bound[L]:.2f}", f(r["gain_nats"], r["gain_ci"], sign=True),
                           "–" if own[L] is None else f"{own[L]:+.2f}", "–" if others[L] is None else f"{others[L]:+.2f}",
                           "–" if eff is None else f"{eff:.2f}",
                           "–" if r["gain_nats"] is None or tokens[L] == tokens[L - 1]
                           else f"{r['gain_nats'] / (tokens[L] - tokens[L - 1]):+.2f}",
                           f"{seconds[L] / n_scenes:.2f}"])
    attr_rows = [[L, *[f"{rows[L]['info_by_attribute'][a]:.2f} ({rows[L]['bias_by_attribute'][a]:.2f})"
                       for a in ATTRIBUTES]] for L in range(levels)]

    # figure: accuracy and information against tokens
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.array(tokens)
    for key, ci, label in (("stated_accuracy", "stated_ci", "stated attributes read back"),
                           ("all_accuracy", "all_ci", "all 5 scene attributes read back")):
        pts = [(x[L], r[key], r[ci]) for L, r in enumerate(rows) if r[key] is not None]
        xs, ys = [p[0] for p in pts], np.array([p[1] for p in pts])
        lo, hi = np.array([p[2][0] for p in pts]), np.array([p[2][1] for p in pts])
        ax1.errorbar(xs, ys, yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], marker="o", capsize=3, label=label)
    ax1.set_xlabel("prompt length (tokens)")
    ax1.set_ylabel("share read back by the oracle")
    ax1.set_ylim(0, 1.05)
    ax1.legend(fontsize=8)
    ys = np.array([r["info_nats"] for r in rows])
    lo, hi = np.array([r["info_ci"][0] for r in rows]), np.array([r["info_ci"][1] for r in rows])
    ax2.errorbar(x, ys, yerr=[np.maximum(ys - lo, 0), np.maximum(hi - ys, 0)], marker="o", capsize=3,
                 label="sum_a I(A_a; R_a), Miller-Madow - shuffle bias")
    ax2.plot(x, bound, "k--", label="entropy of the stated attributes (ceiling)")
    for L in range(1, levels):
        ax2.annotate("+" + ATTRIBUTES[L - 1], (x[L], ys[L]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax2.set_xlabel("prompt length (tokens)")
    ax2.set_ylabel("information about the scene (nats)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{pipe.name}: {n_scenes} scenes x {levels} prompt lengths, {steps} steps")
    fig.tight_layout()
    path, rel = ctx.figure("curves")
    fig.savefig(path, dpi=110)
    plt.close(fig)

    # the claim: more words give more constraint (information rises with length), with diminishing returns:
    # information per token in the first half of the prompt (levels 0 -> MID) against the second (MID -> end),
    # paired over the same bootstrap resamples of scenes; each gain is split into the added attribute's own term and
    # the change of the others (an addition can be drawn and still displace what the image says about the rest)
    first, last = rows[1], rows[-1]
    rises = last["info_ci"][0] > rows[0]["info_ci"][1]
    gains = [rows[L]["gain_nats"] for L in range(1, levels)]
    effs = [gains[L - 1] / entropy_nats(ATTRIBUTES[L - 1]) for L in range(1, levels)]
    positive = [L for L in range(1, levels) if rows[L]["gain_ci"][0] > 0]
    flat = [L for L in range(1, levels) if rows[L]["gain_ci"][0] <= 0 <= rows[L]["gain_ci"][1]]
    draws = np.array([r["info_draws"] for r in rows])  # (levels, resamples)
    rate1 = (draws[MID] - draws[0]) / (tokens[MID] - tokens[0])
    rate2 = (draws[-1] - draws[MID]) / (tokens[-1] - tokens[MID])
    rate_first = (rows[MID]["info_nats"] - rows[0]["info_nats"]) / (tokens[MID] - tokens[0])
    rate_second = (rows[-1]["info_nats"] - rows[MID]["info_nats"]) / (tokens[-1] - tokens[MID])
    rate_diff_ci = centred_interval(rate_first - rate_second, rate1 - rate2)
    diminishing = rate_diff_ci[0] > 0
    stated_last = last["stated_accuracy"]
    if rises and diminishing:
        verdict = "holds"
    elif rises:
        verdict = "partly holds"
    else:
        verdict = "no difference"
    per_attr = ", ".join(f"+{ATTRIBUTES[L - 1]} {gains[L - 1]:+.2f} [{rows[L]['gain_ci'][0]:+.2f}, "
                         f"{rows[L]['gain_ci'][1]:+.2f}] ({effs[L - 1]:.0%} of its {entropy_nats(ATTRIBUTES[L - 1]):.2f})"
                         for L in range(1, levels))
    answer = (
        f"On {pipe.name}, {n_scenes} scenes, the information the image carries about the scene's attributes rises from "
        f"{rows[0]['info_nats']:.2f} [{rows[0]['info_ci'][0]:.2f}, {rows[0]['info_ci'][1]:.2f}] nats for the empty prompt "
        f"(nothing is stated: what the bias correction leaves) to {last['info_nats']:.2f} [{last['info_ci'][0]:.2f}, "
        f"{last['info_ci'][1]:.2f}] with all five attributes ({tokens[-1]:.1f} tokens; ceiling {bound[-1]:.2f}); the "
        f"oracle reads back {stated_last:.0%} [{last['stated_ci'][0]:.0%}, {last['stated_ci'][1]:.0%}] of the stated "
        f"attributes at full length ({first['stated_accuracy']:.0%} [{first['stated_ci'][0]:.0%}, "
        f"{first['stated_ci'][1]:.0%}] with the shape alone). Gain of each added attribute (nats, paired interval, share "
        f"of that attribute's entropy): {per_attr}. "
        + f"Information per token: {rate_first:.2f} nats over the first {tokens[MID]:.0f} tokens, {rate_second:.2f} "
        f"over the last {tokens[-1] - tokens[MID]:.0f} (difference {rate_first - rate_second:+.2f} "
        f"[{rate_diff_ci[0]:+.2f}, {rate_diff_ci[1]:+.2f}]): "
        + ("diminishing returns per token (the later phrases are also longer: the background phrase is 4 tokens). "
           if diminishing else "no diminishing returns outside the noise. ")
        + "".join(f"Adding the {ATTRIBUTES[L - 1]} brings {own[L]:+.2f} nats about itself and changes what the image "
                  f"says about the other attributes by {others[L]:+.2f}. " for L in range(2, levels) if others[L] < -0.1)
        + f"{len(positive)} of {levels - 1} additions carry information outside the noise"
        + (f"; {', '.join('+' + ATTRIBUTES[L - 1] for L in flat)} within it" if flat else "") + ". "
        + ("With this few scenes the intervals are wide; the full budget uses four times the scenes."
           if ctx.budget != "full" else "")
    )
    return Finding(
        answer=answer, verdict=verdict,
        tables=[Table("Accuracy, information and cost against prompt length (one added attribute per row)",
                      ["L", "added", "prompt (scene 0)", "tokens", "stated read back [95%]", "all 5 read back [95%]",
                       "I(tau; x) >= sum I(A;R), nats [95%]", "ceiling, nats", "gain, nats [95% paired]", "own", "others",
                       "gain / H(added)", "gain per token", "s per image"], table_rows,
                      note="Intervals: bootstrap over scenes (information: centred on the estimate). The ceiling is the entropy of the attributes "
                           "stated so far. 'gain / H(added)': the share of the added attribute's entropy that "
                           "reaches the image. 'own': the change of the added attribute's own term; 'others': the change of all other "
                           "terms (the gain is their sum). Time per image does not depend on the prompt: the text context is "
                           "padded to a fixed length."),
               Table("Information per attribute: raw Miller-Madow estimate (shuffle bias), nats; an unstated "
                     "attribute's true value is 0",
                     ["L", *ATTRIBUTES], attr_rows,
                     note="Maxima: " + ", ".join(f"{a} {entropy_nats(a):.2f}" for a in ATTRIBUTES))],
        figures=[Figure(rel, f"Accuracy (left) and information about the scene (right) against prompt length, with "
                             f"95% bootstrap intervals over {n_scenes} scenes. `{ctx.command()}`")],
        numbers={"scenes": n_scenes, "steps": steps, "tokens": tokens,
                 "info_nats": [r["info_nats"] for r in rows], "info_ci": [r["info_ci"] for r in rows],
                 "gain_nats": gains, "gain_ci": [r["gain_ci"] for r in rows[1:]], "gain_share_of_entropy": effs,
                 "stated_accuracy": [r["stated_accuracy"] for r in rows],
                 "stated_ci": [r["stated_ci"] for r in rows],
                 "all_accuracy": [r["all_accuracy"] for r in rows], "ceiling_nats": bound.tolist(),
                 "nats_per_token": [rate_first, rate_second], "own_gain_nats": own[1:],
                 "others_change_nats": others[1:], "nats_per_token_diff_ci": rate_diff_ci,
                 "shuffle_bias_nats": bias, "seconds_per_image": [s / n_scenes for s in seconds]},
        what_was_run=(f"{pipe.name}, {n_scenes} single-object scenes (Q4_SEED {Q4_SEED:#x}), each prompted at 6 lengths "
                      f"from '' to shape+colour+size+background+fill, same noise per scene (seed {IMAGE_SEED}+i), "
                      f"{steps} steps, model's sampler and guidance, relation guidance off; oracle reads the largest "
                      f"object and the background."),
    )
