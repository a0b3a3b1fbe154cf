"""Any output scale from a model with a fixed one: run the model, then resample (`--outscale S`, 1..8).

Real-ESRGAN's `--outscale` runs its x4 network and resizes the result; so does this. Enlarging uses Lanczos
(sharp, little aliasing), shrinking uses area averaging (Pillow's box filter: each output pixel the exact mean
of the pixels it covers, so no aliasing and no ringing). Both run on float32 planes, so 16-bit pictures keep
their depth.

For S below the model's scale there is a cheaper way: shrink the input first so that the model's own output
lands at S (`shrink_first=True`, (scale / S)^2 fewer pixels to run the model on). Whether it is worth it is
measured in docs/benchmarks/outscale.md (`benchmarks/outscale.py`); the default (`SHRINK_FIRST_DEFAULT`)
follows that measurement.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from decrappify.errors import ConfigError, InputError
from decrappify.io.picture import Picture

if TYPE_CHECKING:
    from decrappify.inference.restorer import Restorer
    from decrappify.inference.tiling import TileCallback

MIN_OUTSCALE, MAX_OUTSCALE = 1.0, 8.0
#: Run the model on the full input and shrink its output (False), per docs/benchmarks/outscale.md: shrinking
#: the input first is faster but loses more than a dB of PSNR_Y at every scale measured.
SHRINK_FIRST_DEFAULT = False


def check_outscale(value: float | None) -> float | None:
    """`value` as a float in [1, 8], or None; `ConfigError` otherwise."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not MIN_OUTSCALE <= number <= MAX_OUTSCALE:
        raise ConfigError(f"outscale {value!r}: choose a number from {MIN_OUTSCALE:g} to {MAX_OUTSCALE:g}")
    return number


def scaled_size(width: int, height: int, outscale: float) -> tuple[int, int]:
    """(width, height) times `outscale`, rounded, at least one pixel each."""
    return max(1, round(width * outscale)), max(1, round(height * outscale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x C float array to `size` (width, height): Lanczos when a side grows, area (box) when both shrink.

    Values are float32, unclipped by the filter itself; the result is clipped to [0, 1] (Lanczos overshoots).
    """
    width, height = size
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return np.asarray(rgb, dtype=np.float32)
    shrink = width <= rgb.shape[1] and height <= rgb.shape[0]
    method = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c], dtype=np.float32)).resize(size, method))
        for c in range(rgb.shape[2])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32, copy=False)


def shrinks_input(scale: int, outscale: float | None, shrink_first: bool) -> bool:
    """Whether the input is shrunk before the model runs (only when asked and the target is below `scale`)."""
    return bool(shrink_first and outscale is not None and outscale < scale)


def model_input_size(
    width: int, height: int, scale: int, outscale: float | None, shrink_first: bool
) -> tuple[int, int]:
    """The size the model runs on: the input's, or with `shrink_first` the one whose output is the target."""
    if not shrinks_input(scale, outscale, shrink_first):
        return width, height
    return scaled_size(width, height, outscale / scale)


def check_output(
    restorer: Restorer,
    width: int,
    height: int,
    *,
    outscale: float | None,
    shrink_first: bool = False,
    path: str | Path | None = None,
    max_output_pixels: int | None = None,
    max_memory_bytes: int | None = None,
) -> None:
    """`Restorer.check_fits` for the size the model really runs on, and the output-pixel limit for the final
    size (`InputError` naming `path`)."""
    model_width, model_height = model_input_size(width, height, restorer.scale, outscale, shrink_first)
    native_limit = max_output_pixels
    if outscale is not None and outscale > restorer.scale:
        native_limit = None  # the final size, checked below, is the larger one
    restorer.check_fits(model_width, model_height, path=path, max_output_pixels=native_limit,
                        max_memory_bytes=max_memory_bytes)  # fmt: skip
    if outscale is not None and max_output_pixels is not None:
        out_width, out_height = scaled_size(width, height, outscale)
        if out_width * out_height > max_output_pixels:
            raise InputError(
                path,
                f"output too large ({width} x {height} -> {out_width} x {out_height} = {out_width * out_height:,} "
                f"pixels at outscale {outscale:g}, limit {max_output_pixels:,}); raise --max-output-pixels if this "
                "machine has the memory",
            )


def restore_array_at(
    restorer: Restorer,
    rgb: np.ndarray,
    outscale: float | None,
    *,
    shrink_first: bool = False,
    levels: int | None = None,
    on_tile: TileCallback | None = None,
) -> np.ndarray:
    """`restorer.restore_array` with the output resampled to `outscale` times the input (None: the model's)."""
    height, width = rgb.shape[:2]
    if outscale is None:
        return restorer.restore_array(rgb, levels=levels, on_tile=on_tile)
    if shrinks_input(restorer.scale, outscale, shrink_first):
        rgb = resize_rgb(rgb, model_input_size(width, height, restorer.scale, outscale, True))
    out = restorer.restore_array(rgb, levels=levels, on_tile=on_tile)
    return resize_rgb(out, scaled_size(width, height, outscale))


def restore_picture_at(
    restorer: Restorer,
    picture: Picture,
    outscale: float | None,
    *,
    shrink_first: bool = False,
    on_tile: TileCallback | None = None,
) -> Picture:
    """`restorer.restore(picture)` at `outscale` (None: the model's own scale); alpha follows the colour."""
    if outscale is None:
        return restorer.restore(picture, on_tile=on_tile)
    target = scaled_size(picture.width, picture.height, outscale)
    if shrinks_input(restorer.scale, outscale, shrink_first):
        size = model_input_size(picture.width, picture.height, restorer.scale, outscale, True)
        picture = picture.with_rgb(resize_rgb(picture.rgb, size))
    restored = restorer.restore(picture, on_tile=on_tile)
    return restored.with_rgb(resize_rgb(restored.rgb, target))
