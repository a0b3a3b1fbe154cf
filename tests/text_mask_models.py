"""Tiny text-mask model files whose answer is known: every pixel is text, or none is (tests of the wiring)."""

from __future__ import annotations

from pathlib import Path

import torch

from decrappify.nn import create_model
from decrappify.weights import save_model

TINY_MASK_UNET = {"arch": "mask-unet", "widths": [4, 4, 4], "blocks": [0, 0, 0], "space_to_depth": 2}


def save_constant_mask_model(path: Path, *, text: bool) -> Path:
    """A `text-mask` model file that calls every pixel text (`text`) or none: its head ignores its input."""
    model = create_model(TINY_MASK_UNET)
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.fill_(8.0 if text else -8.0)
    return save_model(model, path, TINY_MASK_UNET, {"name": path.stem, "task": "text-mask"})
