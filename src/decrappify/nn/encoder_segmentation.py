"""A text-mask U-Net on the ImageNet-pretrained EfficientNet-Lite0: a picture in, one logit per input pixel out.

Why a second segmentation network: `segmentation.MaskUnet` learns everything from the crappified photos and sees
the picture at most 1/16 down. Here the encoder is the pretrained one the colouriser uses (strides 2 to 32: its
receptive field covers a whole line of watermark text) and the decoder is light, so the model still runs at
10 MP/s on two CPU threads. The decoder climbs back with bilinear x2 steps (no pixel-shuffle grid to learn), at
each step concatenating the encoder's feature map of that stride, the U-Net's cross connections; at stride 2 it
also takes the input itself (pixel-unshuffled, so no convolution runs at full resolution), and a pixel-shuffle
head unfolds 4 logits per stride-2 position. ``skips=False`` drops every cross connection, input included: the
encoder-decoder twin of issue 22's comparison, which must rebuild the mask from the stride-32 features alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, create_encoder
from decrappify.nn.segmentation import PRIOR_LOGIT
from decrappify.nn.unet import MAX_COMPACT_WIDTH, PretrainedEncoder, _check_count, pad_to_multiple

#: The encoders this network takes (the ones that have ImageNet weights here).
MASK_ENCODERS: tuple[str, ...] = ("efficientnet-lite0",)


class ConvBnRelu(nn.Sequential):
    """3x3 convolution, batch norm, ReLU: one decoder step (a Sequential: its keys are "0.*" and "1.*")."""

    def __init__(self, in_channels: int, out_channels: int):
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [("0", "1")]  # `nn.fold_bn`

    def conv_activations(self) -> dict[str, str | None]:
        return {"0": "2"}  # `nn.conv_fusion`


class EncoderMaskUnet(PretrainedEncoder, nn.Module):
    """``lq`` (N, 3, h, w) in [0, 1] -> logits (N, 1, h, w); any h, w (padded to 32 inside, cropped back).

    ``widths``: the decoder's channels at strides 16, 8, 4 and 2. ``skips=False``: no cross connections.
    """

    scale = 1  # the mask is at the input's resolution
    stride = 32
    training_output = "mask_logits"  # in eval mode too (`nn.models.training_output`)

    def __init__(
        self,
        *,
        encoder: str = "efficientnet-lite0",
        widths: Sequence[int] = (96, 64, 48, 32),
        skips: bool = True,
    ):
        super().__init__()
        if encoder not in MASK_ENCODERS:
            raise ConfigError(f"unknown encoder {encoder!r}; choose one of: {', '.join(MASK_ENCODERS)}")
        if not isinstance(skips, bool):
            raise ConfigError(f"skips must be true or false, got {skips!r}")
        if not isinstance(widths, Sequence) or len(widths) != 4:
            raise ConfigError(f"widths needs 4 entries (strides 16, 8, 4, 2), got {widths!r}")
        widths = [_check_count("widths", width, 1, MAX_COMPACT_WIDTH) for width in widths]
        self.skips = skips
        self.encoder = create_encoder(encoder)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        channels = self.encoder.feature_channels  # strides 2, 4, 8, 16, 32
        # the stride-2 step also takes the input, unshuffled to stride 2 (12 channels)
        skip_channels = [channels[3], channels[2], channels[1], channels[0] + 12]
        self.steps = nn.ModuleList()
        up = channels[-1]
        for width, skip in zip(widths, skip_channels, strict=True):
            self.steps.append(ConvBnRelu(up + (skip if skips else 0), width))
            up = width
        self.unshuffle = nn.PixelUnshuffle(2)
        self.head = nn.Sequential(nn.Conv2d(up, 4, 3, padding=1), nn.PixelShuffle(2))
        with torch.no_grad():
            self.head[0].weight.mul_(0.1)
            self.head[0].bias.fill_(PRIOR_LOGIT)

    def forward(self, lq: Tensor) -> Tensor:
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, self.stride)
        features = self.encoder.forward_features((x - self.mean) / self.std)
        # the input in the features' number format (bf16 under autocast): a mixed concatenation would be fp32
        unshuffled = self.unshuffle(x).to(features[0].dtype)
        skips = [features[3], features[2], features[1], torch.cat([features[0], unshuffled], dim=1)]
        y = features[-1]
        for step, skip in zip(self.steps, skips, strict=True):
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = step(torch.cat([y, skip], dim=1) if self.skips else y)
        return self.head(y)[..., :h, :w]
