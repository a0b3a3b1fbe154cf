"""The compact U-Net's upsampling heads: why the feature-loss and GAN models use resize-convolution.

A pixel-shuffle head gives every sub-pixel position its own kernel, so once training makes those kernels differ
(the VGG feature loss does, docs/nogan.md) a flat input comes out as a 4-pixel checkerboard. The resize head
computes every output pixel with the same kernels: whatever its weights, a flat input stays flat.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from decrappify.evaluation.quality import periodic_power
from decrappify.nn.models import create_model
from decrappify.weights import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"arch": "compact", "scale": 4, "widths": [8, 8, 8], "blocks": [1, 1, 1]}


def _scramble_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, as if training had moved every kernel its own way."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def _interior_periodic_power(model: torch.nn.Module) -> float:
    """2/4 px periodic power of the head's output for flat features (the body's output on a flat region)."""
    flat = torch.full((1, 8, 16, 16), 0.5)
    with torch.no_grad():
        out = model.head(flat)
    rgb = out[0].permute(1, 2, 0)[8:-8, 8:-8].numpy()  # away from the zero-padded borders
    return periodic_power(rgb / (np.abs(rgb).max() + 1e-12))


def test_a_trained_shuffle_head_lays_a_checkerboard_on_a_flat_picture():
    model = create_model({**SMALL, "head": "shuffle"})
    _scramble_(model)
    assert _interior_periodic_power(model) > 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_resize_head_keeps_a_flat_picture_flat_whatever_its_weights(seed):
    model = create_model({**SMALL, "head": "resize"})
    _scramble_(model, seed)
    assert _interior_periodic_power(model) < 1e-6


def test_an_unknown_head_is_a_config_error_that_lists_the_choices():
    from decrappify.errors import ConfigError

    with pytest.raises(ConfigError, match="shuffle, shuffle_blur, resize"):
        create_model({**SMALL, "head": "deconv"})


def test_swap_head_keeps_the_body_and_changes_only_the_head(tmp_path):
    torch.manual_seed(0)
    source = create_model(SMALL)
    save_model(source, tmp_path / "l1.safetensors", SMALL, {"name": "l1"})
    out = tmp_path / "resize.safetensors"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "swap_head.py"), str(tmp_path / "l1.safetensors"),
         "--head", "resize", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    model, config, info = load_model(out)
    assert config["head"] == "resize" and info["head_swapped"] == "shuffle -> resize"
    before, after = source.state_dict(), model.state_dict()
    body = [k for k in before if not k.startswith("head.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)
    again = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "swap_head.py"), str(tmp_path / "l1.safetensors"),
         "--head", "resize", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert again.returncode != 0 and "already exists" in again.stderr
