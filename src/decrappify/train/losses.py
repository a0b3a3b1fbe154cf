"""Training losses: pixel, fastai's feature + gram ("perceptual") loss with weights fitted to the backbone, the
adversarial loss of GAN fine-tuning (with the critic's accuracy, and the generator's feature + adversarial sum), and
colourisation's class-rebalanced cross-entropy over a*b* bins (:class:`AbClassificationLoss`).

fastai's lesson-7 weights (5 / 15 / 2 for the features, 5e3 * w^2 for the gram matrices) were tuned to VGG16-BN's
activation scale. A term's size follows the backbone's activations (a gram matrix their square), so on another
backbone the same constants let one term swamp the rest (figures: docs/benchmarks/vgg-features.md). So the
weights here are *calibrated*: each raw term is computed on bicubic outputs vs truth and given the weight that makes
it a chosen multiple of the pixel loss (:func:`calibrate_feature_weights`); the trainer stores the result in its
config. Every term is returned separately so it can be logged.

The VGG features come from :class:`~decrappify.nn.feature_extractor.VGGFeatureExtractor`, the same extraction the
perceptual distance of ``evaluate`` uses, and the weights file from :func:`decrappify.weights.load_vgg16_features`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decrappify import weights as weights_io
from decrappify.errors import ConfigError
from decrappify.nn import ab_bins
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD
from decrappify.nn.feature_extractor import VGGFeatureExtractor, features_stack

log = logging.getLogger(__name__)

#: relu2_2, relu3_3, relu4_3 of torchvision's ``vgg16().features`` (the layers before the 2nd-4th max-pool).
DEFAULT_LAYER_IDS = (8, 15, 22)
#: The calibration's targets: each term as a multiple of the pixel L1 on bicubic outputs. The gram terms get a
#: small share: when they dominate the loss, training covers the picture in a checkerboard
#: (docs/benchmarks/vgg-features.md).
DEFAULT_FEATURE_RATIOS = (1.0, 3.0, 0.4)
DEFAULT_GRAM_RATIOS = (0.1, 0.9, 0.02)
#: What calibration with those ratios gives for the BSDS500-tuned VGG16 file (vgg16_hed_bsds500.safetensors,
#: per-layer rescaled) on bicubic x4 outputs of 96-pixel BSDS500 crops (docs/benchmarks/vgg-features.md).
#: The defaults when no calibrated weights are given; any other weights file must be calibrated again.
HED_VGG16_FEATURE_WEIGHTS = (0.056, 0.16, 0.021)
HED_VGG16_GRAM_WEIGHTS = (0.54, 11.4, 0.44)

PIXEL_KINDS = {"l1": F.l1_loss, "mse": F.mse_loss}
_CONFIG_KEYS = ("layer_ids", "feature_weights", "gram_weights", "pixel_weight", "pixel_kind")


class PixelLoss(nn.Module):
    """Mean absolute (``"l1"``) or squared (``"mse"``) error between ``pred`` and ``hq``."""

    def __init__(self, kind: str = "l1"):
        super().__init__()
        if kind not in PIXEL_KINDS:
            raise ConfigError(f"unknown pixel loss '{kind}'; choose one of: {', '.join(PIXEL_KINDS)}")
        self.kind = kind

    def forward(self, pred: Tensor, hq: Tensor, weight: Tensor | None = None) -> Tensor:
        """The mean error, or with `weight` (N x 1 x H x W, > 0) the weighted mean: sum(w * e) / sum(w).

        Dividing by the weights' sum keeps the loss on the unweighted scale whatever share of a batch is
        weighted up, so the learning rate means the same with and without weights.
        """
        if weight is None:
            return PIXEL_KINDS[self.kind](pred, hq)
        error = PIXEL_KINDS[self.kind](pred, hq, reduction="none")
        weight = weight.to(error.dtype).expand_as(error)
        return (error * weight).sum() / weight.sum()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class BceDiceLoss(nn.Module):
    """Segmentation: binary cross-entropy on logits plus the soft Dice loss, `(total, {"bce", "dice"})`.

    BCE scores each pixel on its own, so on pictures where text covers a few percent it is content with a timid
    mask; Dice (1 - 2|P.T| / (|P| + |T|), on probabilities, over the whole batch) scores the overlap and is blind to
    the background's size. The sum trains both. The batch, not each image, is Dice's unit: a crop without text
    then counts by its false positives instead of giving 0/0. Computed in fp32 whatever the network ran in.
    """

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0):
        super().__init__()
        self.bce_weight, self.dice_weight, self.smooth = float(bce_weight), float(dice_weight), float(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with fp32_arithmetic(logits):
            logits, target = logits.float(), target.float()
            bce = F.binary_cross_entropy_with_logits(logits, target)
            prob = torch.sigmoid(logits)
            overlap = (prob * target).sum()
            dice = 1.0 - (2.0 * overlap + self.smooth) / (prob.sum() + target.sum() + self.smooth)
            terms = {"bce": bce * self.bce_weight, "dice": dice * self.dice_weight}
        return terms["bce"] + terms["dice"], terms

    def extra_repr(self) -> str:
        return f"bce_weight={self.bce_weight}, dice_weight={self.dice_weight}"


def fp32_arithmetic(like: Tensor) -> torch.autocast:
    """Autocast switched off on `like`'s device: what a loss computes inside it stays in fp32."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def gram_matrix(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C) channel correlations divided by C*H*W, as fastai computes them (texture)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class FeatureLoss(nn.Module):
    """pixel + sum_i wf_i * L1(feat_i) + sum_i wg_i * L1(gram_i) on a frozen feature extractor.

    ``forward(pred, hq)`` returns ``(total, terms)`` where ``terms`` holds the weighted ``"pixel"``,
    ``"feat_<i>"`` and ``"gram_<i>"`` values (their sum is ``total``). ``vgg_features`` is a ``VGGFeatures`` or a
    plain ``nn.Sequential``; ``layer_ids`` are indices in it. Only the layers up to the deepest of ``layer_ids``
    are kept and run (:class:`VGGFeatureExtractor`). The target's features are computed without gradients.
    """

    def __init__(
        self,
        vgg_features: nn.Module,
        layer_ids: Sequence[int] = DEFAULT_LAYER_IDS,
        feature_weights: Sequence[float] = HED_VGG16_FEATURE_WEIGHTS,
        gram_weights: Sequence[float] = HED_VGG16_GRAM_WEIGHTS,
        pixel_weight: float = 1.0,
        pixel_kind: str = "l1",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        depth = len(features_stack(vgg_features))
        self.layer_ids = tuple(int(i) for i in layer_ids)
        if not self.layer_ids or min(self.layer_ids) < 0 or max(self.layer_ids) >= depth:
            raise ConfigError(f"feature loss layer_ids {self.layer_ids} must lie in 0..{depth - 1}")
        if len(feature_weights) != len(self.layer_ids) or len(gram_weights) != len(self.layer_ids):
            raise ConfigError(
                f"feature loss: {len(self.layer_ids)} layers but {len(feature_weights)} feature weights "
                f"and {len(gram_weights)} gram weights"
            )
        self.feature_weights = tuple(float(w) for w in feature_weights)
        self.gram_weights = tuple(float(w) for w in gram_weights)
        self.pixel_weight = float(pixel_weight)
        self.pixel = PixelLoss(pixel_kind)
        self.extractor = VGGFeatureExtractor(vgg_features, self.layer_ids, mean, std)

    @property
    def vgg(self) -> nn.Sequential:
        """The frozen VGG layers this loss runs (up to the deepest of ``layer_ids``): what calibration takes."""
        return self.extractor.stack

    @classmethod
    def from_fastai_weights(
        cls,
        vgg_features: nn.Module,
        layer_ids: Sequence[int] = DEFAULT_LAYER_IDS,
        weights: Sequence[float] = (5.0, 15.0, 2.0),
        gram_factor: float = 5e3,
    ) -> FeatureLoss:
        """fastai lesson 7's constants (w, and 5e3 * w^2 for gram): for reference only, tuned to VGG16-BN."""
        return cls(vgg_features, layer_ids, weights, [gram_factor * w * w for w in weights])

    def config(self) -> dict:
        """The JSON-serialisable weights (what :func:`calibrate_feature_weights` returns)."""
        return {
            "layer_ids": list(self.layer_ids),
            "feature_weights": list(self.feature_weights),
            "gram_weights": list(self.gram_weights),
            "pixel_weight": self.pixel_weight,
            "pixel_kind": self.pixel.kind,
        }

    def extract(self, x: Tensor) -> list[Tensor]:
        """Features of an image batch in [0, 1] at ``layer_ids`` (normalised first; stops at the deepest)."""
        return self.extractor(x)

    def raw_terms(self, pred: Tensor, hq: Tensor) -> dict[str, Tensor]:
        """Unweighted terms: pixel loss, L1 of each layer's features and of each layer's gram matrix."""
        with torch.no_grad():
            hq_feats = self.extract(hq)
        pred_feats = self.extract(pred)  # under the caller's autocast, if any: the network may run in bf16
        with fp32_arithmetic(pred):  # the loss itself is fp32: gram matrices sum many products
            terms = {"pixel": self.pixel(pred.float(), hq.float())}
            for i, (fp, fh) in enumerate(zip(pred_feats, hq_feats, strict=True)):
                fp, fh = fp.float(), fh.float()
                terms[f"feat_{i}"] = F.l1_loss(fp, fh)
                terms[f"gram_{i}"] = F.l1_loss(gram_matrix(fp), gram_matrix(fh))
        return terms

    def forward(self, pred: Tensor, hq: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raw = self.raw_terms(pred, hq)
        terms = {"pixel": raw["pixel"] * self.pixel_weight}
        for i in range(len(self.layer_ids)):
            terms[f"feat_{i}"] = raw[f"feat_{i}"] * self.feature_weights[i]
        for i in range(len(self.layer_ids)):
            terms[f"gram_{i}"] = raw[f"gram_{i}"] * self.gram_weights[i]
        total = torch.stack(list(terms.values())).sum()
        return total, terms

    def extra_repr(self) -> str:
        return (
            f"layer_ids={self.layer_ids}, feature_weights={self.feature_weights}, "
            f"gram_weights={self.gram_weights}, pixel_weight={self.pixel_weight}"
        )


def calibrate_feature_weights(
    vgg_features: nn.Module,
    lq_batch_upsampled: Tensor,
    hq_batch: Tensor,
    feature_ratios: Sequence[float] = DEFAULT_FEATURE_RATIOS,
    gram_ratios: Sequence[float] = DEFAULT_GRAM_RATIOS,
    layer_ids: Sequence[int] = DEFAULT_LAYER_IDS,
    pixel_kind: str = "l1",
) -> dict:
    """Weights making each term ``ratio * pixel loss`` on this batch (e.g. bicubic outputs vs truth).

    Returns plain floats and lists (JSON-serialisable) with the keys of :meth:`FeatureLoss.config`, so
    ``FeatureLoss(vgg, **result)`` rebuilds the loss and the trainer can store ``result`` in its config.
    """
    ones = [1.0] * len(layer_ids)
    if len(feature_ratios) != len(layer_ids) or len(gram_ratios) != len(layer_ids):
        raise ConfigError(
            f"calibration: need one feature ratio and one gram ratio per layer {tuple(layer_ids)}"
        )
    probe = FeatureLoss(vgg_features, layer_ids, ones, ones, pixel_kind=pixel_kind)
    probe = probe.to(hq_batch.device)
    with torch.no_grad():
        raw = {k: float(v) for k, v in probe.raw_terms(lq_batch_upsampled, hq_batch).items()}
    for name, value in raw.items():
        if not math.isfinite(value) or value <= 0.0:
            raise ConfigError(
                f"calibration: raw term {name} is {value}; the calibration batch must differ from its targets"
            )
    pixel = raw["pixel"]
    result = {
        "layer_ids": [int(i) for i in layer_ids],
        "feature_weights": [r * pixel / raw[f"feat_{i}"] for i, r in enumerate(feature_ratios)],
        "gram_weights": [r * pixel / raw[f"gram_{i}"] for i, r in enumerate(gram_ratios)],
        "pixel_weight": 1.0,
        "pixel_kind": pixel_kind,
    }
    log.info("feature loss calibrated: raw terms %s -> weights %s", raw, result)
    return result


def create_feature_loss(
    weights_path: str | Path | None = None,
    layer_ids: Sequence[int] | None = None,
    weights: Mapping | None = None,
) -> FeatureLoss:
    """A :class:`FeatureLoss` on VGG16 loaded from ``weights_path`` (default: ``$DECRAPPIFY_VGG_WEIGHTS``).

    ``weights`` is a dict as returned by :func:`calibrate_feature_weights` (or stored in a training config);
    without it the weights calibrated for the BSDS500-tuned VGG16 file are used. ``WeightsError`` saying how to
    give a file when there is none.
    """
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown feature loss keys {unknown}; valid keys: {', '.join(_CONFIG_KEYS)}")
    stored_ids = weights.pop("layer_ids", None)
    if layer_ids is not None and stored_ids is not None and list(layer_ids) != list(stored_ids):
        raise ConfigError(
            f"feature loss layer_ids {list(layer_ids)} differ from the weights' {list(stored_ids)}"
        )
    layer_ids = tuple(layer_ids or stored_ids or DEFAULT_LAYER_IDS)
    source = weights_io.resolve_vgg16_weights(
        weights_path, needed_for="the feature loss", how="the config key loss.vgg_weights"
    )
    vgg = weights_io.load_vgg16_features(source)
    log.info("feature loss: VGG16 features from %s, layers %s", source, layer_ids)
    return FeatureLoss(vgg, layer_ids, **weights)


# ------------------------------------------------------------------------------------------------ adversarial


class AdversarialLoss(nn.Module):
    """The standard (non-saturating) GAN loss on critic logits: binary cross-entropy, averaged over every patch.

    fastai's ``gan_loss_from_func`` with ``AdaptiveLoss(BCEWithLogitsLoss())``: the critic's loss is the mean of
    ``BCE(real, 1)`` and ``BCE(fake, 0)`` (so ln 2 = 0.693 means "cannot tell", and fastai's switcher threshold
    0.65 means "a little better than chance"); the generator's is ``BCE(fake, 1)``. ``real_label`` < 1 gives
    one-sided label smoothing (Salimans et al. 2016), which keeps an over-confident critic's gradients alive.
    """

    def __init__(self, real_label: float = 1.0):
        super().__init__()
        if not 0.5 < real_label <= 1.0:
            raise ConfigError(f"adversarial real_label must be in (0.5, 1], got {real_label}")
        self.real_label = float(real_label)

    def forward(self, logits: Tensor, target_is_real: bool) -> Tensor:
        logits = logits.float()  # a critic under bf16 autocast returns bf16 logits; the loss is fp32
        """BCE of ``logits`` (any shape) against "real" (``real_label``) or "fake" (0) for every element."""
        label = self.real_label if target_is_real else 0.0
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    def generator_loss(self, fake_logits: Tensor) -> Tensor:
        """What the generator minimises: the critic should call its outputs real (label 1, never smoothed)."""
        fake_logits = fake_logits.float()
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def critic_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """What the critic minimises: the mean of its real and fake BCEs (fastai's ``_loss_C``)."""
        return (self(real_logits, True) + self(fake_logits, False)) / 2

    def extra_repr(self) -> str:
        return f"real_label={self.real_label}"


def critic_accuracy(real_logits: Tensor, fake_logits: Tensor) -> float:
    """Fraction of patch opinions on the right side of 0 (real > 0, fake < 0), real and fake weighted equally."""
    real = (real_logits > 0).float().mean()
    fake = (fake_logits < 0).float().mean()
    return float((real + fake) / 2)


class GANGeneratorLoss(nn.Module):
    """content(pred, hq) + ``adversarial_weight`` * adversarial(critic(pred)), every term returned for logging.

    ``content`` is a ``(pred, hq) -> (total, terms)`` loss (:class:`FeatureLoss`, or the trainer's pixel wrapper).
    fastai weighted pixel/feature loss 50 : adversarial 1 (lesson 7), DeOldify 1 : 1.5 on a feature loss; the
    right weight depends on the content loss's scale, so it is a config value, not a constant here.
    """

    def __init__(
        self, content: nn.Module, adversarial_weight: float, adversarial: AdversarialLoss | None = None
    ):
        super().__init__()
        if not (math.isfinite(adversarial_weight) and adversarial_weight >= 0):
            raise ConfigError(f"adversarial weight must be a finite number >= 0, got {adversarial_weight}")
        self.content = content
        self.adversarial = adversarial or AdversarialLoss()
        self.adversarial_weight = float(adversarial_weight)

    def forward(self, pred: Tensor, hq: Tensor, fake_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        content, terms = self.content(pred, hq)
        adversarial = self.adversarial.generator_loss(fake_logits) * self.adversarial_weight
        terms = {**terms, "content": content, "adversarial": adversarial}
        return content + adversarial, terms


class AbClassificationLoss(nn.Module):
    """Colourisation as classification (Zhang et al. 2016): a class-rebalanced cross-entropy between the model's
    a*b* bin logits (N, Q, h, w) and soft-encoded targets from the truth ``hq`` (N, 3, H, W) in [0, 1].

    The truth's a*b* is averaged down to the logits' resolution (area), each pixel's target is its ``neighbours``
    nearest bins with Gaussian weights (``sigma``), and the pixel's cross-entropy is multiplied by the rebalancing
    weight of its nearest bin (``bin_weights``, from :func:`decrappify.nn.ab_bins.rebalance_weights`, whose mean
    under the prior is 1, so the loss keeps the cross-entropy's scale). Returns ``(total, {"ce": plain mean
    cross-entropy})``; computed in fp32 whatever the network ran in.
    """

    def __init__(
        self,
        bin_centres: Tensor,
        bin_weights: Tensor,
        neighbours: int = ab_bins.DEFAULT_NEIGHBOURS,
        sigma: float = ab_bins.DEFAULT_SIGMA,
    ):
        super().__init__()
        if bin_centres.ndim != 2 or bin_centres.shape[1] != 2 or bin_weights.shape != (len(bin_centres),):
            raise ConfigError(
                f"a*b* loss: {tuple(bin_centres.shape)} bin centres need (Q, 2) and {len(bin_centres)} weights, "
                f"got {tuple(bin_weights.shape)}"
            )
        self.register_buffer("bin_centres", bin_centres.float().clone())
        self.register_buffer("bin_weights", bin_weights.float().clone())
        self.neighbours, self.sigma = int(neighbours), float(sigma)

    def forward(self, logits: Tensor, hq: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if logits.ndim != 4 or logits.shape[1] != len(self.bin_centres):
            raise ConfigError(
                f"the ab_classification loss needs {len(self.bin_centres)} bin logits per pixel (an 'ab-unet' "
                f"model in training mode), got a tensor of shape {tuple(logits.shape)}"
            )
        with fp32_arithmetic(logits):
            ab = F.adaptive_avg_pool2d(ab_bins.rgb_to_lab(hq)[:, 1:], logits.shape[-2:])
            indices, weights = ab_bins.soft_encode(
                ab.permute(0, 2, 3, 1).reshape(-1, 2), self.bin_centres, self.neighbours, self.sigma
            )
            log_probs = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
            ce = -(weights * log_probs.gather(1, indices)).sum(dim=1)
            total = (self.bin_weights[indices[:, 0]] * ce).mean()
        return total, {"ce": ce.mean().detach()}

    def extra_repr(self) -> str:
        return f"bins={len(self.bin_centres)}, neighbours={self.neighbours}, sigma={self.sigma}"


def ab_prior(images: Iterable[np.ndarray], bin_centres: Tensor, shrink: int = 4) -> Tensor:
    """(Q,) counts of the training pictures' colours by nearest a*b* bin: the prior of class rebalancing.

    ``images``: H x W x 3 uint8 arrays; each is shrunk by ``shrink`` (area), as the loss's targets are at the
    model's reduced resolution, so the prior counts what the loss sees.
    """
    counts = torch.zeros(len(bin_centres), dtype=torch.float64)
    for image in images:
        rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        if shrink > 1 and min(rgb.shape[-2:]) >= shrink:
            rgb = F.avg_pool2d(rgb, shrink)
        ab = ab_bins.rgb_to_lab(rgb)[0, 1:].reshape(2, -1).t()
        counts += ab_bins.ab_histogram(ab, bin_centres)
    return counts
