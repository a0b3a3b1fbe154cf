"""Reading and writing pictures without losing anything: alpha, 16-bit depth, ICC profile, EXIF.

Pillow reads almost every format, but on its own it quietly drops what restoration must keep: 48-bit PNG and TIFF
come back as 8-bit RGB, EXIF orientation is left for the caller, and a hostile file can ask for gigapixels. So
Pillow opens the file and supplies the metadata, `pypng` and `tifffile` decode and encode the 16-bit colour cases
Pillow cannot hold, and every failure becomes an `InputError` or `OutputError` naming the file.

Models only see `Picture.rgb` (float32, H x W x 3, in [0, 1]); alpha, bit depth, grey-ness and metadata ride along
and are written back as they came. Writes are atomic and never replace an input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from decrappify.errors import DecrappifyError, InputError, OutputError
from decrappify.io import formats
from decrappify.io.atomic import atomic_write

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 100_000_000
"""Decompression-bomb limit: 100 MP (a 10000 x 10000 scan) decodes to 1.2 GB of float32 RGB, enough for photos."""

WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
# Pillow writes a BMP alpha channel that no reader, Pillow included, reads back: BMP counts as opaque.
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_MAX_SIDE = {"JPEG": 65_535, "WEBP": 16_383}
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class Picture:
    """Colour data for the models plus everything needed to write the picture back as it came."""

    rgb: np.ndarray  # float32, H x W x 3, values in [0, 1] (grey sources are replicated to 3 channels)
    alpha: np.ndarray | None = None  # float32, H x W in [0, 1], or None
    bit_depth: int = 8  # 8 or 16: what the source stored, and what we write back
    grayscale: bool = False  # source had one colour channel: written back as grey
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied and reset to 1
    source_format: str | None = None  # Pillow format name of the source ("PNG", "JPEG", ...)

    def __post_init__(self) -> None:
        rgb = np.asarray(self.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.float32:
            raise ValueError(f"Picture.rgb must be float32 H x W x 3, got {rgb.dtype} {rgb.shape}")
        if self.alpha is not None and (self.alpha.shape != rgb.shape[:2] or self.alpha.dtype != np.float32):
            raise ValueError(
                f"Picture.alpha must be float32 {rgb.shape[:2]}, got {self.alpha.dtype} {self.alpha.shape}"
            )
        if self.bit_depth not in (8, 16):
            raise ValueError(f"Picture.bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as Pillow counts."""
        return self.width, self.height

    def with_rgb(self, rgb: np.ndarray) -> Picture:
        """New colour data (clipped to [0, 1]) with the same metadata; alpha is resized if the size changed."""
        rgb = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"with_rgb needs an H x W x 3 array, got {rgb.shape}")
        alpha = self.alpha
        if alpha is not None and alpha.shape != rgb.shape[:2]:
            alpha = resize_plane(alpha, rgb.shape[1], rgb.shape[0])
        return dataclasses.replace(self, rgb=rgb, alpha=alpha)


def resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float plane (alpha) with Lanczos, clipped to [0, 1] because Lanczos rings past the edges."""
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------- reading


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Read any picture Pillow can open, losslessly; `InputError` naming the file on any problem.

    EXIF orientation is applied to the pixels (and reset to 1 in the kept EXIF). Pictures over `max_pixels`
    (None: no limit) are refused from their header, before any pixel is decoded.
    """
    path = Path(path)
    _check_is_file(path)
    try:
        try:
            with _pillow_limit(max_pixels):
                image = Image.open(path)
        except UnidentifiedImageError:
            if formats.is_tiff(path):  # e.g. 16-bit grey + alpha, which Pillow cannot open at all
                return _read_tiff_without_pillow(path, max_pixels)
            raise
        with image, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit was checked above
            _check_size(path, image.size, max_pixels)
            return _decode(path, image)
    except DecrappifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, None, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InputError(path, _unidentified_reason(path)) from exc
    except PermissionError as exc:
        raise InputError(path, "permission denied") from exc
    except Exception as exc:  # Pillow, pypng and tifffile raise many types for a bad file: none escapes raw
        log.debug("%s: decoding failed", path, exc_info=True)
        raise InputError(path, f"cannot decode image: {formats.short_reason(exc)}") from exc


