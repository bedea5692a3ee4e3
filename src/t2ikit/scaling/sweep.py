"""Scaling sweeps: train a grid of model sizes x training budgets on Shapes World and write the run table
that `t2ikit scaling fit` reads (columns of `t2ikit.scaling.fit.RUN_COLUMNS`, one row per run).

    t2ikit scaling sweep --config configs/sweep-cpu.toml [--out DIR]

Every run starts from the base train config, gets the sweep's size, budget, batch size and resolution,
and trains the text encoder + UNet through `Trainer.run` on latents of ONE VAE trained once per sweep
(stage 1 of a `Trainer` with no UNet steps) and then frozen and shared by every run, so that losses of
different runs are measured in the same latent space.

Resumable: a finished run leaves `done.json` (its result row, written atomically); a later sweep skips it.
An unfinished run resumes from its newest checkpoint through `Trainer.run(resume="latest")`. The CSV is
rebuilt from the done markers after every run, so deleting a marker re-runs exactly that run.

The columns:
  params    N, UNet parameters (the text encoder is trained too but not counted, as Kaplan count
            non-embedding parameters of one network)
  samples   D, training images seen = UNet steps x batch size
  flops     C = 3 x (forward FLOPs of the UNet on one sample) x D: backward ~ 2 x forward (Kaplan 2020,
            Sec. 2.1); forward FLOPs are counted by torch's FlopCounterMode (a multiply-add is 2 FLOPs) at
            the run's latent shape and max_tokens; the text encoder and the frozen VAE encode are left out
  loss      mean training loss (min-SNR weighted diffusion loss) over the last `loss_window` of the steps
  accuracy  CompBench overall accuracy of the EMA pipeline after training (0 when eval.compbench is off)
  wall_s    training wall time summed over every attempt (kill + resume included), CompBench excluded
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from t2ikit.bench.progress import Timer, bar, summary
from t2ikit.scaling.fit import RUN_COLUMNS
from t2ikit.train.config import from_dict, load_config, read_toml

EXTRA_COLUMNS = ("size", "steps", "eval_s", "run")  # after RUN_COLUMNS in runs.csv; `fit` ignores them
BUDGET_UNITS = ("samples", "steps")
DONE = "done.json"

# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


@dataclass
class SweepSection:
    base: str = "configs/tiny.toml"  # train config every run starts from (relative to the working directory)
    out: str = "runs/sweep"  # sweep folder: vae/, one folder per run, runs.csv (overridden by --out)
    sizes: list = field(default_factory=lambda: ["xs"])  # names from [sizes] below or MODEL_SIZES
    budgets: list = field(default_factory=lambda: [64])  # training budgets, in budget_unit
    budget_unit: str = "samples"  # "samples" (images seen; must be a multiple of batch_size) or "steps"
    batch_size: int = 8  # images per UNet optimizer step
    resolution: int = 32  # image side in pixels
    warmup_steps: int = 10  # UNet lr warmup (the cosine decay ends at each run's own budget)
    seed: int = 0  # run.seed of every run: same data stream and noise draws for every size
    loss_window: float = 0.25  # `loss` = mean training loss of this last fraction of the steps
    checkpoint_every: int = 50  # UNet steps between checkpoints (a killed run loses at most this many)
    threads: int = 1  # torch.set_num_threads during the sweep (0 leaves torch's default)


@dataclass
class SweepVAE:
    size: str = "xs"  # a key of t2ikit.models.sizes.VAE_SIZES
    steps: int = 200  # optimizer steps of the one shared VAE
    batch_size: int = 8  # images per VAE step


@dataclass
class SweepEval:
    compbench: bool = True  # CompBench of every finished run (EMA weights)
    split: str = "train"  # CompBench suite
    n_prompts: int = 1  # prompts per category
    seeds: int = 1  # images per prompt
    steps: int = 10  # sampler steps
    guidance: float = 4.0  # classifier-free guidance scale


@dataclass
class SweepConfig:
    sweep: SweepSection = field(default_factory=SweepSection)
    vae: SweepVAE = field(default_factory=SweepVAE)
    eval: SweepEval = field(default_factory=SweepEval)
    sizes: dict = field(default_factory=dict)  # sweep-only sizes: name -> ModelSize fields (one table)

    def validate(self) -> "SweepConfig":
        from t2ikit.models.sizes import MODEL_SIZES, vae_size

        s = self.sweep
        for name in self.sizes:
            if name in MODEL_SIZES:
                raise ValueError(f"[sizes.{name}] shadows the named size {name!r}; give the sweep size another name")
        sizes = sweep_sizes(self)
        if not s.sizes or not all(isinstance(n, str) for n in s.sizes):
            raise ValueError(f"sweep.sizes must be a non-empty list of size names, got {s.sizes!r}")
        unknown = [n for n in s.sizes if n not in sizes and n not in MODEL_SIZES]
        if unknown:
            raise ValueError(f"sweep.sizes: unknown size(s) {', '.join(map(repr, unknown))}; valid sizes: "
                             f"{', '.join([*MODEL_SIZES, *sizes])} (add sweep-only sizes under [sizes])")
        if len(set(s.sizes)) != len(s.sizes) or len(set(s.budgets)) != len(s.budgets):
            raise ValueError(f"sweep.sizes and sweep.budgets must not repeat, got {s.sizes!r} and {s.budgets!r}")
        if s.budget_unit not in BUDGET_UNITS:
            raise ValueError(f"sweep.budget_unit must be one of {', '.join(BUDGET_UNITS)}, got {s.budget_unit!r}")
        if s.batch_size < 1:
            raise ValueError(f"sweep.batch_size must be >= 1, got {s.batch_size}")
        if not s.budgets or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in s.budgets):
            raise ValueError(f"sweep.budgets must be a non-empty list of positive integers, got {s.budgets!r}")
        if s.budget_unit == "samples":
            bad = [b for b in s.budgets if b % s.batch_size]
            if bad:
                raise ValueError(f"sweep.budgets {bad} are not multiples of sweep.batch_size={s.batch_size}; "
                                 f"a run sees whole batches")
        if not 0 < s.loss_window <= 1:
            raise ValueError(f"sweep.loss_window must be in (0, 1], got {s.loss_window}")
        if s.checkpoint_every < 1 or s.warmup_steps < 0 or s.threads < 0:
            raise ValueError("sweep.checkpoint_every must be >= 1, sweep.warmup_steps and sweep.threads >= 0")
        v = vae_size(self.vae.size)
        if s.resolution % v.factor:
            raise ValueError(f"sweep.resolution={s.resolution} is not divisible by the VAE factor {v.factor}")
        if self.vae.steps < 1 or self.vae.batch_size < 1:
            raise ValueError(f"vae.steps and vae.batch_size must be >= 1, got {self.vae.steps}, {self.vae.batch_size}")
        return self

    def steps(self, budget: int) -> int:
        """UNet optimizer steps of a budget."""
        return budget // self.sweep.batch_size if self.sweep.budget_unit == "samples" else budget

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sweep_sizes(cfg: SweepConfig) -> dict:
    """The [sizes] table as ModelSize rows; an unknown or missing field raises ValueError naming it."""
    from t2ikit.models.sizes import ModelSize

    fields = [f.name for f in dataclasses.fields(ModelSize)]
    out = {}
    for name, spec in cfg.sizes.items():
        if not isinstance(spec, dict):
            raise ValueError(f"[sizes.{name}] must be a table of ModelSize fields ({', '.join(fields)})")
        unknown = sorted(set(spec) - set(fields))
        missing = [f for f in fields if f not in spec]
        if unknown or missing:
            raise ValueError(f"[sizes.{name}]: unknown key(s) {unknown}, missing key(s) {missing}; "
                             f"a sweep size sets exactly: {', '.join(fields)}")
        channels = spec["block_out_channels"]
        if not isinstance(channels, list) or not channels or any(c % spec["norm_num_groups"] for c in channels):
            raise ValueError(f"[sizes.{name}].block_out_channels must be a non-empty list divisible by "
                             f"norm_num_groups={spec['norm_num_groups']}, got {channels!r}")
        out[name] = ModelSize(**{**spec, "block_out_channels": tuple(channels)})
    return out


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read a TOML sweep config; unknown keys, unknown sizes and bad budgets raise ValueError."""
    return from_dict(SweepConfig, read_toml(path, "sweep config")).validate()


