"""`t2ikit bench fusion`: every fusion strategy trained on the same data, steps and seed, then compared.

To fit a CPU, the comparison trains UNets only: the VAE and the text encoder are the shipped model's,
frozen, and every strategy sees the same pre-encoded batches (latents and text states), the same
timesteps and noise (generators seeded per step, as the trainer does) and starts from the same
`build_unet(size, seed)` weights converted by `retrofit(..., from_scratch=True)`. Reported per strategy:
CompBench accuracy per category (small suite), UNet parameters, median training step time, sampling
time per image, and the final training loss.

`gate_study` is part 5 of the issue: retrofit the shipped model to gated fusion, fine-tune its gates
only, and record the mean gate per layer and sampling step for several prompts.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from t2ikit.bench import compbench as cb
from t2ikit.bench.fusion_budget import DEFAULT_STRATEGIES, Budget
from t2ikit.bench.plots import plot_gates
from t2ikit.bench.progress import Timer, bar, summary, write
from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.fusion import GateRecorder, parse_fusion
from t2ikit.models.registry import shipped_model_path
from t2ikit.models.retrofit import fusion_parameters, fusion_plan, retrofit
from t2ikit.models.sizes import build_unet, count_params, model_size, unet_flops
from t2ikit.pipeline import T2IPipeline
from t2ikit.train.config import OptimConfig
from t2ikit.train.data import ShapesBatches, to_model_input
from t2ikit.train.losses import diffusion_loss
from t2ikit.train.trainer import lr_at, step_seed


# ----------------------------------------------------------------------------------------------------
# Shared parts
# ----------------------------------------------------------------------------------------------------


def load_base(path=None):
    """The shipped pipeline (frozen VAE, text encoder, tokenizer, schedule) the comparison builds on."""
    return T2IPipeline.from_folder(path or shipped_model_path())


@torch.no_grad()
def encode_batches(base, steps: int, batch_size: int, seed: int, caption_dropout: float) -> list[tuple]:
    """[(latents (B, 4, h, w), text states (B, T, D))] for `steps` batches of the training stream."""
    resolution = base.default_size[0]
    data = ShapesBatches(seed=seed * 3 + 1, batch_size=batch_size, length=steps, resolution=resolution,
                         tokenizer=base.tokenizer, caption_dropout=caption_dropout)
    factor = base.vae.config.scaling_factor
    out = []
    for i in range(steps):
        item = data[i]
        latents = base.vae.encode(to_model_input(item["pixels"], "cpu")).latent_dist.mean * factor
        out.append((latents, base.text_encoder(item["input_ids"])[0]))
    return out


def train_unet(unet, batches, params, schedule, lr: float, seed: int, snr_gamma: float, desc: str = "train",
               progress: bool = False) -> dict:
    """AdamW on `params` over `batches` (one step each) with the trainer's loss, lr schedule and per-step
    seeds; returns step times and losses. `progress`: a bar over steps (with the loss) on stderr."""
    o = OptimConfig(steps=len(batches), lr=lr, warmup_steps=max(1, len(batches) // 10))
    opt = torch.optim.AdamW(params, lr=lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    unet.train()
    times, losses = [], []
    steps_bar = bar(total=len(batches), desc=desc, enabled=progress, unit="step")
    for step, (latents, states) in enumerate(batches):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o)
        gen = torch.Generator().manual_seed(step_seed(seed, "unet", step))
        loss = diffusion_loss(unet, latents, states, schedule, gen, snr_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(loss.detach().item())
        steps_bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        steps_bar.update()
    steps_bar.close()
    unet.eval()
    return {"step_times": times, "losses": losses}


def with_unet(base, unet):
    """A T2IPipeline sharing `base`'s frozen parts around another UNet."""
    return T2IPipeline(unet.eval().requires_grad_(False), base.vae, base.text_encoder, base.tokenizer,
                       base.scheduler_config, defaults=base.defaults)


# ----------------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------------


def _logger(log, progress: bool):
    """`log` if given; else a line on stderr (between bars) with `progress`, nothing without."""
    if log is not None:
        return log
    return write if progress else (lambda message: None)


