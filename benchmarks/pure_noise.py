"""What does the model predict from pure noise? At t = 999 of the cosine schedule the noisy latent holds a
signal-to-noise ratio of 2e-9: it says nothing about the image, so the best prediction of x0 is the mean image
of the caption, the same for every noise, with each object's colour on its stated side. This is where a
sampler's first step chooses the layout.

    python benchmarks/pure_noise.py [--model DIR] [--n-prompts 40] [--noises 8] [--timesteps 999]
                                    [--guidance 4] [--threads 2] [--json]

For each CompBench spatial prompt (train split) and each of `--noises` Gaussian latents, the guided x0
prediction at each timestep (the latent given to the UNet is pure noise at every timestep, so below 999 this
is a cruder probe) is decoded and every pixel unmixed, by least squares, into background + a * (colour A -
background) + b * (colour B - background), with a, b >= 0; the a- and b-weighted centroids along the
relation's axis give the order. Printed per timestep: the share of (prompt, noise) pairs whose two centroids
are in the stated order (Wilson interval), and how much the decoded prediction changes with the noise (mean
per-pixel standard deviation across noises, 0 for a model that reads only the caption) against how much it
changes across prompts. The same unmixing on the world's own renders of the prompts is printed as the
metric's ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def unmixed_order(image: np.ndarray, background, colour_a, colour_b, axis: int, sign: int) -> float | None:
    """Signed offset (> 0: stated order) of B's colour centroid past A's along `axis`; None if a colour is absent.

    image: (H, W, 3) in [0, 1]. Each pixel is written as background + a (A - background) + b (B - background),
    a and b by least squares, clipped at 0.
    """
    bg = np.asarray(background, dtype=np.float64)
    basis = np.stack([np.asarray(colour_a) - bg, np.asarray(colour_b) - bg], axis=1)  # (3, 2)
    dev = image.reshape(-1, 3).astype(np.float64) - bg  # (HW, 3)
    coef, *_ = np.linalg.lstsq(basis, dev.T, rcond=None)  # (2, HW)
    coef = np.clip(coef, 0.0, None).reshape(2, *image.shape[:2])
    centres = []
    for w in coef:
        profile = w.sum(axis=0) if axis == 0 else w.sum(axis=1)  # x: sum over rows; y: sum over columns
        coords = np.arange(len(profile), dtype=np.float64)
        if profile.sum() < 1e-3 * len(profile):
            return None
        centres.append(float((profile * coords).sum() / profile.sum()))
    return sign * (centres[1] - centres[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    ap.add_argument("--n-prompts", type=int, default=40)
    ap.add_argument("--noises", type=int, default=8, help="Gaussian latents per prompt")
    ap.add_argument("--timesteps", default="999", help="comma-separated training timesteps to probe")
    ap.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (1 = conditional only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        timesteps = [int(t) for t in args.timesteps.split(",")]
    except ValueError:
        raise SystemExit(f"--timesteps must be comma-separated integers, got {args.timesteps!r}") from None
    if args.n_prompts < 1 or args.noises < 2 or args.threads < 1:
        raise SystemExit("--n-prompts and --threads must be >= 1, --noises >= 2")
    if not all(0 <= t < 1000 for t in timesteps):
        raise SystemExit(f"--timesteps must lie in [0, 999], got {timesteps}")
    import torch

    from t2ikit.bench import compbench as cb
    from t2ikit.bench.stats import wilson_interval
    from t2ikit.diffusion.schedules import training_scheduler
    from t2ikit.models.registry import shipped_model_path
    from t2ikit.diffusion.guidance import cfg
    from t2ikit.pipeline import T2IPipeline
    from t2ikit.world.render import render_rgb
    from t2ikit.world.scene import RELATION_AXES, make_scene
    from t2ikit.world.vocab import BACKGROUNDS, COLOURS, DEFAULT_BACKGROUND

    torch.set_num_threads(args.threads)
    pipe = T2IPipeline.from_folder(args.model or shipped_model_path())
    config = pipe.scheduler_config
    if config.get("prediction_type") != "v_prediction":
        raise SystemExit(f"{pipe.path}: this probe reads v-prediction models; the folder's is {config.get('prediction_type')}")
    schedule = training_scheduler(pipe.scheduler_config)  # the folder's noise schedule, as the diffusion loss noises with it
    suite = cb.make_suite("train", args.n_prompts, 1, ("spatial",))
    h, w = (s // pipe.vae_scale_factor for s in pipe.default_size)
    result = {"model": str(pipe.path), "noises": args.noises, "guidance": args.guidance, "timesteps": {}}
    per_t = {t: {"offsets": [], "missing": 0, "noise_std": [], "means": []} for t in timesteps}
    truth = {"offsets": [], "missing": 0}
    for k, item in enumerate(suite.items):
        spec = item.spec
        rel = spec.relations[0]
        axis, sign = RELATION_AXES[rel.relation]
        bg = BACKGROUNDS[spec.style.background or DEFAULT_BACKGROUND]
        ca, cb_ = COLOURS[spec.groups[rel.subject].colour], COLOURS[spec.groups[rel.object].colour]
        if ca == cb_:
            continue  # one colour for both: the unmixing cannot tell them apart
        render = render_rgb(make_scene(spec, np.random.default_rng([k, 0]), reference=False), pipe.default_size[0])
        off = unmixed_order(render, bg, ca, cb_, axis, sign)
        if off is None:
            truth["missing"] += 1
        else:
            truth["offsets"].append(off)
        cond = pipe.encode_text([item.prompt] * args.noises)
        uncond = pipe.encode_text([""] * args.noises)
        noise = torch.randn((args.noises, pipe.unet.config.in_channels, h, w), generator=torch.Generator().manual_seed(k))
        for t in timesteps:
            a = schedule.alphas_cumprod[t]
            with torch.no_grad():
                v_c = pipe.unet(noise, t, encoder_hidden_states=cond).sample
                v = v_c if args.guidance == 1 else cfg(pipe.unet(noise, t, encoder_hidden_states=uncond).sample, v_c,
                                                        args.guidance)
                x0 = a.sqrt() * noise - (1 - a).sqrt() * v
                images = pipe.decode(x0).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3)
            per_t[t]["noise_std"].append(float(images.std(axis=0).mean()))
            per_t[t]["means"].append(images.mean(axis=0))
            for img in images:
                off = unmixed_order(img, bg, ca, cb_, axis, sign)
                if off is None:
                    per_t[t]["missing"] += 1
                else:
                    per_t[t]["offsets"].append(off)

    def share(offsets, missing):
        offsets = np.asarray(offsets)
        n, passed = len(offsets), int((offsets > 0).sum())
        lo, hi = wilson_interval(passed, n) if n else (0.0, 1.0)
        return {"stated_order": passed / n if n else None, "interval": [lo, hi], "n": n, "no_colour": missing,
                "mean_offset_px": float(offsets.mean()) if n else None}

    result["truth"] = share(truth["offsets"], truth["missing"])
    for t, d in per_t.items():
        means = np.stack(d["means"])
        result["timesteps"][str(t)] = {
            "snr": float(schedule.alphas_cumprod[t] / (1 - schedule.alphas_cumprod[t])),
            **share(d["offsets"], d["missing"]),
            "std_across_noises": float(np.mean(d["noise_std"])),
            "std_across_prompts": float(means.std(axis=0).mean()),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']}: x0 predicted from pure noise, {len(per_t[timesteps[0]]['noise_std'])} spatial prompts x "
          f"{args.noises} noises, guidance {args.guidance}")
    t_ = result["truth"]
    print(f"  world renders (ceiling): stated order {t_['stated_order']:.1%} [{t_['interval'][0]:.1%}, "
          f"{t_['interval'][1]:.1%}] (n={t_['n']})")
    for t, r in result["timesteps"].items():
        print(f"  t={t} (SNR {r['snr']:.1e}): stated order {r['stated_order']:.1%} [{r['interval'][0]:.1%}, "
              f"{r['interval'][1]:.1%}] (n={r['n']}, {r['no_colour']} without a colour), mean offset "
              f"{r['mean_offset_px']:+.2f} px; pixel std across noises {r['std_across_noises']:.3f}, "
              f"across prompts {r['std_across_prompts']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
