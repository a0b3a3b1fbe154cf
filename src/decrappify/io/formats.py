"""What each file format needs beyond Pillow: EXIF, Pillow modes to values, 16-bit decoders, one encoder each.

Internal to `decrappify.io.images`, which decides policy (limits, errors, alpha, bit depth, atomic writes); this
module knows the formats. Pillow reads and writes 48/64-bit PNG and TIFF as 8-bit, so `pypng` and `tifffile`
handle those; Pillow's TIFF writer drops the Exif IFD unless given as nested tags, and so on.
"""

from __future__ import annotations

import functools
import io
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
import tifffile
from PIL import Image, ImageCms

log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_EXIF_PIXEL_X, _EXIF_PIXEL_Y = 0xA002, 0xA003
# TIFF layout tags that Pillow's getexif() returns for TIFF files: meaningless (or huge) inside another file's EXIF.
_TIFF_LAYOUT_TAGS = (254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325,
                     330, 338, 339, 340, 341, 513, 514, 700, 33723, 34377, 34675, 37724)  # fmt: skip
# Descriptive TIFF tags that survive into a 16-bit colour TIFF written by tifffile (which writes no EXIF IFD).
_TIFF_TEXT_TAGS = (270, 271, 272, 305, 306, 315, 33432)
_GREY_MODES = {"1", "L", "LA", "La"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_INT16_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def short_reason(exc: BaseException) -> str:
    """An exception as a short one-line reason for an error message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def icc_space(icc: bytes) -> bytes:
    """The data colour space of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...): header bytes 16-19."""
    return bytes(icc[16:20])


# -------------------------------------------------------------------------------------------------------- EXIF


def read_exif(path: Path | None, image: Image.Image) -> tuple[bytes | None, int]:
    """EXIF to keep (orientation reset to 1) and the orientation to apply; broken EXIF is dropped, not fatal."""
    try:
        exif = image.getexif()
        orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
        raw = image.info.get("exif")
        if image.format == "TIFF":
            for tag in _TIFF_LAYOUT_TAGS:
                exif.pop(tag, None)
        elif orientation == 1 and isinstance(raw, bytes) and raw:
            return raw, 1  # untouched bytes keep maker notes exactly as they were
        if len(exif) == 0:
            return None, _valid_orientation(orientation)
        if _EXIF_ORIENTATION in exif:
            exif[_EXIF_ORIENTATION] = 1
        return exif.tobytes(), _valid_orientation(orientation)
    except Exception as exc:  # noqa: BLE001 - metadata is optional; the pixels are what matter
        log.warning("%s: unreadable EXIF dropped (%s)", path or "image", short_reason(exc))
        return None, 1


def _valid_orientation(value: int) -> int:
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
        parsed.load(_strip_exif_header(exif))
        ifd = parsed.get_ifd(_EXIF_IFD)
        if not ifd or ((ifd.get(_EXIF_PIXEL_X), ifd.get(_EXIF_PIXEL_Y)) in ((None, None), size)):
            return exif
        ifd[_EXIF_PIXEL_X], ifd[_EXIF_PIXEL_Y] = size
        return parsed.tobytes()
    except Exception as exc:  # noqa: BLE001 - keep the original bytes rather than lose them
        log.debug("EXIF dimensions not updated (%s)", short_reason(exc))
        return exif


def _tiff_exif_tags(exif: bytes | None) -> dict[int, object]:
    """EXIF as TIFF tags: layout tags dropped, the Exif and GPS IFDs as nested dicts (Pillow writes those)."""
    if not exif:
        return {}
    parsed = Image.Exif()
    try:
        parsed.load(_strip_exif_header(exif))
    except Exception as exc:  # noqa: BLE001 - unparsable EXIF is left out, the picture is still written
        log.warning("EXIF left out of the TIFF (%s)", short_reason(exc))
        return {}
    tags: dict[int, object] = {}
    for tag, value in parsed.items():
        if tag in _TIFF_LAYOUT_TAGS:
            continue
        if tag in (_EXIF_IFD, _GPS_IFD):
            value = {key: item for key, item in parsed.get_ifd(tag).items() if key != _INTEROP_IFD}
            if not value:
                continue
        tags[tag] = value
    return tags


def _strip_exif_header(exif: bytes) -> bytes:
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


# --------------------------------------------------------------------------------------------- pixel decoders


def png_is_deep_colour(path: Path) -> bool:
    """16-bit PNG with colour or alpha, which Pillow would decode to 8 bits (16-bit grey it keeps)."""
    with open(path, "rb") as file:
        header = file.read(33)
    return len(header) == 33 and header[12:16] == b"IHDR" and header[24] == 16 and header[25] in (2, 4, 6)


def read_png16(path: Path) -> tuple[np.ndarray, int]:
    """Pixels of a 16-bit colour PNG in [0, 1]; `asDirect` turns a tRNS colour into an alpha channel."""
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    values = np.array(list(rows), dtype=np.float32).reshape(height, width, info["planes"])
    values /= float(2 ** info["bitdepth"] - 1)  # an sBIT chunk can make asDirect return fewer bits
    return values, 16


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def tiff_is_deep_colour(image: Image.Image) -> bool:
    """More than 8 bits a sample and more than one sample a pixel: Pillow would decode it to 8 bits."""
    bits = image.tag_v2.get(258, (8,))  # type: ignore[attr-defined]
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8 and int(image.tag_v2.get(277, 1)) >= 2  # type: ignore[attr-defined]


def tiff_header(path: Path) -> tuple[tuple[int, int], bytes | None, int]:
    """Size, ICC profile and orientation of a TIFF's first page, for TIFFs Pillow cannot open at all."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        icc, orientation = page.tags.get(34675), page.tags.get(274)
        return (
            (int(page.imagewidth), int(page.imagelength)),
            bytes(icc.value) if icc is not None else None,
            _valid_orientation(int(orientation.value)) if orientation is not None else 1,
        )


