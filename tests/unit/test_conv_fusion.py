"""Convolution + ReLU fused into one oneDNN call for CPU inference (`nn.conv_fusion`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decrappify.inference.runners import TorchRunner
from decrappify.nn import create_model
from decrappify.nn.conv_fusion import FusedConv2d, fuse_conv_activations, fusion_available, has_fusable
from decrappify.nn.efficientnet import EfficientNetLite
from decrappify.nn.fold_bn import fold_batch_norms
from tests.conftest import random_batch_norm_statistics

pytestmark = pytest.mark.skipif(not fusion_available(), reason="this torch has no oneDNN fused convolution")


def _fused(model: nn.Module) -> nn.Module:
    return fuse_conv_activations(fold_batch_norms(model))


def test_the_fused_classifier_gives_the_same_logits_and_every_relu_is_gone() -> None:
    model = random_batch_norm_statistics(EfficientNetLite(num_classes=10))
    fused = _fused(model)
    assert has_fusable(model) and not has_fusable(fused)
    assert not any(isinstance(m, nn.ReLU6) for m in fused.modules())
    # the stem, and in each block the expansion (if any), depthwise and projection convolutions
    assert sum(isinstance(m, FusedConv2d) for m in fused.modules()) == 1 + sum(
        3 if hasattr(block, "_expand_conv") else 2 for block in model._blocks
    )
    x = torch.rand(2, 3, 66, 50)  # odd sizes after a stride: the asymmetric "same" padding is kept
    with torch.no_grad():
        assert torch.allclose(model(x), fused(x), atol=1e-4)


def test_under_bf16_autocast_the_fused_mask_model_matches_the_eager_one() -> None:
    model = random_batch_norm_statistics(create_model({"arch": "encoder-mask-unet", "widths": [8, 8, 8, 8]}))
    fused = _fused(model)
    x = torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model(x), fused(x), atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager, quick = fold_batch_norms(model)(x).float(), fused(x).float()
    assert (eager - quick).abs().max() < 0.05 * eager.abs().max()


def test_the_cpu_runner_fuses_and_a_model_without_pairs_is_left_alone() -> None:
    model = random_batch_norm_statistics(create_model({"arch": "encoder-mask-unet", "widths": [8, 8, 8, 8]}))
    runner = TorchRunner(model, torch.device("cpu"), 1, 32, precision="bf16")
    assert any(isinstance(m, FusedConv2d) for m in runner.model.modules())
    assert not any(isinstance(m, FusedConv2d) for m in model.modules())  # the caller's model is not changed
    plain = create_model({"arch": "mask-unet", "widths": [4, 4, 4], "blocks": [0, 0, 0], "space_to_depth": 2})
    assert fuse_conv_activations(plain) is plain


def test_a_convolution_with_its_batch_norm_still_there_is_not_fused() -> None:
    model = random_batch_norm_statistics(EfficientNetLite(num_classes=None))
    fused = fuse_conv_activations(model)  # not folded first: fusing would skip the batch norms
    assert fused is model or not any(isinstance(m, FusedConv2d) for m in fused.modules())
