"""A picture fitted to what a file format can hold, as the integer values and metadata its encoder writes.

Each format module declares its `FormatTraits` (16-bit, alpha, grey, largest side) and one encoder taking an
`Encoding`; `prepare_encoding` does the fitting they all share, so an encoder only writes what it is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from decrappify.errors import OutputError
from decrappify.io.exif import exif_for_output
from decrappify.io.picture import Picture, icc_space, quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormatTraits:
    """What a file format can hold; the rest of a picture is converted (with a log line) or refused."""

    name: str  # Pillow's format name
    holds_16_bit: bool = False
    holds_alpha: bool = False
    holds_grey: bool = True
    max_side: int | None = None  # pixels, where the format cannot store larger


@dataclass(frozen=True)
class Encoding:
    """What an encoder writes: H x W x C integer values (C = 1, 2, 3, 4) and the metadata that fits."""

    values: np.ndarray
    bit_depth: int
    icc: bytes | None
    exif: bytes | None
    quality: int


def prepare_encoding(picture: Picture, traits: FormatTraits, quality: int, path: Path) -> Encoding:
    """The picture as `traits` can hold it; `OutputError` naming `path` if too large for the format."""
    if traits.max_side is not None and max(picture.size) > traits.max_side:
        size = f"{picture.width} x {picture.height}"
        limit = f"at most {traits.max_side} pixels a side"
        raise OutputError(path, f"{size} is too large for {traits.name} ({limit})")
    values, bit_depth = _output_values(picture, traits, path)
    icc = picture.icc_profile
    if icc is not None and icc_space(icc) != (b"GRAY" if values.shape[2] < 3 else b"RGB "):
        icc = None  # a profile for another colour space would make readers misinterpret the pixels
    return Encoding(values, bit_depth, icc, exif_for_output(picture.exif, picture.size), quality)


def _output_values(picture: Picture, traits: FormatTraits, path: Path) -> tuple[np.ndarray, int]:
    """H x W x C integer values for the format: grey or colour, with alpha where the format holds it."""
    bit_depth = 16 if picture.bit_depth == 16 and traits.holds_16_bit else 8
    if picture.bit_depth == 16 and bit_depth == 8:
        log.info("%s: written as 8-bit (%s holds no more)", path, traits.name)
    rgb, alpha = picture.rgb, picture.alpha
    if alpha is not None and not traits.holds_alpha:
        log.warning("%s: %s holds no transparency; composited on white", path, traits.name)
        rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
        alpha = None
    grey = picture.grayscale and traits.holds_grey
    colour = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None] if grey else rgb
    values = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    return quantize(values, bit_depth), bit_depth


def save_with_pillow(file: BinaryIO, values: np.ndarray, fmt: str, **options: object) -> None:
    """Save uint8 L / LA / RGB / RGBA or uint16 grey (I;16) values with Pillow; None options are left out."""
    image = Image.fromarray(values[..., 0] if values.shape[2] == 1 else values)
    image.save(file, format=fmt, **{key: value for key, value in options.items() if value is not None})
