"""Colourisation as classification over quantised a*b* (Zhang, Isola & Efros, "Colorful Image Colorization", 2016).

A regression of a*b* with L1 or L2 collapses to the mean of the plausible colours, which for most objects is a
brownish grey. Zhang et al. predict instead a distribution over a grid of a*b* bins, learn it with a cross-entropy
against soft targets, weight rare colours up (class rebalancing), and read a colour out of the distribution with
the *annealed mean*: the mean of the distribution sharpened by a temperature T (T = 1: the mean, desaturated;
T -> 0: the mode, vivid but patchy; they use 0.38). This module holds those pieces as pure torch functions:

- CIELAB in torch (:func:`rgb_to_lab`, :func:`lab_to_rgb`): sRGB, D65, the formulas of scikit-image's
  ``rgb2lab``/``lab2rgb``, which ``evaluation.metrics.ab_error`` uses, so training and scoring agree;
- the bins (:func:`ab_bin_centres`): the points of a ``bin_size`` grid that some sRGB colour quantises to (261
  at 10 units; Zhang's 313 came from ImageNet's occurrences on a slightly different gamut);
- soft targets (:func:`soft_encode`: each pixel's 5 nearest bins with Gaussian weights, sigma 5),
  class-rebalancing weights from a prior (:func:`ab_histogram`, :func:`rebalance_weights`), and decoding
  (:func:`annealed_mean`).

The model that predicts the bins is :class:`decrappify.nn.ab_unet.AbUnet`; the loss is
``decrappify.train.losses.AbClassificationLoss``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

#: sRGB (linear) -> XYZ and back, and the D65 white point: scikit-image's constants.
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
RGB_FROM_XYZ = tuple(map(tuple, torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64)).tolist()))
D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # CIE's (6/29)**3, as scikit-image rounds it
_KAPPA = 7.787  # the slope of the linear part of f, as scikit-image rounds it
DEFAULT_BIN_SIZE = 10.0
DEFAULT_NEIGHBOURS = 5
DEFAULT_SIGMA = 5.0
DEFAULT_TEMPERATURE = 0.38
DEFAULT_REBALANCE = 0.5
_GAMUT_LEVELS = 64  # sRGB levels per channel sampled to find the bins a colour can fall in


def _constant(values: tuple, like: Tensor) -> Tensor:
    """A float32 constant on ``like``'s device (made there, so it works under a meta-device context too)."""
    return torch.tensor(values, dtype=torch.float32, device=like.device)


def _mix(x: Tensor, matrix: tuple) -> Tensor:
    """A 3 x 3 colour matrix applied to (N, 3, H, W) as a 1 x 1 convolution (exports to ONNX, any layout)."""
    return F.conv2d(x, _constant(matrix, x).view(3, 3, 1, 1))


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIELAB (L in [0, 100], a*, b*), computed in fp32. No gradients needed."""
    rgb = rgb.float().clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _mix(linear, XYZ_FROM_RGB) / _constant(D65_WHITE, rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """(N, 3, H, W) CIELAB -> sRGB clipped to [0, 1] (scikit-image's ``lab2rgb``), in fp32."""
    lab = lab.float()
    fy = (lab[:, 0:1] + 16.0) / 116.0
    fx = fy + lab[:, 1:2] / 500.0
    fz = (fy - lab[:, 2:3] / 200.0).clamp_min(0.0)
    f = torch.cat([fx, fy, fz], dim=1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _KAPPA) * _constant(D65_WHITE, lab).view(1, 3, 1, 1)
    linear = _mix(xyz, RGB_FROM_XYZ)
    srgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return srgb.clamp(0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _centres(bin_size: float) -> Tensor:
    levels = torch.linspace(0.0, 1.0, _GAMUT_LEVELS, device="cpu")  # on the CPU even under a meta-device context
    cube = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(cube)[0, 1:, :, 0].t()  # every sampled sRGB colour's a*b*
    cells = torch.unique(torch.round(ab / bin_size), dim=0)  # sorted by a, then b
    return cells * bin_size + 0.0  # + 0.0 turns the -0.0 of rounding into 0.0


def ab_bin_centres(bin_size: float = DEFAULT_BIN_SIZE) -> Tensor:
    """(Q, 2) a*b* bin centres: the points of a ``bin_size`` grid (through 0) that some sRGB colour rounds to.

    Found by converting a 64-level sample of the sRGB cube; Q = 261 for 10-unit bins. Sorted by a*, then b*.
    """
    if not bin_size > 0:
        raise ValueError(f"bin_size must be > 0, got {bin_size!r}")
    return _centres(float(bin_size)).to(torch.empty(0).device, copy=True)  # the default device (meta when sizing)


def _squared_distances(ab: Tensor, centres: Tensor) -> Tensor:
    """(M, 2) x (Q, 2) -> (M, Q) squared a*b* distances (fp32)."""
    return torch.cdist(ab.float(), centres.float()).square()


def soft_encode(
    ab: Tensor, centres: Tensor, neighbours: int = DEFAULT_NEIGHBOURS, sigma: float = DEFAULT_SIGMA
) -> tuple[Tensor, Tensor]:
    """Each colour's soft target: its ``neighbours`` nearest bins (indices, nearest first) and their Gaussian
    weights (``sigma`` in a*b* units, summing to 1 per colour). ``ab``: (M, 2); returns two (M, neighbours)."""
    distances, indices = _squared_distances(ab, centres).topk(neighbours, dim=1, largest=False, sorted=True)
    weights = torch.exp(-(distances - distances[:, :1]) / (2.0 * sigma * sigma))  # shifted: no underflow
    return indices, weights / weights.sum(dim=1, keepdim=True)


def ab_histogram(ab: Tensor, centres: Tensor, chunk: int = 65536) -> Tensor:
    """(Q,) counts of the colours ``ab`` (M, 2) by nearest bin, in float64."""
    counts = torch.zeros(len(centres), dtype=torch.float64)
    for start in range(0, len(ab), chunk):
        nearest = _squared_distances(ab[start : start + chunk], centres).argmin(dim=1)
        counts += torch.bincount(nearest, minlength=len(centres)).double()
    return counts


def rebalance_weights(
    counts: Tensor, centres: Tensor, rebalance: float = DEFAULT_REBALANCE, sigma: float = DEFAULT_SIGMA
) -> Tensor:
    """Zhang et al.'s class-rebalancing weights: w ~ 1 / ((1 - lambda) p~ + lambda / Q), scaled so that their
    mean under p~ is 1 (the loss keeps its scale). p~ is the prior ``counts`` normalised and smoothed with a
    Gaussian of ``sigma`` a*b* units; ``rebalance`` is lambda (0: fully rebalanced, 1: no rebalancing)."""
    prior = counts.double() / counts.double().sum().clamp_min(1e-12)
    kernel = torch.exp(-_squared_distances(centres, centres).double() / (2.0 * sigma * sigma))
    smoothed = kernel @ prior
    smoothed = smoothed / smoothed.sum()
    weights = 1.0 / ((1.0 - rebalance) * smoothed + rebalance / len(centres))
    return (weights / (smoothed * weights).sum()).float()


def annealed_mean(logits: Tensor, centres: Tensor, temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """(N, Q, h, w) bin logits -> (N, 2, h, w) a*b*: the mean of softmax(logits / T) over the bin centres.

    ``softmax(log p / T)`` is the distribution p re-normalised after raising it to 1/T (Zhang et al.'s annealed
    mean); computed in fp32.
    """
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return F.conv2d(probabilities, centres.float().t().reshape(2, -1, 1, 1))
