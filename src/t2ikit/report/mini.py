"""The mini protocol: a reduced Shapes World in which a CPU run of minutes, from scratch, learns something that
CompBench can measure, so that the report's training questions (fusion strategies, curricula and loss
weightings, scaling) compare models that work instead of models that all score 0.

The protocol (docs/results/training.md, "The mini protocol"): the world "mini" (t2ikit.world.categories.WORLDS:
red / green / blue x circle / square / triangle, every object large, white background; single objects, colour
binding and spatial pairs) at 32 px; one xs VAE (factor 2: 16x16x4 latents) trained once per report folder and
shared, frozen, by every run; text encoder and UNet trained from scratch by `t2ikit.train.trainer.Trainer` from
configs/mini.toml; evaluated on CompBench restricted to the mini world (`compbench.make_suite(world="mini")`).

API (what the report's experiments call):

    run = MiniRun(seed=1, fusion="gated")              # what differs from configs/mini.toml
    row = train(run, root)                              # trains into root/<run.key()>, resumable, done marker
    res = evaluate(run, root, n_prompts=16, seeds=1)    # CompBench of the EMA model, cached in the run folder

A killed `train` resumes from the run's latest checkpoint; a finished one leaves `done.json` and is not
trained again. Every run's draws are a pure function of its seed: the same MiniRun gives the same weights.

Measured (docs/results/training.md, section 5): configs/mini.toml's 19,200 images take 562 s of one quiet CPU
core and reach 43.3% [35.7, 51.3] mini CompBench (seed 0, 150 images; single 72%, colour binding 44%, spatial
14%); half of it (9,600 images) reaches 16-25% depending on the seed.
configs/mini.toml names a `mini-*` size (t2ikit.models.sizes.MINI_SIZES), so `t2ikit train --config
configs/mini.toml` trains it too (VAE included, without this module's shared VAE and done marker).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from t2ikit.bench.stats import percentile_interval, wilson_interval
from t2ikit.models.sizes import MINI_SIZES, ModelSize
from t2ikit.report.core import die_with_parent, write_atomic
from t2ikit.scaling.sweep import append_log, training_wall_s

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "mini.toml"  # the protocol's train config
DONE = "done.json"
VAE_FOLDER = "vae"  # under the root: the shared autoencoder
VAE_STEPS = 400  # shared VAE: optimizer steps of 8 images (reconstructs every mini scene: CompBench 100%)
WORLD = "mini"
EVAL_STEPS = 20  # sampler steps of the evaluation images (DPM-Solver++ 2M, as the trainer's CompBench hook)
EVAL_GUIDANCE = 4.0

# UNet + text-encoder sizes of the mini protocol: width multiples of "xs" (as the CPU scaling sweep's,
# configs/sweep-cpu.toml), a table of t2ikit.models.sizes (where every named size lives).
SIZES: dict[str, ModelSize] = MINI_SIZES


@dataclass(frozen=True)
class MiniRun:
    """One training run of the mini protocol: what differs from configs/mini.toml."""

    seed: int = 0  # model init, data stream and noise draws
    fusion: str = "sequential"  # model.fusion (t2ikit.models.fusion)
    size: str = ""  # a named size (models.sizes: MINI_SIZES or MODEL_SIZES); "" = the config's
    samples: int = 0  # training images seen (steps = samples / batch size); 0 = the config's steps
    curriculum: dict = field(default_factory=dict)  # [curriculum] keys: resolution, complexity, mix
    losses: dict = field(default_factory=dict)  # [losses] keys: grounding, relation, text_alignment, weighting ...
    unet_train: dict = field(default_factory=dict)  # other [unet_train] overrides (lr, batch_size, ...)

    def key(self) -> str:
        """A folder name: readable parts plus a hash of everything (the run and the protocol's config file), so
        two runs never share a folder, and a changed configs/mini.toml trains anew."""
        config = CONFIG.read_text() if Path(CONFIG).is_file() else ""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True) + config
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        fusion = self.fusion.split(":")[0]
        return f"s{self.seed}-{fusion}-{self.size or 'base'}-{self.samples or 'full'}-{digest}"


def train_config(run: MiniRun, config: str | Path | None = None):
    """The TrainConfig of `run`: `config` (default configs/mini.toml) with the run's overrides, validated."""
    from t2ikit.train.config import CurriculumConfig, LossesConfig, load_config

    config = config or CONFIG
    t = load_config(config)
    if t.world.name != WORLD:
        raise ValueError(f"{config}: the mini protocol needs [world] name = {WORLD!r}, got {t.world.name!r}")
    t.run.seed, t.run.device, t.run.workers, t.run.progress = run.seed, "cpu", 0, False
    t.model.fusion = run.fusion
    if run.size:
        t.model.size = run.size
    for key, value in run.unet_train.items():
        if not hasattr(t.unet_train, key):
            raise ValueError(f"unknown unet_train key {key!r}")
        setattr(t.unet_train, key, value)
    if run.samples:
        if run.samples < t.unet_train.batch_size:
            raise ValueError(f"samples must be at least one batch ({t.unet_train.batch_size}), got {run.samples}")
        t.unet_train.steps = run.samples // t.unet_train.batch_size
        t.unet_train.warmup_steps = min(t.unet_train.warmup_steps, max(1, t.unet_train.steps // 10))
    t.curriculum = CurriculumConfig(**{**dataclasses.asdict(t.curriculum), **run.curriculum})
    t.losses = LossesConfig(**{**dataclasses.asdict(t.losses), **run.losses})
    t.vae_train.steps = 0  # every run reuses the root's shared VAE
    t.checkpoint.keep = 1
    t.eval.every, t.eval.compbench = 0, False
    t.export.at_end = False  # a fused UNet is no stock diffusers UNet; runs are evaluated in memory
    return t.validate()


# ---------------------------------------------------------------------------------------------------
# The shared VAE
# ---------------------------------------------------------------------------------------------------


def shared_vae(root: str | Path, config: str | Path | None = None, steps: int | None = None) -> dict:
    """Train (once per root; `steps` default VAE_STEPS) the VAE every run of `root` shares; its state dict."""
    from safetensors.torch import load_file, save_file

    from t2ikit.train.trainer import Trainer

    folder = Path(root) / VAE_FOLDER
    weights = folder / "vae.safetensors"
    if (folder / DONE).is_file():
        return load_file(weights)
    steps = VAE_STEPS if steps is None else steps
    t = train_config(MiniRun(), config)
    t.vae_train.steps, t.unet_train.steps = steps, 0
    trainer = Trainer(t.validate(), out=folder, device="cpu")
    trainer.run(resume=_resume(trainer))
    state = {k: v.contiguous() for k, v in trainer.vae.state_dict().items()}
    save_file(state, str(folder / "vae.safetensors.tmp"))
    os.replace(folder / "vae.safetensors.tmp", weights)
    write_atomic(folder / DONE, json.dumps({"steps": steps}))
    return state


def _resume(trainer) -> str | None:
    from t2ikit.train.checkpoint import list_checkpoints

    return "latest" if list_checkpoints(trainer.checkpoint_dir) else None


# ---------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------


def run_folder(run: MiniRun, root: str | Path) -> Path:
    return Path(root) / "runs" / run.key()


def _trainer(run: MiniRun, root: Path, config: str | Path | None):
    """A Trainer of `run` holding the shared VAE, positioned at its latest checkpoint (if any)."""
    from t2ikit.train.trainer import Trainer

    vae_state = shared_vae(root, config)
    trainer = Trainer(train_config(run, config), out=run_folder(run, root), device="cpu")
    trainer.vae.load_state_dict(vae_state)  # a resumed run reloads the same weights from its checkpoint
    return trainer


def train(run: MiniRun, root: str | Path, config: str | Path | None = None, threads: int = 1) -> dict:
    """Train `run` into root/runs/<key> (resuming a killed attempt; nothing when it is done); its row:
    {"key", "params", "text_params", "steps", "samples", "flops", "wall_s", "final_loss", ...}."""
    import torch

    root = Path(root)
    folder = run_folder(run, root)
    if (folder / DONE).is_file():
        return json.loads((folder / DONE).read_text())
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainer = _trainer(run, root, config)
        resume = _resume(trainer)
        append_log(folder / "log.jsonl", {"event": "mini_start", "resume": resume, "load": _load()})
        trainer.run(resume=resume)
        row = _row(run, trainer, folder)
    finally:
        torch.set_num_threads(previous)
    write_atomic(folder / DONE, json.dumps(row, indent=1))
    return row


def _train_in_worker(run: MiniRun, root: str, config: str, evaluation: dict | None = None) -> dict:
    """`train` (then `evaluate` with `evaluation`'s arguments) in a worker process: the protocol's config is the
    parent's (its text is part of every run's key)."""
    global CONFIG
    CONFIG = Path(config)
    row = train(run, root, config, threads=1)
    if evaluation is not None:
        evaluate(run, root, **evaluation, config=config, threads=1)  # cached in the run's folder
    return row


def train_ahead(runs: list[MiniRun], root: str | Path, workers: int, config: str | Path | None = None,
                progress: bool = False, evaluation: dict | None = None) -> int:
    """Train the runs of `runs` that are not done, longest first, `workers` at a time, each in its own process on
    one torch thread (independent runs use both cores of a 2-core machine, where one run on two threads does not);
    the root's shared VAE must be trained already. With workers < 2 nothing happens: the runs train when they are
    asked for.
    `evaluation`: `evaluate`'s keyword arguments (n_prompts, seeds, steps, guidance): each worker also evaluates
    its runs, whose cached results the report then reads, instead of evaluating them one by one afterwards.
    Returns how many runs it trained (or evaluated) here."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from t2ikit.bench.progress import bar

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not (Path(root) / VAE_FOLDER / DONE).is_file():
        raise ValueError(f"{root}: train the shared VAE (shared_vae) before training runs ahead")
    todo = list({r.key(): r for r in runs if not (run_folder(r, root) / DONE).is_file()
                 or (evaluation is not None and not _evaluation_path(r, root, **evaluation).is_file())}.values())
    if workers < 2 or len(todo) < 2:
        return 0
    config = str(config if config is not None else CONFIG)  # a worker imports this module afresh
    todo = longest_first(todo, config)
    done = bar(total=len(todo), desc="mini runs", enabled=progress, unit="run")
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
        for future in as_completed([pool.submit(_train_in_worker, r, str(root), config, evaluation) for r in todo]):
            future.result()  # a failed run raises here
            done.update()
    done.close()
    return len(todo)


def longest_first(runs: list[MiniRun], config: str | Path | None = None) -> list[MiniRun]:
    """`runs` by training steps, most first (a run's time is about proportional to its steps whatever its size: the
    mini runs are overhead-bound), ties in their order: a pool then ends on short runs, so no worker waits long on
    the others."""
    return sorted(runs, key=lambda r: -train_config(r, config).unet_train.steps)


def _load() -> float | None:
    """The machine's 1-minute load average (the runs share a CPU with other jobs; the logs say how much)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _row(run: MiniRun, trainer, folder: Path) -> dict:
    from t2ikit.models.sizes import count_params, unet_flops

    cfg = trainer.cfg
    steps, batch = cfg.unet_train.steps, cfg.unet_train.batch_size
    latent = (trainer.unet.config.in_channels, trainer.latent_size, trainer.latent_size)
    forward = unet_flops(trainer.unet, latent, text_tokens=cfg.model.max_tokens)
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    losses = {int(r["step"]): float(r["loss"]) for r in records if r.get("event") == "train" and r.get("stage") == "unet"}
    tail = [losses[s] for s in sorted(losses)[-max(1, len(losses) // 4):]]
    loads = [r["load"] for r in records if r.get("event") == "mini_start" and r.get("load") is not None]
    return {
        "key": run.key(), "run": dataclasses.asdict(run), "size": cfg.model.size, "fusion": cfg.model.fusion,
        "params": count_params(trainer.unet), "text_params": count_params(trainer.text_encoder),
        "steps": steps, "batch_size": batch, "samples": steps * batch,
        "unet_forward_flops": forward, "flops": 3 * forward * steps * batch,  # forward + backward ~ 3 forwards
        "wall_s": round(training_wall_s(folder / "log.jsonl", "mini_start"), 2),
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "load_at_start": loads,
    }


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


def ema_pipeline(run: MiniRun, root: str | Path, config: str | Path | None = None):
    """The T2IPipeline of a finished run's EMA weights (rebuilt from its last checkpoint)."""
    from t2ikit.pipeline import T2IPipeline
    from t2ikit.train.checkpoint import resolve_checkpoint

    folder = run_folder(run, root)
    if not (folder / DONE).is_file():
        raise ValueError(f"run {run.key()} is not trained yet (no {DONE} in {folder}); call train() first")
    trainer = _trainer(run, Path(root), config)
    trainer.load(resolve_checkpoint(trainer.checkpoint_dir, "latest"))
    sd = trainer.pipeline(ema=True)
    return T2IPipeline(sd.unet, sd.vae, sd.text_encoder, sd.tokenizer, dict(sd.scheduler.config))


def generator(pipe, steps: int | None = None, guidance: float | None = None):
    """A CompBench generator over `pipe`: the trainer's evaluation path (pipe.run, DPM-Solver++ 2M, CFG);
    steps and guidance default to EVAL_STEPS and EVAL_GUIDANCE."""
    steps = EVAL_STEPS if steps is None else steps
    guidance = EVAL_GUIDANCE if guidance is None else guidance

    def generate(prompts: list[str], seeds: list[int]) -> list:
        spec = pipe.make_spec(list(prompts), None, steps, guidance, 0, 1, None, "dpmpp_2m", 0.0, weighting="none")
        images = pipe.run(spec, progress=False, seeds=[int(s) for s in seeds]).images
        return list(images.permute(0, 2, 3, 1).float().cpu().numpy())

    return generate


def _evaluation_path(run: MiniRun, root: str | Path, n_prompts: int = 16, seeds: int = 1, steps: int | None = None,
                     guidance: float | None = None) -> Path:
    steps = EVAL_STEPS if steps is None else steps
    guidance = EVAL_GUIDANCE if guidance is None else guidance
    return run_folder(run, root) / f"compbench-{n_prompts}x{seeds}-{steps}-{guidance:g}.json"


def evaluate(run: MiniRun, root: str | Path, n_prompts: int = 16, seeds: int = 1, steps: int | None = None,
             guidance: float | None = None, config: str | Path | None = None, threads: int = 1) -> dict:
    """Mini CompBench (n_prompts per category x seeds images) of a finished run's EMA model, cached in its
    folder; the compbench result dict (per_category, overall with its Wilson interval, items) plus "eval_s"."""
    import torch

    from t2ikit.bench.compbench import evaluate as compbench_evaluate

    path = _evaluation_path(run, root, n_prompts, seeds, steps, guidance)
    steps = EVAL_STEPS if steps is None else steps
    guidance = EVAL_GUIDANCE if guidance is None else guidance
    if path.is_file():
        return json.loads(path.read_text())
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        pipe = ema_pipeline(run, root, config)
        result = compbench_evaluate(generator(pipe, steps, guidance), n_prompts=n_prompts, seeds=seeds, world=WORLD)
        result["eval_s"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.set_num_threads(previous)
    write_atomic(path, json.dumps(result))
    return result


def train_and_evaluate(run: MiniRun, root: str | Path, n_prompts: int = 16, seeds: int = 1, **kwargs) -> dict:
    """`train` then `evaluate`: the run's row with "accuracy", "ci95", "per_category" and "items" added."""
    row = dict(train(run, root, config=kwargs.get("config"), threads=kwargs.get("threads", 1)))
    result = evaluate(run, root, n_prompts, seeds, **kwargs)
    row.update(accuracy=result["overall"]["accuracy"], passed=result["overall"]["passed"], n=result["overall"]["n"],
               ci95=result["overall"]["ci95"], eval_s=result["eval_s"],
               per_category={c: v["accuracy"] for c, v in result["per_category"].items()},
               items=[bool(x[3]) for x in result["items"]])
    return row


# ---------------------------------------------------------------------------------------------------
# Statistics over seeds
# ---------------------------------------------------------------------------------------------------


def paired_seed_difference(a: list[list[bool]], b: list[list[bool]], rng: np.random.Generator,
                           resamples: int = 2000) -> dict:
    """b - a over training seeds: a[k], b[k] are the per-item passes of the two settings trained with seed k
    and scored on the same suite items. The interval is a two-level percentile bootstrap: seeds with
    replacement, then items with replacement within each drawn seed (pairs kept together), so it carries
    both seed-to-seed and prompt-to-prompt variation."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same positive number of seeds on both sides, got {len(a)} and {len(b)}")
    pa = [np.asarray(x, dtype=float) for x in a]
    pb = [np.asarray(x, dtype=float) for x in b]
    if any(len(x) != len(y) or not len(x) for x, y in zip(pa, pb)):
        raise ValueError("each seed needs the same non-zero number of items on both sides")
    diffs = [y - x for x, y in zip(pa, pb)]
    k = len(diffs)
    samples = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(0, k, size=k)
        samples[r] = np.mean([diffs[i][rng.integers(0, len(diffs[i]), size=len(diffs[i]))].mean() for i in picked])
    lo, hi = percentile_interval(samples)
    return {"a": float(np.mean([x.mean() for x in pa])), "b": float(np.mean([y.mean() for y in pb])),
            "diff": float(np.mean([d.mean() for d in diffs])), "ci95": [float(lo), float(hi)],
            "per_seed": [float(d.mean()) for d in diffs], "seeds": k}


def pooled_accuracy(items: list[list[bool]]) -> dict:
    """Share of passed items over every seed's items, with its Wilson interval (items treated as independent)."""
    flat = [bool(x) for seed in items for x in seed]
    passed = sum(flat)
    lo, hi = wilson_interval(passed, len(flat))
    return {"accuracy": passed / len(flat) if flat else float("nan"), "passed": passed, "n": len(flat),
            "ci95": [lo, hi]}


def fmt_interval(value: float, ci, pct: bool = True) -> str:
    """'23.4% [15.0, 33.1]' (pct) or '0.012 [-0.020, 0.040]'."""
    if pct:
        return f"{100 * value:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{value:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def run_times(root: str | Path) -> list[dict]:
    """Per finished run under `root`: fusion, size, samples, its training wall seconds and each evaluation's
    seconds, as the run's own records say (what a budget is made of)."""
    rows = []
    for done in sorted(Path(root).glob(f"runs/*/{DONE}")):
        row = json.loads(done.read_text())
        evals = [json.loads(p.read_text()).get("eval_s") or 0.0 for p in done.parent.glob("compbench-*.json")]
        rows.append({"key": row["key"], "fusion": row["fusion"], "size": row["size"], "samples": row["samples"],
                     "train_s": row["wall_s"], "eval_s": sum(evals)})
    return rows


def main(argv=None) -> None:
    """`python -m t2ikit.report.mini --root DIR [--seed N] [--samples N] [--n-prompts N]`: train one mini run
    from scratch (the shared VAE first, if the root has none), evaluate it, print its row as JSON.
    `--times`: print instead every finished run's training and evaluation seconds, by size and samples."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m t2ikit.report.mini", description=main.__doc__)
    p.add_argument("--root", required=True, help="folder of the shared VAE and the runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=0, help="training images (0: configs/mini.toml's steps)")
    p.add_argument("--fusion", default="sequential")
    p.add_argument("--size", default="")
    p.add_argument("--losses", default="{}", help='[losses] overrides as JSON, e.g. {"grounding": 0.02}')
    p.add_argument("--n-prompts", type=int, default=20, help="mini CompBench prompts per category")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--times", action="store_true", help="print the finished runs' seconds (train, evaluation)")
    a = p.parse_args(argv)
    if a.times:
        rows = run_times(a.root)
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["fusion"], r["size"], r["samples"]), []).append(r)
        print("| fusion | size | images | runs | train s (mean) | evaluation s (mean) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for (fusion, size, samples), rs in sorted(groups.items()):
            print(f"| {fusion} | {size} | {samples} | {len(rs)} | {np.mean([r['train_s'] for r in rs]):.0f} | "
                  f"{np.mean([r['eval_s'] for r in rs]):.0f} |")
        total = sum(r["train_s"] + r["eval_s"] for r in rows)
        print(f"{len(rows)} runs: {total / 60:.1f} min of train + evaluation time summed "
              f"({total / 120:.1f} min of wall in two workers if nothing waits)")
        return
    t0 = time.perf_counter()
    vae_s = None
    if not (Path(a.root) / VAE_FOLDER / DONE).is_file():
        shared_vae(a.root)
        vae_s = round(time.perf_counter() - t0, 1)
    run = MiniRun(seed=a.seed, fusion=a.fusion, size=a.size, samples=a.samples, losses=json.loads(a.losses))
    row = train_and_evaluate(run, a.root, n_prompts=a.n_prompts, threads=a.threads)
    row.pop("items")
    row["vae_train_s"] = vae_s
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
