"""The pixel limit every reader enforces before decoding, and the one-line wording of decoding failures.

Shared by the dispatcher, which checks the size Pillow reads from a header, and the TIFF reader, which checks
the size tifffile reads for the TIFFs Pillow cannot open: a hostile file is refused the same way on both paths.
"""

from __future__ import annotations

from pathlib import Path

from decrappify.errors import InputError

DEFAULT_MAX_PIXELS: int = 100_000_000
"""Decompression-bomb limit: 100 MP (a 10000 x 10000 scan) decodes to 1.2 GB of float32 RGB, enough for photos."""


def check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    """`InputError` for a picture with no pixels or more than `max_pixels` (None: no limit)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(path, f"image has no pixels ({width} x {height})")
    if max_pixels is not None and width * height > max_pixels:
        raise too_large(path, size, max_pixels)


def too_large(path: Path, size: tuple[int, int] | None, max_pixels: int | None) -> InputError:
    """The error for a picture over the limit; `size` is None when Pillow refused it before telling us."""
    what = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return InputError(
        path, f"image too large ({what}, limit {max_pixels:,}); raise --max-pixels if you trust this file"
    )


def short_reason(exc: BaseException) -> str:
    """An exception as a short one-line reason for an error message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
