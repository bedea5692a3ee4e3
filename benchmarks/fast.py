"""The fast path (`fast=True`, `t2ikit generate --fast`) against plain diffusers and against our default.

    python benchmarks/fast.py [--json] [--sections speed,sd15,tricks] [--repeats 3] [--threads N] [--prompt P]
    python benchmarks/fast.py --sections compbench --out DIR [--n-prompts 10] [--seeds 2] [--split train]

speed:  the shipped model (else a tiny random folder), batch 1 and 16: ms/image of diffusers'
        StableDiffusionPipeline on the same folder (20 steps, dpmpp_2m, no relation guidance: it has none),
        ours at the model's defaults (relation guidance on for the shipped model), ours plain, ours fast and
        ours fast without relation guidance, and each piece of fast alone. Every repeat runs all of them in a
        rotated order in one process, so machine load hits them alike; ratios are per repeat, then the median.
external: diffusers with tomesd and with the deepcache package (where importable; install them with
        `pip install --no-deps --target DIR tomesd deepcache` and PYTHONPATH=DIR, never replacing torch).
sd15:   a full-size Stable Diffusion 1.5 configuration (random weights, 860M-parameter UNet, SD's VAE and a
        CLIP ViT-L-sized text encoder over a word-level tokenizer) at 256 px, batch 1: diffusers, ours, ours
        with feature caching (and with fast's steps), and the latent difference to ours default.
tricks: the UNet forward alone (batch 2 = one guided step) in channels-last and under torch.compile
        (warm-up time reported separately), against the eager contiguous UNet.
compbench: the shipped model's CompBench per variant (default, fast, each piece), written per variant as
        DIR/<variant>.json (a variant with a file is read back, one of another suite refused; a stopped variant
        resumes from DIR/<variant>.journal.jsonl after its last finished batch), then paired against default.

The load average of the machine is printed with the results: on a shared machine absolute ms move, the
interleaved ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from t2ikit.pipeline import PLAIN  # noqa: E402  (the plain sampler: no relation guidance, no layout)

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red circle to the left of a blue square"

# variant -> generate() settings on top of the model's defaults (None = the model's default)
SPEED_VARIANTS = {
    "default": {},
    "rg": {"layout": "none"},  # relation guidance alone: the shipped model's default before layout="many"
    "plain": {**PLAIN},
    "fast": {"fast": True},
    "fast_plain": {"fast": True, **PLAIN},
    "cache2_plain": {"cache_interval": 2, **PLAIN},
    "steps10_plain": {"steps": 10, **PLAIN},
    "cheap_guidance": {"latent_steps": 3, "latent_iterations": 1},
    "encoder_guidance": {"latent_layers": "encoder"},
    "compile_plain": {"compile": True, **PLAIN},
    "compile": {"compile": True},
    "compile_encoder": {"compile": True, "latent_layers": "encoder"},
    # CFG on the first half only
    "cfg_end50_plain": {"guidance_interval": (0.0, 0.5), **PLAIN},
    "layout": {"layout": "auto", "relation_guidance": 0},  # boxes planned from the prompt instead of relation guidance
    "layout_shared": {"layout": "auto", "relation_guidance": 0, "latent_pass": "shared"},
    "layout+rg": {"layout": "auto"},
    "layout+rg_shared": {"layout": "auto", "latent_pass": "shared"},
    "cfg_end50_compile_plain": {"guidance_interval": (0.0, 0.5), "compile": True, **PLAIN},
    "steps15_cfg_end50_plain": {"steps": 15, "guidance_interval": (0.0, 0.5), **PLAIN},
    "steps15_cfg_end50_compile_plain": {"steps": 15, "guidance_interval": (0.0, 0.5), "compile": True,
                                        **PLAIN},
    "steps15_cfg_end50": {"steps": 15, "guidance_interval": (0.0, 0.5)},
    "cfg_end70": {"guidance_interval": (0.0, 0.7)},  # what fast=True sets now, relation guidance on
    "many": {"layout": "many"},  # boxes without relation guidance for a prompt naming several objects, else default
    "many_shared": {"layout": "many", "latent_pass": "shared"},
    "many_cfg_end70": {"layout": "many", "guidance_interval": (0.0, 0.7)},
    "many_rel": {"layout": "many+relations"},  # boxes also for a prompt stating a relation, relation guidance on too
    "fast_rg": {"fast": True, "layout": "none"},  # fast on the earlier default (relation guidance alone)
    "shared": {"latent_pass": "shared"},  # the default with one guidance pass per gradient step for all updates
}
COMPBENCH_VARIANTS = {
    "default": {},
    "rg": {"layout": "none"},
    "fast": {"fast": True},
    "cache2": {"cache_interval": 2, "cache_branch": "block"},
    "steps10": {"steps": 10},
    "cache2_layer": {"cache_interval": 2, "cache_branch": "layer"},
    "cache3_layer": {"cache_interval": 3, "cache_branch": "layer"},
    "cheap_guidance": {"latent_steps": 3, "latent_iterations": 1},
    "steps12": {"steps": 12},
    "cache3": {"cache_interval": 3},
    "steps8": {"steps": 8},
    "plain": {**PLAIN},
    "encoder_guidance": {"latent_layers": "encoder"},
    "encoder_s400": {"latent_layers": "encoder", "relation_guidance": 400},
    "encoder_8x2": {"latent_layers": "encoder", "latent_steps": 8},
    "encoder_5x3": {"latent_layers": "encoder", "latent_iterations": 3},
    "encoder_s400_8x2": {"latent_layers": "encoder", "relation_guidance": 400, "latent_steps": 8},
    "encoder_10x1": {"latent_layers": "encoder", "latent_steps": 10, "latent_iterations": 1},
    "encoder_12x1": {"latent_layers": "encoder", "latent_steps": 12, "latent_iterations": 1},
    "encoder_10x2": {"latent_layers": "encoder", "latent_steps": 10},
    "all_8x1": {"latent_steps": 8, "latent_iterations": 1},
    "encoder_15x1": {"latent_layers": "encoder", "latent_steps": 15, "latent_iterations": 1},
    "encoder_20x1": {"latent_layers": "encoder", "latent_steps": 20, "latent_iterations": 1},
    "cfg_end50": {"guidance_interval": (0.0, 0.5)},  # classifier-free guidance on the first half of the steps
    "cfg_end70": {"guidance_interval": (0.0, 0.7)},
    "cfg_end50_compile": {"guidance_interval": (0.0, 0.5), "compile": True},
    "cfg_end30": {"guidance_interval": (0.0, 0.3)},
    "cfg_end50_cache2": {"guidance_interval": (0.0, 0.5), "cache_interval": 2, "cache_branch": "layer"},
    # relation guidance whose pass also gives the step's conditional prediction (latent_pass="shared")
    "shared": {"latent_pass": "shared"},
    "shared_10x1": {"latent_pass": "shared", "latent_steps": 10, "latent_iterations": 1},
    "shared_cfg_end50": {"latent_pass": "shared", "guidance_interval": (0.0, 0.5)},
    "steps15_cfg_end50": {"steps": 15, "guidance_interval": (0.0, 0.5)},  # 15 DPM++ 2M steps, CFG on the first half
    "shared_10x1_cfg_end50": {"latent_pass": "shared", "latent_steps": 10, "latent_iterations": 1,
                              "guidance_interval": (0.0, 0.5)},
}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median_ms(times: list[float], batch: int) -> float:
    return 1000 * statistics.median(times) / batch


# ----------------------------------------------------------------------------------------------------
# speed on the shipped model


def speed(args) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    from t2ikit.diffusion.samplers import make_scheduler
    from t2ikit.pipeline import T2IPipeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    from generate import pick_model

    import tempfile

    tmp = tempfile.TemporaryDirectory()
    model, source = pick_model(args.model, Path(tmp.name))
    ours = T2IPipeline.from_folder(model)
    ref = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, use_safetensors=True,
                                                  safety_checker=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    guidance, sampler, steps = ours.defaults["guidance"], ours.defaults["sampler"], ours.defaults["steps"]
    known = {**COMPBENCH_VARIANTS, **SPEED_VARIANTS}  # any variant either section knows can be timed
    unknown = [k for k in args.variants.split(",") if k not in known]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(known)}")
    variants = {k: known[k] for k in args.variants.split(",")}
    out = {"model": str(model), "model_source": source, "prompt": args.prompt, "steps": steps, "sampler": sampler,
           "guidance": guidance,
           "relation_guidance_default": ours.defaults["relation_guidance"], "size": list(ours.default_size),
           "variants": variants, "batches": {}}

    def run_ref(batch):
        ref.scheduler = make_scheduler(sampler, ours.scheduler_config)
        gens = [torch.Generator().manual_seed(k) for k in range(batch)]
        ref(args.prompt, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
            num_images_per_prompt=batch, output_type="pil")

    def run_ours(batch, settings):
        ours.generate(args.prompt, seed=0, n=batch, progress=False, **settings)

    for batch in (int(b) for b in args.batches.split(",")):
        jobs = {"diffusers": lambda b=batch: run_ref(b)}
        jobs.update({name: (lambda b=batch, s=s: run_ours(b, s)) for name, s in variants.items()})
        names = list(jobs)
        warm = out.setdefault("warmup_s", {})
        for name in names:  # warm-up (allocator, lazy imports; torch.compile's compilation, again per batch size)
            start = time.perf_counter()
            jobs[name]()
            warm.setdefault(name, {})[str(batch)] = round(time.perf_counter() - start, 2)
        times = {name: [] for name in names}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotated: each name at each position
            for name in order:
                start = time.perf_counter()
                jobs[name]()
                times[name].append(time.perf_counter() - start)
            print(f"batch {batch} repeat {r}: " + " ".join(f"{n}={times[n][-1]:.2f}s" for n in names)
                  + f" load {load()}", file=sys.stderr, flush=True)
        res = {name: {"ms_per_image": median_ms(t, batch)} for name, t in times.items()}
        for name in names:
            ratios = [d / t for d, t in zip(times["diffusers"], times[name])]  # > 1: faster than diffusers
            res[name]["speedup_vs_diffusers"] = statistics.median(ratios)
            res[name]["speedup_range"] = [min(ratios), max(ratios)]
        out["batches"][str(batch)] = res
    out["load_after"] = load()
    tmp.cleanup()
    return out


# ----------------------------------------------------------------------------------------------------
# other projects' accelerators on diffusers, where installed (pip install --no-deps tomesd deepcache)


def external(args) -> dict:
    """diffusers plain, diffusers + tomesd (ratio 0.5), diffusers + the deepcache package (interval 2, branch 0)
    and ours fast without relation guidance, interleaved as in `speed`; a package that does not import or run
    is reported with its error."""
    import tempfile

    import torch
    from diffusers import StableDiffusionPipeline

    from t2ikit.diffusion.samplers import make_scheduler
    from t2ikit.pipeline import T2IPipeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    from generate import pick_model

    tmp = tempfile.TemporaryDirectory()
    model, _ = pick_model(args.model, Path(tmp.name))
    ours = T2IPipeline.from_folder(model)
    guidance, sampler, steps = ours.defaults["guidance"], ours.defaults["sampler"], ours.defaults["steps"]

    def load_ref():
        ref = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, use_safetensors=True,
                                                      safety_checker=None, requires_safety_checker=False)
        ref.set_progress_bar_config(disable=True)
        return ref

    pipes, out = {"diffusers": load_ref()}, {"errors": {}}
    try:
        import tomesd

        pipes["tomesd"] = load_ref()
        tomesd.apply_patch(pipes["tomesd"], ratio=0.5)
    except Exception as err:  # noqa: BLE001 - reported, not hidden
        out["errors"]["tomesd"] = f"{type(err).__name__}: {err}"
    try:
        from DeepCache import DeepCacheSDHelper

        pipes["deepcache"] = load_ref()
        helper = DeepCacheSDHelper(pipe=pipes["deepcache"])
        helper.set_params(cache_interval=2, cache_branch_id=0)
        helper.enable()
    except Exception as err:  # noqa: BLE001
        out["errors"]["deepcache"] = f"{type(err).__name__}: {err}"
        pipes.pop("deepcache", None)

    def run_ref(pipe, batch):
        pipe.scheduler = make_scheduler(sampler, ours.scheduler_config)
        gens = [torch.Generator().manual_seed(k) for k in range(batch)]
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                    num_images_per_prompt=batch, output_type="np").images

    batch = 1
    jobs = {name: (lambda p=p: run_ref(p, batch)) for name, p in pipes.items()}
    jobs["ours_fast_plain"] = lambda: ours.generate(PROMPT, seed=0, n=batch, progress=False, fast=True,  # noqa: E731
                                                    **PLAIN)
    jobs["ours_cache2_plain"] = lambda: ours.generate(PROMPT, seed=0, n=batch, progress=False,  # noqa: E731
                                                      cache_interval=2, **PLAIN)
    for name in list(jobs):
        try:
            jobs[name]()
        except Exception as err:  # noqa: BLE001
            out["errors"][name] = f"{type(err).__name__}: {err}"
            jobs.pop(name)
    names = list(jobs)
    times = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
        print(f"external repeat {r}: " + " ".join(f"{n}={times[n][-1]:.2f}s" for n in names) + f" load {load()}",
              file=sys.stderr, flush=True)
    for name in names:
        ratios = [d / t for d, t in zip(times["diffusers"], times[name])]
        out[name] = {"ms_per_image": median_ms(times[name], batch), "speedup_vs_diffusers": statistics.median(ratios)}
    ref_img = run_ref(pipes["diffusers"], 1)
    for name in ("tomesd", "deepcache"):
        if name in names:
            out[name]["image_mean_abs_diff_vs_diffusers"] = float(abs(run_ref(pipes[name], 1) - ref_img).mean())
    out["batch"], out["load_after"] = batch, load()
    tmp.cleanup()
    return out


# ----------------------------------------------------------------------------------------------------
# full-size SD 1.5 configuration, random weights


def sd15_components(seed: int = 0):
    """SD 1.5's UNet and VAE configurations (diffusers' defaults for runwayml/stable-diffusion-v1-5) and a
    CLIP ViT-L/14-sized text encoder over our word-level tokenizer (no hub access), random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import tiny_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    tokenizer = tiny_tokenizer(77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, projection_dim=768))
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
    return unet, vae, text_encoder, tokenizer


