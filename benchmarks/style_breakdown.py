"""CompBench style items split by the style their prompt states (fill x background), for several results.

    python benchmarks/style_breakdown.py NAME=DIR/compbench.json [NAME=DIR/compbench.json ...] [--misses]

Prints one row per stated style (filled / outlined / fill not stated x gray / black / white / background
not stated) and, per result, the style items passed / items. The style is read from the prompt's spec
(t2ikit.world.caption.parse_caption), so every wording of a style counts the same. Results from
`t2ikit bench compbench --json --out DIR` (per-item records), for instance the model and `--generator vae`.
`--misses` adds a table of the failed style items by what the oracle saw (its failure messages): a small or large
"blob" (an object of the colour whose shape it could not read: an outline with its hole closed or broken), an
outlined object drawn filled, a diamond, square or triangle read as a circle, no object at all, or something else (an
object missing, merged with another or of the other object's colour).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

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


MISS_KINDS = ("small blob", "large blob", "outlined drawn filled", "diamond read as circle", "square read as circle",
              "triangle read as circle", "no objects", "other")


def miss_kind(failures: list[str]) -> str:
    """What the oracle saw on a failed item, from its failure messages (first matching kind of MISS_KINDS)."""
    text = " ".join(failures)
    if "filled seen" in text and "outlined stated" in text:
        return "outlined drawn filled"
    for size in ("small", "large"):
        if re.search(rf"(seen |; ){size} \w+ blob", text):
            return f"{size} blob"
    for shape in ("diamond", "square", "triangle"):
        if f"{shape}: 0 found" in text and "circle at" in text:
            return f"{shape} read as circle"
    return "no objects" if "seen no objects" in text else "other"


def misses(result: dict) -> Counter:
    """{kind: failed style items} (results that record each item's failed checks)."""
    return Counter(miss_kind(failed[0]) for category, _prompt, _seed, passed, *failed in result["items"]
                   if category == "style" and not passed and failed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", metavar="NAME=PATH", help="a name and a compbench.json")
    ap.add_argument("--misses", action="store_true", help="also the failed style items by what the oracle saw")
    args = ap.parse_args(argv)
    named, results = [], []
    for item in args.results:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"give NAME=PATH; got {item!r}")
        with open(path) as f:
            results.append(json.load(f))
        named.append((name, breakdown(results[-1])))
    keys = sorted({k for _, b in named for k in b})
    print("| fill | background | " + " | ".join(name for name, _ in named) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in named) + " |")
    for key in keys:
        cells = [f"{b[key][0]}/{b[key][1]}" if key in b else "-" for _, b in named]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    if args.misses:
        counted = [misses(r) for r in results]
        print("\n| failed style items: what the oracle saw | " + " | ".join(name for name, _ in named) + " |")
        print("| --- | " + " | ".join("---" for _ in named) + " |")
        for kind in MISS_KINDS:
            print(f"| {kind} | " + " | ".join(str(c[kind]) for c in counted) + " |")
        print("| all | " + " | ".join(str(sum(c.values())) for c in counted) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
