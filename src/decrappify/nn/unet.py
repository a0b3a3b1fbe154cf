"""Generators: a fastai-style U-Net on a pretrained encoder (ResNet or EfficientNet-Lite0), and a compact U-Net
for CPUs.

Both map ``lq`` (N, 3, h, w) in [0, 1] to ``pred`` (N, 3, h*scale, w*scale); any h, w work (the input is padded
to a multiple of the network's stride inside ``forward`` and the output cropped back). In training mode the
output is left unclamped so gradients flow; in eval mode it is clamped to [0, 1].

Super-resolution with the U-Net: two ways, chosen by ``sr_mode``.

- ``"hr"`` (default, fastai's lesson): enlarge the input with bicubic first and run the whole U-Net at the
  output resolution; a 1x1 head adds a residual to the enlarged input.
- ``"lr"``: run the U-Net at the input resolution and upsample once at the end (an ICNR pixel-shuffle head
  added to the bicubic-enlarged input): 1/scale**2 of the compute.

``lr`` costs far less but does not learn as well at equal steps: a ResNet encoder divides resolution by 4 in
its stem, so at low resolution it discards exactly the detail super-resolution needs, and only the last residual
block works at the input's full resolution. ``hr`` is the default for this (GPU-sized) model; ``lr`` stays for
cheap inference. The CPU model is :class:`CompactUnet`, which keeps full-resolution residual blocks at the low
resolution instead (all its convolutions at LR or below). The comparison is in
``docs/benchmarks/design-choices.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.backbones import ENCODERS, IMAGENET_MEAN, IMAGENET_STD, create_encoder
from decrappify.nn.layers import (
    PixelShuffleUpsample,
    ResBlock,
    ResizeConvUpsample,
    SelfAttention,
    check_norm,
    conv_layer,
)
from decrappify.nn.state_dict import load_into

UPSAMPLE_MODES = ("bicubic", "bilinear", "nearest")
OUTPUT_MODES = ("residual", "sigmoid")
SR_MODES = ("lr", "hr")
# The compact U-Net's last upsampling: ICNR pixel shuffle (the L1 models), the same with fastai's blur, or
# resize-convolution (the feature-loss and GAN models: pixel shuffle learns a checkerboard there, docs/nogan.md).
COMPACT_HEADS = ("shuffle", "shuffle_blur", "resize")
# Bounds on the sizes a config may ask for, checked before any layer is allocated: a model file's metadata is
# input like any other, and `widths = [200000, 200000, 200000]` would ask for 1.4 TB. They sit far above any
# model this project trains (compact widths 48-96, 2-6 blocks; torchvision's ResNet width 64), and cap the
# largest model a config can build at about 1.5 GB (compact) and 2.5 GB (U-Net) of fp32 weights.
MAX_COMPACT_WIDTH = 512
MAX_COMPACT_BLOCKS = 16
MAX_ENCODER_WIDTH = 128


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {name} '{value}'; choose one of: {', '.join(choices)}")
    return value


def _check_count(name: str, value: object, low: int, high: int) -> int:
    """`value` if it is a whole number in [low, high], else a ConfigError naming the option and the range."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _check_scale(scale: int) -> int:
    if not isinstance(scale, int) or isinstance(scale, bool) or not 1 <= scale <= 8:
        raise ConfigError(f"scale must be an integer from 1 to 8, got {scale!r}")
    return scale


