"""Progress for long jobs: a tqdm bar on stderr and a one-line summary at the end, both off with `enabled=False`.

Benchmarks, analyses, sweeps and training share this so that every long job looks the same on a terminal and
says nothing under `--quiet` (the CLI passes `progress=not args.quiet`). Standard output stays for results.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def bar(iterable=None, total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar on stderr (cleared when done); with `enabled=False` it only iterates/counts, silently."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


def write(line: str) -> None:
    """A line on stderr that does not break a running bar."""
    tqdm.write(line, file=sys.stderr)


def summary(line: str, enabled: bool = True) -> None:
    """The job's last line on stderr: what was done, in how long, the headline number."""
    if enabled:
        print(line, file=sys.stderr, flush=True)


class Timer:
    """Seconds since construction: `f"... in {timer}"` reads `12.3 s`."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def __str__(self) -> str:
        s = self.seconds
        return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


__all__ = ["Timer", "bar", "summary", "write"]
