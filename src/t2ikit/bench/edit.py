"""Edit benchmark: fixed Shapes World edits, judged by the oracle.

Five kinds of edit, each on two-object scenes rendered exactly (real images, not generated ones); the
first object of the caption is edited, the second is the untouched one:

    colour    "a red circle and a blue square"        -> "a green circle and a blue square"
    shape     ... circle ...                           -> ... triangle ...
    size      "a small red circle and a large ..."     -> "a large red circle and a large ..."
    object    colour and shape at once (a word swap of the whole object)
    relation  "a red circle left of a blue square"     -> "a red circle right of a blue square"

Per edit: success (the oracle finds the edited object as the target says, and the source object is gone
from its place; for relation, the target relation holds), preservation (the untouched object is read
with its colour, shape and size within PRESERVE_RADIUS px of its place) and PSNR and SSIM (bench.metrics)
outside the edit region (the edited object's boxes before and after, grown by REGION_PAD px; SSIM's 11-px
window near the region still sees the edit, so SSIM outside is below 1 even for the ground truth). Relation
edits move both objects: they have no untouched object and no outside region. A ground-truth editor (the
target scene rendered) calibrates the scoring: it must score 100% on everything.

Methods (t2ikit.edit): reconstruct (the source prompt as the target), swap, p2p, each with
"+mask" (DiffEdit's mask, grown by --mask-dilate), and blend (SDEdit from 0.8 of the schedule + Blended
Latent Diffusion, guidance BLEND_GUIDANCE) with its mask: "+mask" DiffEdit's,
"+attn" the source's cross-attention to the edited words, both snapped to the image's objects (boxes
grown by MASK_SNAP px), or "+detect" the boxes Shapes World's detector finds for the edited object;
"+sketch" adds the shipped sketch adapter holding the source's outlines (all of them for a colour
edit, those outside the mask otherwise); "+outline" draws the target's outline (from the shape
vocabulary, in the edited object's box, at the target size's extent for a size edit) into that sketch and
"+shapemask" holds the target's silhouette with the shipped class-mask adapter (t2ikit.world.outlines);
"+local" samples the masked object under its own phrase alone ("an orange triangle"). Blend methods sample
against the empty prompt; "+srcneg" makes the source prompt (with "+local" the source phrase) the negative,
as every blend method did before 2026-11-29 (it pushes the hue past the target: red -> orange drawn yellow).
"+fresh" samples the masked region from fresh noise over the whole schedule (strength 1, start "noise"). A
relation edit with a blend method moves an object (t2ikit.world.moves.plan_move; it needs
"+shapemask" and "+detect").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from t2ikit.bench.metrics import ssim
from t2ikit.bench.progress import Timer, bar, summary, write
from t2ikit.bench.stats import wilson_interval
from t2ikit.edit import EditOptions
from t2ikit.world import vocab
from t2ikit.world.caption import write_caption
from t2ikit.world.oracle import detect, score_reading
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import CANVAS, GAP, Group, Obj, Relation, Spec, make_scene, scene_rng

KINDS = ("colour", "shape", "size", "object", "relation")
METHODS = ("ground-truth", "reconstruct", "swap", "swap+mask", "p2p", "p2p+mask", "blend+mask", "blend+sketch+mask",
           "blend+attn", "blend+detect", "blend+sketch+detect", "blend+sketch+outline+mask", "blend+sketch+outline+detect",
           "blend+shapemask+detect", "blend+sketch+outline+shapemask+detect", "blend+shapemask+local+detect",
           "blend+sketch+outline+shapemask+local+detect", "blend+shapemask+srcneg+detect",
           "blend+shapemask+local+srcneg+detect", "blend+shapemask+local+fresh+detect")
# what `t2ikit bench edit` runs without --methods: the baselines and the shapes-world preset's blend, each of
# which runs on every kind (all of METHODS takes hours on a CPU, and some blends cannot move objects)
DEFAULT_METHODS = ("ground-truth", "reconstruct", "swap", "p2p", "blend+shapemask+local+detect")
BLEND_GUIDANCE = 5.0  # blend methods sample at this CFG scale (the bench's --guidance is the swap/p2p one)
MASK_SNAP = 2  # px: blend methods snap their DiffEdit/attention mask to the image's objects' boxes grown by this
BENCH_SEED = 0xED17  # world seed of the edit suites
DEFAULT_N = 20  # edits per kind
PRESERVE_RADIUS = 4.0  # px at 64: an untouched object may move this little
GONE_RADIUS = 6.0  # px at 64: the source object must not be read this close to its old place
REGION_PAD = 2  # px at 64 around the edited object's boxes


@dataclass(frozen=True)
class EditCase:
    kind: str
    source_prompt: str
    target_prompt: str
    source_spec: Spec
    target_spec: Spec
    source_image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    target_image: np.ndarray  # (H, W, 3): the target scene rendered with the same layout
    edited: tuple[Obj, Obj]  # the edited object before and after
    untouched: tuple[Obj, ...]  # objects the edit must keep (none for relation edits)
    region: np.ndarray | None  # (H, W) bool: where the edit may change pixels; None for relation edits


def _other(rng, options, exclude) -> str:
    allowed = [o for o in options if o not in exclude]
    return allowed[int(rng.integers(len(allowed)))]


def _resized(obj: Obj, size: str) -> Obj:
    lo, hi = vocab.SIZES[size]
    extent = (lo + hi) // 2
    cx, cy = obj.centre
    x0, y0 = int(round(cx - extent / 2)), int(round(cy - extent / 2))
    return replace(obj, size=size, extent=extent, x0=x0, y0=y0)


def _fits(objects: list[Obj]) -> bool:
    for i, a in enumerate(objects):
        if a.x0 < 1 or a.y0 < 1 or a.x0 + a.extent > CANVAS - 1 or a.y0 + a.extent > CANVAS - 1:
            return False
        for b in objects[i + 1:]:
            if not (a.x0 + a.extent + GAP <= b.x0 or b.x0 + b.extent + GAP <= a.x0
                    or a.y0 + a.extent + GAP <= b.y0 or b.y0 + b.extent + GAP <= a.y0):
                return False
    return True


def _box(obj: Obj, scale: float, pad: int) -> tuple[slice, slice]:
    lo = lambda v: max(0, int(np.floor((v - pad) * scale)))  # noqa: E731
    hi = lambda v: int(np.ceil((v + pad) * scale))  # noqa: E731
    return slice(lo(obj.y0), hi(obj.y0 + obj.extent)), slice(lo(obj.x0), hi(obj.x0 + obj.extent))


def make_case(kind: str, index: int, seed: int = BENCH_SEED, resolution: int = 64) -> EditCase:
    """Edit `index` of kind `kind`: deterministic in (kind, index, seed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; allowed: {', '.join(KINDS)}")
    rng = scene_rng(seed, KINDS.index(kind) * 1_000_003 + index)
    for _ in range(64):
        colours = list(rng.choice(list(vocab.COLOURS), 2, replace=False))
        shapes = list(rng.choice(list(vocab.SHAPES), 2, replace=False))
        sizes = list(rng.choice(list(vocab.SIZES), 2)) if kind == "size" else [None, None]
        groups = tuple(Group(str(c), str(s), z if z is None else str(z)) for c, s, z in zip(colours, shapes, sizes))
        relations = (Relation(0, str(rng.choice(list(vocab.RELATIONS))), 1),) if kind == "relation" else ()
        spec = Spec(groups, relations)
        try:
            scene = make_scene(spec, rng, reference=False)
        except ValueError:
            continue
        g0 = groups[0]
        if kind == "colour":
            new = replace(g0, colour=_other(rng, vocab.COLOURS, colours))
        elif kind == "shape":
            new = replace(g0, shape=_other(rng, vocab.SHAPES, shapes))
        elif kind == "size":
            new = replace(g0, size="large" if g0.size == "small" else "small")
        elif kind == "object":
            new = replace(g0, colour=_other(rng, vocab.COLOURS, colours), shape=_other(rng, vocab.SHAPES, shapes))
        else:
            new = g0
        if kind == "relation":
            target = Spec(groups, (Relation(0, vocab.INVERSE_RELATION[relations[0].relation], 1),))
            a, b = scene.objects
            ca, cb = a.centre, b.centre  # swap the places of the two objects' centres
            moved = (replace(a, x0=int(round(cb[0] - a.extent / 2)), y0=int(round(cb[1] - a.extent / 2))),
                     replace(b, x0=int(round(ca[0] - b.extent / 2)), y0=int(round(ca[1] - b.extent / 2))))
            if not _fits(list(moved)):
                continue
            objects, edited, untouched = moved, (a, moved[0]), ()
        else:
            target = Spec((new,) + groups[1:])
            before = next(o for o in scene.objects if o.group == 0)
            after = replace(before, colour=new.colour, shape=new.shape)
            if kind == "size":
                after = _resized(after, new.size)
            objects = tuple(after if o is before else o for o in scene.objects)
            if not _fits(list(objects)):
                continue
            edited, untouched = (before, after), tuple(o for o in scene.objects if o.group != 0)
        try:
            target.validate()
        except ValueError:
            continue
        source_image = render_rgb(scene, resolution)
        target_image = render_rgb(replace(scene, spec=target), resolution, objects=objects)
        region = None
        if kind != "relation":
            region = np.zeros((resolution, resolution), dtype=bool)
            for obj in edited:
                region[_box(obj, resolution / CANVAS, REGION_PAD)] = True
        return EditCase(kind, write_caption(spec), write_caption(target), spec, target, source_image, target_image,
                        edited, untouched, region)
    raise RuntimeError(f"no {kind} edit could be laid out for index {index}")


def make_cases(kind: str, n: int = DEFAULT_N, seed: int = BENCH_SEED, resolution: int = 64) -> list[EditCase]:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (edits per kind) must be an int >= 1; got {n!r}")
    return [make_case(kind, i, seed, resolution) for i in range(n)]


# ----------------------------------------------------------------------------------------------------
# Scoring one edited image


def _near(d, obj: Obj, radius: float) -> bool:
    return np.hypot(d.centre[0] - obj.centre[0], d.centre[1] - obj.centre[1]) <= radius


def score_edit(case: EditCase, image: np.ndarray) -> dict:
    """{success, preserved, psnr_outside, psnr, ssim_outside, ssim}: one edited image (the *_outside and
    preserved entries are None for relation edits, which have no region)."""
    reading = detect(image)
    checks = score_reading(reading, case.target_spec)
    if case.kind == "relation":
        success = all(c.passed for c in checks if c.kind == "relation")
    else:
        own = all(c.passed for c in checks if c.name.startswith("group 0"))
        before, after = case.edited
        s = case.source_spec.groups[0]
        stale = [d for d in reading.detections if d.colour == s.colour and d.shape == s.shape
                 and (case.kind != "size" or d.size == s.size) and _near(d, before, GONE_RADIUS)]
        success = own and not stale
    preserved = None
    if case.untouched:
        preserved = all(any(d.colour == o.colour and d.shape == o.shape and d.size == o.size
                            and _near(d, o, PRESERVE_RADIUS) for d in reading.detections) for o in case.untouched)
    diff = (np.asarray(image, dtype=np.float64) - case.source_image) ** 2
    psnr_all = _psnr(diff.mean())
    psnr_out = None if case.region is None else _psnr(diff[~case.region].mean())
    ssim_all = float(ssim(image, case.source_image)[0])
    ssim_out = None if case.region is None else float(ssim(image, case.source_image, ~case.region)[0])
    return {"success": bool(success), "preserved": preserved, "psnr_outside": psnr_out, "psnr": psnr_all,
            "ssim_outside": ssim_out, "ssim": ssim_all}


def _psnr(mse: float, cap: float = 60.0) -> float:
    return float(min(cap, 10 * np.log10(1.0 / max(mse, 10 ** (-cap / 10)))))


# ----------------------------------------------------------------------------------------------------
# Running methods


def method_options(method: str, steps: int, guidance: float, mask_dilate: int = 1):
    base, *flags = method.split("+")
    if base == "blend":
        mask = "attention" if "attn" in flags else "detect" if "detect" in flags else "auto"
        return EditOptions(method="blend", mask=mask, steps=steps, guidance=BLEND_GUIDANCE, mask_dilate=mask_dilate,
                           mask_snap=MASK_SNAP, sketch=1.0 if "sketch" in flags else 0.0,
                           target_outline="outline" in flags, shape_mask=1.0 if "shapemask" in flags else 0.0,
                           local_prompt="local" in flags, uncond="negative-prompt" if "srcneg" in flags else "none",
                           **({"strength": 1.0, "start": "noise"} if "fresh" in flags else {}))
    return EditOptions(method="swap" if base == "reconstruct" else base, mask="auto" if flags else None,
                       steps=steps, guidance=guidance, mask_dilate=mask_dilate)


def edit_images(pipe, cases: list[EditCase], method: str, steps: int = 20, guidance: float = 1.0,
                inversion=None, mask_dilate: int = 1) -> tuple[np.ndarray, object]:
    """(len(cases), H, W, 3) edited images by `method`, and the inversion (reused across methods)."""
    import torch

    from t2ikit.edit import edit
    from t2ikit.diffusion.inversion import invert

    if method == "ground-truth":
        return np.stack([c.target_image for c in cases]), inversion
    images = torch.stack([torch.from_numpy(c.source_image).permute(2, 0, 1) for c in cases])
    sources = [c.source_prompt for c in cases]
    if inversion is None:
        inversion = invert(pipe, images, sources, steps=steps, guidance=guidance, uncond="negative-prompt")
    targets = sources if method == "reconstruct" else [c.target_prompt for c in cases]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the source prompts are exact: the oracle check is moot
        result = edit(pipe, images, sources, targets, options=method_options(method, steps, guidance, mask_dilate),
                      inversion=inversion)
    return result.images.permute(0, 2, 3, 1).numpy(), inversion


def _rate(values: list[bool]) -> dict:
    n, k = len(values), int(sum(values))
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n, "passed": k, "n": n, "lo": lo, "hi": hi}