def compare(strategies=DEFAULT_STRATEGIES, budget: Budget | None = None, base=None, log=None,
            progress: bool = False) -> dict:
    """Train one UNet per strategy on the same batches; CompBench, parameters and timings for each.

    `progress`: bars for training and CompBench, a line per strategy and a summary on stderr; `log`: a
    callable(message) that takes the per-strategy lines instead."""
    b = budget or Budget()
    if b.steps < 1 or b.batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {b.steps} and {b.batch_size}")
    specs = [parse_fusion(s) for s in strategies]  # bad names fail here, before any compute
    log, timer = _logger(log, progress), Timer()
    base = base or load_base()
    size = dataclasses.replace(model_size(b.size), text_hidden=base.text_encoder.config.hidden_size)
    latent = base.unet.config.sample_size

    def fresh():
        return build_unet(size, latent_channels=base.unet.config.in_channels, sample_size=latent, seed=b.seed)

    for spec in specs:  # a hierarchical map naming a missing resolution fails here, still before training
        fusion_plan(fresh(), spec)
    t0 = time.perf_counter()
    batches = encode_batches(base, b.steps, b.batch_size, b.seed, b.caption_dropout)
    log(f"encoded {b.steps} batches of {b.batch_size} in {time.perf_counter() - t0:.1f} s")
    schedule = training_scheduler(base.scheduler_config)
    rows, unets = [], []
    for spec in specs:
        unet = retrofit(fresh(), spec, seed=b.seed, from_scratch=True)
        run = train_unet(unet, batches, list(unet.parameters()), schedule, b.lr, b.seed, b.snr_gamma,
                         desc=f"train {spec.name}", progress=progress)
        pipe = with_unet(base, unet)
        extra = {"size": (b.image_size, b.image_size)} if b.image_size else {}
        result = cb.evaluate(pipe, n_prompts=b.n_prompts, seeds=b.seeds, steps=b.sample_steps, guidance=b.guidance,
                             progress=progress, **extra)
        n_images = result["overall"]["n"]
        warm = run["step_times"][min(5, len(run["step_times"]) - 1):]
        row = {
            "strategy": spec.name,
            "unet_params": count_params(unet),
            "gflops_per_call": unet_flops(unet, tuple(batches[0][0].shape[1:]), batches[0][1].shape[1]) / 1e9,
            "step_s": statistics.median(warm),
            "sample_s_per_image": result["seconds"]["generate"] / max(1, n_images),
            "final_loss": statistics.mean(run["losses"][-max(1, len(run["losses"]) // 10):]),
            "compbench": result,
        }
        rows.append(row)
        unets.append(unet)
        log(f"{spec.name}: params {row['unet_params']}, step {row['step_s'] * 1e3:.0f} ms, "
            f"sample {row['sample_s_per_image'] * 1e3:.0f} ms/image, loss {row['final_loss']:.4f}, "
            f"overall {_overall(result)}")
    if b.timing_rounds > 0:
        timings = interleaved_timing(unets, batches[0], schedule, b.timing_rounds, b.guidance != 1.0)
        for row, (train_s, sample_s) in zip(rows, timings):
            row["step_s_training_phase"] = row["step_s"]
            row["step_s"], row["unet_call_s"] = train_s, sample_s
        log("interleaved timing: " + ", ".join(f"{r['strategy']} {r['step_s'] * 1e3:.0f}/{r['unet_call_s'] * 1e3:.0f} ms"
                                              for r in rows))
    summary(f"bench fusion: {len(specs)} strategies x {b.steps} steps trained and benchmarked in {timer}", progress)
    return {"budget": dataclasses.asdict(b), "rows": rows}


def interleaved_timing(unets, batch, schedule, rounds: int, guided: bool) -> list[tuple[float, float]]:
    """Median seconds of (one training forward + backward, one sampling UNet call) per UNet, measured in
    rounds that visit every UNet in turn (a slow moment of a shared machine costs all of them)."""
    latents, states = batch
    x = torch.cat([latents[:1]] * 2) if guided else latents[:1]  # one image, [uncond; cond] under CFG
    ctx = torch.cat([states[:1]] * 2) if guided else states[:1]
    t = torch.tensor([500])
    train, sample = [[] for _ in unets], [[] for _ in unets]
    for unet in unets:
        unet.requires_grad_(True)  # with_unet froze them for sampling
    for r in range(rounds + 1):  # round 0 warms up
        for i, unet in enumerate(unets):
            unet.train()
            t0 = time.perf_counter()
            loss = diffusion_loss(unet, latents, states, schedule, torch.Generator().manual_seed(r), 5.0)
            loss.backward()
            t1 = time.perf_counter()
            unet.zero_grad(set_to_none=True)
            unet.eval()
            with torch.no_grad():
                t2 = time.perf_counter()
                unet(x, t, encoder_hidden_states=ctx)
                t3 = time.perf_counter()
            if r:
                train[i].append(t1 - t0)
                sample[i].append(t3 - t2)
    for unet in unets:
        unet.requires_grad_(False).eval()
    return [(statistics.median(a), statistics.median(b)) for a, b in zip(train, sample)]


def _overall(result: dict) -> str:
    o = result.get("overall", {})
    if "accuracy" not in o:
        return "n/a"
    return f"{o['accuracy']:.3f} ({o.get('passed', '?')}/{o.get('n', '?')})"


def markdown(report: dict) -> str:
    """One table: strategy, params, step time, sampling time, loss, CompBench overall and per category."""
    rows = report["rows"]
    categories = list(rows[0]["compbench"]["per_category"]) if rows else []
    checks = ["present", "colour", "count"]
    head = (["strategy", "UNet params", "GFLOPs/call", "train fwd+bwd (ms)", "UNet call (ms)", "sample (ms/image)", "final loss",
             "overall"] + categories
            + [f"check: {k}" for k in checks])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cats = r["compbench"]["per_category"]
        cells = [r["strategy"], f"{r['unet_params']:,}", f"{r.get('gflops_per_call', float('nan')):.3f}",
                 f"{r['step_s'] * 1e3:.0f}",
                 f"{r['unet_call_s'] * 1e3:.1f}" if "unet_call_s" in r else "-",
                 f"{r['sample_s_per_image'] * 1e3:.0f}", f"{r['final_loss']:.4f}", _overall(r["compbench"])]
        cells += [f"{cats[c]['accuracy']:.2f}" if c in cats else "-" for c in categories]
        overall_checks = r["compbench"]["overall"]["checks"]
        cells += [f"{overall_checks[k]:.2f}" if k in overall_checks else "-" for k in checks]
        lines.append("| " + " | ".join(cells) + " |")
    b = report["budget"]
    lines.append("")
    lines.append(f"budget: size {b['size']}, {b['steps']} steps x batch {b['batch_size']}, lr {b['lr']}, seed "
                 f"{b['seed']}; CompBench {b['n_prompts']} prompts x {b['seeds']} seeds per category, "
                 f"{b['sample_steps']} sampler steps, guidance {b['guidance']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Retrofit equality (part 4)
# ----------------------------------------------------------------------------------------------------

RETROFIT_STRATEGIES = ("sequential", "interleaved", "gated", "hierarchical:16=gated,8=interleaved,4=sequential")


@torch.no_grad()
def retrofit_equality(base=None, strategies=RETROFIT_STRATEGIES, batch: int = 4, seed: int = 0) -> dict:
    """Max |retrofitted UNet - original| over a random batch (latents, timesteps, real prompt states),
    for each strategy, on the base model (default the shipped one); also the parameters added."""
    base = base or load_base()
    g = torch.Generator().manual_seed(seed)
    c, s = base.unet.config.in_channels, base.unet.config.sample_size
    x = torch.randn(batch, c, s, s, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    text = base.encode_text(list(GATE_PROMPTS[:batch]) + [""] * max(0, batch - len(GATE_PROMPTS)))[:batch]
    ref = base.unet(x, t, encoder_hidden_states=text).sample
    out = {}
    for strategy in strategies:
        unet = retrofit(copy.deepcopy(base.unet), strategy, seed=seed)
        diff = (unet(x, t, encoder_hidden_states=text).sample - ref).abs().max().item()
        out[strategy] = {"max_abs_diff": diff, "added_params": count_params(unet) - count_params(base.unet),
                         "output_std": ref.std().item()}
    return out


# ----------------------------------------------------------------------------------------------------
# Gate behaviour (part 5)
# ----------------------------------------------------------------------------------------------------

GATE_PROMPTS = (
    "a large red circle",
    "a small blue square to the left of a large yellow triangle",
    "three green triangles",
    "an outlined white circle on a black background",
)


def gate_study(steps: int = 100, batch_size: int = 16, lr: float = 1e-2, seed: int = 0, sample_steps: int = 10,
               prompts=GATE_PROMPTS, out=None, base=None, log=None, progress: bool = False) -> dict:
    """Retrofit the shipped model to gated fusion, fine-tune only the gates, record gate means.

    Returns, per prompt, the mean gate per (layer, step); and summary spreads: over steps (generation
    stage), over prompts (content) and over image tokens (content within an image). With `out`, the gate
    heat maps as gates.png/.svg (mean over prompts) and gates_promptK.png/.svg; `progress`, `log`: as `compare`."""
    log, timer = _logger(log, progress), Timer()
    base = base or load_base()
    unet = retrofit(copy.deepcopy(base.unet), "gated", seed=seed)
    params = fusion_parameters(unet)
    unet.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    batches = encode_batches(base, steps, batch_size, seed + 7, 0.1)  # a stream the shipped model did not see
    schedule = training_scheduler(base.scheduler_config)
    run = train_unet(unet, batches, params, schedule, lr, seed, 5.0, "train gates", progress) if steps else \
        {"losses": []}
    log(f"gate fine-tune: {steps} steps, loss first10 {statistics.mean(run['losses'][:10] or [0]):.4f} "
        f"last10 {statistics.mean(run['losses'][-10:] or [0]):.4f}")
    pipe = with_unet(base, unet)
    per_prompt = {}
    token_std = []
    for prompt in bar(prompts, desc="record gates", enabled=progress, unit="prompt"):
        rec = GateRecorder(unet)
        pipe.generate(prompt, steps=sample_steps, seed=seed, progress=False, hooks=[rec.clock])
        rec.remove()
        per_prompt[prompt] = rec.table()
        token_std += [r["token_std"] for r in rec.records]
    layers, steps_, _ = next(iter(per_prompt.values()))
    grids = torch.tensor([g for _, _, g in per_prompt.values()])  # (prompts, layers, steps)
    spreads = {
        "gate_mean": grids.mean().item(),
        "gate_min": grids.min().item(),
        "gate_max": grids.max().item(),
        "spread_over_steps": grids.std(dim=2).mean().item(),  # generation stage
        "spread_over_prompts": grids.std(dim=0).mean().item() if len(prompts) > 1 else 0.0,  # content
        "spread_over_layers": grids.std(dim=1).mean().item(),
        "spread_over_tokens": statistics.mean(token_std),  # content within an image
        "first_step_mean": grids[:, :, 0].mean().item(),
        "last_step_mean": grids[:, :, -1].mean().item(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        mean_grid = grids.mean(0).tolist()
        plot_gates(layers, steps_, mean_grid, out / "gates.png",
                   title=f"Gated fusion on the shipped model after {steps} gate steps (mean of {len(prompts)} prompts)")
        for i, (prompt, (l, s, g)) in enumerate(per_prompt.items()):
            plot_gates(l, s, g, out / f"gates_prompt{i}.png", title=f"Gates for “{prompt}”")
    summary(f"bench fusion --gates: {steps} gate steps, {len(prompts)} prompts recorded in {timer}; "
            f"mean gate {spreads['gate_mean']:.4f}", progress)
    return {"layers": layers, "steps": steps_, "per_prompt": {p: g for p, (_, _, g) in per_prompt.items()},
            "summary": spreads, "train_losses": run["losses"]}
