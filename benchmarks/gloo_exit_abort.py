"""How often a 2-rank gloo FSDP2 run aborts at interpreter exit after destroy_process_group, and whether
`t2ikit.train.distributed.shutdown` (gc, then destroy) and `exit_process` (os._exit, no finalization) avoid it.

    python benchmarks/gloo_exit_abort.py [--runs 20]

Each run launches torchrun with 2 ranks of this file, which shard a small MLP, take 3 Adam steps, gather the
weights and leave the group: "destroy" calls dist.destroy_process_group and exits normally; "shutdown" calls
distributed.shutdown and exits normally; "exit_process" calls distributed.shutdown, then exit_process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def _rank(mode: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from t2ikit.train import distributed

    dist.init_process_group("gloo")
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    fully_shard(model)
    opt = torch.optim.Adam(model.parameters())
    for _ in range(3):
        loss = model(torch.randn(8, 64)).square().mean()  # kept alive to the end, as a training script would
        loss.backward()
        opt.step()
        opt.zero_grad()
    whole = {k: v.full_tensor() for k, v in model.state_dict().items()}
    dist.barrier()
    if mode == "destroy":
        dist.destroy_process_group()
    else:
        distributed.shutdown()
    if mode == "exit_process":
        distributed.exit_process(0)
    del loss, whole


def main() -> None:
    if "RANK" in os.environ:
        _rank(sys.argv[1])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    for mode in ("destroy", "shutdown", "exit_process"):
        aborted = 0
        for i in range(args.runs):
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port",
                   str(29500 + (os.getpid() + i) % 1000), __file__, mode]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            aborted += proc.returncode != 0
        print(f"{mode}: {aborted}/{args.runs} runs aborted")


if __name__ == "__main__":
    main()