def _mean(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    se = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "se": se, "n": len(a)}


def summarise(records: list[dict]) -> dict:
    out = {"success": _rate([r["success"] for r in records]), "psnr": _mean([r["psnr"] for r in records])}
    kept = [r["preserved"] for r in records if r["preserved"] is not None]
    out["preserved"] = _rate(kept) if kept else None
    for metric in ("psnr", "ssim"):
        outside = [r[f"{metric}_outside"] for r in records if r[f"{metric}_outside"] is not None]
        out[f"{metric}_outside"] = _mean(outside) if outside else None
    out["ssim"] = _mean([r["ssim"] for r in records])
    return out


def runs(kind: str, method: str) -> bool:
    """False for a (kind, method) pair the edit refuses: a relation edit by blend without +detect and +shapemask."""
    base, *flags = method.split("+")
    return not (kind == "relation" and base == "blend" and not {"detect", "shapemask"} <= set(flags))


def check_runs(kinds, methods) -> None:
    """ValueError naming every (kind, method) pair that cannot run, before any compute."""
    refused = [f"{m} on {k} edits" for k in kinds for m in methods if not runs(k, m)]
    if refused:
        raise ValueError(f"cannot run {', '.join(refused)}: a relation edit with blend moves its object, which needs "
                         "the detector's mask and the class-mask adapter (+detect and +shapemask)")