def picture_from_pil(image: Image.Image, like: Picture | None = None) -> Picture:
    """A `Picture` from an in-memory Pillow image (8-bit colour at most; `read_image` is the lossless path).

    With `like`, the metadata (bit depth, grey-ness, ICC, EXIF, format) come from it, and so does alpha when the
    image has none (resized to the image's size). Without it, EXIF orientation is applied as `read_image` does.
    """
    values, bit_depth, icc = formats.pillow_values(image)
    if like is None:
        exif, orientation = formats.read_exif(None, image)
        values = formats.orient(values, orientation)
        return _make_picture(values, bit_depth, icc, exif, image.format)
    picture = _make_picture(values, like.bit_depth, like.icc_profile, like.exif, like.source_format)
    alpha = picture.alpha
    if alpha is None and like.alpha is not None:
        same_size = like.alpha.shape == picture.rgb.shape[:2]
        alpha = like.alpha if same_size else resize_plane(like.alpha, *picture.size)
    return dataclasses.replace(picture, alpha=alpha, grayscale=like.grayscale)


def picture_to_pil(picture: Picture) -> Image.Image:
    """An 8-bit RGB view of the colour data (degradations work on these)."""
    return Image.fromarray(_quantize(picture.rgb, 8))


@functools.lru_cache(maxsize=1)
def _readable_extensions() -> frozenset[str]:
    """Extensions of formats Pillow can decode (stub plugins that only identify a format are left out)."""
    Image.init()
    extensions = set()
    for extension, name in Image.registered_extensions().items():
        opener = Image.OPEN.get(name)
        factory = opener[0] if opener is not None else None
        is_stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        if factory is not None and not is_stub:
            extensions.add(extension.lower())
    return frozenset(extensions)


def is_image_path(path: str | Path) -> bool:
    """Whether the extension is one Pillow can read (the content is not looked at)."""
    return Path(path).suffix.lower() in _readable_extensions()


def _check_is_file(path: Path) -> None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot access: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if stat.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Make Pillow's own bomb check use our limit while it parses the header (its limit is a global)."""
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(path, f"image has no pixels ({width} x {height})")
    if max_pixels is not None and width * height > max_pixels:
        raise _too_large(path, size, max_pixels)


def _too_large(path: Path, size: tuple[int, int] | None, max_pixels: int | None) -> InputError:
    what = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return InputError(
        path, f"image too large ({what}, limit {max_pixels:,}); raise --max-pixels if you trust this file"
    )


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
               b"RIFF": "WebP", b"BM": "BMP"}  # fmt: skip


def _unidentified_reason(path: Path) -> str:
    """Tell a damaged picture (a known signature Pillow still cannot parse) from a file that is no picture."""
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(8)
        for signature, name in _SIGNATURES.items():
            if head.startswith(signature):
                return f"corrupt or truncated {name} file (Pillow cannot parse it)"
    return "not an image file (or a format Pillow cannot read)"


def _decode(path: Path, image: Image.Image) -> Picture:
    """Pixels (from the decoder that keeps their depth) and metadata of an opened image."""
    icc = image.info.get("icc_profile") or None
    if image.format == "PNG" and formats.png_is_deep_colour(path):
        values, bit_depth = formats.read_png16(path)
    elif image.format == "TIFF" and formats.tiff_is_deep_colour(image):
        values, bit_depth = _read_tiff16(path, image)
    else:
        values, bit_depth, icc = formats.pillow_values(image)
    # EXIF after the pixels: a broken file then fails with the decoder's reason, not a metadata one.
    exif, orientation = formats.read_exif(path, image)
    return _make_picture(formats.orient(values, orientation), bit_depth, icc, exif, image.format)


def _make_picture(
    values: np.ndarray, bit_depth: int, icc: bytes | None, exif: bytes | None, fmt: str | None
) -> Picture:
    """Split H x W x C values (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) into colour and alpha."""
    channels = values.shape[2]
    colour = values[..., : 1 if channels < 3 else 3]
    alpha = np.ascontiguousarray(values[..., -1]) if channels in (2, 4) else None
    grayscale = channels < 3
    rgb = np.ascontiguousarray(np.repeat(colour, 3, axis=2) if grayscale else colour)
    if icc is not None and formats.icc_space(icc) not in ((b"GRAY", b"RGB ") if grayscale else (b"RGB ",)):
        log.debug("ICC profile for %r dropped: it does not fit the pixels", formats.icc_space(icc))
        icc = None
    return Picture(rgb, alpha, bit_depth, grayscale, icc, exif, fmt)


