"""One edit method on one suite of `t2ikit bench edit`, with every failed edit and the oracle's reason.

    python benchmarks/edit_failures.py [--model DIR] [--kind colour] [--seed 1]
        [--method blend+shapemask+local+detect] [--set strength=1.0 --set start=noise ...]

`--set FIELD=VALUE` overrides a field of the method's t2ikit.edit.EditOptions (the value is read as
a number where it parses as one), to see whether an option changes the count. Prints each failure and
"passed/n" last.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model folder or name (default: the shipped one)")
    ap.add_argument("--kind", default="colour")
    ap.add_argument("--seed", type=int, default=None, help="world seed of the suite (default: the bench's)")
    ap.add_argument("--method", default="blend+shapemask+local+detect")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = ap.parse_args(argv)
    from t2ikit.bench import edit as eb
    from t2ikit.cli.info import parse_number
    from t2ikit.cli.models import load_pipeline
    from t2ikit.edit import EditOptions
    from t2ikit.world.oracle import detect, score_reading

    fields = {f.name for f in dataclasses.fields(EditOptions)}
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set wants FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}; got {item!r}")
        overrides[key] = parse_number(value)
    if args.method not in eb.METHODS or args.kind not in eb.KINDS:
        raise SystemExit(f"--method one of {', '.join(eb.METHODS)}; --kind one of {', '.join(eb.KINDS)}")
    options = eb.method_options

    def with_overrides(*a, **k):
        return dataclasses.replace(options(*a, **k), **overrides).check()

    eb.method_options = with_overrides  # edit_images builds its options through this
    pipe = load_pipeline(args.model, 1)
    cases = eb.make_cases(args.kind, args.n, eb.BENCH_SEED if args.seed is None else args.seed)
    images, _ = eb.edit_images(pipe, cases, args.method)
    passed = 0
    for case, image in zip(cases, images):
        if eb.score_edit(case, image)["success"]:
            passed += 1
            continue
        failed = [f"{c.name}: {c.detail}" for c in score_reading(detect(image), case.target_spec) if not c.passed]
        print(f"FAIL {case.source_prompt!r} -> {case.target_prompt!r}: {'; '.join(failed[:2]) or 'the source object is still there'}")
    print(f"{passed}/{len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