def tiff_values(path: Path) -> tuple[np.ndarray, int]:
    """Pixels of a TIFF's first page in [0, 1] (grey, grey + alpha, RGB or RGBA) and their bit depth."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
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


def pillow_values(image: Image.Image) -> tuple[np.ndarray, int, bytes | None]:
    """Values in [0, 1] (H x W x C float32), bit depth and ICC profile of an image Pillow can hold."""
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode in _INT16_MODES or mode == "F":  # 16-bit grey ("I" is how some plugins hand it over), float grey
        raw = np.asarray(image)
        grey = np.clip(raw.astype(np.float32) / (1.0 if mode == "F" else 65535.0), 0.0, 1.0)[..., None]
        transparent = image.info.get("transparency")
        if isinstance(transparent, int) and mode != "F":
            grey = np.concatenate([grey, (raw != transparent).astype(np.float32)[..., None]], axis=2)
        return grey, 16, icc
    if mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, icc)
        mode = "RGB"
    has_alpha = mode in _ALPHA_MODES or "transparency" in image.info  # tRNS, GIF index: Pillow converts both
    if mode in _GREY_MODES:
        target = "LA" if has_alpha else "L"
    else:
        target = "RGBA" if has_alpha else "RGB"
    converted = image if image.mode == target else image.convert(target)
    values = np.array(converted, dtype=np.float32)
    values /= 255.0
    return (values[..., None] if values.ndim == 2 else values), 8, icc


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK through its own ICC profile to sRGB when it has one (the naive formula is far off for print CMYK)."""
    if icc is not None and icc_space(icc) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB")
            return rgb, _srgb_profile().tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("CMYK ICC profile unusable (%s); converting without it", exc)
    return image.convert("RGB"), None


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# ---------------------------------------------------------------------------------------------------- encoders


@dataclass(frozen=True)
class Encoding:
    """What an encoder writes: H x W x C integer values (C = 1, 2, 3, 4) and the metadata that fits."""

    values: np.ndarray
    bit_depth: int
    icc: bytes | None
    exif: bytes | None
    quality: int


def _save_pil(file: BinaryIO, values: np.ndarray, fmt: str, **options: object) -> None:
    """Save uint8 L / LA / RGB / RGBA or uint16 grey (mode I;16) values with Pillow; None options are left out."""
    image = Image.fromarray(values[..., 0] if values.shape[2] == 1 else values)
    image.save(file, format=fmt, **{key: value for key, value in options.items() if value is not None})


def _write_png(file: BinaryIO, enc: Encoding) -> None:
    if enc.bit_depth == 8 or enc.values.shape[2] == 1:  # Pillow writes 16-bit grey itself
        _save_pil(file, enc.values, "PNG", icc_profile=enc.icc, exif=enc.exif)
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
        extra.append((b"eXIf", _strip_exif_header(enc.exif)))
    png.write_chunks(file, chunks[:1] + extra + chunks[1:])  # after IHDR, before IDAT, as the spec asks


def _write_tiff(file: BinaryIO, enc: Encoding) -> None:
    """Pillow, uncompressed (its compressing writer drops the Exif IFD), or tifffile for 16-bit colour."""
    if enc.bit_depth == 16 and enc.values.shape[2] > 1:
        file.write(_tifffile_bytes(enc))
        return
    encoded = io.BytesIO()
    try:
        _save_pil(encoded, enc.values, "TIFF", icc_profile=enc.icc, tiffinfo=_tiff_exif_tags(enc.exif))
    except Exception as exc:  # noqa: BLE001 - an EXIF value Pillow cannot store must not cost the picture
        log.warning("EXIF left out of the TIFF (%s)", short_reason(exc))
        encoded = io.BytesIO()
        _save_pil(encoded, enc.values, "TIFF", icc_profile=enc.icc)
    file.write(encoded.getbuffer())


def _tifffile_bytes(enc: Encoding) -> memoryview:
    """A zlib-compressed 16-bit colour TIFF; tifffile writes no Exif IFD, so the descriptive tags carry over."""
    channels = enc.values.shape[2]
    text = _tiff_exif_tags(enc.exif)
    extratags = [(tag, "s", 0, text[tag], True) for tag in _TIFF_TEXT_TAGS if isinstance(text.get(tag), str)]
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


def _write_jpeg(file: BinaryIO, enc: Encoding) -> None:
    subsampling = 0 if enc.quality >= 90 else 2  # 4:4:4 at high quality: restored detail is not thrown away
    options = {"quality": enc.quality, "subsampling": subsampling}
    _save_pil(file, enc.values, "JPEG", icc_profile=enc.icc, exif=enc.exif, **options)


def _write_webp(file: BinaryIO, enc: Encoding) -> None:
    lossless = enc.quality >= 100  # and `exact`: keep the colour under fully transparent pixels
    options = {"quality": min(enc.quality, 100), "lossless": lossless, "exact": lossless}
    _save_pil(file, enc.values, "WEBP", icc_profile=enc.icc, exif=enc.exif, **options)


def _write_bmp(file: BinaryIO, enc: Encoding) -> None:
    _save_pil(file, enc.values, "BMP")


ENCODERS: dict[str, Callable[[BinaryIO, Encoding], None]] = {
    "PNG": _write_png,
    "TIFF": _write_tiff,
    "JPEG": _write_jpeg,
    "WEBP": _write_webp,
    "BMP": _write_bmp,
}
