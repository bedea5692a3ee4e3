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
VERB_MODULES = ["generate", "info", "models", "world", "bench", "train", "explain", "analyze", "edit", "invert", "scaling", "plan", "layout", "ui", "parse", "report"]


EXIT_CODES = """exit status:
  0  done
  1  a check failed (world score: an image fails its prompt; plan: no layout fits; report: an
     experiment failed, its traceback is in OUT/errors/)
  2  bad input (a one-sentence error on stderr; nothing was computed or written)"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default at the end of its help, unless the help states it already or there is none
    (None: the help says what happens; False: a switch that is off)."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if "default" in help_text.lower() or action.default in (None, False, [], argparse.SUPPRESS):
            return help_text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return help_text  # a required positional has no default
        return help_text + " (default: %(default)s)"


class _TopFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help keeps the epilog's lines (the exit codes) as written."""


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("t2ikit")
    except PackageNotFoundError:
        return "0+unknown"


def parsers(parser: argparse.ArgumentParser):
    """`parser` and every sub-verb's parser below it, each once."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2ikit", description="Text-to-image diffusion toolkit.",
                                     epilog=EXIT_CODES, formatter_class=_TopFormatter)
    parser.add_argument("--version", action="version", version=f"t2ikit {version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show the libraries' warnings (diffusers, transformers, torch) and INFO logs; "
                             "-vv: DEBUG logs")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(f"t2ikit.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"t2ikit.cli.{name}":
                continue  # verb not built yet
            raise
        module.register(subparsers)
    for sub in parsers(parser):
        if sub is not parser:
            sub.formatter_class = HelpFormatter  # every verb's --help shows its defaults
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from t2ikit.cli.logs import configured

    try:
        with configured(args.verbose):
            return int(args.func(args) or 0)
    except ValueError as err:  # bad input: a sentence, not a traceback
        print(f"t2ikit {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
