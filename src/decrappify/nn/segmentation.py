"""A compact U-Net that segments: a picture in, one logit per input pixel out (the text-mask model).

The same body as `unet.CompactUnet` (EDSR-style residual blocks at three resolutions, pixel-unshuffle first so the
body runs at 1/``space_to_depth`` of the input's size), with a head that unfolds to a single channel at the input's
resolution and no global skip of the input: a mask is not a correction of the picture. ``skips`` switches the
U-Net's cross connections (the two concatenated encoder features and the stem's residual) off, leaving a plain
encoder-decoder, the comparison the fastai lesson makes when it says they "greatly improve segmentation results".

The output is always logits (train and eval mode alike): `torch.sigmoid` gives probabilities; losses take logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.layers import PixelShuffleUpsample, ResBlock
from decrappify.nn.unet import MAX_COMPACT_BLOCKS, MAX_COMPACT_WIDTH, _check_count, pad_to_multiple

#: The head's starting bias: sigmoid(-3) ~ 5 %, about the share of a photo the watermark's text covers, so the
#: first steps are not spent unlearning a 50 % guess (the prior of RetinaNet's focal-loss paper).
PRIOR_LOGIT = -3.0


class MaskUnet(nn.Module):
    """``lq`` (N, 3, h, w) in [0, 1] -> logits (N, 1, h, w); any h, w (padded inside, cropped back).

    ``widths``/``blocks``: channels and residual blocks per level (1/d, 1/2d, 1/4d with d = ``space_to_depth``),
    as `CompactUnet`'s. ``skips=False``: encoder-decoder only (no cross connections).
    """

    scale = 1  # the mask is at the input's resolution
    training_output = "mask_logits"  # in eval mode too (`nn.models.training_output`)

    def __init__(
        self,
        *,
        widths: Sequence[int] = (32, 48, 64),
        blocks: Sequence[int] = (2, 2, 2),
        space_to_depth: int = 4,
        skips: bool = True,
        act: str = "relu",
    ):
        super().__init__()
        if not isinstance(space_to_depth, int) or isinstance(space_to_depth, bool) or not 1 <= space_to_depth <= 8:
            raise ConfigError(f"space_to_depth must be an integer from 1 to 8, got {space_to_depth!r}")
        if not isinstance(skips, bool):
            raise ConfigError(f"skips must be true or false, got {skips!r}")
        if not isinstance(widths, Sequence) or not isinstance(blocks, Sequence) or len(widths) != 3 or len(blocks) != 3:
            raise ConfigError(f"widths and blocks need 3 entries each (1/d, 1/2d, 1/4d), got {widths!r}, {blocks!r}")
        w0, w1, w2 = (_check_count("widths", width, 1, MAX_COMPACT_WIDTH) for width in widths)
        b0, b1, b2 = (_check_count("blocks", count, 0, MAX_COMPACT_BLOCKS) for count in blocks)
        self.space_to_depth, self.skips = space_to_depth, skips
        self.stride = 4 * space_to_depth  # two stride-2 levels below the unshuffled input

        def stack(channels: int, count: int) -> nn.Sequential:
            return nn.Sequential(*(ResBlock(channels, norm="none", act=act) for _ in range(count)))

        self.unshuffle = nn.PixelUnshuffle(space_to_depth)
        self.stem = nn.Conv2d(3 * space_to_depth**2, w0, 3, padding=1)
        self.enc0 = stack(w0, b0)
        self.down1 = nn.Conv2d(w0, w1, 3, stride=2, padding=1)
        self.enc1 = stack(w1, b1)
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.middle = stack(w2, b2)
        self.up1 = PixelShuffleUpsample(w2, w1, 2, act=None)
        self.fuse1 = nn.Conv2d(2 * w1 if skips else w1, w1, 1)
        self.dec1 = stack(w1, b1)
        self.up0 = PixelShuffleUpsample(w1, w0, 2, act=None)
        self.fuse0 = nn.Conv2d(2 * w0 if skips else w0, w0, 1)
        self.dec0 = stack(w0, b0)
        self.head = PixelShuffleUpsample(w0, 1, space_to_depth, act=None, kernel_size=3)
        with torch.no_grad():
            self.head.conv.bias.fill_(PRIOR_LOGIT)

    def _join(self, up: Tensor, skip: Tensor) -> Tensor:
        return torch.cat([up, skip], dim=1) if self.skips else up

    def forward(self, lq: Tensor) -> Tensor:
        h, w = lq.shape[-2:]
        s0 = self.stem(self.unshuffle(pad_to_multiple(lq, self.stride)))
        e0 = self.enc0(s0)
        e1 = self.enc1(self.down1(e0))
        m = self.middle(self.down2(e1))
        d1 = self.dec1(self.fuse1(self._join(self.up1(m), e1)))
        d0 = self.dec0(self.fuse0(self._join(self.up0(d1), e0)))
        return self.head(d0 + s0 if self.skips else d0)[..., :h, :w]
