"""Does the autoencoder keep every object? Oracle reading of VAE reconstructions vs the rendered truth.

    python benchmarks/vae_recon.py [--model DIR] [--n 1000] [--json]

For every object of N training-mix scenes: is an object of the same colour, shape and size found at
its place (centre within 4 px) in the reconstruction? Reported for small and large objects separately,
with Wilson 95% intervals, next to the same reading of the clean render (the oracle's own ceiling).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from diffusers import AutoencoderKL

from t2ikit.bench.stats import wilson_interval
from t2ikit.models.registry import shipped_model_path
from t2ikit.world.oracle import detect
from t2ikit.world.render import render_rgb
from t2ikit.world.scene import sample_scene


def objects_kept(image: np.ndarray, scene) -> list[tuple[str, bool]]:
    found = detect(image).detections
    out = []
    for o in scene.objects:
        cx, cy = o.centre
        ok = any(d.colour == o.colour and d.shape == o.shape and d.size == o.size
                 and abs(d.centre[0] - cx) <= 4 and abs(d.centre[1] - cy) <= 4 for d in found)
        out.append((o.size, ok))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_model_path()))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vae = AutoencoderKL.from_pretrained(args.model, subfolder="vae", torch_dtype=torch.float32).eval()
    tallies = {"render": {"small": [0, 0], "large": [0, 0]}, "vae": {"small": [0, 0], "large": [0, 0]}}
    for start in range(0, args.n, args.batch):
        scenes = [sample_scene(args.seed, i, reference=False) for i in range(start, min(args.n, start + args.batch))]
        rgb = np.stack([render_rgb(s) for s in scenes])  # (B, 64, 64, 3)
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
            rec = ((vae.decode(z).sample.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        for scene, clean, recon in zip(scenes, rgb, rec):
            for key, image in (("render", clean), ("vae", recon)):
                for size, ok in objects_kept(image, scene):
                    tallies[key][size][0] += ok
                    tallies[key][size][1] += 1
    result = {"model": args.model, "scenes": args.n, "latent": list(z.shape[1:])}
    for key, t in tallies.items():
        result[key] = {}
        for size, (kept, n) in t.items():
            lo, hi = wilson_interval(kept, n)
            result[key][size] = {"kept": kept, "objects": n, "rate": round(kept / n, 4), "ci95": [round(lo, 4), round(hi, 4)]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.n} scenes, latent {tuple(z.shape[1:])}")
        for key in ("render", "vae"):
            for size, r in result[key].items():
                print(f"  {key:6s} {size:5s} {r['kept']}/{r['objects']} = {100 * r['rate']:.1f}% "
                      f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]")


if __name__ == "__main__":
    main()
