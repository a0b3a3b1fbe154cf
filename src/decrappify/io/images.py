"""Reading and writing pictures without losing anything: alpha, 16-bit depth, ICC profile, EXIF.

Pillow reads almost every format, but on its own it quietly drops what restoration must keep: 48-bit PNG and
TIFF come back as 8-bit RGB, EXIF orientation is left for the caller, and a hostile file can ask for gigapixels.
This module is the policy and the dispatch: it checks the file, opens it with Pillow under the pixel limit,
hands it to the reader of its format (`png_format`, `tiff_format`, `pillow_formats`), and turns every failure
into an `InputError` naming the file. On the way out it picks the format from the suffix, protects inputs and
existing files, fits the picture to the format (`encoding`) and writes it atomically with that format's encoder.

Models only see `Picture.rgb` (float32, H x W x 3, in [0, 1]); alpha, bit depth, grey-ness and metadata ride
along and are written back as they came.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

from decrappify.errors import DecrappifyError, InputError, OutputError
from decrappify.io import pillow_formats, png_format, tiff_format
from decrappify.io.atomic import atomic_write
from decrappify.io.checks import DEFAULT_MAX_PIXELS, check_size, short_reason, too_large
from decrappify.io.encoding import Encoding, FormatTraits, prepare_encoding
from decrappify.io.picture import Picture, picture_from_pil, picture_to_pil, resize_plane

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENCODERS",
    "WRITE_FORMATS",
    "Picture",
    "is_image_path",
    "picture_from_pil",
    "picture_to_pil",
    "read_image",
    "read_image_size",
    "resize_plane",
    "write_image",
]

log = logging.getLogger(__name__)

WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_TRAITS: dict[str, FormatTraits] = {
    traits.name: traits
    for traits in (png_format.PNG, tiff_format.TIFF, *pillow_formats.WRITTEN)
}
ENCODERS: dict[str, Callable[[BinaryIO, Encoding], None]] = {
    "PNG": png_format.write_png,
    "TIFF": tiff_format.write_tiff,
    "JPEG": pillow_formats.write_jpeg,
    "WEBP": pillow_formats.write_webp,
    "BMP": pillow_formats.write_bmp,
}
"""The encoder of each written format, looked up at write time (so a test can swap in a failing one)."""

_READERS: dict[str, Callable[[Path, Image.Image], Picture]] = {
    "PNG": png_format.read_png,
    "TIFF": tiff_format.read_tiff,
}  # any other format Pillow opens is read by pillow_formats.read_with_pillow
_PIL_LIMIT_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------- reading


def read_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Read any picture Pillow can open, losslessly; `InputError` naming the file on any problem.

    EXIF orientation is applied to the pixels (and reset to 1 in the kept EXIF). Pictures over `max_pixels`
    (None: no limit) are refused from their header, before any pixel is decoded, and so are animations.
    """
    path = Path(path)
    with _input_errors(path, max_pixels):
        return _open_and_read(path, max_pixels)


def read_image_size(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as the header stores them, refused as `read_image` would refuse the file, but with no
    pixel decoded: what a caller checks before it commits memory to a picture. EXIF turns may swap the two."""
    path = Path(path)
    with _input_errors(path, max_pixels):
        return _open_and_measure(path, max_pixels)


@contextlib.contextmanager
def _input_errors(path: Path, max_pixels: int | None) -> Iterator[None]:
    """Turn every failure to open or decode `path` into one `InputError` naming it."""
    _check_is_file(path)
    try:
        yield
    except DecrappifyError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(path, None, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InputError(path, _unidentified_reason(path)) from exc
    except PermissionError as exc:
        raise InputError(path, "permission denied") from exc
    except Exception as exc:  # Pillow, pypng and tifffile raise many types for a bad file: none escapes raw
        log.debug("%s: decoding failed", path, exc_info=True)
        raise InputError(path, f"cannot decode image: {short_reason(exc)}") from exc


def _open_and_read(path: Path, max_pixels: int | None) -> Picture:
    """Open with Pillow under the limit, check the header's size, and let the format's reader decode."""
    with _opened(path, max_pixels) as image:
        if image is None:  # e.g. 16-bit grey + alpha, which Pillow cannot open at all
            return tiff_format.read_tiff_without_pillow(path, max_pixels)
        read = _READERS.get(image.format or "", pillow_formats.read_with_pillow)
        return read(path, image)


def _open_and_measure(path: Path, max_pixels: int | None) -> tuple[int, int]:
    """`_open_and_read` up to the decoding: the checked size of the picture the file holds."""
    with _opened(path, max_pixels) as image:
        return tiff_format.tiff_size(path, max_pixels) if image is None else image.size


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int | None) -> Iterator[Image.Image | None]:
    """The file opened by Pillow under the limit, its size checked and animations refused; None for a TIFF
    that Pillow cannot open (tifffile's business)."""
    try:
        with _pillow_limit(max_pixels):
            image = Image.open(path)
    except UnidentifiedImageError:
        if not tiff_format.is_tiff(path):
            raise
        image = None
    if image is None:
        yield None
        return
    with image, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit was checked above
        check_size(path, image.size, max_pixels)
        _refuse_animation(path, image)
        yield image


#: Formats whose extra frames are an animation. A TIFF's extra pages are not (scanners add thumbnails), nor are
#: an MPO's (a camera's preview): those files are read as their first picture, as before.
_ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP"})


def _refuse_animation(path: Path, image: Image.Image) -> None:
    """Restoring only the first frame of an animation would lose the rest without a word: refuse it instead."""
    if image.format in _ANIMATED_FORMATS and getattr(image, "is_animated", False):
        frames = getattr(image, "n_frames", "several")
        raise InputError(
            path,
            f"animated {image.format} ({frames} frames): only still pictures are read; "
            "save its frames as separate pictures and restore those",
        )


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


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"II*\x00": "TIFF",
               b"MM\x00*": "TIFF", b"RIFF": "WebP", b"BM": "BMP"}  # fmt: skip


def _unidentified_reason(path: Path) -> str:
    """Tell a damaged picture (a known signature Pillow still cannot parse) from a file that is no picture."""
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(8)
        for signature, name in _SIGNATURES.items():
            if head.startswith(signature):
                return f"corrupt or truncated {name} file (Pillow cannot parse it)"
    return "not an image file (or a format Pillow cannot read)"


# ---------------------------------------------------------------------------------------------------- writing


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
    encoding = prepare_encoding(picture, _TRAITS[fmt], quality, path)
    atomic_write(path, lambda file: ENCODERS[fmt](file, encoding), overwrite=overwrite)
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