def sd15(args) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    from t2ikit.diffusion.samplers import make_scheduler
    from t2ikit.pipeline import T2IPipeline

    sys.path.insert(0, str(REPO / "tests"))
    from tiny import TINY_SCHEDULER

    unet, vae, text_encoder, tokenizer = sd15_components()
    params = sum(p.numel() for p in unet.parameters())
    config = {**TINY_SCHEDULER, "_class_name": "DDIMScheduler"}
    ours = T2IPipeline(unet, vae, text_encoder, tokenizer, config)
    ref = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                  scheduler=make_scheduler("dpmpp_2m", config), safety_checker=None,
                                  feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    size, steps, guidance = (args.sd15_size, args.sd15_size), args.sd15_steps, 7.5
    prompt = "a red circle to the left of a blue square"
    known = {"ours": {}, "cache2": {"cache_interval": 2}, "cache3": {"cache_interval": 3}, "fast": {"fast": True}}
    names = args.sd15_variants.split(",")
    if "ours" not in names or not set(names) <= set(known):
        raise SystemExit(f"--sd15-variants must hold ours (the latent reference) and come from {', '.join(known)}")
    variants = {n: known[n] for n in names}

    def run_ref():
        ref.scheduler = make_scheduler("dpmpp_2m", config)
        ref(prompt, num_inference_steps=steps, guidance_scale=guidance, height=size[0], width=size[1],
            generator=[torch.Generator().manual_seed(0)], output_type="pil")

    latents = {}

    def run_ours(name, settings):
        s = {"steps": steps, **settings} if "fast" not in settings else settings
        spec = ours.make_spec(prompt, steps=s.pop("steps", None), guidance=guidance, size=size, seed=0, **s)
        latents[name] = ours.run(spec, progress=False).latents

    jobs = {"diffusers": run_ref, **{n: (lambda n=n, s=s: run_ours(n, dict(s))) for n, s in variants.items()}}
    names = list(jobs)
    times = {n: [] for n in names}
    for r in range(args.sd15_repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            jobs[name]()
            times[name].append(time.perf_counter() - start)
        print(f"sd15 repeat {r}: " + " ".join(f"{n}={times[n][-1]:.1f}s" for n in names) + f" load {load()}",
              file=sys.stderr, flush=True)
    res = {}
    for name in names:
        ratios = [d / t for d, t in zip(times["diffusers"], times[name])]
        res[name] = {"ms_per_image": median_ms(times[name], 1), "speedup_vs_diffusers": statistics.median(ratios)}
        if name in latents:
            d = (latents[name] - latents["ours"]).float()
            res[name]["latent_rms_diff_vs_ours"] = float(d.pow(2).mean().sqrt())
            res[name]["latent_rms"] = float(latents["ours"].float().pow(2).mean().sqrt())
    return {"unet_params": params, "size": list(size), "steps": steps, "guidance": guidance, "sampler": "dpmpp_2m",
            "variants": variants, "results": res, "repeats": args.sd15_repeats, "load_after": load()}


# ----------------------------------------------------------------------------------------------------
# channels-last and torch.compile on the UNet forward


def tricks(args) -> dict:
    import torch

    from t2ikit.pipeline import T2IPipeline

    sys.path.insert(0, str(REPO / "benchmarks"))
    from generate import pick_model

    import tempfile

    tmp = tempfile.TemporaryDirectory()
    model, _ = pick_model(args.model, Path(tmp.name))
    unet = T2IPipeline.from_folder(model).unet
    h, w = unet.config.sample_size, unet.config.sample_size
    out = {"model": str(model)}
    for batch in (2, 32):  # one guided image, sixteen guided images
        x = torch.randn(batch, unet.config.in_channels, h, w)
        e = torch.randn(batch, 16, unet.config.cross_attention_dim)
        t = torch.tensor(500)

        def call(m, xx):
            with torch.no_grad():
                return m(xx, t, encoder_hidden_states=e, return_dict=False)[0]

        row = {}
        eager = lambda: call(unet, x)  # noqa: E731
        cl_x = x.to(memory_format=torch.channels_last)
        import copy

        cl_unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
        channels_last = lambda: call(cl_unet, cl_x)  # noqa: E731
        jobs = {"eager": eager, "channels_last": channels_last}
        if "compile" in args.tricks:
            compiled = torch.compile(copy.deepcopy(unet))
            start = time.perf_counter()
            call(compiled, x)
            row["compile_warmup_s"] = time.perf_counter() - start
            jobs["compile"] = lambda: call(compiled, x)  # noqa: E731
        for f in jobs.values():
            f()
        times = {n: [] for n in jobs}
        for r in range(args.repeats * 3):
            for n, f in jobs.items():
                start = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - start)
        for n in jobs:
            ratios = [a / b for a, b in zip(times["eager"], times[n])]
            row[n] = {"ms": 1000 * statistics.median(times[n]), "speedup_vs_eager": statistics.median(ratios)}
        out[f"batch_{batch}"] = row
    out["load_after"] = load()
    tmp.cleanup()
    return out


