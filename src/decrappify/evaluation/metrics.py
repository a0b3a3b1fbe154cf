"""Image-quality metrics with the super-resolution literature's conventions (BasicSR / the MATLAB reference).

Published tables score PSNR and SSIM on the BT.601 luma channel as MATLAB's `rgb2ycbcr` computes it (float, not
rounded, range 16..235), with `scale` pixels cropped from each border and SSIM taken over the *valid* region of an
11x11 Gaussian window. Small deviations from that convention (rounding Y, padding SSIM, another luma formula) move
results by 0.05-0.3 dB, which is the size of the differences between methods: so every number we report comes from
here. Inputs are H x W x 3 float arrays in [0, 1]; all arithmetic is float64.

For colourisation, PSNR says little (a plausible blue car scores worse than a grey one), so three colour measures
follow: colourfulness (Hasler & Suesstrunk 2003; what a viewer calls vivid, 0 for grey), the mean error in the
a*b* plane of CIELAB (how far the colours are from the truth, ignoring lightness), and hue agreement (the share of
colourful pixels given the right kind of colour, hue within 30 degrees). The torch-based perceptual
distance lives in `perceptual.py`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab

from decrappify.errors import InputError

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive)

# MATLAB rgb2ycbcr, R, G, B in [0, 1] -> Y in [16, 235].
_Y_OFFSET = 16.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _as_float64(arr: np.ndarray, name: str) -> np.ndarray:
    """Check that `arr` is an image array and return it as float64 (no copy when it already is)."""
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(None, f"{name}: expected an H x W or H x W x C image array, got shape {arr.shape}")
    return arr.astype(np.float64, copy=False)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise InputError(None, f"images differ in shape: {a.shape} vs {b.shape}")


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB's `rgb2ycbcr`: Y = 16 + 65.481 R + 128.553 G + 24.966 B, float64, not rounded."""
    rgb = _as_float64(rgb, "rgb_to_y")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(None, f"rgb_to_y: expected an H x W x 3 array, got shape {rgb.shape}")
    return rgb @ _Y_WEIGHTS + _Y_OFFSET


def crop_border(arr: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels on each side (the literature crops `scale` pixels before scoring)."""
    if border < 0:
        raise InputError(None, f"border must be >= 0, got {border}")
    if border == 0:
        return arr
    if arr.shape[0] <= 2 * border or arr.shape[1] <= 2 * border:
        raise InputError(None, f"image of shape {arr.shape[:2]} is too small to crop a {border}-pixel border")
    return arr[border:-border, border:-border, ...]


def modcrop_array(arr: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right edge so height and width are multiples of `scale` (as `degrade.modcrop` does)."""
    if scale < 1:
        raise InputError(None, f"scale must be >= 1, got {scale}")
    h, w = arr.shape[0] - arr.shape[0] % scale, arr.shape[1] - arr.shape[1] % scale
    return arr[:h, :w, ...]


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """10 log10(data_range^2 / MSE) in float64; `inf` for identical inputs."""
    a, b = _as_float64(a, "psnr"), _as_float64(b, "psnr")
    _check_same_shape(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def psnr_y(pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float:
    """PSNR on the MATLAB Y channel (range 255) after cropping `border` pixels: the papers' number."""
    _check_same_shape(np.asarray(pred), np.asarray(hq))
    return psnr(crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(hq), border), 255.0)


def psnr_rgb(pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float:
    """PSNR over the three RGB channels in [0, 1]; about 2 dB below `psnr_y` for the same output."""
    pred, hq = _as_float64(pred, "psnr_rgb"), _as_float64(hq, "psnr_rgb")
    _check_same_shape(pred, hq)
    return psnr(crop_border(pred, border), crop_border(hq, border), 1.0)


def psnr_in_box(pred: np.ndarray, hq: np.ndarray, box: Box) -> float:
    """Y-channel PSNR inside `box` (left, top, right, bottom, exclusive; hq pixels), e.g. a removed watermark."""
    _check_same_shape(np.asarray(pred), np.asarray(hq))
    left, top, right, bottom = (int(v) for v in box)
    height, width = np.asarray(hq).shape[:2]
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if right <= left or bottom <= top:
        raise InputError(None, f"box {tuple(box)} is empty inside a {width}x{height} image")
    return psnr(rgb_to_y(pred[top:bottom, left:right]), rgb_to_y(hq[top:bottom, left:right]), 255.0)


def _gaussian_valid(img: np.ndarray) -> np.ndarray:
    """Filter a 2-D image with the 11x11 sigma-1.5 Gaussian and keep only the valid region (shrinks by 10 px).

    The kernel is separable, so two 1-D passes; the padding `correlate1d` adds only touches the 5-pixel rim,
    which is cropped, so the result equals MATLAB's `filter2(w, img, 'valid')`.
    """
    radius = SSIM_WINDOW // 2
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2.0 * SSIM_SIGMA**2))
    kernel /= kernel.sum()
    out = ndimage.correlate1d(img, kernel, axis=0, mode="constant")
    out = ndimage.correlate1d(out, kernel, axis=1, mode="constant")
    return out[radius:-radius, radius:-radius]


def _ssim_2d(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = _gaussian_valid(a), _gaussian_valid(b)
    var_a = _gaussian_valid(a * a) - mu_a**2
    var_b = _gaussian_valid(b * b) - mu_b**2
    cov = _gaussian_valid(a * b) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004) over the valid region; H x W x C inputs are averaged over channels (BasicSR)."""
    a, b = _as_float64(a, "ssim"), _as_float64(b, "ssim")
    _check_same_shape(a, b)
    if a.shape[0] < SSIM_WINDOW or a.shape[1] < SSIM_WINDOW:
        raise InputError(
            None, f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[:2]}"
        )
    if a.ndim == 2:
        return _ssim_2d(a, b, data_range)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c], data_range) for c in range(a.shape[2])]))


def ssim_y(pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float:
    """SSIM on the MATLAB Y channel (range 255) after cropping `border` pixels: the papers' number."""
    _check_same_shape(np.asarray(pred), np.asarray(hq))
    return ssim(crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(hq), border), 255.0)


