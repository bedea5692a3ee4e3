"""Paired CompBench difference of two results on the same suite (same prompts and seeds).

    python benchmarks/compbench_paired.py A/compbench.json B/compbench.json [--json]

prints, per category and overall, B - A with a 95% paired bootstrap interval over items, the discordant
items and McNemar's exact p (t2ikit.bench.compbench.paired_difference). Both results must come from
`t2ikit bench compbench --json --out DIR` of a version that writes per-item records.
"""

from __future__ import annotations

import argparse
import json
import sys

from t2ikit.bench.compbench import paired_difference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="compbench.json of the baseline")
    ap.add_argument("b", help="compbench.json of the candidate")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    a, b = (json.load(open(p)) for p in (args.a, args.b))
    result = paired_difference(a, b)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| category | n | A | B | B - A [95% paired bootstrap] | A only / B only | McNemar p |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cat, r in result.items():
        lo, hi = r["ci95"]
        print(f"| {cat} | {r['n']} | {100 * r['a']:.1f}% | {100 * r['b']:.1f}% | {100 * r['diff']:+.1f} "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {r['a_only']} / {r['b_only']} | {r['mcnemar_p']:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
