"""CompBench: the oracle over fixed prompt suites with fixed seeds (in the spirit of GenEval and
T2I-CompBench, but exact: every prompt parses to a spec and the oracle checks every statement).

A suite is a list of items (category, prompt, image seed). The default suite of a split draws, for every
category of `categories.CATEGORIES`, prompts `i = 0..n_prompts-1` from
`sample_scene(BENCH_SEED, i, category, split).spec`, worded by `write_caption` with a fixed rng, and
`seeds` images per prompt. Split "heldout" puts in every prompt a colour-shape pair of vocab.HELD_OUT,
which the training split never shows. Item j of a suite is generated with image seed BENCH_IMAGE_SEED + j,
so consecutive items have consecutive seeds (a pipeline seeds image k of a call with seed + k: one call
per batch gives every item its own seed).

A generator is any callable `(prompts: list[str], seeds: list[int]) -> list[image]` (images in any
format the oracle reads; batch in, batch out); `make_generator` builds the reference ones
("ground-truth": the world's own render of the prompt's spec; "noise": uniform random pixels; "vae": the
ground truth encoded and decoded by a model's autoencoder, what the truth's own layouts keep in that latent
space) and the
model one (`T2IPipeline.from_folder(path).generate`). Results: per category the share of images whose
every check passed, with a 95% Wilson interval, and per-check accuracy; as a dict (JSON) and Markdown.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from t2ikit.bench.progress import Timer, bar, summary
from t2ikit.bench.stats import bootstrap_interval, mcnemar_p, wilson_interval
from t2ikit.models.registry import shipped_model_path
from t2ikit.world.caption import parse_caption, write_caption
from t2ikit.world.categories import CATEGORIES, SPLITS, get_world
from t2ikit.world.oracle import as_reference_rgb, score
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import Spec, make_scene, sample_scene

BENCH_SEED = 0xBE7C4  # world seed of the suites; training streams use small seeds (configs: 0)
BENCH_IMAGE_SEED = 1000  # image seed of item 0; item j gets BENCH_IMAGE_SEED + j
DEFAULT_N_PROMPTS = 50  # prompts per category
DEFAULT_SEEDS = 2  # images per prompt
DEFAULT_RESOLUTION = 64  # of the reference generators' images
# Layout streams the ground-truth generator tries per item: some 4-object, 3-relation specs find no
# layout on 5 of 6 streams (see scene.layout), and 64 make a failure unlikely (< 1e-5).
LAYOUT_ATTEMPTS = 64
CUSTOM_CATEGORY = "custom"  # category of prompts read from a file or a manifest without one
CHECK_KINDS = ("present", "colour", "size", "count", "relation", "background", "fill")

Generator = Callable[[list[str], list[int]], Sequence]

# ---------------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    category: str
    prompt: str
    seed: int
    spec: Spec


@dataclass(frozen=True)
class Suite:
    name: str  # "train", "heldout", or the prompt file's name
    items: tuple[Item, ...]
    config: dict  # what made it: split, n_prompts, seeds, bench seed


def make_suite(split: str = "train", n_prompts: int = DEFAULT_N_PROMPTS, seeds: int = DEFAULT_SEEDS,
               categories: Sequence[str] | None = None, bench_seed: int = BENCH_SEED, world: str = "full") -> Suite:
    """The fixed suite of `split`: n_prompts per category, `seeds` images per prompt. `world` (categories.WORLDS)
    restricts the prompts to a named world ("mini": its 3 colours, 3 shapes and 3 categories); `categories`
    defaults to the world's (for "full": CATEGORIES)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    _check_positive("n_prompts", n_prompts)
    _check_positive("seeds", seeds)
    allowed = get_world(world).categories
    categories = allowed if categories is None else categories
    unknown = [c for c in categories if c not in allowed]
    if unknown or not categories:
        raise ValueError(f"unknown categories {list(unknown) or '(none given)'} in world {world!r}; allowed: "
                         f"{', '.join(allowed)}")
    prompts = []
    for category in categories:
        for i in range(n_prompts):
            spec = sample_scene(bench_seed, i, category=category, split=split, reference=False, world=world).spec
            wording = np.random.default_rng([bench_seed, CATEGORIES.index(category), SPLITS.index(split), i])
            caption = write_caption(spec, wording)
            prompts.append((category, caption, parse_caption(caption)))  # scored as read, like any prompt
    config = {"split": split, "n_prompts": n_prompts, "seeds": seeds, "categories": list(categories),
              "bench_seed": bench_seed, "image_seed": BENCH_IMAGE_SEED}
    if world != "full":
        config["world"] = world
    return Suite(split, _items(prompts, seeds), config)


