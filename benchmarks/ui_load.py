"""Load on `t2ikit ui`: N concurrent generate requests from a bounded pool of gradio_client threads on 127.0.0.1.

    python benchmarks/ui_load.py [--model DIR] [--clients 20] [--steps 20]

Starts the server as a user does (`t2ikit ui`, a subprocess), sends one /txt2img request per client at once
(each its own prompt and seed), checks that every result is the one asked for (prompt and seed, also in the PNG's
parameters), and prints wall time, per-request latency and the server's peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ui_helpers import free_port, wait_for  # noqa: E402

COLOURS = ("red", "blue", "green", "yellow", "purple")
SHAPES = ("circle", "square", "triangle", "star")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of process `pid` in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent requests (default 20)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from gradio_client import Client

    from t2ikit.cli.info import parse_parameters

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "t2ikit", "ui", "--port", str(port), "--out-dir", str(Path(tmp) / "out")]
        if args.model:
            cmd += ["--model", args.model]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None, timeout=180, what="the server")
            if proc.poll() is not None:
                print(log.read_text(), file=sys.stderr)
                return 1
            url = f"http://127.0.0.1:{port}/"
            idle = rss_mib(proc.pid)
            prompts = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
            prompts = [prompts[k % len(prompts)] for k in range(args.clients)]

            def one(k: int):
                t0 = time.perf_counter()
                res = Client(url, verbose=False).predict(prompts[k], seed=100 + k, steps=args.steps,
                                                         api_name="/txt2img")
                return k, res, time.perf_counter() - t0

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                results = list(pool.map(one, range(args.clients)))
            wall = time.perf_counter() - t0
            bad = []
            for k, res, _ in results:
                from PIL import Image

                with Image.open(res["files"][0]) as im:
                    p = parse_parameters(im.info["parameters"])
                if not (res["prompt"] == prompts[k] == p["prompt"] and res["seeds"] == [100 + k]
                        and p["settings"]["Seed"] == 100 + k):
                    bad.append(k)
            after = rss_mib(proc.pid)
            lat = sorted(r[2] for r in results)
            print(f"{args.clients} concurrent /txt2img requests, {args.steps} steps each: all {len(results)} completed, "
                  f"{len(bad)} mixed up{' ' + str(bad) if bad else ''}")
            print(f"wall {wall:.1f} s; latency min {lat[0]:.1f} s, median {lat[len(lat) // 2]:.1f} s, max {lat[-1]:.1f} s")
            print(f"server RSS idle {idle[0]:.0f} MiB; after the load {after[0]:.0f} MiB; peak (VmHWM) {after[1]:.0f} MiB")
            return 1 if bad else 0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
