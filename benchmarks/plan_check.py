"""Check the parallelism cost model (t2ikit.scaling.parallel) against measured training steps on this machine.

One device = one CPU core (every process runs with 1 thread). Measures the achieved FLOP/s of a matmul and
the gloo all-reduce bandwidth of the gradient size, feeds them to the planner, and times real training
steps (forward, backward, Adam) of a named-size diffusers UNet2DConditionModel with 1 process and with 2
gloo processes on 127.0.0.1, under DistributedDataParallel and under FSDP2 (`fully_shard` of the whole UNet
as one unit, as the trainer's run.parallel = "fsdp" does), at a few micro-batch sizes.

    python benchmarks/plan_check.py [--size s] [--micro-batches 4,8,16] [--steps 3] [--json]

Two predictions are printed: "raw", the planner with efficiency 1 (the matmul rate is the device rate), and
"cal", the planner with an efficiency and a fixed per-step overhead fitted on the single-process rows and
reused for the two-process rows (which are then the check).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from t2ikit.models.sizes import build_unet
from t2ikit.scaling.parallel import PRECISIONS, Hardware, Layout, spec_from_size, step_seconds

LATENT = (4, 16, 16)  # (C, H, W): the latent of a 64 px image through the f4 VAE
TEXT_TOKENS = 16


def matmul_flops(n: int = 512, repeats: int = 20) -> float:
    """Achieved FLOP/s of an (n, n) @ (n, n) fp32 matmul on one thread (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_steps(unet, micro_batch: int, steps: int, seed: int) -> list[float]:
    """Seconds of each of `steps` training steps, after one warm-up step."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(micro_batch, *LATENT, generator=g)
    noise = torch.randn(micro_batch, *LATENT, generator=g)
    cond = torch.randn(micro_batch, TEXT_TOKENS, unet_config(unet).cross_attention_dim, generator=g)
    t = torch.randint(0, 1000, (micro_batch,), generator=g)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(unet(x, t, encoder_hidden_states=cond).sample, noise)
        loss.backward()  # DDP all-reduces the gradients here
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def unet_config(unet):
    return unet.module.config if hasattr(unet, "module") else unet.config


def allreduce_bandwidth(nbytes: int, world: int, repeats: int = 5) -> float:
    """Bus bandwidth, bytes/s, of a gloo all-reduce of `nbytes`: 2 (N-1)/N * bytes / seconds (ring)."""
    buf = torch.zeros(nbytes // 4)
    dist.all_reduce(buf)
    best = float("inf")
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        best = min(best, time.perf_counter() - t0)
    return 2 * (world - 1) / world * nbytes / best


def worker(rank: int, world: int, port: int, size: str, micro_batches: list[int], steps: int, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # localhost only
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        unet = build_unet(size, latent_channels=LATENT[0], sample_size=LATENT[1])
        grad_bytes = sum(p.numel() for p in unet.parameters()) * 4  # fp32 gradients
        bandwidth = allreduce_bandwidth(grad_bytes, world)
        ddp = torch.nn.parallel.DistributedDataParallel(unet)
        measured = {m: statistics.median(train_steps(ddp, m, steps, seed=rank)) for m in micro_batches}
        from torch.distributed.fsdp import fully_shard

        sharded = fully_shard(build_unet(size, latent_channels=LATENT[0], sample_size=LATENT[1]))
        fsdp = {m: statistics.median(train_steps(sharded, m, steps, seed=rank)) for m in micro_batches}
        # A step ends when the slowest rank ends: take the max over ranks of each median.
        out = torch.tensor([measured[m] for m in micro_batches] + [fsdp[m] for m in micro_batches],
                           dtype=torch.float64)
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        k = len(micro_batches)
        if rank == 0:
            queue.put({"bandwidth": bandwidth, "measured": dict(zip(micro_batches, out[:k].tolist())),
                       "fsdp": dict(zip(micro_batches, out[k:].tolist()))})
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="s", help="named model size")
    parser.add_argument("--micro-batches", default="4,8,16", help="comma-separated micro-batch sizes")
    parser.add_argument("--processes", type=int, default=2, help="gloo processes of the data-parallel run")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per point (after 1 warm-up)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    micro_batches = [int(m) for m in args.micro_batches.split(",")]
    if any(m < 1 for m in micro_batches) or args.steps < 1 or args.processes < 2:
        raise ValueError(f"micro-batches and --steps must be >= 1 and --processes >= 2, got {micro_batches}, "
                         f"{args.steps} and {args.processes}")

    torch.set_num_threads(1)
    start = time.perf_counter()
    spec = spec_from_size(args.size, resolution=LATENT[1] * 4, text_tokens=TEXT_TOKENS)
    flops = matmul_flops()

    unet = build_unet(args.size, latent_channels=LATENT[0], sample_size=LATENT[1])
    single = {m: statistics.median(train_steps(unet, m, args.steps, seed=0)) for m in micro_batches}

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    world = args.processes
    mp.spawn(worker, args=(world, free_port(), args.size, micro_batches, args.steps, queue), nprocs=world, join=True)
    double = queue.get()
    bandwidth = double["bandwidth"]

    fp32 = PRECISIONS["fp32"]
    rows = []
    for n, zero, measured in [(1, 0, single), (world, 0, double["measured"]), (world, 3, double["fsdp"])]:
        hw = Hardware(devices=n, device_flops=flops, memory_bytes=1e12, bandwidth_bytes=bandwidth)
        for m in micro_batches:
            layout = Layout(n, 1, 1, zero=zero)
            parts = step_seconds(spec, layout, hw, fp32, global_batch=m * n, micro_batch=m)
            rows.append({"processes": n, "layout": layout.name, "micro_batch": m, "measured_s": measured[m],
                         "raw_s": parts["total"], "compute_s": parts["compute"], "comm_s": parts["data_comm"]})
    # The cost model has no fixed per-step term, but a small UNet on a CPU spends a large part of its step
    # in per-op overhead and the Adam update. Fit measured = overhead + raw / efficiency on the
    # single-process rows (a fit, not a check) and predict the two-process rows with it ("cal").
    ones = [r for r in rows if r["processes"] == 1]
    xs, ys = [r["raw_s"] for r in ones], [r["measured_s"] for r in ones]
    if len(ones) > 1:
        slope, overhead = statistics.linear_regression(xs, ys)
    else:
        slope, overhead = ys[0] / xs[0], 0.0
    efficiency = 1 / slope
    for r in rows:
        r["cal_s"] = overhead + r["raw_s"] / efficiency
        r["raw_err"] = r["raw_s"] / r["measured_s"] - 1
        r["cal_err"] = r["cal_s"] / r["measured_s"] - 1
    report = {"size": args.size, "params": spec.params, "train_flop_per_sample": spec.flops_per_sample,
              "matmul_flops": flops, "gloo_bandwidth": bandwidth, "fitted_efficiency": efficiency,
              "fitted_overhead_s": overhead,
              "threads_per_process": 1, "rows": rows, "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"size {args.size}: {spec.params:,} params, {spec.flops_per_sample / 1e9:.3g} GFLOP per training sample "
          f"(3 x forward); matmul {flops / 1e9:.3g} GFLOP/s per core; gloo all-reduce {bandwidth / 1e9:.3g} GB/s "
          f"(bus)")
    print(f"fitted on the 1-process rows: efficiency {efficiency:.3f}, fixed overhead {overhead:.4f} s/step")
    print(f"{'procs':>5}{'layout':>11}{'micro':>6}{'measured s':>12}{'raw s':>9}{'raw err':>9}{'cal s':>9}{'cal err':>9}"
          f"{'comm s':>9}")
    for r in rows:
        print(f"{r['processes']:>5}{r['layout']:>11}{r['micro_batch']:>6}{r['measured_s']:>12.4f}{r['raw_s']:>9.4f}"
              f"{r['raw_err']:>+9.1%}{r['cal_s']:>9.4f}{r['cal_err']:>+9.1%}{r['comm_s']:>9.4f}")
    print(f"({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
