"""Control benchmark on Shapes World, judged by the oracle: regions, attribute control, consistency.

- regions: two-object scenes; each object's box (grown by REGION_PAD px) is a region with the prompt
  "a <colour> <shape>", the caption is the base prompt. A region got its prompt when the oracle reads an
  object of that colour and shape with its centre inside the box. Methods: none (caption only, the
  baseline), attention (masked cross-attention), noise (MultiDiffusion blend), noise+bootstrap (and the
  latents outside every region reset to a noised plain background for the first BOOTSTRAP of the steps).
- attribute: recolour the first object of a generated two-object image (`control.attributes.recolour`):
  success = the oracle reads the new colour and the shape inside the box; kept = every other object the
  oracle read in the source is read again (colour, shape, centre within 3 px); PSNR outside the box.
- consistency: scenes of the training mix; per-condition metrics (bench.consistency) of images
  generated from the caption alone and from caption + sketch through each available adapter, plus the
  renders themselves (the ceiling), and L_consistency with unit lambdas.
Every rate has a 95% Wilson interval, every mean a 95% normal interval.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from t2ikit.attention.processor import AttentionController
from t2ikit.bench.consistency import consistency, sketch_consistency, weighted_consistency_loss
from t2ikit.bench.progress import Timer, bar, summary
from t2ikit.bench.stats import wilson_interval
from t2ikit.control.adapters import load_adapter
from t2ikit.control.attributes import recolour
from t2ikit.control.reference import ReferenceAdapter, is_attention_adapter, load_reference_adapter
from t2ikit.diffusion.losses import noised_batch
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.pipeline import PLAIN
from t2ikit.world import vocab
from t2ikit.world.caption import write_caption
from t2ikit.world.conditions import from_modalities, shapes_batch
from t2ikit.world.oracle import MIN_RESOLUTION, detect
from t2ikit.world.render import render
from t2ikit.world.scene import Group, Spec, make_scene, sample_scene

BENCH_SEED = 0xC0417  # world seed of the control suites (not the training stream's)
REGION_PAD = 4  # px at 64 around an object's box
KEEP_RADIUS = 3.0  # px at 64
BOOTSTRAP = 0.3  # fraction of steps the latents outside the regions are reset (method noise+bootstrap)
SECTIONS = ("regions", "attribute", "consistency", "conflict")


def _generate(pipe, prompt, **settings):
    """One generation through the pipeline, relation guidance off (as these measurements were made)."""
    return pipe.run(pipe.make_spec(prompt, **PLAIN, **settings), progress=False)


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else 0.0, "passed": k, "n": n, "ci95": [lo, hi]}


def _mean(values) -> dict:
    v = np.asarray(values, np.float64)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "ci95": [float(v.mean() - half), float(v.mean() + half)], "n": len(v)}


def _box(obj, size: int) -> tuple[int, int, int, int]:
    s = size / vocab.REFERENCE_RESOLUTION
    x0, y0 = max(0, round((obj.x0 - REGION_PAD) * s)), max(0, round((obj.y0 - REGION_PAD) * s))
    x1 = min(size, round((obj.x0 + obj.extent + REGION_PAD) * s))
    y1 = min(size, round((obj.y0 + obj.extent + REGION_PAD) * s))
    return x0, y0, x1, y1


def _phrase(colour: str, shape: str) -> str:
    return write_caption(Spec((Group(colour, shape),)))


def _found(reading, colour, shape, box, size) -> bool:
    s = vocab.REFERENCE_RESOLUTION / size
    x0, y0, x1, y1 = (v * s for v in box)
    return any(d.colour == colour and d.shape == shape and x0 <= d.centre[0] < x1 and y0 <= d.centre[1] < y1
               for d in reading.detections)


def _rgb(gen, k=0) -> np.ndarray:
    return gen.images[k].permute(1, 2, 0).numpy()


def bench_regions(pipe, n: int, seeds: int, steps: int, progress=None, sketch_adapter=None) -> dict:
    """Region methods alone, and with the scene's sketch through `sketch_adapter` when given (the sketch
    fixes where objects go, the regions say which prompt goes where)."""
    size = pipe.default_size[0]
    out = {}
    methods = ["none", "attention", "noise", "noise+bootstrap"]
    if sketch_adapter is not None:
        methods += ["sketch", "sketch+attention", "sketch+noise"]
    for method in methods:
        region_hits, all_hits = 0, 0
        for i in range(n):
            scene = sample_scene(BENCH_SEED, i, category="colour_binding", reference=False)
            boxes = [_box(o, size) for o in scene.objects]
            regions = [f"{','.join(map(str, b))}:{_phrase(o.colour, o.shape)}" for o, b in zip(scene.objects, boxes)]
            extra = {}
            if method.startswith("sketch"):
                extra = {"sketch": render(scene, size).sketch, "adapters": {"sketch": sketch_adapter}}
            gen = _generate(pipe, write_caption(scene.spec), steps=steps, seed=1000 * i, n=seeds,
                                      regions=None if method in ("none", "sketch") else regions, **extra,
                                      region_mode="noise" if method.endswith(("noise", "bootstrap")) else "attention",
                                      bootstrap=BOOTSTRAP if method.endswith("bootstrap") else 0.0)
            for k in range(seeds):
                reading = detect(_rgb(gen, k))
                hits = [_found(reading, o.colour, o.shape, b, size) for o, b in zip(scene.objects, boxes)]
                region_hits += sum(hits)
                all_hits += all(hits)
            if progress:
                progress(f"regions {method} {i + 1}/{n}")
        out[method] = {"region_got_its_prompt": _rate(region_hits, 2 * n * seeds),
                       "all_regions": _rate(all_hits, n * seeds)}
    return out


def bench_attribute(pipe, n: int, steps: int, progress=None, adapters: dict | None = None) -> dict:
    size = pipe.default_size[0]
    s = vocab.REFERENCE_RESOLUTION / size
    methods = {"with_region": (True, None), "blend_only": (False, None)}
    for holder in ("sketch", "mask"):  # the source scene's layout held by a condition in both runs
        if holder in (adapters or {}):
            methods[f"{holder} + region"] = (True, holder)
            methods[f"{holder} + blend only"] = (False, holder)
    results = {name: [] for name in methods}
    for i in range(n):
        scene = sample_scene(BENCH_SEED + 1, i, category="colour_binding", reference=False)
        prompt = write_caption(scene.spec)
        obj = scene.objects[[o.group for o in scene.objects].index(0)]
        new = next(c for c in vocab.COLOURS if c not in {g.colour for g in scene.spec.groups})
        groups = tuple(Group(new, g.shape, g.size, g.count) if j == 0 else g for j, g in enumerate(scene.spec.groups))
        new_prompt = write_caption(Spec(groups, scene.spec.relations, scene.spec.style))
        box = _box(obj, size)
        mods = render(scene, size, reference=False)
        for name, (use_region, holder) in methods.items():
            hold = {holder: from_modalities(mods, holder)} if holder else None
            src, edit = recolour(pipe, prompt, new_prompt, box, _phrase(new, obj.shape), seed=7 * i, steps=steps,
                                 use_region=use_region, hold=hold, adapters=adapters)
            a, b = _rgb(src), _rgb(edit)
            rb = detect(b)
            x0, y0, x1, y1 = (v * s for v in box)
            others = [d for d in detect(a).detections
                      if not (x0 <= d.centre[0] < x1 and y0 <= d.centre[1] < y1)]
            kept = all(any(e.colour == d.colour and e.shape == d.shape
                           and np.hypot(e.centre[0] - d.centre[0], e.centre[1] - d.centre[1]) <= KEEP_RADIUS
                           for e in rb.detections) for d in others)
            outside = np.ones(a.shape[:2], bool)
            outside[box[1]:box[3], box[0]:box[2]] = False
            mse = float(((a - b)[outside] ** 2).mean())
            results[name].append({"success": _found(rb, new, obj.shape, box, size), "kept": kept,
                                  "psnr_outside": 99.0 if mse == 0 else float(10 * np.log10(1 / mse))})
        if progress:
            progress(f"attribute {i + 1}/{n}")
    return {name: {"success": _rate(sum(r["success"] for r in rs), len(rs)),
                   "kept": _rate(sum(r["kept"] for r in rs), len(rs)),
                   "psnr_outside_db": _mean([r["psnr_outside"] for r in rs])} for name, rs in results.items()}


PAIRS = (("sketch", "depth"), ("depth", "mask"), ("sketch", "reference"), ("mask", "reference"))
CONFLICT = ((4.0, 0.5), (4.0, 1.0), (4.0, 2.0), (8.0, 1.0), (2.0, 1.0))  # (text guidance, sketch adapter scale)


def _size(pipe) -> int:
    """Image side for the consistency sections: the model's, at least the oracle's minimum."""
    return max(pipe.default_size[0], MIN_RESOLUTION)


def _controlled(pipe, prompts, steps, adapters: dict, names, maps: dict, scales: dict | None = None) -> list:

    conds = {name: maps[name] for name in names}
    size = _size(pipe)
    gen = _generate(pipe, prompts, steps=steps, seed=0, adapters={k: adapters[k] for k in names},
                              scales={**{k: 1.0 for k in names}, **(scales or {})}, size=(size, size), **conds)
    return [_rgb(gen, k) for k in range(len(prompts))]


def bench_consistency(pipe, n: int, steps: int, adapters: dict | None = None, progress=None) -> dict:
    """Per-condition consistency of images from the caption alone, the caption + each condition through its
    adapter, pairs of conditions (PAIRS), and the empty prompt with and without the reference image."""

    adapters = adapters or {}
    size = _size(pipe)
    scenes = [sample_scene(BENCH_SEED + 2, i) for i in range(n)]
    mods = [render(sc, size) for sc in scenes]
    prompts = [write_caption(sc.spec) for sc in scenes]
    maps = {name: [from_modalities(m, name) for m in mods] for name in adapters}
    images = {"ground-truth": [m.rgb for m in mods]}
    images["text only"] = _controlled(pipe, prompts, steps, adapters, (), maps)
    for name in adapters:
        images[f"text + {name}"] = _controlled(pipe, prompts, steps, adapters, (name,), maps)
        if progress:
            progress(f"consistency: text + {name}")
    for pair in PAIRS:  # residuals add up: each at scale 1, and each at 0.5 (the pair's sum at 1)
        if all(p in adapters for p in pair):
            images[f"text + {pair[0]} + {pair[1]}"] = _controlled(pipe, prompts, steps, adapters, pair, maps)
            images[f"text + {pair[0]} + {pair[1]} (0.5 each)"] = _controlled(
                pipe, prompts, steps, adapters, pair, maps, {k: 0.5 for k in pair})
            if progress:
                progress(f"consistency: text + {' + '.join(pair)}")
    if "reference" in adapters:  # the reference alone must carry the objects' identity
        images["empty prompt"] = _controlled(pipe, [""] * n, steps, adapters, (), maps)
        images["empty prompt + reference"] = _controlled(pipe, [""] * n, steps, adapters, ("reference",), maps)
    out = {}
    for method, ims in images.items():
        per = [consistency(im, sc, m) for im, sc, m in zip(ims, scenes, mods)]
        out[method] = {k: _mean([p[k] for p in per]) for k in per[0]}
        out[method]["L_consistency"] = _mean([weighted_consistency_loss(p) for p in per])
    return out


def bench_conflict(pipe, n: int, steps: int, adapters: dict, progress=None) -> dict:
    """A deliberate conflict: the sketch of one circle, a caption saying square (same colour and size).
    For each weighting (text guidance, sketch adapter scale) in CONFLICT: how often the oracle reads a
    square (text wins) or a circle (sketch wins) of the stated colour, and the edge F1 with the sketch."""
    if "sketch" not in adapters:
        raise ValueError("the conflict section needs a sketch adapter (--adapter sketch=DIR, or the shipped one)")
    size = _size(pipe)
    rng = np.random.default_rng(BENCH_SEED + 3)
    scenes, prompts = [], []
    for i in range(n):
        colour = list(vocab.COLOURS)[int(rng.integers(len(vocab.COLOURS)))]
        big = list(vocab.SIZES)[int(rng.integers(len(vocab.SIZES)))]
        scenes.append(make_scene(Spec(groups=(Group(colour, "circle", big, 1),)), rng, reference=False))
        prompts.append(write_caption(Spec(groups=(Group(colour, "square", big, 1),))))
    mods = [render(sc, size) for sc in scenes]
    sketches = [m.sketch[None].astype(np.float32) for m in mods]
    out = {}
    for text_scale, sketch_scale in CONFLICT:
        gen = _generate(pipe, prompts, steps=steps, seed=0, sketch=sketches, size=(size, size),
                                  adapters={"sketch": adapters["sketch"]}, scales={"text": text_scale, "sketch": sketch_scale})
        text_wins = sketch_wins = 0
        f1 = []
        for k, sc in enumerate(scenes):
            rgb = _rgb(gen, k)
            objs = [d for d in detect(rgb).detections if d.colour == sc.spec.groups[0].colour]
            text_wins += any(o.shape == "square" for o in objs)
            sketch_wins += any(o.shape == "circle" for o in objs)
            f1.append(sketch_consistency(rgb, mods[k].sketch))
        out[f"text {text_scale:g}, sketch {sketch_scale:g}"] = {
            "text_scale": text_scale, "sketch_scale": sketch_scale, "square (text wins)": _rate(text_wins, n),
            "circle (sketch wins)": _rate(sketch_wins, n), "sketch edge F1": _mean(f1)}
        if progress:
            progress(f"conflict: text {text_scale:g}, sketch {sketch_scale:g}")
    return out


def adapter_heldout_loss(pipe, adapter, batches: int = 4, batch_size: int = 16, data_seed: int = 999,
                         empty_caption: bool = False) -> dict:
    """Diffusion loss on held-out Shapes World batches with and without the adapter (same noise and
    timesteps), and the paired per-sample difference with a 95% interval. `empty_caption`: every sample
    with the empty prompt (what a reference adapter must make up for)."""
    if not isinstance(adapter, torch.nn.Module):
        adapter = load_reference_adapter(adapter, pipe.unet) if is_attention_adapter(adapter) else load_adapter(adapter)
    ns = training_scheduler(pipe.scheduler_config)
    name = adapter.config.modality
    gen = torch.Generator().manual_seed(data_seed)
    base, withs = [], []
    with torch.no_grad():
        for b in range(batches):
            batch = shapes_batch(data_seed, b, batch_size, pipe.default_size[0], names=(name,))
            z = pipe.vae.encode(batch["rgb"] * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
            text = pipe.encode_text([""] * batch_size if empty_caption else batch["captions"])
            t, noisy, target = noised_batch(z, ns, gen)
            for use, out in ((False, base), (True, withs)):
                kw, hooked, context = {}, contextlib.nullcontext(), text
                if use and isinstance(adapter, ReferenceAdapter) and adapter.concat:
                    context = adapter.context(text, batch[name])
                elif use and isinstance(adapter, ReferenceAdapter):
                    hooked = AttentionController([adapter.hook(batch[name])]).install(pipe.unet)
                elif use:
                    kw = {"down_intrablock_additional_residuals": adapter(batch[name])}
                with hooked:
                    pred = pipe.unet(noisy, t, encoder_hidden_states=context, return_dict=False, **kw)[0]
                out += ((pred - target) ** 2).mean((1, 2, 3)).tolist()
    return {"without": _mean(base), "with": _mean(withs), "empty_caption": empty_caption,
            "difference": _mean(np.asarray(withs) - np.asarray(base)), "batches": batches, "batch_size": batch_size}


def _units(section: str, n: int, adapters: dict) -> int:
    """How many progress ticks `section` makes (its bench_* function ticks once per unit)."""
    pairs = sum(all(p in adapters for p in pair) for pair in PAIRS)
    return {"regions": (7 if "sketch" in adapters else 4) * n, "attribute": n,
            "consistency": len(adapters) + pairs, "conflict": len(CONFLICT)}[section]


def run(pipe, sections=SECTIONS, n: int = 12, seeds: int = 2, steps: int = 20, adapters: dict | None = None,
        progress: bool = False) -> dict:
    """Every section of `sections` as a dict; `progress`: a bar per section on stderr and a summary line."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    if n < 2 or seeds < 1 or steps < 1:
        raise ValueError(f"need n >= 2, seeds >= 1, steps >= 1; got n={n}, seeds={seeds}, steps={steps}")
    start, timer = time.time(), Timer()
    result = {"model": str(pipe.path), "n": n, "seeds": seeds, "steps": steps, "bench_seed": BENCH_SEED}

    def ticker(section):  # a callable(message) that advances `section`'s bar
        b = bar(total=_units(section, n, adapters or {}), desc=f"control {section}", enabled=progress, unit="run")
        return b, lambda message: (b.set_postfix_str(message, refresh=False), b.update())

    if "regions" in sections:
        b, tick = ticker("regions")
        result["regions"] = bench_regions(pipe, n, seeds, steps, tick, (adapters or {}).get("sketch"))
        b.close()
    if "attribute" in sections:
        b, tick = ticker("attribute")
        result["attribute"] = bench_attribute(pipe, n, steps, tick, adapters)
        b.close()
    if "consistency" in sections:
        b, tick = ticker("consistency")
        result["consistency"] = bench_consistency(pipe, n, steps, adapters, tick)
        b.close()
        result["adapter_heldout_loss"] = {name: adapter_heldout_loss(pipe, a) for name, a in (adapters or {}).items()}
        if "reference" in (adapters or {}):
            result["adapter_heldout_loss"]["reference (empty caption)"] = adapter_heldout_loss(
                pipe, adapters["reference"], empty_caption=True)
    if "conflict" in sections:
        b, tick = ticker("conflict")
        result["conflict"] = bench_conflict(pipe, n, steps, adapters or {}, tick)
        b.close()
    result["seconds"] = time.time() - start
    summary(f"bench control: {', '.join(s for s in SECTIONS if s in sections)} on {n} scenes in {timer}", progress)
    return result


