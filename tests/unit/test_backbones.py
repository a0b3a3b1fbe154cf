"""Backbones keep torchvision's parameter names and shapes, and load weights strictly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from decrappify.errors import ConfigError, WeightsError
from decrappify.nn.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, ResNet, VGGFeatures, create_backbone
from decrappify.nn.feature_extractor import VGGFeatureExtractor
from decrappify.weights import default_vgg16_weights, load_into, load_state_dict_file, load_vgg16_features

# parameter counts of torchvision's models (ResNets with fc, VGG features only), and a few keys with shapes
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg16": 14_714_688,
    "vgg16_bn": 14_723_136,
    "vgg19": 20_024_384,
}
TORCHVISION_KEYS = {
    "resnet18": {"layer2.0.downsample.0.weight": (128, 64, 1, 1), "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "bn1.running_var": (64,)},
    "resnet50": {"layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer4.2.conv3.weight": (2048, 512, 1, 1),
                 "fc.weight": (1000, 2048)},
    "vgg16": {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3)},
    "vgg16_bn": {"features.1.running_mean": (64,), "features.40.weight": (512, 512, 3, 3),
                 "features.41.weight": (512,)},
    "vgg19": {"features.34.weight": (512, 512, 3, 3)},
}  # fmt: skip
TINY = {"resnet18": {"width": 4}, "resnet34": {"width": 4}, "resnet50": {"width": 4}, "efficientnet-lite0": {}}


def _tiny(name: str) -> torch.nn.Module:
    return create_backbone(name, **TINY.get(name, {"width_divisor": 16}))


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_full_size_matches_torchvision_layout(name):
    with torch.device("meta"):
        model = create_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in TORCHVISION_KEYS[name].items():
        assert shapes[key] == shape


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_loads_its_own_state_dict_and_rejects_a_missing_key(name, suffix, tmp_path):
    torch.manual_seed(0)
    source = _tiny(name).eval()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    path = tmp_path / f"{name}{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    torch.manual_seed(1)
    target = _tiny(name).eval()
    load_into(target, load_state_dict_file(path), what=str(path))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))

    dropped = next(k for k in state if k.endswith("weight"))
    del state[dropped]
    with pytest.raises(WeightsError, match=f"missing keys: {dropped}"):
        load_into(_tiny(name), state, what=str(path))


def test_shape_mismatch_and_unexpected_keys_are_listed():
    state = _tiny("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(1, 3, 7, 7)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        load_into(_tiny("resnet18"), state, what="file.pth")
    message = str(info.value)
    assert message.startswith("file.pth:")
    assert "unexpected keys: extra.weight" in message
    assert "conv1.weight (1, 3, 7, 7) vs (4, 3, 7, 7)" in message


def test_full_torchvision_vgg_file_loads_into_features_with_ignore_prefixes():
    features = _tiny("vgg16").state_dict()
    full = dict(features, **{"classifier.0.weight": torch.zeros(4, 4), "classifier.0.bias": torch.zeros(4)})
    with pytest.raises(WeightsError, match="unexpected keys: classifier"):
        load_into(_tiny("vgg16"), full, what="vgg16.pth")
    load_into(_tiny("vgg16"), full, what="vgg16.pth", ignore_prefixes=("classifier.",))


def test_old_files_without_num_batches_tracked_load():
    state = {k: v for k, v in _tiny("resnet18").state_dict().items() if "num_batches_tracked" not in k}
    load_into(_tiny("resnet18"), state, what="old.pth")


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnt34'; choose one of: resnet18, resnet34"):
        create_backbone("resnt34")


def test_resnet_features_are_taken_where_the_resolution_changes():
    model = ResNet(50, width=4, num_classes=None)
    features = model.forward_features(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]
    assert [f.shape[1] for f in features] == list(model.feature_channels)


def test_vgg_extract_matches_running_the_stack():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", width_divisor=16).eval()
    x = torch.rand(1, 3, 32, 32)
    conv, relu = vgg.extract(x, ["conv2_2", "relu2_2"])
    with torch.no_grad():
        assert torch.allclose(conv, vgg.features[:8](x))
        assert torch.allclose(relu, vgg.features[:9](x))
    assert (conv < 0).any()  # the in-place ReLU after conv2_2 did not overwrite the stored output
    with pytest.raises(ConfigError, match="unknown VGG layer 'relu9_9'"):
        vgg.extract(x, ["relu9_9"])


def test_vgg16_file_loads_strictly():
    path = default_vgg16_weights()
    if path is None:
        pytest.skip("no VGG16 weights ($DECRAPPIFY_VGG_WEIGHTS)")
    vgg = create_backbone("vgg16")
    load_into(vgg, load_state_dict_file(path), what=str(path))
    assert vgg.features[28].weight.abs().sum() > 0
    assert torch.equal(load_vgg16_features(path).features[28].weight, vgg.features[28].weight)


def test_feature_extractor_normalises_then_runs_only_to_the_deepest_layer():
    torch.manual_seed(0)
    vgg = VGGFeatures("vgg16", width_divisor=16)
    extractor = VGGFeatureExtractor(vgg, ["relu2_2", "conv1_1"])
    assert extractor.layer_indices == (8, 0) and len(extractor.stack) == 9
    x = torch.rand(1, 3, 16, 16)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    relu, conv = extractor(x)
    with torch.no_grad():
        torch.testing.assert_close(relu, vgg.features[:9](normalised))
        torch.testing.assert_close(conv, vgg.features[:1](normalised))
    (only_conv,) = extractor(x, ["conv1_1"])
    torch.testing.assert_close(only_conv, conv)
    with pytest.raises(ConfigError, match="not one of this extractor's"):
        extractor(x, ["relu3_3"])


def test_feature_extractor_stays_frozen_and_passes_gradients_to_the_input():
    torch.manual_seed(0)
    extractor = VGGFeatureExtractor(VGGFeatures("vgg16", batch_norm=True, width_divisor=16), [5])
    extractor.train()
    assert not extractor.stack.training
    assert not any(p.requires_grad for p in extractor.parameters())
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    extractor(x)[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_feature_extractor_knows_which_layers_a_small_image_reaches():
    extractor = VGGFeatureExtractor(VGGFeatures("vgg16", width_divisor=16), ["relu1_2", "relu4_3", "relu5_3"])
    assert extractor.reached_layers(12, 40) == ("relu1_2", "relu4_3")  # 12 >> 4 pools = 0: relu5_3 is out
    assert extractor.reached_layers(16, 16) == ("relu1_2", "relu4_3", "relu5_3")


def test_feature_extractor_on_a_plain_stack_takes_indices_only():
    stack = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(inplace=True))
    assert len(VGGFeatureExtractor(stack, [0, 1]).stack) == 2
    with pytest.raises(ConfigError, match="takes layer indices 0..1"):
        VGGFeatureExtractor(stack, ["relu1_1"])
    with pytest.raises(ConfigError, match="needs an nn.Sequential"):
        VGGFeatureExtractor(torch.nn.Conv2d(3, 4, 3), [0])
