"""The files a verb reads and writes, checked before any compute: a verb that runs for minutes must not fail at
its last line, nor decode a huge input image before its memory check has run."""

from __future__ import annotations

import os
import re
from pathlib import Path


def check_output(path, suffixes, what: str = "--out", case_sensitive: bool = False, overwrite: bool = False) -> Path:
    """`path` as a Path if a file can be written there, else a ValueError saying why. Creates nothing.

    An existing file is refused unless `overwrite` (a verb's --overwrite): no result replaces another silently.

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
    if p.exists() and not overwrite:
        raise ValueError(f"{what} {str(path)!r} exists; pass --overwrite to replace it, or choose another name")
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


_NUMBERED = re.compile(r"(\d{5,})-")  # an AUTOMATIC1111-style image name: NNNNN-SEED.png


def next_number(folder) -> int:
    """The number of the next image in `folder`, AUTOMATIC1111-style: one past the highest `NNNNN-...` file name
    there (0 in an empty or missing folder)."""
    folder = Path(folder).expanduser()
    numbers = [int(m.group(1)) for f in (folder.iterdir() if folder.is_dir() else ())
               if (m := _NUMBERED.match(f.name))]
    return max(numbers, default=-1) + 1


def numbered_paths(folder, seeds: list[int], grid: bool = False) -> tuple[list[Path], Path | None]:
    """`folder/NNNNN-SEED.png` for each seed, numbered past what is there; with `grid`, the grid's path next."""
    start = next_number(folder)
    folder = Path(folder).expanduser()
    paths = [folder / f"{start + k:05d}-{seed}.png" for k, seed in enumerate(seeds)]
    return paths, folder / f"{start + len(seeds):05d}-{seeds[0]}-grid.png" if grid else None


__all__ = ["check_output", "input_image_size", "next_number", "numbered_paths"]
