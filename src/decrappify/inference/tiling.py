"""Run a model over a large picture tile by tile, so memory is bounded by the tile size, with no visible seams.

How a picture is cut (per axis; the two axes are independent):

* The input is split into *cores* of at most `tile` pixels whose boundaries are multiples of `multiple` (the
  model's internal stride: a U-Net that downsamples by 32 only gives the same numbers on a tile as on the whole
  picture if the tile starts on its stride grid).
* Each model call sees its core plus `overlap` pixels of context on every side that has a neighbour, so at most
  `(tile + 2 * overlap)` pixels a side. Only that tile is handed to `model_fn`; the picture itself stays where it is
  (on the CPU) and the output is assembled there in float32.
* Around each boundary between two cores, the two outputs are blended with linear weights that sum to one, over a
  band of `overlap` input pixels (half on each side). Every pixel that gets a non-zero weight from a tile therefore
  has at least `overlap / 2` pixels of context in that tile: when that covers the model's receptive field the
  tiled result equals the untiled one up to float rounding; when it does not, the blend hides the seam.

A tile that does not fit in memory (CUDA or CPU) is retried with half the tile size, down to `min_tile`.

How much overlap is enough depends on the model's receptive field. The compact U-Net (stride 4, receptive field
48 input pixels in theory) needs a few tens of pixels; a ResNet U-Net (stride 32) sees hundreds, and tiles off its
32-pixel grid disagree more. Hence `Restorer`'s default overlap of four strides (128 for such a U-Net); the
measurements are in `docs/benchmarks/design-choices.md`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from decrappify.errors import DecrappifyError

#: Progress of one picture: called with (tiles done, tiles in all).
TileCallback = Callable[[int, int], None]
log = logging.getLogger(__name__)

ModelFn = Callable[[Tensor], Tensor]
"""Maps a CPU tensor (N, C, h, w) in [0, 1] to a CPU tensor (N, C', h*scale, w*scale); may use any device inside."""

DEFAULT_MIN_TILE = 32

_OOM_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate memory",
    "bad allocation",
    "bad_alloc",
)


