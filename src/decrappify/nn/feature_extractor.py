"""What the feature loss and the perceptual distance both look at: a frozen VGG's features of an image.

Both compare two images through the same steps: ImageNet-normalise RGB in [0, 1] (the statistics the weights
were trained with), run the VGG ``features`` stack only as deep as the deepest layer they compare, and keep the
outputs of the chosen layers. :class:`VGGFeatureExtractor` does those steps once, so the training loss and the
evaluation metric cannot drift apart (a different normalisation or a different tap would make a model scored on
something other than what it was trained on, without any error).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from decrappify.errors import ConfigError
from decrappify.nn.backbones import IMAGENET_MEAN, IMAGENET_STD, run_to_layers


def features_stack(vgg: nn.Module) -> nn.Sequential:
    """The ``nn.Sequential`` of conv/ReLU/pool layers: the module itself or its ``.features`` (VGGFeatures)."""
    stack = getattr(vgg, "features", vgg)
    if not isinstance(stack, nn.Sequential):
        raise ConfigError(
            f"a VGG feature extractor needs an nn.Sequential (or a module with .features), got {type(stack)}"
        )
    return stack


def _layer_index(vgg: nn.Module, stack: nn.Sequential, layer: str | int) -> int:
    """A layer's index in ``stack``: a name (``"relu2_2"``) needs a ``VGGFeatures``; a plain stack takes indices."""
    if hasattr(vgg, "layer_index"):
        return vgg.layer_index(layer)  # ConfigError listing the names for an unknown one
    if isinstance(layer, int) and 0 <= layer < len(stack):
        return layer
    raise ConfigError(f"VGG layer {layer!r}: a plain nn.Sequential takes layer indices 0..{len(stack) - 1}")


class VGGFeatureExtractor(nn.Module):
    """Features of images in [0, 1] at chosen layers of a frozen VGG ``features`` stack.

    ``vgg`` is a :class:`~decrappify.nn.backbones.VGGFeatures` (layers by name or index) or any ``nn.Sequential``
    (layers by index). Only the layers up to the deepest chosen one are kept, so deeper ones are neither run nor
    held in memory. The stack stays in eval mode and its weights never need gradients, whatever ``train()`` the
    owner calls; gradients still flow to the input, which is what a training loss needs.
    """

    def __init__(
        self,
        vgg: nn.Module,
        layers: Sequence[str | int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        if not layers:
            raise ConfigError("a VGG feature extractor needs at least one layer")
        stack = features_stack(vgg)
        self.layers = tuple(layers)
        self.layer_indices = tuple(_layer_index(vgg, stack, layer) for layer in self.layers)
        self._index_of = dict(zip(self.layers, self.layer_indices, strict=True))  # for forward(layers=...)
        self.stack = stack[: max(self.layer_indices) + 1]
        self.stack.eval()
        self.stack.requires_grad_(False)
        # Not persistent: the statistics belong to the weights file, not to a checkpoint of the owner.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Keep the stack in eval mode whatever the caller asks (BatchNorm statistics are frozen weights too)."""
        super().train(mode)
        self.stack.eval()
        return self

    def reached_layers(self, height: int, width: int) -> tuple[str | int, ...]:
        """The chosen layers an image of this size still reaches (as given to the constructor): each max-pool
        halves the image, so a small crop has no pixel left at the deepest layers."""
        reached = []
        for layer, index in zip(self.layers, self.layer_indices, strict=True):
            pools = sum(isinstance(module, nn.MaxPool2d) for module in self.stack[:index])
            if min(height, width) >> pools >= 1:
                reached.append(layer)
        return tuple(reached)

    def forward(self, images: Tensor, layers: Sequence[str | int] | None = None) -> list[Tensor]:
        """Features of an NCHW batch in [0, 1] at every chosen layer, or at ``layers`` (some of the chosen ones,
        e.g. :meth:`reached_layers`), in that order."""
        try:
            indices = self.layer_indices if layers is None else [self._index_of[layer] for layer in layers]
        except KeyError as exc:
            raise ConfigError(f"VGG layer {exc.args[0]!r} is not one of this extractor's {self.layers}") from exc
        return run_to_layers(self.stack, (images - self.mean) / self.std, indices)

    def extra_repr(self) -> str:
        return f"layers={self.layers}"
