"""Does a picture already have colour? Colourising one would replace its real colour with the model's guess.

A grey picture, a toned one (sepia, cyanotype, a warm or cool tint) and a faded scan all carry colour that is a
function of brightness: one hue per grey level. A colour photo has several hues at the same brightness (a red
coat and a green lawn of equal luma). `colour_spread` measures exactly that: the chroma left once the mean
chroma of each luma level is taken away, so any toning curve scores near 0 and a colour photo far above it.

`COLOUR_PHOTO_SPREAD` separates the two on BSDS500 photos against their grey, sepia and tinted versions, JPEG
compressed down to quality 30 (on BSDS500 train and test the worst toned version scores 8.8, and 78-85% of
the colour photos score above 12; the rest are nearly monochrome and lose little):
docs/benchmarks/colorize-colour-check.md, made by benchmarks/colour_check.py.
"""

from __future__ import annotations

import math

import numpy as np

#: Above this `colour_spread` (in 8-bit levels) a picture is a colour photo, and `restore` with a colourisation
#: model refuses it without `--force`.
COLOUR_PHOTO_SPREAD = 12.0
#: The picture is box-shrunk so its longer side is at most this before measuring (fast; JPEG chroma noise
#: averages out).
MEASURE_SIDE = 256
_LUMA_BINS = 128


def colour_spread(rgb: np.ndarray) -> float:
    """Chroma not explained by brightness, in 8-bit levels: 0 for grey and toned pictures, ~20 for a photo.

    `rgb`: H x W x 3 in [0, 1]. Chroma is the opponent pair (R - G, (R + G) / 2 - B); its mean per luma level
    (128 levels) is subtracted and the root-mean-square of what is left is returned.
    """
    rgb = _shrink(np.asarray(rgb, dtype=np.float32))
    r, g, b = (rgb[..., i].ravel().astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    chroma = np.stack([r - g, 0.5 * (r + g) - b], axis=1)
    level = np.clip((luma * _LUMA_BINS).astype(np.int64), 0, _LUMA_BINS - 1)
    counts = np.maximum(np.bincount(level, minlength=_LUMA_BINS), 1)
    means = np.stack([np.bincount(level, chroma[:, i], _LUMA_BINS) for i in range(2)], axis=1) / counts[:, None]
    residual = chroma - means[level]
    return float(np.sqrt((residual**2).sum(axis=1).mean()) * 255.0)


def has_real_colour(rgb: np.ndarray) -> tuple[bool, float]:
    """(whether `rgb` is a colour photo, its `colour_spread`)."""
    spread = colour_spread(rgb)
    return spread > COLOUR_PHOTO_SPREAD, spread


def _shrink(rgb: np.ndarray) -> np.ndarray:
    """Box-average by a whole factor so the longer side is at most `MEASURE_SIDE`."""
    factor = math.ceil(max(rgb.shape[:2]) / MEASURE_SIDE)
    if factor <= 1:
        return rgb
    height, width = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    if height == 0 or width == 0:
        return rgb
    blocks = rgb[:height, :width].reshape(height // factor, factor, width // factor, factor, 3)
    return blocks.mean(axis=(1, 3))
