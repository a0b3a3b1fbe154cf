"""The text-mask U-Net on EfficientNet-Lite0 (`nn.encoder_segmentation`) and batch-norm folding (`nn.fold_bn`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from decrappify.errors import ConfigError
from decrappify.inference.runners import TorchRunner
from decrappify.nn import create_model
from decrappify.nn.efficientnet import EfficientNetLite
from decrappify.nn.encoder_segmentation import EncoderMaskUnet
from decrappify.nn.fold_bn import fold_batch_norms, has_foldable
from decrappify.train.build import build_model
from decrappify.train.config import load_config
from tests.conftest import random_batch_norm_statistics

SMALL = {"arch": "encoder-mask-unet", "widths": [8, 8, 8, 8]}


def test_one_logit_per_input_pixel_for_any_size_with_and_without_skips() -> None:
    x = torch.rand(2, 3, 45, 70)
    with_skips, without = (create_model({**SMALL, "skips": skips}) for skips in (True, False))
    for model in (with_skips, without):
        assert isinstance(model, EncoderMaskUnet) and model.scale == 1
        assert model(x).shape == (2, 1, 45, 70)
        assert model.eval()(x).min() < 0  # logits in eval mode too
    # the encoder-decoder twin has the same encoder and decoder widths, only no concatenated cross connections
    assert with_skips.steps[-1][0].in_channels == without.steps[-1][0].in_channels + 16 + 12
    def count(model: nn.Module) -> int:
        return sum(p.numel() for p in model.encoder.parameters())

    assert count(with_skips) == count(without)


def test_cross_connections_carry_the_input_pixels() -> None:
    """With skips the output at a pixel depends on that pixel through the stride-2 cross connection even when the
    encoder is blind to it; without them only through the encoder."""
    torch.manual_seed(0)
    model = create_model(SMALL).eval()
    for p in model.encoder.parameters():
        p.data.zero_()  # a dead encoder: only the cross connection of the input is left
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[..., 10, 10] += 0.5
    with torch.no_grad():
        assert (model(x) - model(y)).abs().max() > 1e-4
        twin = create_model({**SMALL, "skips": False}).eval()
        for p in twin.encoder.parameters():
            p.data.zero_()
        assert (twin(x) - twin(y)).abs().max() < 1e-6


@pytest.mark.parametrize(
    ("override", "message"),
    [({"widths": [8, 8, 8]}, "widths"), ({"encoder": "resnet18"}, "encoder"), ({"skips": "no"}, "skips")],
)
def test_bad_options_name_themselves(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model({**SMALL, **override})


def test_a_text_mask_run_takes_it_and_a_picture_arch_is_refused() -> None:
    base = ["data.task='text-mask'", "loss.kind=bce_dice"]
    model = build_model(load_config(None, [*base, "model={arch='encoder-mask-unet', widths=[8, 8, 8, 8]}"]), 1)
    assert isinstance(model, EncoderMaskUnet)
    groups = {group["name"]: group["params"] for group in model.parameter_groups()}
    assert len(groups["encoder"]) == len(list(model.encoder.parameters())) and groups["decoder"]
    with pytest.raises(ConfigError, match="mask arch"):
        build_model(load_config(None, [*base, "model={arch='compact', scale=1}"]), 1)


def test_folding_batch_norms_keeps_the_output_and_leaves_the_model_alone() -> None:
    model = random_batch_norm_statistics(create_model(SMALL))
    x = torch.rand(1, 3, 64, 48)
    folded = fold_batch_norms(model)
    assert folded is not model and has_foldable(model) and not has_foldable(folded)
    bns = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not bns  # every batch norm sits right after a convolution here
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-4)
    assert fold_batch_norms(folded) is folded  # nothing left: no copy


def test_folding_reaches_the_classifier_and_the_runner_uses_it() -> None:
    classifier = random_batch_norm_statistics(EfficientNetLite(num_classes=10))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(classifier(x), fold_batch_norms(classifier)(x), atol=1e-4)
    model = random_batch_norm_statistics(create_model(SMALL))
    runner = TorchRunner(model, torch.device("cpu"), 1, 32, channels_last=False)
    assert not has_foldable(runner.model) and has_foldable(model)
    with torch.no_grad():
        assert torch.allclose(runner(x), model(x), atol=1e-4)


def test_a_model_without_pairs_is_not_copied() -> None:
    model = create_model({"arch": "mask-unet", "widths": [4, 4, 4], "blocks": [0, 0, 0], "space_to_depth": 2})
    assert fold_batch_norms(model) is model
