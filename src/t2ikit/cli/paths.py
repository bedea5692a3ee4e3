"""The files a verb reads and writes, checked before any compute: a verb that runs for minutes must not fail at
its last line, nor decode a huge input image before its memory check has run."""

from __future__ import annotations

import os
from pathlib import Path


def check_output(path, suffixes, what: str = "--out", case_sensitive: bool = False) -> Path:
    """`path` as a Path if a file can be written there, else a ValueError saying why. Creates nothing.

    suffixes: the allowed endings (".png", or a tuple of them); `case_sensitive` where the writer checks the
    suffix exactly (save_inversion). The path must not be an existing directory, and the nearest existing folder
    above it must be a writable directory (the missing folders between are made when the file is written).
    """
    p = Path(path).expanduser()
    allowed = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes)
    suffix = p.suffix if case_sensitive else p.suffix.lower()
    if allowed and suffix not in allowed:
        raise ValueError(f"{what} must end in {' or '.join(allowed)}; got {str(path)!r}")
    if p.is_dir():
        example = str(p / ("out" + (allowed[0] if allowed else "")))
        raise ValueError(f"{what} {str(path)!r} is an existing directory; give a file name, e.g. {example!r}")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what} {str(path)!r} exists and is not writable")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r} cannot be written: the folder {str(parent)!r} is not writable")
    return p


def input_image_size(path) -> tuple[int, int]:
    """(height, width) of the image file at `path`, read from its header alone (nothing is decoded), so that
    check_memory can refuse a huge image before it is loaded; ValueError if it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"image {str(path)!r} does not exist")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the decompression-bomb check would refuse before the memory check can
        with Image.open(p) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image {str(path)!r} cannot be read as an image: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return height, width


__all__ = ["check_output", "input_image_size"]
