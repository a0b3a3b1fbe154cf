"""Neural-network modules (pure torch, no file or network I/O): layers, backbones, generators, the model registry.

Weights are read and written by :mod:`decrappify.weights`, never here.
"""

from decrappify.nn.backbones import BACKBONES, ResNet, VGGFeatures, create_backbone
from decrappify.nn.layers import PixelShuffleUpsample, ResBlock, SelfAttention, conv_layer, icnr_
from decrappify.nn.models import ARCHS, count_flops, create_model, gflops_per_output_megapixel
from decrappify.nn.unet import CompactUnet, UnetGenerator

__all__ = [
    "ARCHS",
    "BACKBONES",
    "CompactUnet",
    "PixelShuffleUpsample",
    "ResBlock",
    "ResNet",
    "SelfAttention",
    "UnetGenerator",
    "VGGFeatures",
    "conv_layer",
    "count_flops",
    "create_backbone",
    "create_model",
    "gflops_per_output_megapixel",
    "icnr_",
]
