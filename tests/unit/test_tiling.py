"""Tiling: tiled == untiled, blend weights that sum to one, stride alignment, out-of-memory fallback."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from decrappify.inference.tiling import OutOfMemory, axis_weights, is_out_of_memory, restore_tiled, split_axis
from decrappify.nn import create_model

SMALL_COMPACT = {"arch": "compact", "scale": 2, "widths": [8, 12, 16], "blocks": [1, 1, 1]}
SMALL_UNET = {"arch": "unet", "encoder": "resnet18", "encoder_width": 8, "scale": 2, "self_attention": False}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def _pair(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-ish clean image `hq` (2x) and its downscaled `lq`."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 4 + 2, width // 4 + 2, generator=generator)
    hq = F.interpolate(coarse, size=(2 * height, 2 * width), mode="bicubic", align_corners=False).clamp(0, 1)
    lq = F.interpolate(hq, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return lq.clamp(0, 1), hq


@pytest.fixture(scope="module")
def compact() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(SMALL_COMPACT).eval()


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "multiple"),
    [(37, 8, 16, 1), (37, 100, 8, 1), (100, 32, 16, 16), (61, 7, 20, 4), (1, 16, 4, 4), (200, 64, 30, 32)],
)
def test_split_axis_covers_once_and_aligns(length: int, tile: int, overlap: int, multiple: int) -> None:
    spans = split_axis(length, tile, overlap, multiple)
    assert spans[0].core_start == 0 and spans[-1].core_stop == length
    for a, b in itertools.pairwise(spans):
        assert a.core_stop == b.core_start  # cores partition the axis
        assert b.core_start % multiple == 0 and b.start % multiple == 0  # on the model's stride grid
        assert a.blend_after == b.blend_before
    for span in spans:
        assert span.core_stop - span.core_start <= max(tile, multiple)
        assert 0 <= span.start <= span.core_start - span.blend_before
        assert span.core_stop + span.blend_after <= span.stop <= length


@pytest.mark.parametrize("scale", [1, 3])
def test_blend_weights_sum_to_one(scale: int) -> None:
    length = 53
    total = torch.zeros(length * scale)
    for span in split_axis(length, 12, 10, 1):
        lo, hi, weights = axis_weights(span, scale)
        assert weights.min() >= 0 and weights.max() <= 1
        total[lo:hi] += weights
    torch.testing.assert_close(total, torch.ones_like(total))


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(37, 53, 12, 32), (37, 53, 16, 40), (64, 64, 28, 32), (31, 45, 200, 8), (33, 17, 12, 64), (5, 7, 4, 32)],
)
def test_tiled_equals_untiled_compact(
    compact: torch.nn.Module, height: int, width: int, tile: int, overlap: int
) -> None:
    """Overlap covering the receptive field: identical up to float rounding, hence within 0.01 dB of PSNR."""
    lq, hq = _pair(height, width)
    with torch.inference_mode():
        untiled = compact(lq)
        tiled = restore_tiled(compact, lq, scale=2, tile=tile, overlap=overlap, multiple=compact.stride)
    assert tiled.shape == untiled.shape
    assert (tiled - untiled).abs().max() < 1e-4
    assert abs(_psnr(tiled, hq) - _psnr(untiled, hq)) < 0.01


def test_short_overlap_is_blended_not_seamed(compact: torch.nn.Module) -> None:
    """Overlap below the receptive field: no longer exact, but the blend keeps it within 0.01 dB."""
    lq, hq = _pair(64, 96)
    with torch.inference_mode():
        untiled = compact(lq)
        tiled = restore_tiled(compact, lq, scale=2, tile=24, overlap=16, multiple=compact.stride)
    assert (tiled - untiled).abs().max() > 1e-6  # the test can tell the two apart
    assert abs(_psnr(tiled, hq) - _psnr(untiled, hq)) < 0.01


class _BlockModel(torch.nn.Module):
    """Pads to a multiple of 8 like our U-Nets, then mixes each 8x8 block on its own: tiles give the untiled
    result exactly when, and only when, they start on the 8-pixel grid."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3 * 64, 3 * 64 * 4, 1)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        x = F.pad(lq, (0, -w % 8, 0, -h % 8), mode="replicate")
        y = F.pixel_shuffle(self.mix(F.pixel_unshuffle(x, 8)), 16)
        return y[..., : 2 * h, : 2 * w]


