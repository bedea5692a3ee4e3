"""The `t2ikit` command: one verb per job; each verb lives in its own module of this package.

A verb module defines `register(subparsers)`, which adds its parser and sets `func` to a handler
`handler(args) -> int`. Registration imports nothing heavy (torch, diffusers): handlers import what they
need, so `t2ikit world sample` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of `t2ikit --help`.
VERB_MODULES = ["generate", "info", "models", "world", "bench", "train", "explain", "analyze", "edit", "invert", "scaling", "plan", "parse"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2ikit", description="Text-to-image diffusion toolkit.")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"t2ikit.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"t2ikit.cli.{name}":
                continue  # verb not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # bad input: a sentence, not a traceback
        print(f"t2ikit {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
