"""`render_size`: the colourisation U-Net predicts colour on a shrunk copy of a big picture (DeOldify's
render_factor), and the picture keeps its own size and lightness."""

from __future__ import annotations

import pytest
import torch

from decrappify.errors import ConfigError
from decrappify.nn.ab_bins import rgb_to_lab
from decrappify.nn.models import create_model

TINY = {"arch": "ab-unet", "encoder": "resnet18", "encoder_width": 8}


def _grey(h: int, w: int) -> torch.Tensor:
    luma = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0))
    return luma.expand(1, 3, h, w).contiguous()


def test_a_big_picture_is_coloured_from_a_shrunk_copy_at_its_own_size_and_lightness():
    model = create_model({**TINY, "render_size": 64}).eval()
    seen = []
    original = model.logits

    def spy(lq):
        seen.append(tuple(lq.shape[-2:]))
        return original(lq)

    model.logits = spy
    grey = _grey(96, 160)
    with torch.no_grad():
        out = model(grey)
    assert seen == [(38, 64)]  # the longer side shrunk to 64, the aspect ratio kept
    assert out.shape == grey.shape
    lightness = lambda x: rgb_to_lab(x)[:, 0]  # noqa: E731
    # the lightness is the picture's own (bar a few pixels whose colour fell out of gamut and was clipped)
    assert (lightness(out.clamp(0, 1)) - lightness(grey)).abs().median() < 0.05


def test_a_small_picture_and_training_are_untouched():
    model = create_model({**TINY, "render_size": 256})
    grey = _grey(64, 96)
    with torch.no_grad():
        assert model.eval()(grey).shape == grey.shape
        assert model.train()(grey).shape[-2:] == (16, 24)  # logits at stride 4 of the full picture


@pytest.mark.parametrize("bad", [32, -1, 1.5, True])
def test_a_bad_render_size_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="render_size"):
        create_model({**TINY, "render_size": bad})