def upsample(x: Tensor, scale: int, mode: str = "bicubic") -> Tensor:
    """Plain interpolation by an integer factor (the global skip of the super-resolution generators).

    Done on the picture in the default (NCHW) layout even when it comes in channels-last, as the CPU runners pass it:
    on 3 channels PyTorch's channels-last bicubic kernel took 5.5 ms where the NCHW one took 3.0 (128 -> 512); whole
    calls of restore-x4, sr-x4 and restore-x4-gan were 3-6 % faster (bf16, 2 threads, the two timed in turns in one
    process). The values are the same.
    """
    if scale == 1:
        return x
    align = None if mode == "nearest" else False
    return F.interpolate(x.contiguous(), scale_factor=scale, mode=mode, align_corners=align)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad the bottom and right so both sides are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def encoder_decoder_groups(model: nn.Module, encoder_params: list[nn.Parameter]) -> list[dict]:
    """``[{"name": "encoder", "params": ...}, {"name": "decoder", "params": ...}]`` (empty groups left out), for
    discriminative learning rates (`train.build.build_optimizer`): everything not in the encoder is decoder."""
    encoder_ids = {id(p) for p in encoder_params}
    groups = [
        {"name": "encoder", "params": encoder_params},
        {"name": "decoder", "params": [p for p in model.parameters() if id(p) not in encoder_ids]},
    ]
    return [g for g in groups if g["params"]]


def freeze_pretrained(encoder: nn.Module, train_bn: bool = True) -> None:
    """Stop training a pretrained encoder's weights; its batch norms keep learning when ``train_bn`` (fastai's
    choice: their statistics must follow the new task's inputs)."""
    for module in encoder.modules():
        trainable = train_bn and isinstance(module, nn.BatchNorm2d)
        for p in module.parameters(recurse=False):
            p.requires_grad_(trainable)


class PretrainedEncoder:
    """What a network on a pretrained ``self.encoder`` (`backbones.create_encoder`) offers the trainer: its
    parameters apart for discriminative learning rates, ImageNet weights loaded, and the frozen stage."""

    encoder: nn.Module

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def parameter_groups(self) -> list[dict]:
        return encoder_decoder_groups(self, self.encoder_parameters())

    def encoder_state_keys(self) -> list[str]:
        """The keys :meth:`load_encoder` expects: the encoder's classifier keys without its head (``fc.*``)."""
        return list(self.encoder.state_dict())

    def load_encoder(self, state_dict: dict[str, Tensor], what: str = "encoder weights") -> None:
        """Load ImageNet weights in the encoder's layout (torchvision's for ResNets); the classifier head's keys
        (``encoder.classifier_prefixes``) are ignored."""
        load_into(self.encoder, state_dict, what=what, ignore_prefixes=self.encoder.classifier_prefixes)

    def freeze_encoder(self, train_bn: bool = True) -> None:
        freeze_pretrained(self.encoder, train_bn)


class Generator(nn.Module):
    """What every generator shares: ``scale``, the output range, parameter groups and freezing helpers."""

    def __init__(self, scale: int, output: str, y_range: Sequence[float], upsample_mode: str):
        super().__init__()
        self.scale = _check_scale(scale)
        self.output = _choice("output", output, OUTPUT_MODES)
        self.upsample_mode = _choice("upsample", upsample_mode, UPSAMPLE_MODES)
        if len(y_range) != 2 or not y_range[0] < y_range[1]:
            raise ConfigError(f"y_range must be (low, high) with low < high, got {y_range!r}")
        self.y_range = (float(y_range[0]), float(y_range[1]))

    def _finish(self, base: Tensor, head: Tensor) -> Tensor:
        """``base + head`` (residual) or a sigmoid scaled to ``y_range``; clamped to [0, 1] in eval mode."""
        if self.output == "residual":
            pred = base + head
        else:
            low, high = self.y_range
            pred = low + (high - low) * torch.sigmoid(head)
        return pred if self.training else pred.clamp(0.0, 1.0)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []

    def parameter_groups(self) -> list[dict]:
        return encoder_decoder_groups(self, self.encoder_parameters())

    def freeze_encoder(self, train_bn: bool = True) -> None:
        """Stop gradients to the encoder (batch-norm parameters stay trainable when ``train_bn``, as fastai)."""

    def unfreeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(True)