def _fmt_rate(r: dict) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] (n={r['n']})"


def _fmt_mean(r: dict) -> str:
    return f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def markdown(result: dict) -> str:
    lines = [f"Control benchmark: {result['model']}, n={result['n']} scenes, {result['steps']} steps"]
    if "regions" in result:
        lines += ["", "| regions | region got its prompt | all regions |", "| --- | --- | --- |"]
        lines += [f"| {m} | {_fmt_rate(r['region_got_its_prompt'])} | {_fmt_rate(r['all_regions'])} |"
                  for m, r in result["regions"].items()]
    if "attribute" in result:
        lines += ["", "| recolour one object | success | others kept | PSNR outside (dB) |", "| --- | --- | --- | --- |"]
        lines += [f"| {m} | {_fmt_rate(r['success'])} | {_fmt_rate(r['kept'])} | {_fmt_mean(r['psnr_outside_db'])} |"
                  for m, r in result["attribute"].items()]
    if "consistency" in result:
        keys = list(next(iter(result["consistency"].values())))
        lines += ["", "| images | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
        lines += [f"| {m} | " + " | ".join(_fmt_mean(r[k]) for k in keys) + " |"
                  for m, r in result["consistency"].items()]
    if "conflict" in result:
        lines += ["", "| conflict: circle sketch, caption says square | square (text wins) | circle (sketch wins) | "
                      "sketch edge F1 |", "| --- | --- | --- | --- |"]
        lines += [f"| {m} | {_fmt_rate(r['square (text wins)'])} | {_fmt_rate(r['circle (sketch wins)'])} | "
                  f"{_fmt_mean(r['sketch edge F1'])} |" for m, r in result["conflict"].items()]
    for name, r in result.get("adapter_heldout_loss", {}).items():
        lines += ["", f"Held-out diffusion loss, adapter {name}: without {_fmt_mean(r['without'])}, with "
                      f"{_fmt_mean(r['with'])}, paired difference {_fmt_mean(r['difference'])} "
                      f"({r['batches']} x {r['batch_size']} samples)"]
    return "\n".join(lines)
