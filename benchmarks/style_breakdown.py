"""CompBench style items split by the style their prompt states (fill x background), for several results.

    python benchmarks/style_breakdown.py NAME=DIR/compbench.json [NAME=DIR/compbench.json ...]

Prints one row per stated style (filled / outlined / fill not stated x gray / black / white / background
not stated) and, per result, the style items passed / items. The style is read from the prompt's spec
(t2ikit.world.caption.parse_caption), so every wording of a style counts the same. Results from
`t2ikit bench compbench --json --out DIR` (per-item records), for instance the model and `--generator vae`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from t2ikit.world.caption import parse_caption


def style_key(prompt: str) -> tuple[str, str]:
    style = parse_caption(prompt).style
    return style.fill or "fill not stated", style.background or "background not stated"


def breakdown(result: dict) -> dict[tuple[str, str], list[int]]:
    """{(fill, background): [passed, n]} over the result's style items."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for category, prompt, _seed, passed, *_failed in result["items"]:  # newer results add the failed checks
        if category == "style":
            c = counts[style_key(prompt)]
            c[0] += int(passed)
            c[1] += 1
    return dict(counts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", metavar="NAME=PATH", help="a name and a compbench.json")
    args = ap.parse_args(argv)
    named = []
    for item in args.results:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"give NAME=PATH; got {item!r}")
        with open(path) as f:
            named.append((name, breakdown(json.load(f))))
    keys = sorted({k for _, b in named for k in b})
    print("| fill | background | " + " | ".join(name for name, _ in named) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in named) + " |")
    for key in keys:
        cells = [f"{b[key][0]}/{b[key][1]}" if key in b else "-" for _, b in named]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
