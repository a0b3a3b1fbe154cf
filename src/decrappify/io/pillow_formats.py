"""JPEG, WebP, BMP, GIF and any other format Pillow reads: decoded by Pillow; the three we write, encoded by it.

No deep-colour decoder exists for these here: Pillow's decode is what they hold (its 16-bit grey modes are kept
by `values_from_pillow`). The format knowledge is in how each is written: JPEG and BMP hold no alpha, WebP no
grey, and JPEG and WebP cap the side length.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from PIL import Image

from decrappify.io.encoding import Encoding, FormatTraits, save_with_pillow
from decrappify.io.picture import Picture, picture_from_decoded, values_from_pillow

JPEG = FormatTraits("JPEG", max_side=65_535)
WEBP = FormatTraits("WEBP", holds_alpha=True, holds_grey=False, max_side=16_383)
# Pillow writes a BMP alpha channel that no reader, Pillow included, reads back: BMP counts as opaque.
BMP = FormatTraits("BMP")
WRITTEN = (JPEG, WEBP, BMP)


def read_with_pillow(path: Path, image: Image.Image) -> Picture:
    """The picture in any file Pillow has opened (its size already checked), with its ICC, EXIF and alpha."""
    values, bit_depth, icc = values_from_pillow(image)
    return picture_from_decoded(image, values, bit_depth, icc, path)


def write_jpeg(file: BinaryIO, enc: Encoding) -> None:
    subsampling = 0 if enc.quality >= 90 else 2  # 4:4:4 at high quality: restored detail is not thrown away
    options = {"quality": enc.quality, "subsampling": subsampling}
    save_with_pillow(file, enc.values, "JPEG", icc_profile=enc.icc, exif=enc.exif, **options)


def write_webp(file: BinaryIO, enc: Encoding) -> None:
    lossless = enc.quality >= 100  # and `exact`: keep the colour under fully transparent pixels
    options = {"quality": min(enc.quality, 100), "lossless": lossless, "exact": lossless}
    save_with_pillow(file, enc.values, "WEBP", icc_profile=enc.icc, exif=enc.exif, **options)


def write_bmp(file: BinaryIO, enc: Encoding) -> None:
    save_with_pillow(file, enc.values, "BMP")
