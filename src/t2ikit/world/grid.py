"""Captioned contact sheets of images, for people to look at (world samples, generated images)."""

from __future__ import annotations

import textwrap

import numpy as np


def captioned_grid(images: list[np.ndarray], captions: list[str], columns: int = 4, zoom: int = 3,
                   text_lines: int = 4):
    """A PIL image: each (H, W, 3) float/uint8 image enlarged `zoom` times with its caption below."""
    from PIL import Image, ImageDraw, ImageFont

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("no images to put in a grid")
    font = ImageFont.load_default()
    h, w = images[0].shape[:2]
    cell_w, text_h = w * zoom, 12 * text_lines
    chars = max(8, cell_w // 6)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (cell_w + 4), rows * (h * zoom + text_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, caption) in enumerate(zip(images, captions)):
        array = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        tile = Image.fromarray(array).resize((cell_w, h * zoom), Image.NEAREST)
        x, y = (k % columns) * (cell_w + 4), (k // columns) * (h * zoom + text_h + 4)
        sheet.paste(tile, (x, y))
        lines = textwrap.wrap(caption, chars)[:text_lines]
        draw.multiline_text((x + 2, y + h * zoom + 1), "\n".join(lines), fill="black", font=font, spacing=1)
    return sheet
