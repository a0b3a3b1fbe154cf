"""TIFF: Pillow where it keeps the picture whole, `tifffile` for 16-bit colour and layouts Pillow cannot open.

Pillow decodes 16-bit RGB(A) as 8-bit and cannot open 16-bit grey + alpha at all, so `tifffile` reads those
pixels; Pillow writes 8-bit and grey TIFF uncompressed (its compressing writer drops the Exif IFD), `tifffile`
writes 16-bit colour, which holds no Exif IFD, so only the descriptive tags carry over there.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import Image

from decrappify.io.checks import check_size, short_reason
from decrappify.io.encoding import Encoding, FormatTraits, save_with_pillow
from decrappify.io.exif import (
    EXIF_IFD,
    GPS_IFD,
    INTEROP_IFD,
    TIFF_LAYOUT_TAGS,
    orient,
    strip_exif_header,
    valid_orientation,
)
from decrappify.io.picture import Picture, picture_from_decoded, picture_from_values, values_from_pillow

log = logging.getLogger(__name__)

TIFF = FormatTraits("TIFF", holds_16_bit=True, holds_alpha=True)

_BITS_PER_SAMPLE, _SAMPLES_PER_PIXEL, _ORIENTATION, _ICC_PROFILE = 258, 277, 274, 34675
# Descriptive TIFF tags that survive into a 16-bit colour TIFF written by tifffile (which writes no EXIF IFD).
_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)


def is_tiff(path: Path) -> bool:
    """Whether the file starts with a TIFF (or BigTIFF) signature."""
    with open(path, "rb") as file:
        return file.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# ---------------------------------------------------------------------------------------------------- reading


def read_tiff(path: Path, image: Image.Image) -> Picture:
    """The picture in a TIFF Pillow has opened (and whose size was checked), at the depth the file stores."""
    icc = image.info.get("icc_profile") or None
    if _is_deep_colour(image):
        values, bit_depth = _read_deep_colour(path, image)
    else:
        values, bit_depth, icc = values_from_pillow(image)
    return picture_from_decoded(image, values, bit_depth, icc, path)


def read_tiff_without_pillow(path: Path, max_pixels: int | None) -> Picture:
    """A TIFF Pillow cannot open (16-bit grey + alpha): size checked, then pixels, ICC, orientation by tifffile."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        check_size(path, (int(page.imagewidth), int(page.imagelength)), max_pixels)
        icc, orientation = page.tags.get(_ICC_PROFILE), page.tags.get(_ORIENTATION)
        icc_bytes = bytes(icc.value) if icc is not None else None
        orientation_value = valid_orientation(int(orientation.value)) if orientation is not None else 1
        values, bit_depth = _page_values(page)
    return picture_from_values(orient(values, orientation_value), bit_depth, icc_bytes, None, "TIFF")


def tiff_size(path: Path, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) of a TIFF Pillow cannot open, from its first page's tags, checked against the limit."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        size = (int(page.imagewidth), int(page.imagelength))
    check_size(path, size, max_pixels)
    return size


def _is_deep_colour(image: Image.Image) -> bool:
    """More than 8 bits a sample and more than one sample a pixel: Pillow would decode it to 8 bits."""
    bits = image.tag_v2.get(_BITS_PER_SAMPLE, (8,))  # type: ignore[attr-defined]
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8 and int(image.tag_v2.get(_SAMPLES_PER_PIXEL, 1)) >= 2  # type: ignore[attr-defined]


def _read_deep_colour(path: Path, image: Image.Image) -> tuple[np.ndarray, int]:
    """Deep-colour pixels through tifffile; if tifffile cannot, Pillow's 8-bit decode with a warning."""
    try:
        with tifffile.TiffFile(path) as tif:
            return _page_values(tif.pages[0])
    except Exception as exc:  # noqa: BLE001 - e.g. a compression tifffile needs imagecodecs for
        log.warning("%s: read as 8-bit, the 16-bit decoder failed (%s)", path, short_reason(exc))
        values, _, _ = values_from_pillow(image)
        return values, 8


def _page_values(page: tifffile.TiffPage) -> tuple[np.ndarray, int]:
    """Pixels of a TIFF page in [0, 1] (grey, grey + alpha, RGB or RGBA) and their bit depth."""
    values = page.asarray()
    photometric, axes = int(page.photometric), page.axes
    if values.ndim == 2:
        values = values[..., None]
    elif axes.startswith("S"):  # planar (channel-first) storage
        values = np.moveaxis(values, 0, -1)
    if photometric not in (1, 2) or values.ndim != 3:  # MINISBLACK, RGB
        raise ValueError(f"unsupported TIFF layout (photometric {photometric}, shape {values.shape})")
    values = values[..., : 4 if photometric == 2 else 2]
    if values.dtype.kind == "f":
        return np.clip(values.astype(np.float32), 0.0, 1.0), 16
    if values.dtype.kind != "u":
        raise ValueError(f"unsupported TIFF sample type {values.dtype}")
    bit_depth = 8 if values.dtype.itemsize == 1 else 16
    return values.astype(np.float32) / float(np.iinfo(values.dtype).max), bit_depth


# ---------------------------------------------------------------------------------------------------- writing


def write_tiff(file: BinaryIO, enc: Encoding) -> None:
    """Pillow, uncompressed (its compressing writer drops the Exif IFD), or tifffile for 16-bit colour."""
    if enc.bit_depth == 16 and enc.values.shape[2] > 1:
        file.write(_tifffile_bytes(enc))
        return
    encoded = io.BytesIO()
    try:
        save_with_pillow(encoded, enc.values, "TIFF", icc_profile=enc.icc, tiffinfo=_exif_as_tags(enc.exif))
    except Exception as exc:  # noqa: BLE001 - an EXIF value Pillow cannot store must not cost the picture
        log.warning("EXIF left out of the TIFF (%s)", short_reason(exc))
        encoded = io.BytesIO()
        save_with_pillow(encoded, enc.values, "TIFF", icc_profile=enc.icc)
    file.write(encoded.getbuffer())


def _tifffile_bytes(enc: Encoding) -> memoryview:
    """A zlib-compressed 16-bit colour TIFF; tifffile writes no Exif IFD, so only the descriptive tags go in."""
    channels = enc.values.shape[2]
    text = _exif_as_tags(enc.exif)
    extratags = [(tag, "s", 0, text[tag], True) for tag in _TEXT_TAGS if isinstance(text.get(tag), str)]
    encoded = io.BytesIO()  # tifffile cannot write to a file opened from a descriptor (its name is an int)
    tifffile.imwrite(
        encoded,
        enc.values,
        photometric="rgb" if channels >= 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        compression="zlib",
        iccprofile=enc.icc,
        extratags=extratags,
        metadata=None,
    )
    return encoded.getbuffer()


def _exif_as_tags(exif: bytes | None) -> dict[int, object]:
    """EXIF as TIFF tags: layout tags dropped, the Exif and GPS IFDs as nested dicts (Pillow writes those)."""
    if not exif:
        return {}
    parsed = Image.Exif()
    try:
        parsed.load(strip_exif_header(exif))
    except Exception as exc:  # noqa: BLE001 - unparsable EXIF is left out, the picture is still written
        log.warning("EXIF left out of the TIFF (%s)", short_reason(exc))
        return {}
    tags: dict[int, object] = {}
    for tag, value in parsed.items():
        if tag in TIFF_LAYOUT_TAGS:
            continue
        if tag in (EXIF_IFD, GPS_IFD):
            value = {key: item for key, item in parsed.get_ifd(tag).items() if key != INTEROP_IFD}
            if not value:
                continue
        tags[tag] = value
    return tags