@contextlib.contextmanager
def registered_sizes(cfg: SweepConfig):
    """Make the sweep-only sizes known to MODEL_SIZES (which the trainer looks names up in) while inside."""
    from t2ikit.models.sizes import MODEL_SIZES

    extra = sweep_sizes(cfg)
    MODEL_SIZES.update(extra)
    try:
        yield
    finally:
        for name in extra:
            MODEL_SIZES.pop(name, None)


# ----------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------


def run_name(size: str, budget: int, unit: str) -> str:
    return f"{size}-{budget}{'s' if unit == 'steps' else ''}"


def final_loss(log_path: Path, steps: int, window: float) -> float:
    """Mean UNet training loss over the last ceil(window * steps) steps of log.jsonl (log_every = 1).

    A step logged twice (a killed attempt ran past its last checkpoint, then the resume redid it)
    counts once, with the value of the attempt that finished."""
    losses = {}
    for line in log_path.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "train" and r.get("stage") == "unet":
            losses[int(r["step"])] = float(r["loss"])
    first = steps - max(1, math.ceil(window * steps)) + 1
    tail = [losses[s] for s in range(first, steps + 1) if s in losses]
    if len(tail) != steps - first + 1:
        raise ValueError(f"{log_path}: expected one UNet train record per step for steps {first}..{steps}")
    return sum(tail) / len(tail)


