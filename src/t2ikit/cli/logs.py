"""What the `t2ikit` command prints besides its results: t2ikit's own warnings always; the libraries' warnings and
log lines (diffusers, transformers, torch) only with `-v`, through the `logging` module.

A library's note to its own users ("pip install accelerate", deprecations, torchsde's float tolerances) is not the
user's business in a one-shot command; a warning about the user's prompt or edit is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # src/t2ikit
_LIBRARY_ENV = ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY")  # read by each library when it is imported
_LIBRARIES = ("diffusers", "transformers", "torch", "torchsde", "huggingface_hub", "accelerate")

verbosity = 0  # 0: t2ikit's warnings; 1 (-v): libraries' warnings and INFO logs; 2 (-vv): DEBUG logs


def _level(v: int) -> int:
    return logging.WARNING if v <= 0 else logging.INFO if v == 1 else logging.DEBUG


@contextlib.contextmanager
def configured(v: int):
    """For one command: `logging` at WARNING / INFO / DEBUG for -v count 0 / 1 / 2, and the libraries' own
    loggers and Python warnings at ERROR (silent) unless -v. Restores what it changed on exit."""
    global verbosity
    previous, verbosity = verbosity, v
    lib_level = "error" if v <= 0 else "info" if v == 1 else "debug"
    saved_env = {k: os.environ.get(k) for k in _LIBRARY_ENV}
    for key in _LIBRARY_ENV:
        if v > 0 or key not in os.environ:  # a user's own DIFFUSERS_VERBOSITY holds unless -v is given
            os.environ[key] = lib_level
    root = logging.getLogger()
    handler = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        root.addHandler(handler)
    t2ikit_logger = logging.getLogger("t2ikit")
    saved_level = t2ikit_logger.level
    t2ikit_logger.setLevel(_level(v))
    if v > 0:
        root_level, root.level = root.level, min(root.level, _level(v))
    saved_library = _library_verbosity()
    try:
        _set_library_verbosity(os.environ["DIFFUSERS_VERBOSITY"], os.environ["TRANSFORMERS_VERBOSITY"])
        with warnings.catch_warnings():
            if v <= 0:
                for name in _LIBRARIES:
                    warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
                for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
                    warnings.filterwarnings("ignore", category=category)
            yield
    finally:
        verbosity = previous
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _set_library_verbosity(*(saved_library.get(name) or os.environ.get(key, "warning")
                                 for name, key in zip(("diffusers", "transformers"), _LIBRARY_ENV)))
        t2ikit_logger.setLevel(saved_level)
        if v > 0:
            root.level = root_level
        if handler is not None:
            root.removeHandler(handler)


def _library_verbosity() -> dict[str, int]:
    """The levels of diffusers and transformers, those already imported."""
    out = {}
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        out["diffusers"] = diffusers_logging.get_verbosity()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        out["transformers"] = transformers_logging.get_verbosity()
    return out


def _set_library_verbosity(diffusers_level, transformers_level) -> None:
    """Set the level of a library already imported (a later import reads the environment variable)."""
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity(_named_level(diffusers_level))
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity(_named_level(transformers_level))


def _named_level(level) -> int:
    """"error" -> logging.ERROR; an int level as it is."""
    if isinstance(level, int):
        return level
    return getattr(logging, str(level).upper(), logging.WARNING)


def is_ours(w: warnings.WarningMessage) -> bool:
    """A warning t2ikit raised about the user's input (a prompt, an edit), not a library's note."""
    if issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning)):
        return False
    return w.category.__module__.startswith("t2ikit") or str(w.filename).startswith(_PACKAGE_DIR)


def report_warnings(caught, verb: str) -> None:
    """Print caught warnings as sentences on stderr: t2ikit's own always, the libraries' only with -v."""
    for w in caught:
        if is_ours(w):
            print(f"t2ikit {verb}: warning: {w.message}", file=sys.stderr)
        elif verbosity > 0:
            print(f"t2ikit {verb}: warning from {Path(w.filename).name}:{w.lineno}: {w.message}", file=sys.stderr)


__all__ = ["configured", "is_ours", "report_warnings"]
