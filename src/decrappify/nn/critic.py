"""Critics (discriminators) for GAN fine-tuning, and their registry.

Two designs, both with spectral normalisation (Miyato et al. 2018: it caps each layer's Lipschitz constant, which
keeps the critic's gradients useful to the generator instead of saturating), both returning a map of logits
(N, 1, h', w'): one real/fake opinion per patch, averaged by the loss.

- ``"patch"``: fastai's ``gan_critic`` (lesson 7, DeOldify): 4x4 stride-2 convolutions, LeakyReLU 0.2, a residual
  block and dropout after the first, self-attention in the first strided block, a final 4x4 convolution with no
  padding. Cheap: every layer after the first runs at a quarter of the previous resolution.
- ``"unet"``: Real-ESRGAN's ``UNetDiscriminatorSN``: three strided convolutions down, three bilinear-upsampled
  convolutions back up with skip connections, two more at full resolution, one logit per pixel. Its per-pixel
  opinion gives the generator feedback at every location, at about twice the FLOPs of ``"patch"``.

Inputs are NCHW float in [0, 1] (what generators output); each critic maps them to [-1, 1] itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from decrappify.errors import ConfigError
from decrappify.nn.layers import ResBlock, SelfAttention, conv_layer
from decrappify.nn.registry import build_from_registry


def _down_conv(
    in_channels: int, out_channels: int, *, act: str | None = "leaky", bias: bool = True
) -> nn.Sequential:
    """Spectral-norm 4x4 stride-2 convolution + LeakyReLU: halves the size exactly.

    ``conv_layer`` pads ``kernel_size // 2`` (2 for a 4x4 kernel, giving h/2 + 1); fastai pads
    ``(kernel_size - 1) // 2`` = 1, which gives h/2. Same layer, with the padding set as fastai's.
    """
    layer = conv_layer(in_channels, out_channels, 4, stride=2, norm="spectral", act=act, bias=bias)
    layer[0].padding = (1, 1)
    return layer


def _spectral_attention(channels: int) -> SelfAttention:
    """Self-attention whose 1x1 projections are spectral-normalised too (as in fastai's critic)."""
    attention = SelfAttention(channels)
    for name in ("query", "key", "value"):
        parametrizations.spectral_norm(getattr(attention, name))
    return attention


class PatchCritic(nn.Module):
    """fastai's ``gan_critic(n_channels, nf=width, n_blocks=num_blocks, p=dropout)`` (see the module docstring).

    The size halves ``num_blocks + 1`` times, then a 4x4 unpadded convolution needs 4 pixels: input sides must be
    at least ``4 * 2**(num_blocks + 1)`` (64 for the defaults). A 128-pixel crop gives a 5x5 logit map.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 128,
        num_blocks: int = 3,
        dropout: float = 0.15,
        self_attention: bool = True,
    ):
        super().__init__()
        if width < 1 or num_blocks < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(
                f"patch critic: width >= 1, num_blocks >= 1 and 0 <= dropout < 1, got {width}, {num_blocks}, "
                f"{dropout}"
            )
        layers: list[nn.Module] = [
            _down_conv(in_channels, width),
            nn.Dropout2d(dropout / 2),
            ResBlock(width, norm="spectral", act="leaky"),
        ]
        channels = width
        for i in range(num_blocks):
            layers += [nn.Dropout2d(dropout), _down_conv(channels, channels * 2)]
            if i == 0 and self_attention:
                layers.append(_spectral_attention(channels * 2))
            channels *= 2
        head = conv_layer(channels, 1, 4, norm="spectral", act=None, bias=False)
        head[0].padding = (0, 0)
        layers.append(head)
        self.layers = nn.Sequential(*layers)
        self.min_size = 4 * 2 ** (num_blocks + 1)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"patch critic needs inputs of at least {self.min_size} pixels, got {tuple(x.shape)}"
            )
        return self.layers(x * 2.0 - 1.0)


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    """Real-ESRGAN's spectral-norm convolution without bias (padding 1: 3x3 keeps the size, 4x4/2 halves it)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=1, bias=False)
    return parametrizations.spectral_norm(conv)


class UnetCritic(nn.Module):
    """Real-ESRGAN's ``UNetDiscriminatorSN(num_in_ch, num_feat=width, skip_connection=skip)``.

    Same layer names (``conv0`` ... ``conv9``) as Real-ESRGAN, so its files map key by key once spectral
    norm's parameter names are translated. Input sides must be multiples of 8.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, skip: bool = True):
        super().__init__()
        if width < 1:
            raise ConfigError(f"unet critic: width must be >= 1, got {width}")
        w = width
        self.skip = skip
        self.conv0 = nn.Conv2d(in_channels, w, 3, 1, 1)
        self.conv1 = _sn_conv(w, w * 2, 4, 2)
        self.conv2 = _sn_conv(w * 2, w * 4, 4, 2)
        self.conv3 = _sn_conv(w * 4, w * 8, 4, 2)
        self.conv4 = _sn_conv(w * 8, w * 4, 3)
        self.conv5 = _sn_conv(w * 4, w * 2, 3)
        self.conv6 = _sn_conv(w * 2, w, 3)
        self.conv7 = _sn_conv(w, w, 3)
        self.conv8 = _sn_conv(w, w, 3)
        self.conv9 = nn.Conv2d(w, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"unet critic needs sides that are multiples of 8, got {tuple(x.shape)}")
        x0 = _act(self.conv0(x * 2.0 - 1.0))
        x1 = _act(self.conv1(x0))
        x2 = _act(self.conv2(x1))
        x3 = _act(self.conv3(x2))
        x4 = _act(self.conv4(_up(x3)))
        x4 = x4 + x2 if self.skip else x4
        x5 = _act(self.conv5(_up(x4)))
        x5 = x5 + x1 if self.skip else x5
        x6 = _act(self.conv6(_up(x5)))
        x6 = x6 + x0 if self.skip else x6
        out = _act(self.conv8(_act(self.conv7(x6))))
        return self.conv9(out)


CRITICS: dict[str, type[nn.Module]] = {"patch": PatchCritic, "unet": UnetCritic}


def create_critic(config: Mapping) -> nn.Module:
    """Build a randomly initialised critic from ``{"arch": "patch" | "unet", **keyword arguments}``."""
    return build_from_registry("critic", CRITICS, config, arch_label="critic arch")
