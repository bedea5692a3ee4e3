"""Reward-filtered fine-tuning (RAFT, Dong et al. 2023; rejection-sampling fine-tuning): the model's own images that
the Shapes World oracle passes become its training data.

    python benchmarks/filtered_finetune.py collect DIR [--prompts 200] [--group 4] [--shard 0/2] [--seed 1]
        [--mix style=3,counting=1,...] [--threads 1]
    python benchmarks/filtered_finetune.py tune DIR --out MODEL [--steps 300] [--lr 2e-5] [--batch 32]
        [--per-prompt 2] [--threads 2]

`collect` draws train-split prompts (the reward trainer's draw_prompts, its seed apart from the CompBench suites'),
generates `group` images per prompt with the model's default generation (boxes, relation guidance, CFG 2: what
CompBench scores), scores each with the oracle and appends the clean latents of every image to
DIR/shard-K.safetensors with its record in DIR/shard-K.jsonl (a stopped shard resumes after its last finished
prompt batch). `tune` keeps up to `per-prompt` passing images of every prompt, fine-tunes the UNet on them with the
training's own denoising loss (min-SNR 5, floor 1, caption dropout 0.1; the text encoder frozen) and writes a full
model folder: the shipped folder with the new UNet in fp16.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from t2ikit.diffusion.schedules import training_scheduler
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline
from t2ikit.report.core import write_atomic
from t2ikit.train.losses import diffusion_loss
from t2ikit.train.reward import check_mix, draw_prompts
from t2ikit.world.oracle import score

DEFAULT_MIX = "style=3,counting=1,complex=1,spatial=1,colour_binding=1,shape_binding=1,size=1,single=0.5"


def parse_mix(text: str) -> dict[str, float]:
    return check_mix({k: float(v) for k, v in (part.split("=") for part in text.split(","))})


def collect(args) -> int:
    k, n_shards = (int(v) for v in args.shard.split("/"))
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    records_path, latents_path = out / f"shard-{k}.jsonl", out / f"shard-{k}.safetensors"
    done = [json.loads(line) for line in records_path.open()] if records_path.exists() else []
    latents = [load_file(latents_path)["latents"]] if latents_path.exists() and done else []
    if latents and latents[0].shape[0] != len(done):
        raise SystemExit(f"{latents_path} holds {latents[0].shape[0]} latents for {len(done)} records")
    torch.set_num_threads(args.threads)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    mix = parse_mix(args.mix)
    todo = [i for i in range(args.prompts) if i % n_shards == k and i not in {r["prompt_index"] for r in done}]
    start = time.time()
    for b in range(0, len(todo), args.batch_prompts):
        indices = todo[b:b + args.batch_prompts]
        drawn = [draw_prompts(args.seed, i, 1, mix)[0] for i in indices]
        seeds = [args.seed * 1_000_003 + i * 101 + j for i in indices for j in range(args.group)]
        spec = pipe.make_spec([caption for _, caption, _ in drawn], n=args.group)
        gen = pipe.run(spec, progress=False, seeds=seeds)
        for j, image in enumerate(gen.images):
            p = j // args.group
            s = score(image, drawn[p][2])
            done.append({"prompt_index": indices[p], "category": drawn[p][0], "caption": drawn[p][1],
                         "seed": seeds[j], "all_passed": bool(s.all_passed),
                         "checks": {c.kind: bool(c.passed) for c in s.checks}})
        latents.append(gen.latents.float())
        stacked = torch.cat(latents)
        latents = [stacked]
        save_file({"latents": stacked.contiguous()}, str(latents_path) + ".tmp")
        Path(str(latents_path) + ".tmp").replace(latents_path)
        write_atomic(records_path, "".join(json.dumps(r) + "\n" for r in done))
        rate = np.mean([r["all_passed"] for r in done])
        print(f"shard {k}: {b + len(indices)}/{len(todo)} prompts, {len(done)} images, passed {100 * rate:.1f}%, "
              f"{time.time() - start:.0f} s", flush=True)
    return 0


def load_kept(folder: Path, per_prompt: int, weighting: str) -> tuple[list[str], torch.Tensor, torch.Tensor, dict]:
    """Captions, latents and sampling weights of the kept images. "cap": up to per_prompt passing images per prompt,
    equal weights; "advantage": every passing image, weighted by its group-normalised advantage 1 - (the prompt's pass
    rate) plus 0.1 (so a prompt passed every time still anchors a little)."""
    captions, rows, weights, stats = [], [], [], {}
    for records_path in sorted(folder.glob("shard-*.jsonl")):
        records = [json.loads(line) for line in records_path.open()]
        latents = load_file(records_path.with_suffix(".safetensors"))["latents"]
        taken: dict[int, int] = {}
        rate: dict[int, list[bool]] = {}
        for r in records:
            rate.setdefault(r["prompt_index"], []).append(r["all_passed"])
        for r, z in zip(records, latents):
            entry = stats.setdefault(r["category"], [0, 0, 0])
            entry[0] += 1
            entry[1] += r["all_passed"]
            if r["all_passed"] and (weighting == "advantage" or taken.get(r["prompt_index"], 0) < per_prompt):
                taken[r["prompt_index"]] = taken.get(r["prompt_index"], 0) + 1
                entry[2] += 1
                captions.append(r["caption"])
                rows.append(z)
                weights.append(1.0 if weighting == "cap" else 1.1 - float(np.mean(rate[r["prompt_index"]])))
    return captions, torch.stack(rows), torch.tensor(weights), stats


def tune(args) -> int:
    out = Path(args.out)
    if out.exists():  # before any compute
        raise SystemExit(f"{out} exists; give a new folder")
    torch.set_num_threads(args.threads)
    model = Path(args.model or shipped_model_path())
    captions, latents, weights, stats = load_kept(Path(args.dir), args.per_prompt, args.weighting)
    for category, (n, passed, kept) in sorted(stats.items()):
        print(f"{category}: {n} images, {passed} passed, {kept} kept")
    pipe = T2IPipeline.from_folder(model, device="cpu", dtype="fp32")
    with torch.no_grad():
        states = torch.cat([pipe.encode_text(captions[i:i + 64]) for i in range(0, len(captions), 64)])
        empty = pipe.encode_text([""])
    unet = pipe.unet.train().requires_grad_(True)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()} if args.ema else None
    scheduler = training_scheduler(pipe.scheduler_config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    losses, start = [], time.time()
    for step in range(args.steps):
        rows = torch.multinomial(weights, args.batch, replacement=True, generator=gen)
        cond = states[rows].clone()
        drop = torch.rand(args.batch, generator=gen) < 0.1
        cond[drop] = empty[0]
        loss = diffusion_loss(unet, latents[rows], cond, scheduler, gen, snr_gamma=5.0, snr_floor=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in unet.state_dict().items():
                    ema[k].lerp_(v, 1 - args.ema)
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}/{args.steps}: loss {np.mean(losses[-25:]):.4f}, {time.time() - start:.0f} s",
                  flush=True)
    shutil.copytree(model, out)
    unet_file = out / "unet" / "diffusion_pytorch_model.safetensors"
    final = ema if ema is not None else unet.state_dict()
    save_file({k: v.detach().half().contiguous() for k, v in final.items()}, str(unet_file))
    (out / "filtered_finetune.json").write_text(json.dumps({"data": str(args.dir), "images": len(captions),
                                                            "kept_per_category": {k: v[2] for k, v in stats.items()},
                                                            "steps": args.steps, "lr": args.lr, "batch": args.batch,
                                                            "per_prompt": args.per_prompt, "weighting": args.weighting,
                                                            "ema": args.ema, "losses": losses}))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("dir")
    c.add_argument("--model", default=None)
    c.add_argument("--prompts", type=int, default=200)
    c.add_argument("--group", type=int, default=4)
    c.add_argument("--batch-prompts", type=int, default=4)
    c.add_argument("--shard", default="0/1")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--mix", default=DEFAULT_MIX)
    c.add_argument("--threads", type=int, default=1)
    t = sub.add_parser("tune")
    t.add_argument("dir")
    t.add_argument("--out", required=True)
    t.add_argument("--model", default=None)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--per-prompt", type=int, default=2)
    t.add_argument("--weighting", choices=("cap", "advantage"), default="cap")
    t.add_argument("--ema", type=float, default=0.0, help="export an EMA of the weights with this decay (0: the last)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    return collect(args) if args.command == "collect" else tune(args)


if __name__ == "__main__":
    sys.exit(main())
