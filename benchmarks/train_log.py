"""What a training run's log.jsonl says: time, loss, learning rate and throughput at chosen steps, and its
periodic CompBench evaluations, as the model card quotes them.

    python benchmarks/train_log.py docs/shapes-v2-train-log.jsonl --batch 64 [--steps 500,1000,...] [--json]

Minutes count from the run's start, estimated as the first record's time minus the time its steps took at its
logged rate, which needs the images per step (`--batch`; the log has no start record; 0 counts from the first
record).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarize(path: str | Path, steps: list[int] | None = None, batch: int = 0) -> dict:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("event") == "train"]
    if not train:
        raise ValueError(f"{path}: no training records (event 'train')")
    first = train[0]
    start = first["time"] - first["step"] * batch / first["samples_per_s"]  # batch 0: the first record
    minutes = lambda r: round((r["time"] - start) / 60, 1)  # noqa: E731
    wanted = set(steps or [r["step"] for r in train])
    rows = [{"step": r["step"], "minutes": minutes(r), "loss": round(r["loss"], 5), "lr": r["lr"],
             "samples_per_s": round(r["samples_per_s"], 1),
             **{k: round(v, 5) for k, v in r.items() if k.startswith("loss_")}}  # a multi-loss run's terms
            for r in train if r["step"] in wanted]
    evals = [{"step": r["step"], "minutes": minutes(r),
              **{k: round(v, 4) for k, v in r.items() if k.startswith("compbench")}}
             for r in records if r.get("event") == "eval"]
    rates = [r["samples_per_s"] for r in train]
    return {"log": str(path), "train": rows, "evals": evals, "last_step": train[-1]["step"],
            "minutes": minutes(records[-1]), "samples_per_s": {"min": round(min(rates), 1),
                                                               "max": round(max(rates), 1)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="a run's log.jsonl")
    p.add_argument("--steps", default="", help="comma-separated steps for the train rows (default: every record)")
    p.add_argument("--batch", type=int, default=0, help="images per optimizer step (for the run's start time)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s] or None
    s = summarize(args.log, steps, args.batch)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"{s['log']}: {s['last_step']} steps in {s['minutes']} min, "
          f"{s['samples_per_s']['min']}-{s['samples_per_s']['max']} samples/s")
    terms = sorted({k for r in s["train"] for k in r if k.startswith("loss_")})
    print("step  minutes  loss      lr         samples/s" + "".join(f"  {t[5:]}" for t in terms))
    for r in s["train"]:
        print(f"{r['step']:<5} {r['minutes']:<8} {r['loss']:<9} {r['lr']:<10.3g} {r['samples_per_s']:<9}"
              + "".join(f"  {r.get(t, ''):<{len(t) - 5}}" for t in terms))
    for e in s["evals"]:
        print(f"eval step {e['step']} at {e['minutes']} min: " + ", ".join(f"{k} {v}" for k, v in e.items()
                                                                          if k.startswith("compbench")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
