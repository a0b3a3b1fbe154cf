"""Pixel, gram and feature losses on a tiny random VGG-like stack; one check on the real VGG16 file."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decrappify import weights as weights_io
from decrappify.errors import ConfigError, WeightsError
from decrappify.train.losses import (
    FeatureLoss,
    PixelLoss,
    calibrate_feature_weights,
    create_feature_loss,
    gram_matrix,
)

TINY_LAYERS = (1, 4, 7)  # the ReLUs before each pool of the stack below
TERM_KEYS = {"pixel", "feat_0", "feat_1", "feat_2", "gram_0", "gram_1", "gram_2"}


def tiny_vgg() -> nn.Sequential:
    """A VGG-shaped stack (conv, in-place ReLU, pool) with 8-16 channels: fast, random, seeded."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True),
    )  # fmt: skip


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    hq = torch.rand(2, 3, 32, 32, generator=gen)
    pred = (hq + 0.1 * torch.randn(hq.shape, generator=gen)).clamp(0, 1)
    return pred, hq


def tiny_loss(**kwargs) -> FeatureLoss:
    kwargs.setdefault("feature_weights", (1.0, 2.0, 3.0))
    kwargs.setdefault("gram_weights", (10.0, 20.0, 30.0))
    return FeatureLoss(tiny_vgg(), TINY_LAYERS, **kwargs)


def test_pixel_loss_values():
    pred = torch.tensor([0.0, 0.5, 1.0])
    hq = torch.tensor([0.0, 0.0, 0.5])
    assert PixelLoss("l1")(pred, hq).item() == pytest.approx(1.0 / 3)
    assert PixelLoss("mse")(pred, hq).item() == pytest.approx(0.5 / 3)
    with pytest.raises(ConfigError, match="choose one of: l1, mse"):
        PixelLoss("l3")


def test_weighted_pixel_loss_is_the_weighted_mean():
    pred = torch.zeros(1, 3, 2, 2)
    hq = torch.zeros(1, 3, 2, 2)
    hq[..., 0, 0] = 1.0  # only the top-left pixel is wrong, by 1 in each channel
    weight = torch.ones(1, 1, 2, 2)
    assert PixelLoss("l1")(pred, hq, weight).item() == pytest.approx(PixelLoss("l1")(pred, hq).item())
    weight[..., 0, 0] = 5.0  # the wrong pixel counts 5 times: 5 of 5 + 3 weights
    assert PixelLoss("l1")(pred, hq, weight).item() == pytest.approx(5.0 / 8.0)
    assert PixelLoss("mse")(pred, 2 * hq, weight).item() == pytest.approx(4 * 5.0 / 8.0)


def test_gram_matrix_shape_normalisation_and_symmetry():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 4, 6, generator=gen)
    g = gram_matrix(x)
    assert g.shape == (2, 5, 5)
    torch.testing.assert_close(g, g.transpose(1, 2))
    flat = x[1].reshape(5, -1)
    torch.testing.assert_close(g[1, 2, 3], (flat[2] * flat[3]).sum() / (5 * 4 * 6))
    assert gram_matrix(torch.ones(1, 2, 3, 3))[0, 0, 1].item() == pytest.approx(9 / 18)


def test_terms_keys_and_total(images):
    pred, hq = images
    total, terms = tiny_loss()(pred, hq)
    assert set(terms) == TERM_KEYS
    torch.testing.assert_close(total, sum(terms.values()))
    assert all(v.ndim == 0 and v.item() > 0 for v in terms.values())


def test_terms_are_weighted(images):
    pred, hq = images
    loss = tiny_loss(pixel_weight=2.0)
    raw = loss.raw_terms(pred, hq)
    _, terms = loss(pred, hq)
    torch.testing.assert_close(terms["pixel"], 2.0 * raw["pixel"])
    torch.testing.assert_close(terms["feat_2"], 3.0 * raw["feat_2"])
    torch.testing.assert_close(terms["gram_1"], 20.0 * raw["gram_1"])
    torch.testing.assert_close(raw["pixel"], F.l1_loss(pred, hq))


def test_identical_images_give_zero(images):
    _, hq = images
    total, terms = tiny_loss()(hq, hq)
    assert total.item() == 0.0
    assert all(v.item() == 0.0 for v in terms.values())


def test_loss_grows_with_noise(images):
    _, hq = images
    loss = tiny_loss()
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(hq.shape, generator=gen)
    results = [loss((hq + s * noise).clamp(0, 1), hq) for s in (0.02, 0.1, 0.3)]
    totals = [total.item() for total, _ in results]
    assert totals[0] < totals[1] < totals[2]
    for key in ("feat_0", "feat_2", "gram_0"):
        values = [terms[key].item() for _, terms in results]
        assert values[0] < values[1] < values[2], key


def test_backbone_frozen_and_gradient_reaches_pred(images):
    pred, hq = images
    loss = tiny_loss()
    loss.train()
    assert not loss.vgg.training
    assert not any(p.requires_grad for p in loss.parameters())
    pred = pred.clone().requires_grad_(True)
    total, _ = loss(pred, hq)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.vgg.parameters())


