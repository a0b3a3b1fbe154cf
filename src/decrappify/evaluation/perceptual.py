"""A perceptual distance between an output and its truth, from the feature-loss network's VGG16 features.

This is **not LPIPS**. LPIPS (Zhang et al. 2018) learns a weight per channel on human similarity judgements and
ships those weights with ImageNet VGG/AlexNet; neither is available offline here. What is computed is the
formula LPIPS builds on, with uniform weights (the paper's unlearned "baseline" variant): at each of VGG16's
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, unit-normalise every position's feature vector over channels,
take the squared Euclidean difference, average over positions; then average over the five layers. 0 means
identical features; the range is [0, 4]. Numbers are comparable between methods scored with the same weights
file, never with published LPIPS figures.

The network is the one the feature loss uses (`weights.default_vgg16_weights()`: `$DECRAPPIFY_VGG_WEIGHTS` or the
shared BSDS500-tuned VGG16), so a model trained with the feature loss is partly scored on what it optimised:
read this distance next to PSNR/SSIM and the pictures, not alone. Cost: a VGG16 forward pass, about 0.6 GFLOP
per pixel (about 2 s per BSD100 image on 2 busy CPU cores); memory about 250 MB per megapixel.
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
from decrappify.errors import InputError, WeightsError
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, create_backbone

log = logging.getLogger(__name__)

#: The VGG16 taps LPIPS uses (the ReLU before each max-pool).
LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_EPS = 1e-10


@functools.lru_cache(maxsize=2)
def _load_vgg16(path: str) -> VGGFeatures:
    """VGG16 features from a weights file, loaded once per process (evaluate may build several distances)."""
    vgg = create_backbone("vgg16")
    weights_io.load_into(
        vgg, weights_io.load_state_dict_file(path), what=path, ignore_prefixes=("classifier.",)
    )
    return vgg.eval().requires_grad_(False)


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
        self.vgg = vgg.eval().requires_grad_(False)
        self.layers = tuple(layers)
        for layer in self.layers:
            vgg.layer_index(layer)  # ConfigError listing the names for an unknown layer
        self.source = source
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @classmethod
    def from_weights(cls, path: str | Path | None = None) -> PerceptualDistance:
        """VGG16 from ``path`` (default: :func:`weights.default_vgg16_weights`); ``WeightsError`` if none exists."""
        path = path or weights_io.default_vgg16_weights()
        if path is None:
            raise WeightsError(
                f"no VGG16 weights for the perceptual distance: set ${weights_io.VGG_WEIGHTS_ENV} to a "
                f".safetensors/.pth file in torchvision's layout ({weights_io.PRETRAINED['vgg16'].url} works)"
            )
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
        usable = []
        for layer in self.layers:
            index = self.vgg.layer_index(layer)
            pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in self.vgg.features[:index])
            if min(height, width) >> pools >= 1:
                usable.append(layer)
        return usable

    def _features(self, rgb: np.ndarray, border: int, name: str) -> list[Tensor]:
        x = _to_tensor(rgb, name)
        if border:
            x = x[..., border:-border, border:-border]
        if 0 in x.shape:
            raise InputError(None, f"{name}: nothing left after cropping a {border}-pixel border")
        layers = self._usable_layers(*x.shape[-2:])
        with torch.inference_mode():
            feats = self.vgg.extract((x - self.mean) / self.std, layers)
            return [f / (f.norm(dim=1, keepdim=True) + _EPS) for f in feats]


def default_perceptual() -> PerceptualDistance | None:
    """The distance on the default VGG16 weights, or ``None`` (logged) when no weights file is available."""
    if weights_io.default_vgg16_weights() is None:
        log.info("perceptual distance skipped: no VGG16 weights (set $%s)", weights_io.VGG_WEIGHTS_ENV)
        return None
    return PerceptualDistance.from_weights()
