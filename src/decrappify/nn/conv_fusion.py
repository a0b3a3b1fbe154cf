"""Run a convolution and the ReLU after it as one oneDNN call on the CPU, with its weights cast once.

Why: after batch norms are folded (`nn.fold_bn`), a mobile block is convolution, ReLU6, convolution, ReLU6,
convolution. Eagerly, every ReLU6 is a separate pass over a large activation (in bf16 on channels-last memory,
147 us a call on the text-mask model, 14 % of its time) and under bf16 autocast every convolution first copies
its fp32 weights to bf16, on every call. oneDNN applies the activation as it writes the convolution's output
(PyTorch's own compiler, inductor, calls the same ``mkldnn._convolution_pointwise`` operator), and the weights are
cast once per number format and packed once into oneDNN's blocked layout. A depthwise 3x3 + ReLU6 on
96 x 256 x 256 bf16 took 0.9 ms fused against 2.1 ms eagerly; a 1x1 convolution on 192 x 16 x 16 took 0.15 ms with
packed weights, 0.20 ms reordering them on every call. docs/benchmarks/text-mask.md has the whole model's figures.

Modules opt in, as for batch-norm folding: ``conv_activations()`` names each convolution and the activation module
right after it (with only a folded batch norm, now the identity, between them). A convolution may instead carry
its own input padding, ``padded(x) -> (x, padding)`` (`efficientnet.SameConv2d`). The fused model is a copy and
is for inference only (no gradients flow through the operator).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

#: Activation modules oneDNN can apply to a convolution's output: operator name and its scalars.
FUSABLE = {nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0])}


def fusion_available() -> bool:
    """Whether this torch build has oneDNN's fused CPU convolution."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """``activation(conv(x))`` as one oneDNN call, in the input's number format (bf16 under CPU autocast).

    ``attr`` is the operator's activation name ("none" for a convolution alone). Weights are cast to a number
    format and packed on first use and kept, so the model must not be trained or changed afterwards.
    """

    def __init__(self, conv: nn.Conv2d, attr: str = "none", scalars: list[float] | None = None):
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero padding given as numbers can be fused")
        self.conv = conv
        self.attr, self.scalars = attr, list(scalars or [])
        self._weights: dict[torch.dtype, tuple[Tensor, Tensor | None]] = {}

    def _weights_for(self, x: Tensor, padding: list[int]) -> tuple[Tensor, Tensor | None]:
        """The weights in ``x``'s number format, packed in oneDNN's blocked layout (a convolution then does not
        reorder them on every call; the first input's shape is the hint, and any other shape still works)."""
        if x.dtype not in self._weights:
            conv, bias = self.conv, self.conv.bias
            weight = conv.weight.detach().to(x.dtype)
            if hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"):
                weight = torch.ops.mkldnn._reorder_convolution_weight(
                    weight, padding, list(conv.stride), list(conv.dilation), conv.groups, list(x.shape)
                )
            self._weights[x.dtype] = (weight, None if bias is None else bias.detach().to(x.dtype))
        return self._weights[x.dtype]

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("FusedConv2d runs on the CPU only (oneDNN)")
        if torch.is_autocast_enabled("cpu"):
            x = x.to(torch.get_autocast_dtype("cpu"))
        padded = getattr(self.conv, "padded", None)
        x, padding = padded(x) if padded is not None else (x, list(self.conv.padding))
        weight, bias = self._weights_for(x, padding)
        conv = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, padding, list(conv.stride), list(conv.dilation), conv.groups,
            self.attr, self.scalars, "",
        )  # fmt: skip


def has_fusable(model: nn.Module) -> bool:
    """Whether any module of ``model`` declares convolution -> activation pairs not fused yet."""
    return any(
        isinstance(getattr(module, conv_name), nn.Conv2d)
        for module in model.modules()
        if hasattr(module, "conv_activations")
        for conv_name in module.conv_activations()
    )


def fuse_conv_activations(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every declared convolution fused with its activation (one left as is when an
    unfolded batch norm still sits between them), or ``model`` itself when there is nothing to fuse or this torch
    has no oneDNN. For CPU inference: call it after `nn.fold_bn.fold_batch_norms`."""
    if not fusion_available() or not has_fusable(model):
        return model
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not hasattr(module, "conv_activations"):
            continue
        bns = dict(module.conv_bn_pairs()) if hasattr(module, "conv_bn_pairs") else {}
        for conv_name, act_name in module.conv_activations().items():
            conv = getattr(module, conv_name)
            between = getattr(module, bns[conv_name]) if conv_name in bns else nn.Identity()
            if not isinstance(conv, nn.Conv2d) or not isinstance(between, nn.Identity):
                continue
            activation = getattr(module, act_name) if act_name else None
            if activation is None:
                setattr(module, conv_name, FusedConv2d(conv))
            elif type(activation) in FUSABLE:
                attr, scalars = FUSABLE[type(activation)]
                setattr(module, conv_name, FusedConv2d(conv, attr, scalars))
                setattr(module, act_name, nn.Identity())
    return fused
