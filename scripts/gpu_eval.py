"""CompBench of a model folder on whatever device is there (used by scripts/gpu_train.sh).

    python scripts/gpu_eval.py MODEL_DIR OUT.json [--device cuda] [--n-prompts 50] [--seeds 2]
"""

import argparse
import json
import time

import torch

from t2ikit.bench.compbench import evaluate, markdown
from t2ikit.pipeline import T2IPipeline

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("out")
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
parser.add_argument("--n-prompts", type=int, default=50)
parser.add_argument("--seeds", type=int, default=2)
parser.add_argument("--guidance", type=float, nargs="+", default=[4.0])
args = parser.parse_args()

pipe = T2IPipeline.from_folder(args.model, device=args.device)
results = {}
for guidance in args.guidance:
    for split in ("train", "heldout"):
        t0 = time.perf_counter()
        r = evaluate(pipe, split=split, n_prompts=args.n_prompts, seeds=args.seeds, batch_size=100, guidance=guidance)
        r["wall_s"] = round(time.perf_counter() - t0, 2)
        results[f"{split}@{guidance}"] = r
        print(f"## {split}, guidance {guidance} ({r['wall_s']} s)\n{markdown(r)}", flush=True)
with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
