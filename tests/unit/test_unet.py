"""Generators: shapes for every scale and odd sizes, the model registry, encoder loading and freezing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decrappify.errors import ConfigError, WeightsError
from decrappify.nn.backbones import create_backbone
from decrappify.nn.models import ARCHS, count_flops, create_model, gflops_per_output_megapixel

TINY = {
    "unet": {"arch": "unet", "encoder": "resnet18", "encoder_width": 4},
    "compact": {"arch": "compact", "widths": [8, 8, 8], "blocks": [1, 1, 1]},
}


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("size", [(37, 23), (32, 32), (5, 9)])
def test_output_shape_and_range(arch, scale, size):
    torch.manual_seed(0)
    model = create_model(dict(TINY[arch], scale=scale)).eval()
    assert model.scale == scale
    with torch.no_grad():
        pred = model(torch.rand(2, 3, *size))
    assert pred.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert pred.min() >= 0 and pred.max() <= 1


def test_unet_lr_mode_and_resnet50_encoder_shapes():
    for config in (
        dict(TINY["unet"], scale=2, sr_mode="lr"),
        dict(TINY["unet"], encoder="resnet50", scale=2),
    ):
        model = create_model(config).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 21, 18)).shape == (1, 3, 42, 36)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_residual_output_starts_near_the_bicubic_upsampling(arch):
    torch.manual_seed(0)
    model = create_model(dict(TINY[arch], scale=2)).eval()
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        pred = model(lq)
    bicubic = F.interpolate(lq, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    assert (pred - bicubic).abs().mean() < 0.06
    assert not torch.equal(pred, bicubic)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_training_step_reaches_every_parameter(arch):
    torch.manual_seed(0)
    model = create_model(dict(TINY[arch], scale=2, **({"self_attention": True} if arch == "compact" else {})))
    with (
        torch.no_grad()
    ):  # attention starts as the identity (gamma = 0): open it so its weights get gradients
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    model(torch.rand(2, 3, 12, 12)).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    # the deepest encoder stage sees a 1x1 map, where batch norm's output (and so its input's gradient) is 0
    assert not [n for n in missing if not n.startswith("encoder.layer4")]


def test_sigmoid_output_stays_in_y_range_when_training():
    model = create_model(dict(TINY["compact"], scale=1, output="sigmoid", y_range=[-0.1, 1.1])).train()
    pred = model(torch.rand(1, 3, 8, 8) * 100)
    assert pred.min() >= -0.1 and pred.max() <= 1.1


def test_unknown_arch_and_option_list_the_choices():
    with pytest.raises(ConfigError, match="unknown arch 'resnet'; choose one of: " + ", ".join(ARCHS)):
        create_model({"arch": "resnet"})
    with pytest.raises(ConfigError, match="needs an 'arch' key"):
        create_model({"scale": 2})
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\) widht for arch 'compact'; valid options: scale"
    ):
        create_model({"arch": "compact", "widht": 3})
    with pytest.raises(ConfigError, match="unknown encoder 'resnt34'; choose one of: resnet18, resnet34"):
        create_model({"arch": "unet", "encoder": "resnt34"})
    with pytest.raises(ConfigError, match="scale must be an integer"):
        create_model({"arch": "compact", "scale": 2.5})


def test_encoder_loads_torchvision_layout_weights_and_freezes():
    torch.manual_seed(0)
    model = create_model(dict(TINY["unet"], scale=2))
    imagenet = create_backbone("resnet18", width=4)  # with fc, as torchvision's files are
    model.load_encoder(imagenet.state_dict(), what="resnet18.pth")
    assert torch.equal(model.encoder.conv1.weight, imagenet.conv1.weight)
    assert (
        "fc.weight" not in model.encoder_state_keys() and "layer4.1.bn2.weight" in model.encoder_state_keys()
    )
    with pytest.raises(WeightsError, match="resnet34.pth: weights do not fit ResNet: missing keys"):
        model.load_encoder(
            {k: v for k, v in imagenet.state_dict().items() if "layer4" not in k}, "resnet34.pth"
        )

    model.freeze_encoder()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "encoder.conv1.weight" in frozen and "encoder.bn1.weight" not in frozen
    assert not any(n.startswith("middle") for n in frozen)
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())

    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["encoder", "decoder"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_flop_count_of_a_single_convolution():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (1, 3, 10, 10)) == 2 * 8 * 3 * 9 * 100
    compact = create_model(dict(TINY["compact"], scale=4))
    assert 0 < gflops_per_output_megapixel(compact, (1, 3, 16, 16)) < 10


@pytest.mark.parametrize("factor", [2, 4])
def test_space_to_depth_keeps_the_size_and_cuts_the_cost(factor):
    """A same-size compact model with space_to_depth=d works on any size (stride 4d) at ~1/d**2 of the FLOPs."""
    plain = create_model(dict(TINY["compact"], scale=1)).eval()
    folded = create_model(dict(TINY["compact"], scale=1, space_to_depth=factor)).eval()
    assert folded.stride == 4 * factor and plain.stride == 4
    with torch.no_grad():
        pred = folded(torch.rand(1, 3, 37, 22))
    assert pred.shape == (1, 3, 37, 22)
    assert count_flops(folded, (1, 3, 64, 64)) < count_flops(plain, (1, 3, 64, 64)) / factor
    with pytest.raises(ConfigError, match="space_to_depth"):
        create_model(dict(TINY["compact"], scale=1, space_to_depth=0))
