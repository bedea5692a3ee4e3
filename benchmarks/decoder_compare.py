"""Two VAE decoders on the same generated latents: CompBench, paired (the UNet and its samples are shared).

    python benchmarks/decoder_compare.py --new-vae DIR [--model DIR] [--split train] [--n-prompts 50] [--seeds 2] [--json]

Only the decoder differs between the two rows, so the paired difference is the decoder's effect alone.
"""

from __future__ import annotations

import argparse
import json

import torch
from diffusers import AutoencoderKL

from t2ikit.analysis.paired import paired_compbench
from t2ikit.bench.compbench import CATEGORIES
from t2ikit.models.registry import shipped_model_path
from t2ikit.pipeline import T2IPipeline, to_pil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(shipped_model_path()))
    parser.add_argument("--new-vae", required=True, help="a diffusers AutoencoderKL folder with the same encoder")
    parser.add_argument("--split", default="train", choices=["train", "heldout"])
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = T2IPipeline.from_folder(args.model)
    old_vae = pipe.vae
    new_vae = AutoencoderKL.from_pretrained(args.new_vae, torch_dtype=torch.float32).eval()
    cache: dict = {}

    def latents(prompts, seeds):
        key = (tuple(prompts), tuple(seeds))
        if key not in cache:
            parts, start = [], 0
            while start < len(prompts):  # one run per stretch of consecutive seeds (image k gets seed + k)
                end = start + 1
                while end < len(prompts) and seeds[end] == seeds[start] + (end - start):
                    end += 1
                spec = pipe.make_spec(list(prompts[start:end]), seed=int(seeds[start]))
                parts.append(pipe.run(spec, decode=False, progress=False).latents)
                start = end
            cache[key] = torch.cat(parts)
        return cache[key]

    def decoded_by(vae):
        def generate(prompts, seeds):
            pipe.vae = vae
            try:
                return to_pil(pipe.decode(latents(prompts, seeds)))
            finally:
                pipe.vae = old_vae
        return generate

    result = paired_compbench(decoded_by(old_vae), decoded_by(new_vae), n_prompts=args.n_prompts, seeds=args.seeds,
                              categories=CATEGORIES, split=args.split)
    result["config"].update({"model": args.model, "new_vae": args.new_vae, "rows": "plain = shipped decoder, "
                             "weighted = new decoder"})
    print(json.dumps(result, indent=1) if args.json else json.dumps(result.get("all", result), indent=1))


if __name__ == "__main__":
    main()