def test_tiles_are_aligned_to_the_model_stride() -> None:
    torch.manual_seed(0)
    model = _BlockModel().eval()
    lq, _ = _pair(45, 70)
    with torch.inference_mode():
        untiled = model(lq)
        aligned = restore_tiled(model, lq, scale=2, tile=12, overlap=4, multiple=model.stride)
        misaligned = restore_tiled(model, lq, scale=2, tile=12, overlap=4, multiple=1)
    assert (aligned - untiled).abs().max() < 1e-5
    assert (misaligned - untiled).abs().max() > 1e-2


def test_tiled_unet_with_full_context_is_exact() -> None:
    """A U-Net (pads to 32 inside) over several tiles of odd sizes: same result when the context covers it."""
    torch.manual_seed(0)
    unet = create_model(SMALL_UNET).eval()
    lq, _ = _pair(33, 71)
    with torch.inference_mode():
        untiled = unet(lq)
        tiled = restore_tiled(unet, lq, scale=2, tile=32, overlap=64, multiple=unet.stride)
    assert (tiled - untiled).abs().max() < 1e-4


def test_batch_and_channels_kept(compact: torch.nn.Module) -> None:
    lq = torch.rand(2, 3, 20, 30, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        tiled = restore_tiled(compact, lq, scale=2, tile=12, overlap=48, multiple=4)
        assert (tiled - compact(lq)).abs().max() < 1e-4


class _SmallMemory:
    """Wraps a model; fails like the CPU allocator (or CUDA) does when a tile holds more than `limit` pixels."""

    def __init__(self, model: torch.nn.Module, limit: int, error: type[Exception] = RuntimeError):
        self.model, self.limit, self.error = model, limit, error
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, lq: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(lq.shape[-2:]))
        if lq.shape[-2] * lq.shape[-1] > self.limit:
            raise self.error("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
        return self.model(lq)


def test_out_of_memory_halves_the_tile_and_says_so_once(
    compact: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    lq, _ = _pair(48, 64)
    runner = _SmallMemory(compact, limit=48 * 48)
    logger = logging.getLogger("decrappify")
    logger.addHandler(caplog.handler)  # the CLI stops propagation to the root logger that caplog watches
    try:
        with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="decrappify"):
            tiled = restore_tiled(runner, lq, scale=2, tile=256, overlap=16, multiple=4)
            untiled = compact(lq)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(runner.sizes) > 2 and max(h * w for h, w in runner.sizes[1:]) <= 48 * 48
    warnings = {id(r) for r in caplog.records if "out of memory" in r.getMessage()}  # (seen once or twice)
    assert len(warnings) == 1
    assert abs(_psnr(tiled, untiled)) > 40  # still a sound restoration


def test_out_of_memory_gives_up_at_the_minimum_tile(compact: torch.nn.Module) -> None:
    lq, _ = _pair(40, 40)
    runner = _SmallMemory(compact, limit=0, error=MemoryError)
    with torch.inference_mode(), pytest.raises(OutOfMemory, match="even with 16-pixel tiles"):
        restore_tiled(runner, lq, scale=2, tile=64, overlap=8, multiple=4, min_tile=16)


def test_other_errors_are_not_retried(compact: torch.nn.Module) -> None:
    calls = []

    def broken(lq: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        restore_tiled(broken, torch.rand(1, 3, 40, 40), scale=2, tile=16, overlap=8)
    assert len(calls) == 1


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for buffer"))
    assert not is_out_of_memory(RuntimeError("Expected 4-dimensional input"))
