"""PNG: Pillow for what it keeps whole, `pypng` for 16-bit colour, which Pillow decodes and encodes as 8-bit.

Pillow keeps 8-bit PNG of every mode and 16-bit grey; for 16-bit RGB, RGBA and grey + alpha `pypng` reads the
pixels and writes them, with the ICC profile and EXIF added as chunks.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
from PIL import Image

from decrappify.io.encoding import Encoding, FormatTraits, save_with_pillow
from decrappify.io.exif import strip_exif_header
from decrappify.io.picture import Picture, picture_from_decoded, values_from_pillow

PNG = FormatTraits("PNG", holds_16_bit=True, holds_alpha=True)


def read_png(path: Path, image: Image.Image) -> Picture:
    """The picture in a PNG Pillow has opened (and whose size was checked), at the depth the file stores."""
    if _is_deep_colour(path):
        values, bit_depth = _read_deep_colour(path), 16
        icc = image.info.get("icc_profile") or None
    else:
        values, bit_depth, icc = values_from_pillow(image)
    return picture_from_decoded(image, values, bit_depth, icc, path)


def _is_deep_colour(path: Path) -> bool:
    """16-bit PNG with colour or alpha, which Pillow would decode to 8 bits (16-bit grey it keeps)."""
    with open(path, "rb") as file:
        header = file.read(33)
    return len(header) == 33 and header[12:16] == b"IHDR" and header[24] == 16 and header[25] in (2, 4, 6)


def _read_deep_colour(path: Path) -> np.ndarray:
    """Pixels of a 16-bit colour PNG in [0, 1]; `asDirect` turns a tRNS colour into an alpha channel."""
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    values = np.array(list(rows), dtype=np.float32).reshape(height, width, info["planes"])
    values /= float(2 ** info["bitdepth"] - 1)  # an sBIT chunk can make asDirect return fewer bits
    return values


def write_png(file: BinaryIO, enc: Encoding) -> None:
    """Pillow for 8-bit and 16-bit grey; pypng for 16-bit colour, with iCCP and eXIf chunks added by hand."""
    if enc.bit_depth == 8 or enc.values.shape[2] == 1:  # Pillow writes 16-bit grey itself
        save_with_pillow(file, enc.values, "PNG", icc_profile=enc.icc, exif=enc.exif)
        return
    height, width, channels = enc.values.shape
    writer = png.Writer(width, height, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16)
    encoded = io.BytesIO()
    writer.write(encoded, enc.values.reshape(height, width * channels))
    chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
    extra = []
    if enc.icc:
        extra.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(enc.icc)))
    if enc.exif:
        extra.append((b"eXIf", strip_exif_header(enc.exif)))
    png.write_chunks(file, chunks[:1] + extra + chunks[1:])  # after IHDR, before IDAT, as the spec asks
