"""The LR finder's curve as a PNG (`RUN/lr_find.png`), drawn with Pillow: no plotting library is needed.

Smoothed loss against the learning rate on a log axis, with the suggested rate marked.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from decrappify.io.atomic import atomic_write_bytes
from decrappify.train.schedule import LRFindResult

WIDTH, HEIGHT, MARGIN = 640, 400, 56


def plot_lr_find(result: LRFindResult, path: str | Path) -> Path:
    """Write the curve of `result` to `path` (PNG) and return the path; a sweep of under 2 points gives a note."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = MARGIN, 24, WIDTH - 16, HEIGHT - MARGIN
    draw.rectangle((left, top, right, bottom), outline="black")
    points = [(lr, loss) for lr, loss in zip(result.lrs, result.losses, strict=True) if lr > 0]
    if len(points) < 2:
        draw.text((left + 8, top + 8), "too few steps to draw a curve", fill="black", font=font)
        return _save(image, path)
    xs = [math.log10(lr) for lr, _ in points]
    ys = [loss for _, loss in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    y1 = min(y1, y0 + 4 * (ys[0] - y0 if ys[0] > y0 else y1 - y0))  # the divergence tail would flatten the rest
    span_x, span_y = max(x1 - x0, 1e-9), max(y1 - y0, 1e-12)

    def at(x: float, y: float) -> tuple[float, float]:
        y = min(max(y, y0), y1)
        return left + (x - x0) / span_x * (right - left), bottom - (y - y0) / span_y * (bottom - top)

    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        px, _ = at(decade, y0)
        draw.line((px, bottom, px, bottom + 4), fill="black")
        draw.text((px - 14, bottom + 8), f"1e{decade}", fill="black", font=font)
    draw.line([at(x, y) for x, y in zip(xs, ys, strict=True)], fill=(31, 119, 180), width=2)
    suggested_x = math.log10(result.suggested)
    if x0 <= suggested_x <= x1:
        px, _ = at(suggested_x, y0)
        draw.line((px, top, px, bottom), fill=(214, 39, 40), width=1)
        draw.text((px + 4, top + 4), f"suggested {result.suggested:.1e}", fill=(214, 39, 40), font=font)
    draw.text((left, 6), "LR finder: smoothed training loss", fill="black", font=font)
    draw.text(((left + right) // 2 - 40, HEIGHT - 20), "learning rate (log)", fill="black", font=font)
    draw.text((4, top), f"{y1:.3g}", fill="black", font=font)
    draw.text((4, bottom - 10), f"{y0:.3g}", fill="black", font=font)
    return _save(image, path)


def _save(image: Image.Image, path: str | Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())
