"""Is the memory estimate right at Stable Diffusion's scale? Measured peak vs t2ikit.models.memory, on CPU.

    python benchmarks/memory_estimate.py [--sizes 256 512] [--json]

SD 1.5's UNet and VAE architectures (stock diffusers classes, random weights: the activations do not depend
on the weights) run one UNet call with guidance (2 rows) and one VAE decode per size, each in a fresh process
(Linux: the peak is VmHWM after a reset through /proc/self/clear_refs, over VmRSS just before the call). The
UNet alone holds 3.4 GB of weights; run it where that fits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

UNET = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, attention_head_dim=8, in_channels=4,
            out_channels=4, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=768, sample_size=64)
VAE = dict(block_out_channels=[128, 256, 512, 512], in_channels=3, out_channels=3, latent_channels=4,
           layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, sample_size=512)
TOKENS = 77  # CLIP's context


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def measure(part: str, size: int) -> dict:
    """Peak bytes over the baseline of one UNet call (2 rows) or one VAE decode at size x size pixels."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from t2ikit.models.memory import estimate_bytes

    latent = size // 8
    with torch.no_grad():
        if part == "vae":
            model = AutoencoderKL(**VAE).eval()
            run = lambda z: model.decode(z).sample  # noqa: E731
            rows = 1
        else:
            model = UNet2DConditionModel(**UNET).eval()
            text = torch.randn(2, TOKENS, UNET["cross_attention_dim"])
            run = lambda z: model(z, 10, encoder_hidden_states=text).sample  # noqa: E731
            rows = 2
        run(torch.randn(rows, 4, 8, 8))  # code and kernels resident before the baseline
        z = torch.randn(rows, 4, latent, latent)
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        run(z)
        measured = _status("VmHWM") - base
    estimate = estimate_bytes(UNET, VAE, TOKENS, 1, (size, size), rows_per_image=2)[part]
    return {"part": part, "size": size, "measured": measured, "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes in pixels")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", nargs=2, metavar=("PART", "SIZE"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return
    rows = []
    for part in ("vae", "unet"):
        for size in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--one", part, str(size)], capture_output=True, text=True,
                                 check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'part':5s} {'size':>5s} {'measured MB':>12s} {'estimate MB':>12s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['part']:5s} {r['size']:5d} {r['measured'] / 1e6:12.0f} {r['estimate'] / 1e6:12.0f} "
              f"{r['estimate'] / r['measured']:6.2f}")


if __name__ == "__main__":
    main()
