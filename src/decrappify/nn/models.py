"""The generator registry, ``create_model(config)``, and FLOP counting.

A config is a plain JSON-able dict: ``{"arch": "compact", "scale": 4, ...}``; every other key is a keyword
argument of the arch's class. Model files store this dict, so a file rebuilds its own model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from decrappify.nn.ab_unet import AbUnet
from decrappify.nn.encoder_segmentation import EncoderMaskUnet
from decrappify.nn.registry import build_from_registry, registry_options
from decrappify.nn.rrdb import RRDBNet
from decrappify.nn.segmentation import MaskUnet
from decrappify.nn.unet import CompactUnet, UnetGenerator

ARCHS: dict[str, type[nn.Module]] = {
    "unet": UnetGenerator,
    "compact": CompactUnet,
    "rrdb": RRDBNet,  # ESRGAN / Real-ESRGAN x4plus (inference/realesrgan.py converts its published weights)
    "mask-unet": MaskUnet,  # the text-mask model: one logit per input pixel, not a picture
    "encoder-mask-unet": EncoderMaskUnet,  # the same on the pretrained EfficientNet-Lite0 encoder
    "ab-unet": AbUnet,  # colourisation as classification over a*b* bins: logits in training, RGB in eval
}


def training_output(model_or_config: nn.Module | Mapping) -> str:
    """What a generator's forward gives in training mode: "rgb" (the picture, as in eval mode) unless its class
    says otherwise (`AbUnet`: "ab_logits", which only the `ab_classification` loss takes)."""
    if isinstance(model_or_config, Mapping):
        arch = model_or_config.get("arch")
        model_or_config = ARCHS.get(arch) if isinstance(arch, str) else None
    return getattr(model_or_config, "training_output", "rgb")


def arch_options(arch: str) -> list[str]:
    """The config keys an arch accepts besides ``arch``."""
    return registry_options(ARCHS, arch)


def create_model(config: Mapping) -> nn.Module:
    """Build a randomly initialised generator from ``config`` (``ConfigError`` for an unknown arch or key)."""
    return build_from_registry("model", ARCHS, config)


#: Stride grid tiles are aligned to when a model does not say (`model.stride`): harmless for plain
#: convolutional models, and right for encoders that downsample by up to 16.
DEFAULT_SIZE_MULTIPLE = 16


def size_multiple_of(model: nn.Module) -> int:
    """The stride a model pads its input to internally (our generators say so in `stride`)."""
    value = getattr(model, "stride", None)
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_SIZE_MULTIPLE


def count_flops(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 128, 128)) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), counted by torch's FlopCounterMode (convolutions,
    matrix products and attention; element-wise operations are not counted)."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = torch.rand(*input_size, device=param.device if param is not None else "cpu")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def gflops_per_output_megapixel(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 128, 128)) -> float:
    """GFLOPs per megapixel of output: the speed-independent cost figure the benchmarks report."""
    scale = getattr(model, "scale", 1)
    n, _, h, w = input_size
    output_megapixels = n * h * w * scale * scale / 1e6
    return count_flops(model, input_size) / 1e9 / output_megapixels
