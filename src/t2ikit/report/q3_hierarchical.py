"""Q3: hierarchical text attention A = sum_i lambda_i A_i (word, noun phrase, sentence) on the shipped model.

Word-only attention (the model as trained) against fixed lambdas and lambdas LEARNED on Shapes World: the three
lambdas (softmax of three logits, `attention.hierarchical.LearnableHierarchicalHook`) minimise the diffusion
loss of the frozen model on rendered Shapes World scenes and their captions (fixed noise draws, full-batch Adam).
Every variant is then scored by the oracle on compositional CompBench prompts (colour binding, shape binding,
spatial, complex), paired with word-only on the same prompts and seeds; the held-out diffusion loss of each
mix is reported beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from t2ikit.report.core import Figure, Finding, ReportContext, Table, experiment
from t2ikit.report.q2_sparsity import (COMPOSITIONAL, accuracy_cell, check_rate_difference, compositional_suite,
                                       fmt, model_generator, scored_variant)

FIXED = {"hier:1/1/0": (1.0, 1.0, 0.0), "hier:1/0.5/0.25": (1.0, 0.5, 0.25)}  # the settings of docs/results
LAMBDA_SEED = 11  # world seed of the scenes the lambdas are learned on (not the bench's)
HELDOUT_SEED = 12  # world seed of the scenes their diffusion loss is checked on
LEARNING_RATE = 0.2  # Adam on the three logits
CHUNK = 16  # scenes per UNet call (gradients accumulated over the chunks of the full batch)


# ---------------------------------------------------------------------------------------------------
# Scenes and the diffusion loss of a lambda mix
# ---------------------------------------------------------------------------------------------------


def scene_batch(pipe, n: int, seed: int, draws: int = 1) -> dict:
    """n rendered Shapes World scenes of the compositional categories (cycled), their captions, their latents and
    `draws` fixed (timestep, noise) draws each: {"captions", "timesteps", "noisy", "target"} over n * draws rows."""
    from t2ikit.diffusion.losses import noised_batch
    from t2ikit.diffusion.schedules import training_scheduler
    from t2ikit.world.caption import write_caption
    from t2ikit.world.render import render_rgb
    from t2ikit.world.scene import sample_scene

    resolution = pipe.default_size[0]
    captions, images = [], []
    for i in range(n):
        scene = sample_scene(seed, i, category=COMPOSITIONAL[i % len(COMPOSITIONAL)], split="train", reference=False)
        captions.append(write_caption(scene.spec, np.random.default_rng([seed, i])))
        images.append(render_rgb(scene, resolution))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() * 2 - 1  # (n, 3, H, W) in [-1, 1]
    with torch.no_grad():
        latents = pipe.vae.encode(x.to(pipe.device, pipe.dtype)).latent_dist.mean * pipe.vae.config.scaling_factor
    latents = latents.repeat(draws, 1, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    timesteps, noisy, target = noised_batch(latents, training_scheduler(pipe.scheduler_config), gen)
    return {"captions": captions * draws, "timesteps": timesteps, "noisy": noisy, "target": target}


def per_scene_loss(pipe, batch: dict, hook=None, grad: bool = False) -> torch.Tensor:
    """MSE per row of the model's prediction vs the target, with `hook` (bound to each chunk's captions)."""
    from t2ikit.attention.processor import AttentionController

    losses = []
    n = len(batch["captions"])
    for start in range(0, n, CHUNK):
        rows = slice(start, min(start + CHUNK, n))
        captions = batch["captions"][rows]
        with torch.no_grad():
            embeds = pipe.encode_text(captions)
        controller = AttentionController([hook] if hook is not None else [])
        if hook is not None:
            hook.bind(pipe, captions)
        controller.install(pipe.unet)
        try:
            with torch.set_grad_enabled(grad):
                pred = pipe.unet(batch["noisy"][rows], batch["timesteps"][rows], encoder_hidden_states=embeds).sample
                loss = (pred.float() - batch["target"][rows].float()).pow(2).mean((1, 2, 3))
                if grad:
                    (loss.sum() / n).backward()
        finally:
            controller.uninstall()
        losses.append(loss.detach())
    return torch.cat(losses)


def learn_lambdas(pipe, n_scenes: int, steps: int, draws: int, heldout: int, seed: int = 0) -> dict:
    """Lambdas that minimise the frozen model's diffusion loss on rendered scenes (full-batch Adam on fixed draws),
    and the held-out per-scene loss of word-only, the fixed mixes and the learned one."""
    from t2ikit.attention.hierarchical import HierarchicalHook, LearnableHierarchicalHook

    torch.manual_seed(seed)
    train = scene_batch(pipe, n_scenes, LAMBDA_SEED, draws)
    hook = LearnableHierarchicalHook((1.0, 1.0, 1.0))
    opt = torch.optim.Adam([hook.logits], lr=LEARNING_RATE)
    frozen = [p.requires_grad for p in pipe.unet.parameters()]
    for p in pipe.unet.parameters():
        p.requires_grad_(False)
    history = []
    try:
        for step in range(steps):
            opt.zero_grad()
            loss = per_scene_loss(pipe, train, hook, grad=True).mean().item()
            history.append({"step": step, "loss": loss, "lambdas": list(hook.learned())})
            opt.step()
    finally:
        for p, flag in zip(pipe.unet.parameters(), frozen):
            p.requires_grad_(flag)
    learned = hook.learned()
    test = scene_batch(pipe, heldout, HELDOUT_SEED, 1)
    losses = {"word-only": per_scene_loss(pipe, test).tolist()}
    for name, lambdas in {**FIXED, "learned": learned}.items():
        losses[name] = per_scene_loss(pipe, test, HierarchicalHook(lambdas)).tolist()
    return {"lambdas": list(learned), "history": history, "heldout_loss": losses, "scenes": n_scenes,
            "draws": draws, "heldout": heldout, "steps": steps}


def spec_of(lambdas) -> str:
    return "hier:" + "/".join(f"{x:.3f}" for x in lambdas)


# ---------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------


@experiment("q3.hierarchical", "Hierarchical attention (word / phrase / sentence): fixed and learned lambdas",
            minutes={"quick": 2, "full": 4})
def run(ctx: ReportContext) -> Finding:
    from t2ikit.bench.compbench import paired_difference
    from t2ikit.bench.stats import bootstrap_interval

    torch.set_num_threads(ctx.threads)
    pipe = ctx.pipe()
    steps = ctx.pick(10, 20, smoke=2)
    n_prompts, seeds = ctx.pick(2, 6, smoke=1), ctx.pick(1, 2, smoke=1)
    resamples = ctx.pick(500, 2000, smoke=20)
    learning = ctx.unit("lambdas", lambda: learn_lambdas(pipe, n_scenes=ctx.pick(16, 48, smoke=4),
                                                         steps=ctx.pick(8, 40, smoke=2), draws=1,
                                                         heldout=ctx.pick(16, 48, smoke=4)))
    learned = tuple(learning["lambdas"])
    variants = {"word-only": None, **{name: name for name in FIXED}, "learned": spec_of(learned)}

    suite = compositional_suite(n_prompts, seeds)
    batch = ctx.pick(8, 16, smoke=4)
    results = {name: scored_variant(ctx, name if spec is None else name.replace(":", "="), suite, steps, batch,
                                    model_generator(pipe, steps, attention=spec))
               for name, spec in variants.items()}

    rng = np.random.default_rng(0)
    base = results["word-only"]
    rows, numbers, overall, per_cat = [], {}, {}, {}
    for name in variants:
        r = results[name]
        cells = [name if name != "learned" else f"learned {spec_of(learned)}"]
        for cat in (*COMPOSITIONAL, None):
            d = check_rate_difference(base, r, rng, resamples, cat)
            per_cat[(name, cat or "all")] = d
            acc_text = accuracy_cell(r["items"], cat)[0]
            cells.append(f"{acc_text}; checks {d['other']:.3f}" + ("" if name == "word-only" else
                                                                    f" ({fmt(d['diff'], d['ci95'])})"))
            if cat is None:
                overall[name] = d
        rows.append(cells)
    paired = {name: paired_difference({"items": [x[:4] for x in base["items"]]},
                                      {"items": [x[:4] for x in results[name]["items"]]}, n_boot=resamples)
              for name in variants if name != "word-only"}
    acc_rows = [[name, *(f"{p[c]['diff']:+.3f} [{p[c]['ci95'][0]:+.3f}, {p[c]['ci95'][1]:+.3f}], McNemar p "
                        f"{p[c]['mcnemar_p']:.2f}" for c in (*COMPOSITIONAL, "overall"))]
                for name, p in paired.items()]

    # held-out diffusion loss of each mix vs word-only (paired over scenes)
    losses = {k: np.array(v) for k, v in learning["heldout_loss"].items()}
    loss_rows = []
    for name, v in losses.items():
        if name == "word-only":
            loss_rows.append([name, f"{v.mean():.5f}", "-"])
            continue
        lo, hi = bootstrap_interval(v - losses["word-only"], rng, resamples)
        numbers[f"heldout_loss_diff_{name}"] = [float((v - losses["word-only"]).mean()), lo, hi]
        loss_rows.append([name, f"{v.mean():.5f}", f"{(v - losses['word-only']).mean():+.5f} [{lo:+.5f}, {hi:+.5f}]"])

    better = [n for n, d in overall.items() if n != "word-only" and d["ci95"][0] > 0]
    worse = [n for n, d in overall.items() if n != "word-only" and d["ci95"][1] < 0]
    # the frozen model's own loss: every fixed mix denoises held-out scenes worse, and learning drives the
    # weight back to the word level
    loss_worse = all(numbers[f"heldout_loss_diff_{n}"][1] > 0 for n in FIXED)
    back_to_words = learned[0] > max(learned[1:]) and learned[0] > 1 / 3 + 0.2
    if better and not worse:
        verdict = "holds"
    elif better:
        verdict = "partly holds"
    elif worse or (loss_worse and back_to_words):
        verdict = "does not hold"
    else:
        verdict = "no difference"
    d_l = overall["learned"]
    hist = learning["history"]
    loss_learned = numbers["heldout_loss_diff_learned"]
    answer = (
        f"Learned on {learning['scenes']} rendered Shapes World scenes ({learning['steps']} Adam steps on the frozen "
        f"model's diffusion loss, from equal weights), the lambdas (word, phrase, sentence) settle at "
        f"{learned[0]:.3f} / {learned[1]:.3f} / {learned[2]:.3f} (training loss {hist[0]['loss']:.4f} -> "
        f"{hist[-1]['loss']:.4f}); on {learning['heldout']} held-out scenes the learned mix changes the diffusion "
        f"loss by {loss_learned[0]:+.5f} [{loss_learned[1]:+.5f}, {loss_learned[2]:+.5f}] against word-only. "
        f"On {len(base['items'])} paired compositional images the learned mix changes the oracle check pass rate by "
        f"{fmt(d_l['diff'], d_l['ci95'])} (word-only {d_l['base']:.3f}); "
        + "; ".join(f"{n} {fmt(overall[n]['diff'], overall[n]['ci95'])}" for n in FIXED) + ". "
        + (f"Better than word-only with an interval above 0: {', '.join(better)}. " if better else "")
        + (f"Worse, interval below 0: {', '.join(worse)}. " if worse else "")
        + ("No variant's check-rate interval excludes 0. " if not better and not worse else "")
        + ("Every fixed mix raises the frozen model's held-out diffusion loss ("
           + ", ".join(f"{n} {numbers[f'heldout_loss_diff_{n}'][0]:+.4f} [{numbers[f'heldout_loss_diff_{n}'][1]:+.4f}, "
                       f"{numbers[f'heldout_loss_diff_{n}'][2]:+.4f}]" for n in FIXED)
           + ") and learning moves the weight back to the word level, so on this model hierarchical attention "
             "does not improve composition. " if loss_worse and back_to_words else "")
        + "The model was trained with word-level keys only, so phrase and sentence keys are new to it at inference."
        + (" Under this budget (few prompts, one seed, a handful of learning steps) only large effects could show."
           if ctx.budget != "full" else "")
    )
    tables = [
        Table("Compositional CompBench per variant: accuracy [95% Wilson] (passed/images); check pass rate "
              "(its paired difference to word-only [95% bootstrap])",
              ["variant", *COMPOSITIONAL, "all"], rows),
        Table("CompBench accuracy difference to word-only (paired bootstrap over images, McNemar)",
              ["variant", *COMPOSITIONAL, "overall"], acc_rows),
        Table("Held-out diffusion loss of the frozen model per lambda mix (fixed draws; paired over scenes)",
              ["mix", "mean MSE", "difference to word-only [95%]"], loss_rows,
              note=f"learned lambdas: {spec_of(learned)}; history of the learning: "
                   + ", ".join(f"step {h['step']}: {h['loss']:.4f} ({'/'.join(f'{x:.2f}' for x in h['lambdas'])})"
                               for h in hist[:: max(1, len(hist) // 6)])),
    ]
    numbers.update({"lambdas": list(learned), "items": len(base["items"]), "steps": steps,
                    "check_rate": {n: d["other"] for n, d in overall.items()},
                    "check_rate_diff": {n: [d["diff"], *d["ci95"]] for n, d in overall.items() if n != "word-only"},
                    "learning_loss": [hist[0]["loss"], hist[-1]["loss"]], "heldout_loss_worse": loss_worse,
                    "learned_back_to_words": back_to_words})
    what = (f"Model {pipe.name}; lambdas learned by full-batch Adam (lr {LEARNING_RATE}) on the frozen model's "
            f"diffusion "
            f"loss over {learning['scenes']} x {learning['draws']} fixed (scene, timestep, noise) draws of rendered "
            f"Shapes World scenes (world seed {LAMBDA_SEED}), {learning['steps']} steps; held-out loss on "
            f"{learning['heldout']} scenes of seed {HELDOUT_SEED}. CompBench {', '.join(COMPOSITIONAL)} x {n_prompts} "
            f"prompts x {seeds} seed(s) = {len(base['items'])} images per variant, {steps} dpmpp_2m steps, guidance "
            f"{pipe.defaults['guidance']}, relation guidance off; variants word-only, {', '.join(FIXED)}, learned.")
    figures = [_figure(ctx, per_cat, list(variants)[1:], hist)]
    return Finding(answer=answer, verdict=verdict, tables=tables, figures=figures, numbers=numbers,
                   what_was_run=what)


def _figure(ctx, per_cat: dict, names: list[str], history: list[dict]) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, rel = ctx.figure("compare")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    cats = [*COMPOSITIONAL, "all"]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        d = [per_cat[(name, c)] for c in cats]
        x = np.arange(len(cats)) + (j - (len(names) - 1) / 2) * width
        err = np.array([[max(v["diff"] - v["ci95"][0], 0), max(v["ci95"][1] - v["diff"], 0)] for v in d]).T
        ax1.bar(x, [v["diff"] for v in d], width, yerr=err, capsize=2, label=name)
    ax1.axhline(0, color="gray", lw=0.8)
    ax1.set_xticks(np.arange(len(cats)), cats, fontsize=8)
    ax1.set_ylabel("check pass rate - word-only")
    ax1.legend(fontsize=7)
    ax1.set_title(ctx.command(), fontsize=5)
    lam = np.array([h["lambdas"] for h in history])
    for i, label in enumerate(("word", "phrase", "sentence")):
        ax2.plot([h["step"] for h in history], lam[:, i], marker=".", label=label)
    ax2.set_xlabel("Adam step (diffusion loss, frozen model)")
    ax2.set_ylabel("lambda (sums to 1)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(rel, "Left: change in the oracle's check pass rate against word-only attention per category, with "
                       "paired 95% bootstrap intervals. Right: the lambdas during their learning on rendered Shapes "
                       "World scenes.")