class OutOfMemory(DecrappifyError):
    """Even the smallest tile did not fit in memory."""


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in input pixels.

    The model sees [start, stop); the tile's core is [core_start, core_stop); its output is blended with the
    neighbours' over `blend_before` / `blend_after` pixels on each side of the core's boundaries.
    """

    start: int
    stop: int
    core_start: int
    core_stop: int
    blend_before: int = 0
    blend_after: int = 0


def is_out_of_memory(error: BaseException) -> bool:
    """True for the errors that mean "this allocation did not fit" (CUDA, CPU allocator, numpy, ONNX Runtime)."""
    if isinstance(error, MemoryError):
        return True
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(error, cuda_oom):
        return True
    # CPU allocator and ONNX Runtime failures are plain RuntimeErrors (or ORT's own types): read the message.
    text = str(error).lower()
    return any(message in text for message in _OOM_MESSAGES)


def free_memory() -> None:
    """Give back what a failed attempt held: Python garbage and CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def split_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> list[Span]:
    """Cut `length` input pixels into cores of at most `tile` (rounded to `multiple`) with `overlap` context."""
    if length <= 0:
        raise ValueError(f"cannot tile an axis of length {length}")
    multiple = max(1, multiple)
    tile = max(multiple, tile // multiple * multiple)
    overlap = math.ceil(max(0, overlap) / multiple) * multiple
    # Share the stride units evenly between the cores, so no core is needlessly thin.
    num_units, units_per_tile = math.ceil(length / multiple), tile // multiple
    num_tiles = math.ceil(num_units / units_per_tile)
    base, extra = divmod(num_units, num_tiles)
    bounds = [0]
    for i in range(num_tiles):
        bounds.append(min(length, bounds[-1] + (base + (i < extra)) * multiple))
    cores = list(itertools.pairwise(bounds))
    # Each boundary blends over overlap/2 on each side, never more than half of either core it touches.
    bands = [
        min(overlap // 2, (a1 - a0) // 2, (b1 - b0) // 2) for (a0, a1), (b0, b1) in itertools.pairwise(cores)
    ]
    bands = [0, *bands, 0]
    return [
        Span(max(0, c0 - overlap), min(length, c1 + overlap), c0, c1, bands[i], bands[i + 1])
        for i, (c0, c1) in enumerate(cores)
    ]


def axis_weights(span: Span, scale: int) -> tuple[int, int, Tensor]:
    """Output range [lo, hi) this tile contributes to and its 1-D blend weights there (they sum to 1 across tiles)."""
    lo, hi = span.core_start - span.blend_before, span.core_stop + span.blend_after
    centres = (torch.arange(lo * scale, hi * scale, dtype=torch.float64) + 0.5) / scale
    weights = torch.ones_like(centres)
    if span.blend_before:
        rise = (centres - lo) / (2 * span.blend_before)
        weights = torch.minimum(weights, rise)
    if span.blend_after:
        fall = (hi - centres) / (2 * span.blend_after)
        weights = torch.minimum(weights, fall)
    return lo * scale, hi * scale, weights.to(torch.float32)


def _run_tiles(
    model_fn: ModelFn,
    lq: Tensor,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int,
    on_tile: TileCallback | None = None,
) -> Tensor:
    """One pass over all tiles at a fixed tile size; the output is accumulated on the CPU in float32."""
    height, width = lq.shape[-2:]
    rows = split_axis(height, tile, overlap, multiple)
    cols = split_axis(width, tile, overlap, multiple)
    total, done = len(rows) * len(cols), 0
    if total == 1:
        whole = model_fn(lq).float().cpu()
        if on_tile is not None:
            on_tile(1, 1)
        return whole
    out: Tensor | None = None
    for row in rows:
        y0, y1, wy = axis_weights(row, scale)
        for col in cols:
            x0, x1, wx = axis_weights(col, scale)
            pred = model_fn(lq[..., row.start : row.stop, col.start : col.stop]).float().cpu()
            if out is None:
                out = torch.zeros(*pred.shape[:-2], height * scale, width * scale, dtype=torch.float32)
            oy, ox = y0 - row.start * scale, x0 - col.start * scale
            piece = pred[..., oy : oy + (y1 - y0), ox : ox + (x1 - x0)]
            out[..., y0:y1, x0:x1] += piece * (wy[:, None] * wx[None, :])
            del pred, piece
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None  # at least one tile always runs
    return out


def restore_tiled(
    model_fn: ModelFn,
    lq: Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int = 1,
    min_tile: int = DEFAULT_MIN_TILE,
    on_tile: TileCallback | None = None,
) -> Tensor:
    """Apply `model_fn` to `lq` (N, C, H, W) tile by tile; returns (N, C', H*scale, W*scale) float32 on the CPU.

    `on_tile(done, total)` is called after each tile (progress for one large picture; after an out-of-memory
    retry it starts again from 1 with the new total).

    `tile <= 0` means one tile for the whole picture. On out-of-memory the tile is halved (never below
    `min_tile`) and the picture is done again from the start, with one warning; `OutOfMemory` if nothing fits.
    """
    height, width = lq.shape[-2:]
    tile = max(height, width) if tile <= 0 else tile
    warned = False
    while True:
        try:
            return _run_tiles(model_fn, lq, scale, tile, overlap, multiple, on_tile)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            effective = min(tile, max(height, width))
            free_memory()
            if effective <= min_tile:
                raise OutOfMemory(
                    f"out of memory even with {effective}-pixel tiles ({type(error).__name__}: {error})"
                ) from error
            tile = max(min_tile, effective // 2)
            if not warned:
                log.warning("out of memory; retrying with %d-pixel tiles (use --tile to start smaller)", tile)
                warned = True
