"""A class legend drawn onto an image with Pillow's default font: one row per class (colour swatch and name)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_legend"]

_MARGIN = 4


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """Copy of ``image`` ([H, W, 3] uint8 RGB) with a dark box in the top-left corner listing ``entries`` (name,
    RGB colour). Rows that do not fit the height are summarised as ``+N more``."""
    if not entries:
        return image
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), "Ag", font=font)
    row = bottom - top + 2 * _MARGIN
    swatch = row - 2 * _MARGIN
    fit = max(0, (canvas.height - _MARGIN) // row)
    shown = list(entries) if len(entries) <= fit else list(entries[: max(fit - 1, 0)])
    labels = [name for name, _ in shown]
    if len(shown) < len(entries):
        labels.append(f"+{len(entries) - len(shown)} more")
    if not labels:
        return image
    text_width = max(draw.textlength(label, font=font) for label in labels)
    box_width = int(min(canvas.width, 3 * _MARGIN + swatch + text_width + _MARGIN))
    draw.rectangle((0, 0, box_width, len(labels) * row + _MARGIN), fill=(20, 20, 20))
    for index, label in enumerate(labels):
        y = _MARGIN + index * row
        if index < len(shown):
            draw.rectangle((_MARGIN, y, _MARGIN + swatch, y + swatch), fill=tuple(shown[index][1]),
                           outline=(255, 255, 255))
        draw.text((2 * _MARGIN + swatch + _MARGIN, y - top), label, fill=(255, 255, 255), font=font)
    return np.array(canvas)  # a writable copy (np.asarray of a PIL image is read-only)
