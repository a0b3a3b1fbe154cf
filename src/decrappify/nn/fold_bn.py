"""Fold inference-mode batch norms into the convolutions before them, for speed.

In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one convolution with scaled
weights and a bias. On the CPU the batch norm is a separate pass over memory (and under bf16 autocast it runs in
fp32, with conversions either side): folding it removed 13 % of the text-mask model's time (EfficientNet-Lite0 has
one after each of its 49 convolutions). Modules opt in by listing their pairs in ``conv_bn_pairs``, because only
the module knows that nothing sits between the two; the folded model is a copy, so a model that may still be
trained is never changed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Make ``conv`` compute ``bn(conv(x))`` with ``bn``'s running statistics (in place; ``conv`` gains a bias)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.ndim - 1))))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def has_foldable(model: nn.Module) -> bool:
    """Whether any module of ``model`` declares conv -> batch-norm pairs still to fold."""
    return any(
        isinstance(getattr(module, bn_name), nn.BatchNorm2d)
        for module in model.modules()
        if hasattr(module, "conv_bn_pairs")
        for _, bn_name in module.conv_bn_pairs()
    )


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every declared conv -> batch-norm pair folded into the convolution and
    the batch norm replaced by the identity; ``model`` itself when it has nothing to fold."""
    if not has_foldable(model):
        return model
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not hasattr(module, "conv_bn_pairs"):
            continue
        for conv_name, bn_name in module.conv_bn_pairs():
            bn = getattr(module, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                fold_conv_bn(getattr(module, conv_name), bn)
                setattr(module, bn_name, nn.Identity())
    return folded
