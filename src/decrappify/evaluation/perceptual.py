"""A perceptual distance between an output and its truth, from the feature-loss network's VGG16 features.

This is **not LPIPS**. LPIPS (Zhang et al. 2018) learns a weight per channel on human similarity judgements and
ships those weights with ImageNet VGG/AlexNet; neither is available offline here. What is computed is the
formula LPIPS builds on, with uniform weights (the paper's unlearned "baseline" variant): at each of VGG16's
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, unit-normalise every position's feature vector over channels,
take the squared Euclidean difference, average over positions; then average over the five layers. 0 means
identical features; the range is [0, 4]. Numbers are comparable between methods scored with the same weights
file, never with published LPIPS figures.

The network and the extraction are the feature loss's (`weights.load_vgg16_features`, `VGGFeatureExtractor`), on
the file given as `path`, else `$DECRAPPIFY_VGG_WEIGHTS`; nothing is searched for. So a model trained with the
feature loss is partly scored on what it optimised: read this distance next to PSNR/SSIM and the pictures, not
alone. It costs a VGG16 pass to relu5_3 per image and method, the slowest part of an evaluation on a CPU
(figures: docs/benchmarks/vgg-features.md).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from decrappify import weights as weights_io
from decrappify.errors import InputError
from decrappify.nn.backbones import VGGFeatures
from decrappify.nn.feature_extractor import VGGFeatureExtractor

log = logging.getLogger(__name__)

#: The VGG16 taps LPIPS uses (the ReLU before each max-pool).
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_EPS = 1e-10
#: How to give a weights file, for the error when there is none.
HOW_TO_GIVE_WEIGHTS = "--vgg-weights PATH to `decrappify evaluate` (loss.vgg_weights in a training config)"


@functools.lru_cache(maxsize=2)
def _load_vgg16(path: str) -> VGGFeatures:
    """VGG16 features loaded once per process and file: evaluate may build several distances. Distances only read
    the module, so sharing it is safe; the feature loss loads its own copy, since training moves it to a device."""
    return weights_io.load_vgg16_features(path)


def _to_tensor(rgb: np.ndarray, name: str) -> Tensor:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise InputError(None, f"{name}: expected an H x W x 3 image array, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)[None]


class PerceptualDistance:
    """Unweighted LPIPS-style distance on a VGG's features (see the module docstring: not LPIPS).

    ``reference(hq)`` computes the truth's features once, so ``distance(pred, ref)`` can score several methods
    against one image at the cost of one forward pass each; ``__call__(pred, hq)`` does both.
    Images are H x W x 3 float arrays in [0, 1]; ``border`` pixels are cropped from each side first.
    """

    def __init__(self, vgg: VGGFeatures, layers: Sequence[str | int] = LAYERS, source: str = ""):
        self.extractor = VGGFeatureExtractor(vgg, layers)  # ConfigError listing the names for an unknown layer
        self.layers = self.extractor.layers
        self.source = source

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> PerceptualDistance:
        """VGG16 from ``path``, else ``$DECRAPPIFY_VGG_WEIGHTS``; a ``WeightsError`` saying how to give one if
        neither names a file."""
        path = weights_io.resolve_vgg16_weights(path, needed_for="the perceptual distance", how=HOW_TO_GIVE_WEIGHTS)
        return cls(_load_vgg16(str(path)), source=str(path))

    def reference(self, hq: np.ndarray, border: int = 0) -> list[Tensor]:
        """The unit-normalised features of the truth at each layer."""
        return self._features(hq, border, "hq")

    def distance(self, pred: np.ndarray, reference: Sequence[Tensor], border: int = 0) -> float:
        """Distance of ``pred`` to features from :meth:`reference` (same size and border)."""
        feats = self._features(pred, border, "pred")
        per_layer = []
        for a, b in zip(feats, reference, strict=True):
            if a.shape != b.shape:
                raise InputError(None, f"perceptual distance: images differ in size ({a.shape} vs {b.shape})")
            per_layer.append(float(((a - b) ** 2).sum(dim=1).mean()))
        return float(np.mean(per_layer))

    def __call__(self, pred: np.ndarray, hq: np.ndarray, border: int = 0) -> float:
        return self.distance(pred, self.reference(hq, border), border)

    def _usable_layers(self, height: int, width: int) -> list[str | int]:
        """The layers an image this small still reaches (each max-pool halves it; a tiny crop skips relu5_3)."""
        return list(self.extractor.reached_layers(height, width))

    def _features(self, rgb: np.ndarray, border: int, name: str) -> list[Tensor]:
        x = _to_tensor(rgb, name)
        if border:
            x = x[..., border:-border, border:-border]
        if 0 in x.shape:
            raise InputError(None, f"{name}: nothing left after cropping a {border}-pixel border")
        layers = self._usable_layers(*x.shape[-2:])
        with torch.inference_mode():
            feats = self.extractor(x, layers)
            return [f / (f.norm(dim=1, keepdim=True) + _EPS) for f in feats]


def default_perceptual() -> PerceptualDistance | None:
    """The distance on ``$DECRAPPIFY_VGG_WEIGHTS``, or ``None`` (logged) when the variable is unset."""
    if weights_io.default_vgg16_weights() is None:
        log.info(
            "perceptual distance skipped: no VGG16 weights (give %s, or set $%s)",
            HOW_TO_GIVE_WEIGHTS,
            weights_io.VGG_WEIGHTS_ENV,
        )
        return None
    return PerceptualDistance.from_weights()