def test_stops_at_the_deepest_layer():
    loss = FeatureLoss(tiny_vgg(), (1, 4), (1.0, 1.0), (1.0, 1.0))
    assert len(loss.vgg) == 5  # layers 5.. are neither kept nor run
    calls = []
    deeper = tiny_vgg()
    deeper[7].register_forward_hook(lambda *_: calls.append(1))
    FeatureLoss(deeper, (1, 4), (1.0, 1.0), (1.0, 1.0))(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert calls == []


def test_bad_layer_ids_and_weight_counts():
    with pytest.raises(ConfigError, match="must lie in"):
        FeatureLoss(tiny_vgg(), (1, 40), (1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ConfigError, match="3 layers but 2 feature weights"):
        FeatureLoss(tiny_vgg(), TINY_LAYERS, (1.0, 1.0), (1.0, 1.0, 1.0))


def test_from_fastai_weights():
    loss = FeatureLoss.from_fastai_weights(tiny_vgg(), TINY_LAYERS)
    assert loss.feature_weights == (5.0, 15.0, 2.0)
    assert loss.gram_weights == pytest.approx((5e3 * 25, 5e3 * 225, 5e3 * 4))


def test_calibration_gives_the_chosen_ratios(images):
    pred, hq = images
    feature_ratios, gram_ratios = (1.0, 3.0, 0.4), (0.1, 0.9, 0.02)
    cal = calibrate_feature_weights(tiny_vgg(), pred, hq, feature_ratios, gram_ratios, TINY_LAYERS)
    assert json.loads(json.dumps(cal)) == cal  # plain JSON types, stored as is in the training config
    assert cal["layer_ids"] == list(TINY_LAYERS)
    loss = FeatureLoss(tiny_vgg(), **cal)
    assert loss.config() == cal
    _, terms = loss(pred, hq)
    pixel = terms["pixel"].item()
    for i in range(3):
        assert terms[f"feat_{i}"].item() == pytest.approx(feature_ratios[i] * pixel, rel=1e-4)
        assert terms[f"gram_{i}"].item() == pytest.approx(gram_ratios[i] * pixel, rel=1e-4)


def test_calibration_rejects_identical_batch(images):
    _, hq = images
    with pytest.raises(ConfigError, match="must differ"):
        calibrate_feature_weights(tiny_vgg(), hq, hq, layer_ids=TINY_LAYERS)


def test_create_feature_loss_without_weights_says_how(monkeypatch, tmp_path):
    monkeypatch.delenv(weights_io.VGG_WEIGHTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing is searched for, wherever the command runs
    with pytest.raises(WeightsError, match="feature loss: give the config key loss.vgg_weights.*DECRAPPIFY_VGG_W"):
        create_feature_loss()
    with pytest.raises(WeightsError, match="not found"):
        create_feature_loss(tmp_path / "missing.safetensors")


def test_create_feature_loss_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        create_feature_loss(weights={"feature_weight": [1, 2, 3]})
    with pytest.raises(ConfigError, match="differ"):
        create_feature_loss(layer_ids=(8, 15), weights={"layer_ids": [8, 15, 22]})


def _vgg16_file():
    """$DECRAPPIFY_VGG_WEIGHTS (tests/conftest.py points it at ../shared/weights when that file exists)."""
    try:
        return weights_io.default_vgg16_weights()
    except WeightsError:
        return None


@pytest.mark.skipif(_vgg16_file() is None, reason="no VGG16 weights ($DECRAPPIFY_VGG_WEIGHTS)")
def test_real_vgg16_loss(images):
    _, hq = images
    loss = create_feature_loss()
    assert len(loss.vgg) == 23
    total_same, _ = loss(hq, hq)
    assert total_same.item() == 0.0
    gen = torch.Generator().manual_seed(4)
    noise = torch.randn(hq.shape, generator=gen)
    noisy = [(hq + s * noise).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    totals = [loss(x, hq)[0].item() for x in noisy]
    assert 0 < totals[0] < totals[1] < totals[2]
    cal = calibrate_feature_weights(loss.vgg, noisy[1], hq)
    _, terms = create_feature_loss(weights=cal)(noisy[1], hq)
    assert terms["feat_1"].item() == pytest.approx(3.0 * terms["pixel"].item(), rel=1e-3)
    assert terms["gram_2"].item() == pytest.approx(0.02 * terms["pixel"].item(), rel=1e-3)


def test_feature_before_an_inplace_relu_is_kept_intact(images):
    _, hq = images
    seq = tiny_vgg()
    loss = FeatureLoss(seq, (0, 1), (1.0, 1.0), (1.0, 1.0))
    conv_out, relu_out = loss.extract(hq)
    expected = seq[0]((hq - loss.extractor.mean) / loss.extractor.std)
    torch.testing.assert_close(conv_out, expected)  # still has its negative values
    assert conv_out.min() < 0 and relu_out.min() >= 0