class UnetBlock(nn.Module):
    """fastai's decoder step: pixel-shuffle up, concatenate the normalised skip feature, two convolutions."""

    def __init__(
        self,
        up_channels: int,
        skip_channels: int,
        *,
        final_div: bool,
        blur: bool,
        self_attention: bool,
        norm: str,
    ):
        super().__init__()
        self.up = PixelShuffleUpsample(up_channels, up_channels // 2, blur=blur, norm=norm)
        self.skip_bn = nn.BatchNorm2d(skip_channels)
        ni = up_channels // 2 + skip_channels
        self.out_channels = ni // 2 if final_div else ni
        self.conv1 = conv_layer(ni, self.out_channels, norm=norm)
        self.conv2 = conv_layer(self.out_channels, self.out_channels, norm=norm)
        self.attention = SelfAttention(self.out_channels) if self_attention else None

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.relu(torch.cat([self.up(x), self.skip_bn(skip)], dim=1))
        x = self.conv2(self.conv1(x))
        return self.attention(x) if self.attention is not None else x


class EncoderUnet(PretrainedEncoder, Generator):
    """What the U-Nets on a pretrained encoder share, after fastai's DynamicUnet (lesson 7): the encoder, the
    middle, and decoder blocks that each upsample by 2 (ICNR pixel shuffle, optional blur) and take the skip feature
    of the encoder stage at that stride, up to ``decode_stride``; optional self-attention in the block that ends at
    stride 8. ``final_div`` halves the last block's width (fastai's choice before its stride-1 layers). The encoder
    (``backbones.create_encoder``) declares its feature maps' channels and strides; it normalises its input with
    the ImageNet mean/std itself. The subclass adds its head.

    ImageNet weights load with :meth:`load_encoder` (the caller reads the file with ``decrappify.weights``; the
    constructor never downloads); :meth:`freeze_encoder` and :meth:`parameter_groups` serve the frozen stage and
    the discriminative learning rates of fine-tuning.
    """

    def __init__(
        self,
        encoder: str,
        scale: int,
        *,
        encoder_width: int,
        norm: str,
        blur: bool,
        blur_final: bool,
        self_attention: bool,
        output: str,
        y_range: Sequence[float],
        upsample: str,
        decode_stride: int,
        final_div: bool = True,
    ):
        super().__init__(scale, output, y_range, upsample)
        check_norm(norm)
        _check_count("encoder_width", encoder_width, 1, MAX_ENCODER_WIDTH)
        self.encoder = create_encoder(_choice("encoder", encoder, ENCODERS), encoder_width)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        channels, strides = self.encoder.feature_channels, self.encoder.feature_strides
        self.stride = strides[-1]
        deepest = channels[-1]
        self.middle = nn.Sequential(
            nn.BatchNorm2d(deepest),
            nn.ReLU(),
            conv_layer(deepest, deepest * 2, norm=norm),
            conv_layer(deepest * 2, deepest, norm=norm),
        )
        self.blocks = nn.ModuleList()
        up = deepest
        skips = [(c, s) for c, s in zip(channels[:-1], strides[:-1], strict=True) if s >= decode_stride][::-1]
        for i, (skip, at) in enumerate(skips):
            final = i == len(skips) - 1
            block = UnetBlock(
                up,
                skip,
                final_div=final and final_div,
                blur=blur and (blur_final or not final),
                self_attention=self_attention and at == 8,
                norm=norm,
            )
            self.blocks.append(block)
            up = block.out_channels
        self.decoder_channels = up  # at `decode_stride`

    def _decode(self, x: Tensor) -> Tensor:
        """Decoder features at ``decode_stride`` for ``x`` (sides multiples of :attr:`stride`)."""
        features = self.encoder.forward_features((x - self.mean) / self.std)
        y = self.middle(features[-1])
        skips = features[-2::-1][: len(self.blocks)]  # the deepest first, as many as there are blocks
        for block, skip in zip(self.blocks, skips, strict=True):
            y = block(y, skip)
        return y


class UnetGenerator(EncoderUnet):
    """U-Net on a pretrained encoder (ResNet-18/34/50 or EfficientNet-Lite0), after fastai's DynamicUnet.

    Skip features are taken where the resolution changes (strides 2, 4, 8, 16); the decoder upsamples with
    ICNR pixel shuffle (optional blur), optional self-attention at stride 8, then the last cross connection:
    the input is concatenated to the decoder output and a residual block follows. ``encoder_width=64`` is
    torchvision's ResNet (other widths are for tests; EfficientNet-Lite0 has one width). ``sr_mode``: see the
    module docstring.
    """

    stride = 32

    def __init__(
        self,
        encoder: str = "resnet34",
        scale: int = 1,
        *,
        encoder_width: int = 64,
        norm: str = "weight",
        blur: bool = True,
        blur_final: bool = True,
        self_attention: bool = True,
        last_cross: bool = True,
        output: str = "residual",
        y_range: Sequence[float] = (-0.1, 1.1),
        upsample: str = "bicubic",
        sr_mode: str = "hr",
    ):
        super().__init__(
            encoder, scale, encoder_width=encoder_width, norm=norm, blur=blur, blur_final=blur_final,
            self_attention=self_attention, output=output, y_range=y_range, upsample=upsample, decode_stride=2,
        )  # fmt: skip
        self.sr_mode = _choice("sr_mode", sr_mode, SR_MODES)
        up = self.decoder_channels
        self.final_up = PixelShuffleUpsample(up, up, 2, norm=norm)  # stride 2 -> 1
        self.last_cross = ResBlock(up + 3, norm=norm) if last_cross else None
        features = up + 3 if last_cross else up
        head_scale = scale if self.sr_mode == "lr" else 1
        self.head = PixelShuffleUpsample(
            features, 3, head_scale, act=None, kernel_size=1 if head_scale == 1 else 3
        )
        with torch.no_grad():  # start near the (upsampled) input: decoder features have std ~5 at init
            self.head.conv.weight.mul_(0.01)

    def _body(self, x: Tensor) -> Tensor:
        y = self.final_up(self._decode(x))
        if self.last_cross is not None:
            y = self.last_cross(torch.cat([y, x], dim=1))
        return self.head(y)

    def forward(self, lq: Tensor) -> Tensor:
        h, w = lq.shape[-2:]
        base = upsample(lq, self.scale, self.upsample_mode)
        x = base if self.sr_mode == "hr" else lq
        head = self._body(pad_to_multiple(x, self.stride))
        return self._finish(base, head[..., : h * self.scale, : w * self.scale])


class CompactUnet(Generator):
    """A small U-Net for CPUs: every convolution at the input's (low) resolution or below.

    Levels LR, LR/2, LR/4 of EDSR-style residual blocks (no normalisation) with concatenated skips; a single
    ICNR pixel-shuffle head to ``scale`` and a global skip of the bicubic-upsampled input (the last cross
    connection). ``widths`` are the channels per level, ``blocks`` the residual blocks per level and side
    (encoder and decoder each get ``blocks[0]`` at LR and ``blocks[1]`` at LR/2; the bottleneck gets
    ``blocks[2]``). ``space_to_depth`` (same-size tasks) folds each d x d block of input pixels into channels
    first (pixel unshuffle, as Real-ESRGAN's x1/x2 models) and the head unfolds d-times more: the body then runs
    at 1/d of the resolution, so a scale-1 model costs what an x``d`` one does per output pixel (d = 4: ~40
    GFLOPs/MP instead of ~600) and sees a d-times larger neighbourhood, which is what JPEG blocks (8 px) and
    watermark letters need. The defaults (x4) have 1.03M parameters and cost 48.4 GFLOPs per output megapixel;
    ``docs/benchmarks/design-choices.md`` has how they compared with wider and shallower settings. ``head``: one of
    ``COMPACT_HEADS``; ``"resize"`` (resize-convolution) for models trained with the feature loss or a GAN.
    """

    stride = 4

    def __init__(
        self,
        scale: int = 4,
        *,
        widths: Sequence[int] = (48, 64, 96),
        blocks: Sequence[int] = (3, 2, 2),
        act: str = "relu",
        res_scale: float = 1.0,
        self_attention: bool = False,
        output: str = "residual",
        y_range: Sequence[float] = (-0.1, 1.1),
        upsample: str = "bicubic",
        space_to_depth: int = 1,
        head: str = "shuffle",
    ):
        super().__init__(scale, output, y_range, upsample)
        if not isinstance(space_to_depth, int) or not 1 <= space_to_depth <= 8:
            raise ConfigError(f"space_to_depth must be an integer from 1 to 8, got {space_to_depth!r}")
        self.space_to_depth = space_to_depth
        self.stride = 4 * space_to_depth
        if not isinstance(widths, Sequence) or not isinstance(blocks, Sequence) or len(widths) != 3 or len(blocks) != 3:
            raise ConfigError(
                f"widths and blocks need 3 entries each (LR, /2, /4), got {widths!r}, {blocks!r}"
            )
        w0, w1, w2 = (_check_count("widths", width, 1, MAX_COMPACT_WIDTH) for width in widths)
        blocks = [_check_count("blocks", count, 0, MAX_COMPACT_BLOCKS) for count in blocks]

        def stack(channels: int, count: int) -> nn.Sequential:
            return nn.Sequential(
                *(ResBlock(channels, norm="none", act=act, res_scale=res_scale) for _ in range(count))
            )

        self.stem = nn.Conv2d(3 * space_to_depth**2, w0, 3, padding=1)
        self.enc0 = stack(w0, blocks[0])
        self.down1 = nn.Conv2d(w0, w1, 3, stride=2, padding=1)
        self.enc1 = stack(w1, blocks[1])
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.middle = stack(w2, blocks[2])
        self.attention = SelfAttention(w2) if self_attention else None
        self.up1 = PixelShuffleUpsample(w2, w1, 2, act=None)
        self.fuse1 = nn.Conv2d(2 * w1, w1, 1)
        self.dec1 = stack(w1, blocks[1])
        self.up0 = PixelShuffleUpsample(w1, w0, 2, act=None)
        self.fuse0 = nn.Conv2d(2 * w0, w0, 1)
        self.dec0 = stack(w0, blocks[0])
        self.head_kind = _choice("head", head, COMPACT_HEADS)
        if head == "resize":
            self.head = ResizeConvUpsample(w0, 3, scale * space_to_depth)
        else:
            self.head = PixelShuffleUpsample(
                w0, 3, scale * space_to_depth, act=None, kernel_size=3, blur=head == "shuffle_blur"
            )
            with torch.no_grad():
                self.head.conv.weight.mul_(0.1)  # start near the bicubic upsampling

    def _body(self, x: Tensor) -> Tensor:
        if self.space_to_depth > 1:
            x = F.pixel_unshuffle(x, self.space_to_depth)
        s0 = self.stem(x)
        e0 = self.enc0(s0)
        e1 = self.enc1(self.down1(e0))
        m = self.middle(self.down2(e1))
        if self.attention is not None:
            m = self.attention(m)
        d1 = self.dec1(self.fuse1(torch.cat([self.up1(m), e1], dim=1)))
        d0 = self.dec0(self.fuse0(torch.cat([self.up0(d1), e0], dim=1)))
        return self.head(d0 + s0)

    def forward(self, lq: Tensor) -> Tensor:
        h, w = lq.shape[-2:]
        head = self._body(pad_to_multiple(lq, self.stride))
        base = upsample(lq, self.scale, self.upsample_mode)
        return self._finish(base, head[..., : h * self.scale, : w * self.scale])