def suite_from_prompts(prompts: Sequence[str], seeds: int = DEFAULT_SEEDS, name: str = CUSTOM_CATEGORY) -> Suite:
    """A suite of the user's own captions (category "custom"); ValueError lists every unreadable one."""
    _check_positive("seeds", seeds)
    parsed, errors = [], []
    for n, prompt in enumerate(prompts, start=1):
        try:
            parsed.append((CUSTOM_CATEGORY, prompt, parse_caption(prompt)))
        except ValueError as err:
            errors.append(f"prompt {n}: {err}")
    if errors:
        raise ValueError("cannot read these prompts:\n" + "\n".join(errors))
    if not parsed:
        raise ValueError("no prompts given")
    return Suite(name, _items(parsed, seeds), {"prompts": name, "n_prompts": len(parsed), "seeds": seeds,
                                                 "image_seed": BENCH_IMAGE_SEED})


def suite_from_file(path: str | Path, seeds: int = DEFAULT_SEEDS) -> Suite:
    """One caption per line (blank lines and lines starting with '#' are skipped); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {str(path)!r} does not exist")
    prompts, errors = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            parse_caption(text)
        except ValueError as err:
            errors.append(f"{path}:{n}: {err}")
        prompts.append(text)
    if errors:
        raise ValueError(f"{len(errors)} line(s) of {path} cannot be read:\n" + "\n".join(errors))
    if not prompts:
        raise ValueError(f"prompt file {path} has no prompts")
    return suite_from_prompts(prompts, seeds, name=path.name)


def _items(prompts: list[tuple[str, str, Spec]], seeds: int) -> tuple[Item, ...]:
    items = []
    for category, prompt, spec in prompts:
        for _ in range(seeds):
            items.append(Item(category, prompt, BENCH_IMAGE_SEED + len(items), spec))
    return tuple(items)


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# ---------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------


def ground_truth_generator(resolution: int = DEFAULT_RESOLUTION) -> Generator:
    """The world's own render of each prompt's spec, laid out with the item's seed: the ceiling."""
    def generate(prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        images = []
        for prompt, seed in zip(prompts, seeds):
            spec = parse_caption(prompt)
            for attempt in range(LAYOUT_ATTEMPTS):  # the layout search fails often for crowded specs
                try:
                    scene = make_scene(spec, np.random.default_rng([seed, attempt]), reference=False)
                    break
                except ValueError:
                    if attempt == LAYOUT_ATTEMPTS - 1:
                        raise
            images.append(render_rgb(scene, resolution))
        return images

    return generate


def vae_generator(model: str | Path | None = None, resolution: int = DEFAULT_RESOLUTION) -> Generator:
    """The ground truth through a model folder's autoencoder (encode to the latent mean, decode; default folder:
    the shipped model): what a model that drew the truth's own layouts would score. Not a hard ceiling: a
    model may choose layouts (larger objects, say) that the autoencoder keeps better."""
    import torch
    from diffusers import AutoencoderKL

    path = Path(model) if model is not None else shipped_model_path()
    if not (path / "vae").is_dir():
        raise ValueError(f"no vae folder in {str(path)!r}: give a diffusers model folder")
    vae = AutoencoderKL.from_pretrained(str(path / "vae")).float().eval()
    truth = ground_truth_generator(resolution)

    def generate(prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        x = torch.from_numpy(np.stack(truth(prompts, seeds))).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
        return list(((y + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())

    return generate


def noise_generator(resolution: int = DEFAULT_RESOLUTION) -> Generator:
    """Uniform random pixels: the floor (what a model that ignores the prompt and draws nothing gets)."""

    def generate(prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        return [np.random.default_rng(seed).random((resolution, resolution, 3), dtype=np.float32) for seed in seeds]

    return generate


def pipeline_generator(pipeline, steps: int = 20, **generate_kwargs) -> Generator:
    """Wrap a T2IPipeline (anything with `generate(prompts, seed=, steps=, ...)` seeding image k with
    seed + k): one call per run of consecutive seeds."""

    def generate(prompts: list[str], seeds: list[int]) -> list:
        images: list = []
        start = 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and seeds[end] == seeds[start] + (end - start):
                end += 1
            images += list(pipeline.generate(list(prompts[start:end]), seed=int(seeds[start]), steps=steps,
                                             progress=False, **generate_kwargs))
            start = end
        return images

    generate.bench_name = f"pipeline:{getattr(pipeline, 'name', type(pipeline).__name__)}"
    return generate


def make_generator(name: str, model: str | Path | None = None, steps: int = 20,
                   resolution: int = DEFAULT_RESOLUTION, device: str = "cpu", dtype: str | None = None,
                   **generate_kwargs) -> Generator:
    """"ground-truth", "noise", "vae" (the ground truth through the folder `model`'s autoencoder) or "model"
    (the folder `model`, default the shipped one; `generate_kwargs` such as guidance, sampler or size go to
    its `generate`; `device`, `dtype`: where and in what precision it runs)."""
    if name == "ground-truth":
        return ground_truth_generator(resolution)
    if name == "vae":
        return vae_generator(model, resolution)
    if name == "noise":
        return noise_generator(resolution)
    if name == "model":
        path = Path(model) if model is not None else shipped_model_path()
        if not path.is_dir():
            raise ValueError(f"model folder {str(path)!r} does not exist"
                             + (" (the shipped model has not been trained into the package yet; pass --model DIR)"
                                if model is None else ""))
        from t2ikit.pipeline import T2IPipeline  # torch and diffusers: only when a model is asked for

        return pipeline_generator(T2IPipeline.from_folder(path, device=device, dtype=dtype), steps=steps,
                                  **generate_kwargs)
    raise ValueError(f"unknown generator {name!r}; allowed: ground-truth, noise, vae, model")


# ---------------------------------------------------------------------------------------------------
# Running and scoring
# ---------------------------------------------------------------------------------------------------


def run(suite: Suite, generator: Generator, batch_size: int = 16, save_images: str | Path | None = None,
        generator_name: str | None = None, progress: bool = False, journal: str | Path | None = None) -> dict:
    """Generate every item of `suite` in batches, score each with the oracle, summarise (see `summarise`).

    `progress`: a bar over images on stderr and a one-line summary at the end. `journal`: a JSON-lines file to
    which every finished batch is appended (its records, times and saved images); a run given the journal of an
    interrupted one (same suite, batch size and generator name) resumes after its last finished batch, so an
    evaluation of hours can be spread over several processes. The result's "resumed" says how many images were
    read back."""
    _check_positive("batch_size", batch_size)
    if not callable(generator):
        raise TypeError(f"generator must be a callable (prompts, seeds) -> images, got {type(generator).__name__}")
    generator_name = generator_name or _name(generator)
    done = _read_journal(journal, suite, batch_size, generator_name) if journal is not None else []
    save_dir = Path(save_images) if save_images is not None else None
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    records = [r for b in done for r in b["records"]]
    manifest = [m for b in done for m in b["manifest"]]
    t_generate, t_score = sum(b["generate_s"] for b in done), sum(b["score_s"] for b in done)
    timer, images_bar = Timer(), bar(total=len(suite.items), desc="compbench", enabled=progress, unit="image")
    images_bar.update(len(records))
    for start in range(len(records), len(suite.items), batch_size):
        batch = suite.items[start:start + batch_size]
        t0 = time.perf_counter()
        images = generator([it.prompt for it in batch], [it.seed for it in batch])
        generate_s = time.perf_counter() - t0
        images = _as_list(images)
        if len(images) != len(batch):
            raise ValueError(f"the generator returned {len(images)} images for {len(batch)} prompts")
        entry = {"start": start, "items": [[it.prompt, it.seed] for it in batch], "generator": generator_name,
                 "records": [], "manifest": [], "generate_s": generate_s, "score_s": 0.0}
        for k, (item, image) in enumerate(zip(batch, images)):
            t0 = time.perf_counter()
            entry["records"].append(_record(item, score(image, item.spec)))
            entry["score_s"] += time.perf_counter() - t0
            if save_dir is not None:
                name = f"{start + k:05d}.png"
                _to_pil(image).save(save_dir / name)
                entry["manifest"].append({"prompt": item.prompt, "seed": item.seed, "file": name,
                                          "category": item.category})
        if journal is not None:
            with open(journal, "a") as f:  # one line per batch; a line torn by a kill is dropped on resume
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
        records += entry["records"]
        manifest += entry["manifest"]
        t_generate, t_score = t_generate + generate_s, t_score + entry["score_s"]
        images_bar.update(len(batch))
    images_bar.close()
    if save_dir is not None:
        (save_dir / "manifest.json").write_text(json.dumps({"suite": suite.config, "images": manifest}, indent=2))
    result = summarise(records)
    result["config"] = {**suite.config, "suite": suite.name, "generator": generator_name}
    result["seconds"] = {"generate": round(t_generate, 3), "score": round(t_score, 3)}
    result["resumed"] = sum(len(b["records"]) for b in done)
    summary(f"compbench: {len(records)} images of {len(result['per_category'])} categories in {timer}; "
            f"{100 * result['overall']['accuracy']:.1f}% passed", progress)
    return result


def read_result(path: str | Path, suite: Suite) -> dict:
    """A result `run` wrote to `path` earlier, checked to be of `suite` (ValueError naming what differs: a result of
    another suite cannot be paired with this one's)."""
    result = json.loads(Path(path).read_text())
    there = result.get("config", {})
    here = json.loads(json.dumps(suite.config))  # tuples as JSON gives them back
    differs = [f"{k}: {there.get(k)} there, {v} here" for k, v in here.items() if there.get(k) != v]
    if differs or [it[1:3] for it in result.get("items", [])] != [[it.prompt, it.seed] for it in suite.items]:
        raise ValueError(f"{path} holds a result of another suite ({'; '.join(differs) or 'other items'}); give "
                         "another output folder")
    return result


def _read_journal(path: str | Path, suite: Suite, batch_size: int, generator_name: str) -> list[dict]:
    """The finished batches of a `run` journal, checked against `suite`, `batch_size` and the generator's name
    (ValueError when it was written for another run); a last line torn by a kill is dropped (and cut from the
    file)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    batches, good = [], 0
    for k, line in enumerate(lines):
        if not line:
            continue
        try:
            batches.append(json.loads(line))
        except json.JSONDecodeError:
            if any(lines[k + 1:]):
                raise ValueError(f"{path}: line {k + 1} is not JSON; not a CompBench journal") from None
            break  # the torn last line of a killed run
        good += len(line) + 1
    if good < len(text):  # JSON lines are ASCII: characters are bytes
        with open(path, "r+") as f:
            f.truncate(good)
    for k, b in enumerate(batches):
        want = suite.items[k * batch_size:(k + 1) * batch_size]
        if b.get("start") != k * batch_size or b.get("items") != [[it.prompt, it.seed] for it in want]:
            raise ValueError(f"{path} was written for another suite or batch size (its batch {k + 1} does not match "
                             f"this suite's items {k * batch_size}-{k * batch_size + len(want) - 1}); delete it or give "
                             "another journal")
        if b.get("generator") != generator_name:
            raise ValueError(f"{path} was written by generator {b.get('generator')!r}, not {generator_name!r}; delete "
                             "it or give another journal")
    return batches


def evaluate(generator, split: str = "train", n_prompts: int = DEFAULT_N_PROMPTS, seeds: int = DEFAULT_SEEDS,
             categories: Sequence[str] | None = None, batch_size: int = 16, progress: bool = False,
             world: str = "full", **generator_kwargs) -> dict:
    """CompBench of `generator` on the fixed suite of `split` (of the named `world`, see `make_suite`): what a
    trainer calls periodically.

    `generator`: a callable (prompts, seeds) -> images, a name for `make_generator`, or a pipeline
    (an object with `generate`). Returns the result dict (see `summarise`).
    """
    if isinstance(generator, str):
        name, generator = generator, make_generator(generator, **generator_kwargs)
    elif hasattr(generator, "generate") and not callable(generator):
        generator = pipeline_generator(generator, **generator_kwargs)
        name = generator.bench_name
    else:
        name = None
    suite = make_suite(split, n_prompts, seeds, categories, world=world)
    return run(suite, generator, batch_size=batch_size, generator_name=name, progress=progress)


def evaluate_folder(folder: str | Path) -> dict:
    """Score a folder of images listed in `folder`/manifest.json: a list (or {"images": [...]}) of
    {"prompt", "seed", "file"[, "category"]}. Every entry is checked before any image is scored."""
    from PIL import Image

    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no manifest.json listing its images (prompt, seed, file)")
    data = json.loads(path.read_text())
    entries = data.get("images") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of images, or {{\"images\": [...]}}")
    items, errors = [], []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"prompt", "file"} <= set(entry):
            errors.append(f"entry {n}: needs at least 'prompt' and 'file', got {entry!r}")
            continue
        if not (folder / entry["file"]).is_file():
            errors.append(f"entry {n}: image file {entry['file']!r} is missing")
            continue
        try:
            spec = parse_caption(entry["prompt"])
        except ValueError as err:
            errors.append(f"entry {n}: {err}")
            continue
        items.append((Item(entry.get("category", CUSTOM_CATEGORY), entry["prompt"], entry.get("seed", -1), spec),
                      folder / entry["file"]))
    if errors:
        raise ValueError(f"{path}: {len(errors)} bad entr{'y' if len(errors) == 1 else 'ies'}:\n" + "\n".join(errors))
    records = []
    for item, file in items:
        with Image.open(file) as im:
            if im.mode not in ("RGB", "P", "L"):
                raise ValueError(f"{file}: image mode {im.mode} is not supported; save RGB images")
            image = im.convert("RGB")
        records.append(_record(item, score(image, item.spec)))
    result = summarise(records)
    suite_config = data.get("suite", {}) if isinstance(data, dict) else {}
    result["config"] = {**suite_config, "suite": str(folder), "generator": f"folder:{folder}"}
    return result


def _record(item: Item, s) -> dict:
    return {"category": item.category, "prompt": item.prompt, "seed": item.seed, "passed": s.all_passed,
            "checks": [(c.kind, c.passed) for c in s.checks],
            "failed": [f"{c.name}: {c.detail}" for c in s.failures()]}


def _accuracy(passed: int, n: int) -> dict:
    lo, hi = wilson_interval(passed, n)
    return {"n": n, "passed": passed, "accuracy": passed / n if n else 0.0, "ci95": [round(lo, 4), round(hi, 4)]}


def summarise(records: list[dict]) -> dict:
    """{"per_category": {cat: {n, passed, accuracy, ci95, checks: {kind: accuracy}}}, "overall": ...,
    "mean_category_accuracy", "examples": failing items (up to 3 per category), "items": [[category, prompt,
    seed, passed, failed checks], ...] in suite order (what `paired_difference` compares; the failed checks as the
    oracle words them, "group 0 count: purple square: 1 found, 3 stated", empty for a pass)}."""
    by_category: dict[str, list[dict]] = {}
    for r in records:
        by_category.setdefault(r["category"], []).append(r)

    def block(rs: list[dict]) -> dict:
        out = _accuracy(sum(r["passed"] for r in rs), len(rs))
        kinds: dict[str, list[int]] = {}
        for r in rs:
            for kind, passed in r["checks"]:
                hit = kinds.setdefault(kind, [0, 0])
                hit[0] += passed
                hit[1] += 1
        out["checks"] = {k: round(kinds[k][0] / kinds[k][1], 4) for k in CHECK_KINDS if k in kinds}
        return out

    per_category = {c: block(rs) for c, rs in by_category.items()}
    return {
        "per_category": per_category,
        "overall": block(records),
        "mean_category_accuracy": float(np.mean([v["accuracy"] for v in per_category.values()])) if records else 0.0,
        "examples": {c: [{"prompt": r["prompt"], "seed": r["seed"], "failed": r["failed"]}
                         for r in rs if not r["passed"]][:3] for c, rs in by_category.items()},
        "items": [[r["category"], r["prompt"], int(r["seed"]), bool(r["passed"]), list(r["failed"])] for r in records],
    }


def paired_difference(a: dict, b: dict, n_boot: int = 10_000, seed: int = 0) -> dict:
    """b - a on the same suite items (two `run` results of one suite: same prompts, same seeds).

    Per category and overall: both accuracies, the difference with a 95% paired bootstrap interval over
    items, the discordant counts (a only, b only) and McNemar's exact two-sided p-value. ValueError when
    the results are not of the same items, or either has none (results written before "items" existed).
    """
    ia, ib = a.get("items"), b.get("items")
    if not ia or not ib:
        raise ValueError("both results need per-item records ('items'); re-run them with this version")
    if [x[:3] for x in ia] != [x[:3] for x in ib]:
        raise ValueError("the two results are not of the same suite items (prompts, seeds, order)")
    rng = np.random.default_rng(seed)
    out = {}
    for cat in [None, *dict.fromkeys(x[0] for x in ia)]:
        pa = np.array([x[3] for x in ia if cat is None or x[0] == cat], dtype=float)
        pb = np.array([x[3] for x in ib if cat is None or x[0] == cat], dtype=float)
        only_a, only_b = int(((pa == 1) & (pb == 0)).sum()), int(((pa == 0) & (pb == 1)).sum())
        out["overall" if cat is None else cat] = {
            "n": len(pa), "a": float(pa.mean()), "b": float(pb.mean()), "diff": float((pb - pa).mean()),
            "ci95": bootstrap_interval(pb - pa, rng, n_boot),
            "a_only": only_a, "b_only": only_b, "mcnemar_p": mcnemar_p(only_a, only_b)}
    return out


def markdown(result: dict) -> str:
    """One row per category: images, accuracy (all checks passed) with its 95% interval, per-check accuracy."""
    config = result.get("config", {})
    kinds = [k for k in CHECK_KINDS if any(k in v["checks"] for v in result["per_category"].values())]
    head = f"CompBench — suite {config.get('suite', '?')}, generator {config.get('generator', '?')}"
    lines = [head, "", "| category | images | accuracy | 95% CI | " + " | ".join(kinds) + " |",
             "|---" * (4 + len(kinds)) + "|"]
    rows = list(result["per_category"].items()) + [("**all**", result["overall"])]
    for name, v in rows:
        cells = [f"{100 * v['checks'][k]:.1f}" if k in v["checks"] else "-" for k in kinds]
        lines.append(f"| {name} | {v['n']} | {100 * v['accuracy']:.1f}% | "
                     f"[{100 * v['ci95'][0]:.1f}, {100 * v['ci95'][1]:.1f}] | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"mean over categories: {100 * result['mean_category_accuracy']:.1f}%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _as_list(images) -> list:
    if type(images).__module__.startswith("torch") and getattr(images, "ndim", 0) == 4:
        return list(images)  # (N, 3, H, W) -> N CHW tensors
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)  # (N, H, W, 3)
    return list(images)


def _to_pil(image):
    from PIL import Image

    if type(image).__module__.startswith("PIL"):
        return image
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        return Image.fromarray(image)
    as_reference_rgb(image)  # the same input checks as the oracle's
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _name(generator) -> str:
    return getattr(generator, "bench_name", None) or getattr(generator, "__qualname__", type(generator).__name__)