def _read_tiff16(path: Path, image: Image.Image) -> tuple[np.ndarray, int]:
    """Deep-colour TIFF pixels through tifffile; if tifffile cannot, Pillow's 8-bit decode with a warning."""
    try:
        return formats.tiff_values(path)
    except Exception as exc:  # noqa: BLE001 - e.g. a compression tifffile needs imagecodecs for
        log.warning("%s: read as 8-bit, the 16-bit decoder failed (%s)", path, formats.short_reason(exc))
        values, _, _ = formats.pillow_values(image)
        return values, 8


def _read_tiff_without_pillow(path: Path, max_pixels: int | None) -> Picture:
    """TIFFs Pillow cannot open (16-bit grey + alpha): pixels, ICC and orientation through tifffile."""
    size, icc, orientation = formats.tiff_header(path)
    _check_size(path, size, max_pixels)
    values, bit_depth = formats.tiff_values(path)
    return _make_picture(formats.orient(values, orientation), bit_depth, icc, None, "TIFF")


# ----------------------------------------------------------------------------------------------------- writing


def write_image(
    picture: Picture,
    path: str | Path,
    *,
    overwrite: bool = False,
    quality: int = 95,
    protect: Iterable[str | Path] = (),
) -> Path:
    """Write atomically in the format the suffix names, keeping 16-bit, alpha, ICC and EXIF where it can.

    `OutputError` if the suffix is unknown, the path exists (unless `overwrite`), or it is one of `protect`
    (the inputs: never replaced, even with `overwrite`). JPEG and BMP hold no alpha: it is composited on white
    with a warning. JPEG, WebP and BMP are 8-bit. `quality` is for JPEG and WebP (WebP 100 = lossless).
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        valid = ", ".join(WRITE_FORMATS)
        raise OutputError(path, f"unknown image format {path.suffix!r}; use one of: {valid}")
    _check_target(path, overwrite, protect)
    too_big = _MAX_SIDE.get(fmt)
    if too_big is not None and max(picture.size) > too_big:
        size = f"{picture.width} x {picture.height}"
        raise OutputError(path, f"{size} is too large for {fmt} (at most {too_big} pixels a side)")
    values, bit_depth = _output_values(picture, fmt, path)
    icc = picture.icc_profile
    if icc is not None and formats.icc_space(icc) != (b"GRAY" if values.shape[2] < 3 else b"RGB "):
        icc = None  # a profile for another colour space would make readers misinterpret the pixels
    exif = formats.exif_for_output(picture.exif, picture.size)
    encoding = formats.Encoding(values, bit_depth, icc, exif, quality)
    atomic_write(path, lambda file: formats.ENCODERS[fmt](file, encoding), overwrite=overwrite)
    return path


def _check_target(path: Path, overwrite: bool, protect: Iterable[str | Path]) -> None:
    for protected in protect:
        if _same_file(path, Path(protected)):
            raise OutputError(path, "is an input file; refusing to overwrite it (choose another output)")
    if path.is_dir():
        raise OutputError(path, "is a folder")
    if path.exists() and not overwrite:
        raise OutputError(path, "already exists (use --overwrite to replace it)")


def _same_file(a: Path, b: Path) -> bool:
    """Same file by inode where both exist (hard links, case-insensitive names), else by resolved path."""
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _output_values(picture: Picture, fmt: str, path: Path) -> tuple[np.ndarray, int]:
    """H x W x C integer values for the format: grey or colour, with alpha where the format holds it."""
    bit_depth = 16 if picture.bit_depth == 16 and fmt in _SIXTEEN_BIT_FORMATS else 8
    if picture.bit_depth == 16 and bit_depth == 8:
        log.info("%s: written as 8-bit (%s holds no more)", path, fmt)
    rgb, alpha = picture.rgb, picture.alpha
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        log.warning("%s: %s holds no transparency; composited on white", path, fmt)
        rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
        alpha = None
    grey = picture.grayscale and fmt != "WEBP"  # WebP has no grey mode
    colour = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None] if grey else rgb
    values = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    return _quantize(values, bit_depth), bit_depth


def _quantize(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """[0, 1] floats to uint8 / uint16 by rounding (so 8-bit and 16-bit values round-trip exactly)."""
    top = 255.0 if bit_depth == 8 else 65535.0
    scaled = np.clip(values, 0.0, 1.0) * np.float32(top)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8 if bit_depth == 8 else np.uint16)