# ----------------------------------------------------------------------------------------------------
# CompBench, per variant, resumable


def compbench(args) -> dict:
    from t2ikit.bench.compbench import make_suite, paired_difference, pipeline_generator, read_result, run
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.pipeline import T2IPipeline

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    suite = make_suite(args.split, n_prompts=args.n_prompts, seeds=args.seeds,
                       categories=args.categories.split(",") if args.categories else None)
    names = [n for n in args.cb_variants.split(",")]
    for name in names:
        path, journal = out_dir / f"{name}.json", out_dir / f"{name}.journal.jsonl"
        if path.is_file():
            read_result(path, suite)  # a result of another suite is refused
            continue
        settings = dict(COMPBENCH_VARIANTS[name])
        steps = settings.pop("steps", None)  # None: the model's default, or fast's
        start = time.perf_counter()
        result = run(suite, pipeline_generator(pipe, steps=steps, **settings), batch_size=16, generator_name=name,
                     journal=journal)  # a stopped variant resumes after its last finished batch
        result["fast_benchmark"] = {"variant": name, "settings": COMPBENCH_VARIANTS[name], "load_after": load(),
                                    "wall_s": time.perf_counter() - start}
        path.write_text(json.dumps(result, indent=1))
        journal.unlink()
        print(f"compbench {name}: {100 * result['overall']['accuracy']:.1f}% in {time.perf_counter() - start:.0f} s, "
              f"load {load()}", file=sys.stderr, flush=True)
    base = json.loads((out_dir / "default.json").read_text()) if (out_dir / "default.json").is_file() else None
    summary = {"suite": suite.config, "variants": {}}
    for name in names:
        path = out_dir / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        entry = {"accuracy": r["overall"]["accuracy"], "generate_s": r["seconds"]["generate"],
                 "spatial": r["per_category"].get("spatial", {}).get("accuracy")}
        if base is not None and name != "default":
            paired = paired_difference(base, r)
            entry["paired_vs_default"] = {k: {"diff": v["diff"], "ci95": v["ci95"]} for k, v in paired.items()}
        summary["variants"][name] = entry
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--sections", default="speed,sd15,tricks", help="comma-separated: speed,sd15,tricks,compbench")
    parser.add_argument("--model", default=None, help="diffusers folder (default: shipped model, else tiny)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--prompt", default=PROMPT, help=f"speed: the prompt timed (default {PROMPT!r})")
    parser.add_argument("--variants", default=",".join(SPEED_VARIANTS), help="speed variants to time")
    parser.add_argument("--sd15-steps", type=int, default=20)
    parser.add_argument("--sd15-repeats", type=int, default=2)
    parser.add_argument("--sd15-size", type=int, default=256, help="pixels (a side)")
    parser.add_argument("--sd15-variants", default="ours,cache2,cache3,fast", help="variants beside diffusers")
    parser.add_argument("--tricks", default="channels_last,compile")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="compbench: folder of per-variant results")
    parser.add_argument("--n-prompts", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--split", default="train")
    parser.add_argument("--categories", default=None, help="compbench: comma-separated categories (default: all)")
    parser.add_argument("--cb-variants", default=",".join(COMPBENCH_VARIANTS))
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    if "compbench" in sections and not args.out:
        parser.error("--sections compbench needs --out DIR")

    import torch
    from diffusers.utils import logging as dl
    from transformers.utils import logging as tl

    dl.disable_progress_bar()
    tl.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_before": load()}
    for name, fn in (("speed", speed), ("external", external), ("tricks", tricks), ("sd15", sd15),
                     ("compbench", compbench)):
        if name in sections:
            start = time.perf_counter()
            results[name] = fn(args)
            results[name]["section_wall_s"] = time.perf_counter() - start
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(json.dumps(results, indent=2))  # the tables are small; JSON is the readable form too
    return 0


if __name__ == "__main__":
    sys.exit(main())
