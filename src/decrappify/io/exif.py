"""EXIF kept through a restoration: orientation applied to the pixels once, pixel dimensions kept truthful.

A picture's EXIF is carried as bytes from reader to writer. Orientation is applied when reading and reset to
1, so no later viewer rotates the picture a second time; the Exif IFD's pixel dimensions are rewritten when the
picture changed size. Broken EXIF never costs the picture: it is dropped (on reading) or kept as it was (on writing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from decrappify.io.checks import short_reason

log = logging.getLogger(__name__)

ORIENTATION_TAG = 0x0112
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
_EXIF_PIXEL_X, _EXIF_PIXEL_Y = 0xA002, 0xA003
# TIFF layout tags that Pillow's getexif() returns for TIFF files: meaningless (or huge) in another file's EXIF.
TIFF_LAYOUT_TAGS = (254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325,
                    330, 338, 339, 340, 341, 513, 514, 700, 33723, 34377, 34675, 37724)  # fmt: skip


def read_exif(path: Path | None, image: Image.Image) -> tuple[bytes | None, int]:
    """EXIF to keep (orientation set to 1) and the orientation to apply; broken EXIF is dropped."""
    try:
        exif = image.getexif()
        orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
        raw = image.info.get("exif")
        if image.format == "TIFF":
            for tag in TIFF_LAYOUT_TAGS:
                exif.pop(tag, None)
        elif orientation == 1 and isinstance(raw, bytes) and raw:
            return raw, 1  # untouched bytes keep maker notes exactly as they were
        if len(exif) == 0:
            return None, valid_orientation(orientation)
        if ORIENTATION_TAG in exif:
            exif[ORIENTATION_TAG] = 1
        return exif.tobytes(), valid_orientation(orientation)
    except Exception as exc:  # noqa: BLE001 - metadata is optional; the pixels are what matter
        log.warning("%s: unreadable EXIF dropped (%s)", path or "image", short_reason(exc))
        return None, 1


def valid_orientation(value: int) -> int:
    """An EXIF orientation, or 1 (upright) for a value outside the eight the standard defines."""
    return value if 1 <= value <= 8 else 1


_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def orient(values: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (as `ImageOps.exif_transpose` does) to H x W x C values."""
    transform = _ORIENT.get(orientation)
    return values if transform is None else np.ascontiguousarray(transform(values))


def exif_for_output(exif: bytes | None, size: tuple[int, int]) -> bytes | None:
    """EXIF with its pixel dimensions brought up to date (an upscaled picture must not claim the old size)."""
    if not exif:
        return None
    try:
        parsed = Image.Exif()
        parsed.load(strip_exif_header(exif))
        ifd = parsed.get_ifd(EXIF_IFD)
        if not ifd or ((ifd.get(_EXIF_PIXEL_X), ifd.get(_EXIF_PIXEL_Y)) in ((None, None), size)):
            return exif
        ifd[_EXIF_PIXEL_X], ifd[_EXIF_PIXEL_Y] = size
        return parsed.tobytes()
    except Exception as exc:  # noqa: BLE001 - keep the original bytes rather than lose them
        log.debug("EXIF dimensions not updated (%s)", short_reason(exc))
        return exif


def strip_exif_header(exif: bytes) -> bytes:
    """The TIFF structure in EXIF bytes: JPEG and WebP prefix it with "Exif\\0\\0", PNG's eXIf chunk does not."""
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