def training_wall_s(log_path: Path, start_event: str = "sweep_start") -> float:
    """Training seconds over every attempt: from each `start_event` record to the last record before the next."""
    total, start, last = 0.0, None, None
    for line in log_path.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == start_event:
            if start is not None and last is not None:
                total += last - start
            start, last = r["time"], None
        elif r.get("event") in ("train", "checkpoint") and start is not None:
            last = r["time"]
    if start is not None and last is not None:
        total += last - start
    return total


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_log(path: Path, record: dict) -> None:
    """Append `record`, stamped with the time, as one JSON line of a run's log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"time": time.time(), **record}) + "\n")


# ----------------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------------


def train_config(cfg: SweepConfig, size: str, unet_steps: int):
    """The TrainConfig of one run (size, budget) or, with size=None, of the shared VAE."""
    s = cfg.sweep
    t = load_config(s.base)
    t.run.seed, t.run.device, t.run.workers, t.run.log_every, t.run.progress = s.seed, "cpu", 0, 1, False
    t.run.time_limit_min = 0.0
    t.model.vae, t.model.resolution = cfg.vae.size, s.resolution
    t.model.size = size or s.sizes[0]
    t.vae_train.steps = cfg.vae.steps if size is None else 0  # runs reuse the shared VAE
    t.vae_train.batch_size, t.vae_train.grad_accum = cfg.vae.batch_size, 1
    t.unet_train.steps = unet_steps
    t.unet_train.batch_size, t.unet_train.grad_accum = s.batch_size, 1
    t.unet_train.warmup_steps = min(s.warmup_steps, max(1, unet_steps))
    t.checkpoint.every, t.checkpoint.keep = s.checkpoint_every, 1
    t.eval.every, t.eval.compbench = 0, False  # CompBench runs once, after training
    for k in ("split", "n_prompts", "seeds", "steps", "guidance"):
        setattr(t.eval, k, getattr(cfg.eval, k))
    t.export.at_end = False
    return t.validate()


def _trainer(tcfg, out: Path):
    from t2ikit.train.checkpoint import list_checkpoints
    from t2ikit.train.trainer import Trainer

    trainer = Trainer(tcfg, out=out, device="cpu")
    resume = "latest" if list_checkpoints(trainer.checkpoint_dir) else None
    return trainer, resume


def shared_vae(cfg: SweepConfig, out: Path, echo=print) -> dict:
    """Train (or reuse) the sweep's VAE; returns its state dict."""
    from safetensors.torch import load_file, save_file

    folder = out / "vae"
    weights = folder / "vae.safetensors"
    if (folder / DONE).is_file():
        return load_file(weights)
    echo(f"sweep: training the shared VAE ({cfg.vae.size}, {cfg.vae.steps} steps) in {folder}")
    trainer, resume = _trainer(train_config(cfg, None, 0), folder)
    trainer.run(resume=resume)
    state = {k: v.contiguous() for k, v in trainer.vae.state_dict().items()}
    save_file(state, str(folder / "vae.safetensors.tmp"))
    os.replace(folder / "vae.safetensors.tmp", weights)
    _write_atomic(folder / DONE, json.dumps({"steps": cfg.vae.steps, "scaling_factor": trainer.vae.config.scaling_factor}))
    return state


def unet_cost(size: str, cfg: SweepConfig) -> tuple[int, int]:
    """(UNet parameters, forward FLOPs per sample) of a size at the sweep's latent shape."""
    from t2ikit.models.sizes import build_unet, count_params, unet_flops, vae_size

    v = vae_size(cfg.vae.size)
    latent = cfg.sweep.resolution // v.factor
    unet = build_unet(size, latent_channels=v.latent_channels, sample_size=latent)
    tokens = train_config(cfg, size, 1).model.max_tokens
    return count_params(unet), unet_flops(unet, (v.latent_channels, latent, latent), text_tokens=tokens)


