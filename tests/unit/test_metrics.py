"""Metrics against independent references (scikit-image, hand-computed values) and the published Set5 anchor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from decrappify.errors import InputError
from decrappify.evaluation.metrics import (
    crop_border,
    modcrop_array,
    psnr,
    psnr_in_box,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    ssim,
    ssim_y,
)

SET5 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks" / "Set5"


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    hq = rng.random((40, 52, 3))
    pred = np.clip(hq + rng.normal(0, 0.05, hq.shape), 0, 1)
    return pred, hq


@pytest.mark.parametrize(
    ("colour", "expected"),
    [
        ((0, 0, 0), 16.0),
        ((1, 1, 1), 235.0),
        ((1, 0, 0), 16 + 65.481),
        ((0, 1, 0), 16 + 128.553),
        ((0, 0, 1), 16 + 24.966),
        ((0.5, 0.5, 0.5), 16 + 0.5 * 219.0),
    ],
)
def test_rgb_to_y_pure_colours(colour, expected):
    img = np.broadcast_to(np.array(colour, dtype=np.float32), (2, 3, 3))
    y = rgb_to_y(img)
    assert y.shape == (2, 3)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9)


def test_rgb_to_y_rejects_grey_array():
    with pytest.raises(InputError, match="H x W x 3"):
        rgb_to_y(np.zeros((4, 4)))


def test_psnr_matches_skimage(pair):
    pred, hq = pair
    assert psnr(pred, hq, 1.0) == pytest.approx(peak_signal_noise_ratio(hq, pred, data_range=1.0), abs=1e-10)
    assert psnr_rgb(pred, hq, 2) == pytest.approx(
        peak_signal_noise_ratio(hq[2:-2, 2:-2], pred[2:-2, 2:-2], data_range=1.0), abs=1e-10
    )


def test_psnr_y_by_hand(pair):
    pred, hq = pair
    y_pred = 16 + 65.481 * pred[..., 0] + 128.553 * pred[..., 1] + 24.966 * pred[..., 2]
    y_hq = 16 + 65.481 * hq[..., 0] + 128.553 * hq[..., 1] + 24.966 * hq[..., 2]
    mse = np.mean((y_pred[3:-3, 3:-3] - y_hq[3:-3, 3:-3]) ** 2)
    assert psnr_y(pred, hq, 3) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-10)


def test_psnr_known_value():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)
    assert psnr(a, b, 1.0) == pytest.approx(20.0)


def test_identical_images(pair):
    _, hq = pair
    assert psnr(hq, hq, 1.0) == math.inf
    assert psnr_y(hq, hq, 4) == math.inf
    assert psnr_rgb(hq, hq) == math.inf
    assert ssim(hq, hq, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim_y(hq, hq, 4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_on_valid_region(pair):
    # skimage pads (reflect) before filtering, then crops (win_size - 1) // 2 = 5 px before averaging: the same
    # valid region and the same normalised Gaussian (truncate 3.5 -> radius 5), so only rounding differs.
    pred, hq = pair
    y_pred, y_hq = rgb_to_y(pred), rgb_to_y(hq)
    ref = structural_similarity(
        y_hq, y_pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    ours = ssim(y_pred, y_hq, 255.0)
    assert ours == pytest.approx(ref, abs=1e-9)
    assert ssim_y(pred, hq) == pytest.approx(ours, abs=1e-12)
    assert 0.0 < ours < 1.0


def test_ssim_rgb_is_channel_mean(pair):
    pred, hq = pair
    per_channel = [ssim(pred[..., c], hq[..., c], 1.0) for c in range(3)]
    assert ssim(pred, hq, 1.0) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_ssim_drops_with_noise(pair):
    _, hq = pair
    rng = np.random.default_rng(1)
    values = [ssim_y(np.clip(hq + rng.normal(0, s, hq.shape), 0, 1), hq) for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]


def test_ssim_rejects_small_images():
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))


def test_shape_mismatch_is_an_error(pair):
    pred, hq = pair
    with pytest.raises(InputError, match="differ in shape"):
        psnr_y(pred[:-1], hq)


def test_crop_border_and_modcrop():
    arr = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    assert crop_border(arr, 0) is arr
    np.testing.assert_array_equal(crop_border(arr, 2), arr[2:5, 2:8])
    assert modcrop_array(arr, 4).shape == (4, 8, 3)
    assert modcrop_array(arr, 1).shape == arr.shape
    with pytest.raises(InputError):
        crop_border(arr, 4)


def test_psnr_in_box_only_sees_the_box(pair):
    pred, hq = pair
    spoilt = pred.copy()
    spoilt[:10, :10] = 0.0  # outside the box: must not matter
    box = (20, 15, 40, 35)
    expected = psnr(rgb_to_y(pred[15:35, 20:40]), rgb_to_y(hq[15:35, 20:40]), 255.0)
    assert psnr_in_box(spoilt, hq, box) == pytest.approx(expected, abs=1e-12)
    assert psnr_in_box(spoilt, hq, (0, 0, 10, 10)) < expected
    with pytest.raises(InputError, match="empty"):
        psnr_in_box(pred, hq, (10, 10, 10, 20))


@pytest.mark.skipif(not SET5.is_dir(), reason="shared Set5 benchmark images not present")
def test_set5_bicubic_x4_anchor():
    """Pillow BICUBIC x4 down and up on Set5 must reproduce the 28.43 dB of ../shared/README.md."""
    psnrs, ssims = [], []
    for path in sorted(SET5.glob("*.png")):
        hq = modcrop_array(np.asarray(Image.open(path).convert("RGB")), 4)
        h, w = hq.shape[:2]
        img = Image.fromarray(hq)
        up = img.resize((w // 4, h // 4), Image.BICUBIC).resize((w, h), Image.BICUBIC)
        pred, target = np.asarray(up) / 255.0, hq / 255.0
        psnrs.append(psnr_y(pred, target, 4))
        ssims.append(ssim_y(pred, target, 4))
    assert len(psnrs) == 5
    assert np.mean(psnrs) == pytest.approx(28.43, abs=0.05)
    assert np.mean(ssims) == pytest.approx(0.8104, abs=0.005)  # published (MATLAB imresize) bicubic SSIM
