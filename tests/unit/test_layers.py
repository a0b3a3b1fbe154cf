"""Layer building blocks: ICNR pixel shuffle starts as nearest-neighbour upsampling, norms, attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decrappify.errors import ConfigError
from decrappify.nn.layers import PixelShuffleUpsample, ResBlock, SelfAttention, conv_layer, icnr_


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_icnr_pixel_shuffle_equals_nearest_upsampling_at_init(scale, kernel_size):
    torch.manual_seed(0)
    layer = PixelShuffleUpsample(6, 5, scale, kernel_size=kernel_size)
    assert not layer.conv.bias.any()  # a zero bias is tied across sub-pixels too
    x = torch.randn(2, 6, 7, 9)
    sub_weight = layer.conv.weight[:: scale * scale]
    sub_bias = layer.conv.bias[:: scale * scale]
    expected = F.interpolate(
        F.relu(F.conv2d(x, sub_weight, sub_bias, padding=kernel_size // 2)),
        scale_factor=scale,
        mode="nearest",
    )
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-6)


def test_random_init_is_not_nearest_so_the_icnr_test_can_fail():
    torch.manual_seed(0)
    layer = PixelShuffleUpsample(4, 4, 2)
    torch.nn.init.kaiming_normal_(layer.conv.weight)
    out = layer(torch.randn(1, 4, 5, 5))
    assert not torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2])


def test_icnr_rejects_incompatible_shapes():
    with pytest.raises(ValueError, match="divisible"):
        icnr_(torch.empty(6, 3, 1, 1), scale=2)


def test_blur_keeps_the_shape():
    layer = PixelShuffleUpsample(4, 2, 2, blur=True)
    assert layer(torch.rand(1, 4, 5, 7)).shape == (1, 2, 10, 14)


@pytest.mark.parametrize("norm", ["none", "batch", "weight", "spectral"])
def test_conv_layer_norms(norm):
    layer = conv_layer(4, 6, norm=norm)
    assert layer(torch.rand(2, 4, 8, 8)).shape == (2, 6, 8, 8)
    names = set(dict(layer.named_parameters()))
    assert ("1.weight" in names) == (norm == "batch")
    assert any("original" in n for n in names) == (norm in ("weight", "spectral"))


def test_unknown_norm_lists_the_choices():
    with pytest.raises(
        ConfigError, match="unknown norm 'group'; choose one of: none, batch, weight, spectral"
    ):
        conv_layer(4, 4, norm="group")


def test_res_block_with_batch_norm_starts_as_identity():
    block = ResBlock(8, norm="batch")
    x = torch.rand(2, 8, 6, 6)
    assert torch.allclose(block(x), x)
    assert not torch.allclose(ResBlock(8, norm="none")(x), x)


def test_self_attention_starts_as_identity_and_mixes_positions_once_trained():
    torch.manual_seed(0)
    attention = SelfAttention(16)
    x = torch.randn(2, 16, 5, 4)
    assert torch.equal(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
    y = attention(x)
    x2 = x.clone()
    x2[..., 0, 0] += 1.0  # a change at one position reaches every other position
    assert not torch.allclose(attention(x2)[..., 4, 3], y[..., 4, 3])