def train_run(cfg: SweepConfig, size: str, budget: int, folder: Path, vae_state: dict, cost: tuple[int, int]) -> dict:
    """Train one run (resuming its checkpoint if any), evaluate it, write its done marker; its row."""
    from t2ikit.train.trainer import compbench_hook

    steps = cfg.steps(budget)
    trainer, resume = _trainer(train_config(cfg, size, steps), folder)
    trainer.vae.load_state_dict(vae_state)  # a resumed run reloads the same weights from its checkpoint
    append_log(folder / "log.jsonl", {"event": "sweep_start", "resume": resume})
    trainer.run(resume=resume)
    t0 = time.perf_counter()
    accuracy = float(compbench_hook(trainer, steps).get("compbench_overall", 0.0)) if cfg.eval.compbench else 0.0
    eval_s = time.perf_counter() - t0
    params, forward = cost
    samples = steps * cfg.sweep.batch_size
    row = {"params": params, "samples": samples, "flops": 3 * forward * samples,
           "loss": final_loss(folder / "log.jsonl", steps, cfg.sweep.loss_window), "accuracy": accuracy,
           "wall_s": round(training_wall_s(folder / "log.jsonl"), 2), "size": size, "steps": steps,
           "eval_s": round(eval_s, 2), "run": folder.name}
    _write_atomic(folder / DONE, json.dumps(row, indent=1))
    return row


def write_table(path: Path, rows: list[dict]) -> None:
    """runs.csv: RUN_COLUMNS (what `t2ikit scaling fit` reads) then EXTRA_COLUMNS, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*RUN_COLUMNS, *EXTRA_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def run_sweep(cfg: SweepConfig, out: str | Path | None = None, echo=print, progress: bool = False) -> Path:
    """Train every (size, budget) run not yet done, size by size, smallest budget first; return runs.csv.

    `echo`: takes a line per finished run; `progress`: a bar over runs on stderr and a summary at the end."""
    import torch

    cfg.validate()
    out = Path(out if out is not None else cfg.sweep.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "sweep.json", json.dumps(cfg.to_dict(), indent=1))
    threads = torch.get_num_threads()
    if cfg.sweep.threads:
        torch.set_num_threads(cfg.sweep.threads)
    try:
        with registered_sizes(cfg):
            return _sweep(cfg, out, echo, progress)
    finally:
        torch.set_num_threads(threads)


def _sweep(cfg: SweepConfig, out: Path, echo, progress: bool = False) -> Path:
    s = cfg.sweep
    grid = [(size, budget) for size in s.sizes for budget in sorted(s.budgets)]
    folders = {key: out / run_name(*key, s.budget_unit) for key in grid}
    todo = [key for key in grid if not (folders[key] / DONE).is_file()]
    echo(f"sweep: {len(grid)} runs, {len(grid) - len(todo)} done, {len(todo)} to train -> {out}")
    vae_state = shared_vae(cfg, out, echo) if todo else None
    costs, timer = {}, Timer()
    runs_bar = bar(total=len(todo), desc="scaling sweep", enabled=progress, unit="run")
    for n, (size, budget) in enumerate(todo, 1):
        runs_bar.set_postfix_str(folders[size, budget].name)
        if size not in costs:
            costs[size] = unet_cost(size, cfg)
        t0 = time.perf_counter()
        row = train_run(cfg, size, budget, folders[size, budget], vae_state, costs[size])
        echo(f"sweep: [{n}/{len(todo)}] {folders[size, budget].name}: N={row['params']} D={row['samples']} "
             f"C={row['flops']:.3g} loss={row['loss']:.4f} acc={row['accuracy']:.3f} "
             f"({time.perf_counter() - t0:.0f} s)")
        _collect(grid, folders, out)
        runs_bar.update()
    runs_bar.close()
    summary(f"scaling sweep: {len(todo)} runs trained in {timer} ({len(grid)} in the grid) -> {out / 'runs.csv'}",
            progress)
    return _collect(grid, folders, out)


def _collect(grid, folders, out: Path) -> Path:
    rows = [json.loads((folders[k] / DONE).read_text()) for k in grid if (folders[k] / DONE).is_file()]
    path = out / "runs.csv"
    write_table(path, rows)
    return path
