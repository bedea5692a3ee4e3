"""Our hooked attention processor (no hooks: fused path) vs diffusers' AttnProcessor2_0, side by side.

    python benchmarks/attention.py [--json] [--repeats 15] [--latent 32] [--batch 2] [--threads 1]

Both run in one process on the same UNet and inputs, interleaved (A B A B ...) so machine noise hits both;
prints ms per UNet forward for each and the ratio ours/diffusers with a bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from t2ikit.attention.capture import AttentionStore
from t2ikit.attention.processor import AttentionController


def build_unet(channels=(64, 128, 256), cross_dim=256) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=channels, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1),
        cross_attention_dim=cross_dim, attention_head_dim=32, norm_num_groups=32,
    ).eval()


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    ratios = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(n)]
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steady on a shared CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    unet = build_unet()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.latent, args.latent, generator=g)
    text = torch.randn(args.batch, 32, 256, generator=g)
    t = torch.full((args.batch,), 500)
    default = {name: AttnProcessor2_0() for name in unet.attn_processors}
    AttentionController().install(unet)
    ours_procs = dict(unet.attn_processors)
    AttentionController([AttentionStore(layers=["up_blocks.2"])]).install(unet)
    capture_procs = dict(unet.attn_processors)
    variants = {"diffusers": default, "t2ikit": ours_procs, "t2ikit+capture(1 layer)": capture_procs}
    times = {k: [] for k in variants}
    with torch.no_grad():
        for name, procs in variants.items():  # warm-up
            unet.set_attn_processor(dict(procs))  # diffusers pops from the dict it is given
            unet(x, t, encoder_hidden_states=text)
        for _ in range(args.repeats):
            for name, procs in variants.items():
                unet.set_attn_processor(dict(procs))  # diffusers pops from the dict it is given
                start = time.perf_counter()
                unet(x, t, encoder_hidden_states=text)
                times[name].append(time.perf_counter() - start)
    base = np.asarray(times["diffusers"])
    result = {"latent": args.latent, "batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "ms": {k: round(1e3 * float(np.median(v)), 3) for k, v in times.items()}, "ratio_vs_diffusers": {}}
    for k, v in times.items():
        if k == "diffusers":
            continue
        v = np.asarray(v)
        lo, hi = bootstrap_ratio(v, base)
        result["ratio_vs_diffusers"][k] = {"median": round(float(np.median(v) / np.median(base)), 4),
                                           "ci95": [round(lo, 4), round(hi, 4)]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"UNet forward, latent {args.latent}x{args.latent}, batch {args.batch}, {args.repeats} interleaved repeats")
        for k, ms in result["ms"].items():
            r = result["ratio_vs_diffusers"].get(k)
            extra = f"  ratio {r['median']:.3f} (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})" if r else ""
            print(f"  {k:28s} {ms:8.2f} ms{extra}")


if __name__ == "__main__":
    main()
