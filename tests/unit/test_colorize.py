"""Colourisation keeps the input's luminance exactly (after rounding), taking only colour from the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from decrappify.evaluation.metrics import colourfulness, rgb_to_y
from decrappify.inference.restorer import Restorer, keep_luminance, luma
from decrappify.inference.runners import LoadedModel, TorchRunner
from decrappify.io.images import Picture


class Painter(nn.Module):
    """A stand-in colouriser: vivid, position-dependent colours (many out of gamut), input sizes recorded."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(0, 6, h), torch.linspace(0, 6, w), indexing="ij")
        tint = torch.stack([torch.sin(xx), torch.cos(yy), torch.sin(xx + yy)])[None] * 0.6
        return (x + tint).clamp(0, 1)


def _restorer(render_size: int = 0) -> tuple[Restorer, Painter]:
    painter = Painter()
    loaded = LoadedModel(TorchRunner(painter, torch.device("cpu"), 1, 1), {}, {"task": "colorize"})
    return Restorer(loaded, name="painter", tile=0, render_size=render_size), painter


def _grey_levels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An 8-bit grey picture with full-range values (0 and 255 included) and fine detail."""
    levels = np.random.default_rng(seed).integers(0, 256, (height, width))
    levels[0, :2] = (0, 255)
    return levels


def test_grey_picture_keeps_its_exact_grey_values_after_rounding() -> None:
    restorer, _ = _restorer()
    levels = _grey_levels(24, 40)
    picture = Picture(np.repeat(levels[..., None] / 255.0, 3, axis=2).astype(np.float32), grayscale=True)
    out = restorer.restore(picture)
    out8 = np.rint(out.rgb * 255).astype(np.uint8)
    assert not out.grayscale and colourfulness(out8 / 255.0) > 20  # colour was added
    np.testing.assert_array_equal(np.asarray(Image.fromarray(out8).convert("L")), levels)  # Pillow's Y
    np.testing.assert_array_equal(np.rint(luma(out8)), levels)
    assert np.abs(rgb_to_y(out8 / 255.0) - rgb_to_y(picture.rgb)).max() < 0.25  # studio-range Y: close


def test_sixteen_bit_pictures_keep_luma_at_sixteen_bits() -> None:
    restorer, _ = _restorer()
    levels = np.random.default_rng(1).integers(0, 65536, (12, 12))
    picture = Picture(np.repeat(levels[..., None] / 65535.0, 3, axis=2).astype(np.float32), bit_depth=16)
    out16 = np.rint(restorer.restore(picture).rgb.astype(np.float64) * 65535)
    np.testing.assert_array_equal(np.rint(luma(out16)), levels)


def test_colour_input_keeps_its_own_luma_and_gets_the_models_colour() -> None:
    rng = np.random.default_rng(2)
    source = rng.integers(0, 256, (16, 20, 3)) / 255.0
    pred = rng.uniform(0, 1, (16, 20, 3))
    out = keep_luminance(source, pred, levels=255)
    np.testing.assert_array_equal(np.rint(luma(np.rint(out * 255))), np.rint(luma(source) * 255))
    float_out = keep_luminance(source, pred)  # no rounding asked: exact in float
    np.testing.assert_allclose(luma(float_out), luma(source), atol=1e-6)
    def chroma(rgb: np.ndarray) -> np.ndarray:
        return rgb - luma(rgb)[..., None]

    in_gamut = (float_out > 0.01).all(axis=-1) & (float_out < 0.99).all(axis=-1)  # not desaturated there
    np.testing.assert_allclose(chroma(float_out)[in_gamut], chroma(pred)[in_gamut], atol=1e-5)


def test_out_of_gamut_colour_is_desaturated_not_clipped() -> None:
    bright = np.full((2, 2, 3), 0.95)
    blue = np.zeros((2, 2, 3))
    blue[..., 2] = 1.0  # adding blue's chroma to a bright grey overflows red and green... and blue
    out = keep_luminance(bright, blue)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(luma(out), 0.95, atol=1e-6)
    assert out[0, 0, 2] > out[0, 0, 0]  # still bluish


def test_the_model_runs_at_the_render_size_and_detail_comes_from_the_input() -> None:
    restorer, painter = _restorer(render_size=16)
    levels = _grey_levels(40, 64, seed=3)  # pixel-level noise the 16-pixel render cannot hold
    rgb = np.repeat(levels[..., None] / 255.0, 3, axis=2)
    out = restorer.restore_array(rgb, levels=255)
    assert painter.seen == [(10, 16)] and out.shape == (40, 64, 3)
    np.testing.assert_array_equal(np.rint(luma(np.rint(out * 255))), levels)


def test_render_size_zero_runs_at_full_size_and_negative_is_refused() -> None:
    restorer, painter = _restorer(render_size=0)
    restorer.restore_array(np.full((20, 30, 3), 0.5))
    assert painter.seen == [(20, 30)]
    with pytest.raises(Exception, match="render size"):
        _restorer(render_size=-1)


def test_keep_luminance_rounding_holds_for_many_random_colours() -> None:
    rng = np.random.default_rng(4)
    source = rng.integers(0, 256, (128, 128, 1)).repeat(3, axis=2) / 255.0
    pred = rng.uniform(-0.2, 1.2, (128, 128, 3))  # wild predictions, far out of gamut too
    out8 = np.rint(keep_luminance(source, pred, levels=255) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.fromarray(out8).convert("L")), source[..., 0] * 255)