def _rgb(arr: np.ndarray, name: str) -> np.ndarray:
    arr = _as_float64(arr, name)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(None, f"{name}: expected an H x W x 3 array, got shape {arr.shape}")
    return arr


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb on the 0..255 scale.

    rg = R - G, yb = (R + G) / 2 - B; M = sqrt(var(rg) + var(yb)) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2). Exactly 0
    for any grey image. Their scale: 15 slightly, 33 moderately, 45 averagely, 59 quite, 82 highly, 109 extremely
    colourful. Computed on sRGB values as in the paper (no linearisation).
    """
    rgb = _rgb(rgb, "colourfulness") * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = math.sqrt(float(np.var(rg)) + float(np.var(yb)))
    mean = math.sqrt(float(np.mean(rg)) ** 2 + float(np.mean(yb)) ** 2)
    return spread + 0.3 * mean


def ab_error(pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float:
    """Mean Euclidean distance between the CIELAB a*b* of `pred` and `hq` (sRGB, D65; skimage's `rgb2lab`).

    The chroma part of Delta E 1976 per pixel, averaged: 0 for identical colours whatever the lightness; about
    2.3 is a just-noticeable difference. A greyscale guess scores the truth's mean chroma.
    """
    pred, hq = _rgb(pred, "ab_error"), _rgb(hq, "ab_error")
    _check_same_shape(pred, hq)
    pred, hq = crop_border(pred, border), crop_border(hq, border)
    diff = rgb2lab(np.clip(pred, 0.0, 1.0))[..., 1:] - rgb2lab(np.clip(hq, 0.0, 1.0))[..., 1:]
    return float(np.mean(np.sqrt(np.sum(diff**2, axis=-1))))


#: Hue agreement's settings (issue 18): the largest hue difference that agrees, and the truth's chroma below which
#: a pixel has no hue worth judging (C*ab 10 is a muted colour; about 2.3 is a just-noticeable difference).
HUE_TOLERANCE_DEGREES = 30.0
HUE_MIN_TRUTH_CHROMA = 10.0
#: A predicted pixel with less chroma than this has no hue: grey never agrees (atan2(0, 0) would call it red).
HUE_MIN_PRED_CHROMA = 1.0


def hue_agreement(pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float | None:
    """The share of pixels whose CIELAB hue (h_ab = atan2(b*, a*), the LCh hue) is within 30 degrees of the truth's,
    among the pixels whose true chroma C*ab is above 10; ``None`` when no pixel of the truth is that colourful.

    Colourfulness says how vivid a colourisation is and a*b* error how far off it is, but a vivid wrong colour
    and a timid right one can score alike on both; this says whether the colour is the right *kind*. A predicted
    pixel with chroma below 1 has no hue and does not agree, so a grey picture scores 0.
    """
    pred, hq = _rgb(pred, "hue_agreement"), _rgb(hq, "hue_agreement")
    _check_same_shape(pred, hq)
    pred, hq = crop_border(pred, border), crop_border(hq, border)
    pred_ab = rgb2lab(np.clip(pred, 0.0, 1.0))[..., 1:]
    true_ab = rgb2lab(np.clip(hq, 0.0, 1.0))[..., 1:]
    judged = np.hypot(true_ab[..., 0], true_ab[..., 1]) > HUE_MIN_TRUTH_CHROMA
    if not judged.any():
        return None
    pred_ab, true_ab = pred_ab[judged], true_ab[judged]
    difference = np.arctan2(pred_ab[:, 1], pred_ab[:, 0]) - np.arctan2(true_ab[:, 1], true_ab[:, 0])
    difference = np.abs((difference + np.pi) % (2 * np.pi) - np.pi)  # the shorter way round, in [0, pi]
    hued = np.hypot(pred_ab[:, 0], pred_ab[:, 1]) >= HUE_MIN_PRED_CHROMA
    return float(np.mean(hued & (difference <= np.deg2rad(HUE_TOLERANCE_DEGREES))))

