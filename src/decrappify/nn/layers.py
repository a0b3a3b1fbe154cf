"""Small building blocks shared by the generators: convolutions with a choice of normalisation, residual
blocks, pixel-shuffle upsampling with ICNR initialisation, and SAGAN-style self-attention.

Pixel shuffle with a plain random initialisation starts life producing a checkerboard, which training (and a
feature loss especially) then has to undo. ICNR (Aitken et al. 2017) initialises the convolution so that the
s*s sub-pixel outputs of each channel are copies of one another: at initialisation the layer equals a
convolution followed by nearest-neighbour upsampling, and any checkerboard must be learned, not inherited.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from decrappify.errors import ConfigError

NORMS = ("none", "batch", "weight", "spectral")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky": lambda: nn.LeakyReLU(0.2, inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ConfigError(f"unknown norm '{norm}'; choose one of: {', '.join(NORMS)}")
    return norm


def _activation(act: str | None) -> nn.Module | None:
    if act is None or act == "none":
        return None
    if act not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{act}'; choose one of: none, {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[act]()


def icnr_(
    weight: Tensor, scale: int = 2, init: Callable[[Tensor], Tensor] = nn.init.kaiming_normal_
) -> Tensor:
    """Initialise a conv weight of shape (out * scale**2, in, k, k) in place so that pixel shuffle by ``scale``
    of its output equals nearest-neighbour upsampling of a conv with ``out`` channels (ICNR)."""
    out_total, in_channels, kh, kw = weight.shape
    if out_total % (scale * scale):
        raise ValueError(f"ICNR needs out channels divisible by scale**2 = {scale * scale}, got {out_total}")
    sub = torch.empty(out_total // (scale * scale), in_channels, kh, kw, dtype=weight.dtype)
    init(sub)
    with torch.no_grad():
        # pixel shuffle maps channel c * s*s + i to sub-pixel i of output channel c: repeat each kernel s*s times
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))
    return weight


def apply_norm(conv: nn.Conv2d, norm: str) -> nn.Module:
    """Wrap a convolution in weight or spectral normalisation (batch norm is added after it by the caller)."""
    if norm == "weight":
        return parametrizations.weight_norm(conv)
    if norm == "spectral":
        return parametrizations.spectral_norm(conv)
    return conv


def conv_layer(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    *,
    norm: str = "batch",
    act: str | None = "relu",
    bias: bool | None = None,
    zero_bn: bool = False,
    init_scale: float = 1.0,
) -> nn.Sequential:
    """Conv -> (batch norm) -> (activation). ``norm``: none, batch, weight or spectral.

    ``zero_bn`` starts the batch norm scale at 0, so a residual branch ending here starts as the identity;
    ``init_scale`` multiplies the initial weights (the same for branches without batch norm, ESRGAN-style).
    """
    check_norm(norm)
    if bias is None:
        bias = norm != "batch"  # batch norm has its own shift
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias
    )
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    with torch.no_grad():
        conv.weight.mul_(init_scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers: list[nn.Module] = [apply_norm(conv, norm)]
    if norm == "batch":
        bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
        layers.append(bn)
    activation = _activation(act)
    if activation is not None:
        layers.append(activation)
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """x + f(x) with f = conv-act-conv (EDSR style when ``norm="none"``).

    A fresh block stays close to the identity, so deep stacks start stable: with batch norm the last scale
    starts at zero, otherwise the last convolution's initial weights are scaled by 0.1 (as ESRGAN).
    ``res_scale`` multiplies the branch at every step (EDSR uses 0.1 in very deep stacks).
    """

    def __init__(
        self,
        channels: int,
        *,
        norm: str = "batch",
        act: str = "relu",
        res_scale: float = 1.0,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.conv1 = conv_layer(channels, channels, kernel_size, norm=norm, act=act)
        self.conv2 = conv_layer(
            channels, channels, kernel_size, norm=norm, act=None, zero_bn=True, init_scale=0.1
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        branch = self.conv2(self.conv1(x))
        return x + branch * self.res_scale if self.res_scale != 1.0 else x + branch


class PixelShuffleUpsample(nn.Module):
    """Conv (ICNR) -> activation -> pixel shuffle by ``scale`` -> optional blur, as fastai's PixelShuffle_ICNR.

    The blur (replication pad + 2x2 average pool, stride 1) removes the residual checkerboard that pixel
    shuffle tends to create during training. ``act=None`` gives a linear layer (an output head).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        scale: int = 2,
        *,
        blur: bool = False,
        norm: str = "none",
        act: str | None = "relu",
        kernel_size: int = 1,
    ):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        check_norm(norm)
        conv = nn.Conv2d(in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2)
        icnr_(conv.weight, scale)
        nn.init.zeros_(conv.bias)
        # batch norm after a shuffled conv would break ICNR's equal sub-pixels: only reparametrisations here
        self.conv = apply_norm(conv, norm if norm != "batch" else "none")
        self.act = _activation(act)
        self.shuffle = nn.PixelShuffle(scale)
        self.blur = (
            nn.Sequential(nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1)) if blur else None
        )
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.act is not None:
            x = self.act(x)
        x = self.shuffle(x)
        return self.blur(x) if self.blur is not None else x


class ResizeConvUpsample(nn.Module):
    """Conv at the input's resolution -> bilinear upsampling by ``scale`` -> conv-ReLU-conv at the output's, after
    Odena et al. 2016 ("Deconvolution and checkerboard artifacts") and ESRGAN's upsampler.

    A pixel-shuffle head gives each of the scale**2 sub-pixel positions a kernel of its own, so any difference
    between those kernels is a pattern with the shuffle's period. An L1 loss has no reason to learn one, but the
    VGG feature loss does: trained with it from the L1 model, the shuffle head's 2/4 px periodic power went from
    1.2x to 390-450x the truth's, gram term or not (docs/nogan.md). Here every output pixel is computed by the same
    kernels from smoothly interpolated features, so a fixed-phase pattern has nothing to hang on; detail above the
    input's Nyquist frequency (which a GAN must add) is still possible through the full-resolution convolutions.
    ``hidden`` channels run at full resolution: 16 cost ~6 GFLOPs per output megapixel.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int, *, hidden: int = 16):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv1 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1)
        for conv in (self.reduce, self.conv1):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.kaiming_normal_(self.conv2.weight)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)  # start near zero: the model starts near its upsampled-input base
        nn.init.zeros_(self.conv2.bias)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.relu(self.reduce(x))
        if self.scale > 1:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv2(nn.functional.relu(self.conv1(x)))


class SelfAttention(nn.Module):
    """SAGAN self-attention over all positions (Zhang et al. 2019), as in fastai's U-Net.

    ``gamma`` starts at zero, so the layer starts as the identity. Cost grows with the square of the number of
    positions: use it only at coarse resolutions.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # N, HW, C/8
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)  # N, HW, C
        # scaled dot-product (memory-efficient kernels where available) instead of an explicit HW x HW matrix
        out = nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out.transpose(1, 2).reshape(n, c, h, w)
