"""How fast Shapes World renders, on one core: the training stream and every modality.

    python benchmarks/world_throughput.py [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from t2ikit.world.dataset import make_batch
from t2ikit.world.render import render
from t2ikit.world.scene import sample_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    make_batch(0, 0, args.n)
    stream = args.n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(args.n):
        render(sample_scene(1, i))  # rgb, depth, sketch, instances, classes, reference
    full = args.n / (time.perf_counter() - t0)
    result = {"scenes": args.n, "training_stream_scenes_per_s": round(stream), "all_modalities_scenes_per_s": round(full),
              "load_average_1min": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"one process, {args.n} scenes at 64x64 (load average {result['load_average_1min']}):")
        print(f"  training stream (scene + rgb + caption): {result['training_stream_scenes_per_s']} scenes/s")
        print(f"  every modality (+ depth, sketch, masks, reference): {result['all_modalities_scenes_per_s']} scenes/s")


if __name__ == "__main__":
    main()