def run(pipe, kinds=KINDS, methods=DEFAULT_METHODS, n: int = DEFAULT_N, steps: int = 20, guidance: float = 1.0,
        seed: int = BENCH_SEED, progress: bool = False, mask_dilate: int = 1) -> dict:
    """{method: {kind: summary}} over `n` edits per kind; see the module docstring for the measures.

    `progress`: a bar over (kind, method) runs on stderr, a line per run and a summary at the end."""
    kinds, methods = tuple(kinds), tuple(methods)
    bad = [k for k in kinds if k not in KINDS] + [m for m in methods if m not in METHODS]
    if bad or not kinds or not methods:
        raise ValueError(f"unknown or no kinds/methods {bad}; kinds: {', '.join(KINDS)}; methods: {', '.join(METHODS)}")
    check_runs(kinds, methods)
    if pipe is None and any(m != "ground-truth" for m in methods):
        raise ValueError("methods other than 'ground-truth' need a model")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed (the edit suite's world seed) must be an int in [0, 2**32); got {seed!r}")
    results: dict = {m: {} for m in methods}
    started, timer = time.perf_counter(), Timer()
    runs_bar = bar(total=len(kinds) * len(methods), desc="bench edit", enabled=progress, unit="run")
    for kind in kinds:
        cases = make_cases(kind, n, seed)
        inversion = None
        for method in methods:
            t0 = time.perf_counter()
            images, inversion = edit_images(pipe, cases, method, steps, guidance, inversion, mask_dilate)
            records = [score_edit(c, im) for c, im in zip(cases, images)]
            results[method][kind] = {**summarise(records), "seconds": round(time.perf_counter() - t0, 2)}
            if progress:
                s = results[method][kind]
                write(f"{kind:9s} {method:13s} success {s['success']['rate']:.2f}  {time.perf_counter() - t0:.1f}s")
            runs_bar.update()
    runs_bar.close()
    summary(f"bench edit: {len(kinds)} kinds x {len(methods)} methods x {n} edits in {timer}", progress)
    return {"results": results, "config": {"n": n, "steps": steps, "guidance": guidance, "seed": seed, "mask_dilate": mask_dilate,
                                            "kinds": list(kinds), "methods": list(methods)},
            "seconds": round(time.perf_counter() - started, 1)}


def markdown(result: dict) -> str:
    """One table: rows method x kind; success and preservation with 95% Wilson intervals, PSNR +- 1 s.e."""
    def rate(r):
        return "n/a" if r is None else f"{100 * r['rate']:.0f}% [{100 * r['lo']:.0f}, {100 * r['hi']:.0f}] (n={r['n']})"

    def db(r):
        return "n/a" if r is None else f"{r['mean']:.1f} ± {r['se']:.1f}"

    def sim(r):
        return "n/a" if r is None else f"{r['mean']:.3f} ± {r['se']:.3f}"

    lines = ["| method | edit | success | untouched kept | PSNR outside (dB) | PSNR all (dB) | SSIM outside | "
             "SSIM all |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, by_kind in result["results"].items():
        for kind, s in by_kind.items():
            lines.append(f"| {method} | {kind} | {rate(s['success'])} | {rate(s['preserved'])} | "
                         f"{db(s['psnr_outside'])} | {db(s['psnr'])} | {sim(s.get('ssim_outside'))} | "
                         f"{sim(s.get('ssim'))} |")
    c = result["config"]
    blend = any(m.startswith("blend") for m in result["results"])
    lines.append(f"\n{c['n']} edits per kind, {c['steps']} DDIM steps, guidance {c['guidance']}"
                 + (f" (blend methods: {BLEND_GUIDANCE})" if blend else "") + f"; {result['seconds']} s in all")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Inversion alone: reconstruction PSNR by steps and guidance, and agreement with diffusers


def run_inversion(pipe, n: int = 8, steps_list=(20, 50, 100), guidances=(4.0,), seed: int = BENCH_SEED,
                  progress: bool = False) -> dict:
    """Reconstruction PSNR and SSIM of the first `n` colour-edit source images (real renders), per inversion setting.

    Rows: "vae" (encode-decode only: the ceiling), DDIM at guidance 1 for each step count, and for each
    guidance > 1 (at the first step count): no fix, negative-prompt inversion, null-text inversion.
    "peer": max |x_T(ours) - x_T(diffusers DDIMInverseScheduler)| at the first step count.
    """
    import torch
    from diffusers import DDIMInverseScheduler

    from t2ikit.diffusion.inversion import ddim_invert, ddim_schedule, encode_image, invert, psnr, reconstruct

    cases = make_cases("colour", n, seed)
    images = torch.stack([torch.from_numpy(c.source_image).permute(2, 0, 1) for c in cases])
    prompts = [c.source_prompt for c in cases]
    rows = {}
    timer = Timer()
    rows_bar = bar(total=1 + len(steps_list) + 3 * len(guidances), desc="bench edit --inversion", enabled=progress,
                   unit="setting")

    def add(name, rec, seconds):
        p = psnr(rec, images).tolist()
        rows[name] = {**_mean(p), "ssim": _mean(ssim(rec, images).tolist()), "seconds": round(seconds, 2)}
        rows_bar.update()

    t0 = time.perf_counter()
    add("vae", pipe.decode(encode_image(pipe, images)), time.perf_counter() - t0)
    for steps in steps_list:
        t0 = time.perf_counter()
        inv = invert(pipe, images, prompts, steps=steps)
        add(f"ddim {steps} steps, guidance 1", reconstruct(pipe, inv), time.perf_counter() - t0)
    steps = steps_list[0]
    for g in guidances:
        for mode in ("none", "negative-prompt", "null-text"):
            t0 = time.perf_counter()
            inv = invert(pipe, images, prompts, steps=steps, guidance=g, uncond=mode)
            add(f"ddim {steps} steps, guidance {g}, uncond {mode}", reconstruct(pipe, inv), time.perf_counter() - t0)
    # peer: diffusers' DDIMInverseScheduler on the same model, image and prompt
    config = {k: v for k, v in pipe.scheduler_config.items() if not k.startswith("_")}
    sched = DDIMInverseScheduler.from_config({**config, "clip_sample": False, "set_alpha_to_one": True})
    sched.set_timesteps(steps)
    cond = pipe.encode_text(prompts)
    x0 = encode_image(pipe, images)
    with torch.no_grad():
        x = x0
        for t in sched.timesteps:
            x = sched.step(pipe.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0], t, x,
                           return_dict=False)[0]
    ours = ddim_invert(pipe.unet, ddim_schedule(pipe.scheduler_config, steps), x0, cond)[0]
    peer = {"max_abs_diff": float((ours - x).abs().max()), "max_abs": float(x.abs().max()), "steps": steps}
    rows_bar.close()
    summary(f"bench edit --inversion: {len(rows)} settings on {n} images in {timer}", progress)
    return {"rows": rows, "peer": peer, "n": n}


def inversion_markdown(result: dict) -> str:
    lines = ["| inversion | reconstruction PSNR (dB, mean ± s.e.) | SSIM (mean ± s.e.) | seconds |",
             "| --- | --- | --- | --- |"]
    for name, r in result["rows"].items():
        ssim_cell = f"{r['ssim']['mean']:.3f} ± {r['ssim']['se']:.3f}" if "ssim" in r else "n/a"
        lines.append(f"| {name} | {r['mean']:.2f} ± {r['se']:.2f} | {ssim_cell} | {r['seconds']} |")
    p = result["peer"]
    lines.append(f"\nvs diffusers DDIMInverseScheduler ({p['steps']} steps): max |x_T difference| "
                 f"{p['max_abs_diff']:.2e} (|x_T| up to {p['max_abs']:.2f}); {result['n']} images")
    return "\n".join(lines)
