"""Small building blocks shared by the model families (U-Net, NYU study, Leve).

Everything here is a thin composition of PyTorch layers; families import these instead of
re-declaring their own conv-BN-ReLU. Shapes are ``(B, C, H, W)``; spatial sizes in pixels.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthlab.processing import resize_to  # noqa: F401  (re-exported: the one resize, used by the model families)


class ConvBNReLU(nn.Sequential):
    """``conv(k x k) -> [BN] -> [ReLU]``, size-preserving for stride 1 (padding ``k // 2``).

    Children are named ``conv``, ``bn``, ``act`` so state-dict keys read well. The conv has a bias
    only when there is no BN after it. ``groups=in_channels`` gives a depthwise conv.
    ``(B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, batch_norm: bool = True, relu: bool = True):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                   padding=kernel_size // 2, groups=groups, bias=not batch_norm)
        if batch_norm:
            layers["bn"] = nn.BatchNorm2d(out_channels)
        if relu:
            layers["act"] = nn.ReLU(inplace=True)
        super().__init__(layers)


class DoubleConv(nn.Sequential):
    """Two ``ConvBNReLU`` 3x3 layers (the classic U-Net / DenseDepth block).

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``; ``batch_norm=False`` drops both BNs
    (the convs then carry biases).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True):
        super().__init__(OrderedDict(
            conv1=ConvBNReLU(in_channels, out_channels, 3, batch_norm=batch_norm),
            conv2=ConvBNReLU(out_channels, out_channels, 3, batch_norm=batch_norm),
        ))


class UpResidual(nn.Module):
    """Decoder-internal residual: ``1x1 conv`` on the lower-resolution map, then bilinear x2
    [, then ReLU when ``relu``].

    Used where a decoder block adds a shortcut from its own (coarser) input to its output.
    ``(B, in_channels, H, W) -> (B, out_channels, 2H, 2W)``. The NYU study's ResNetE decoders describe
    theirs as "a convolutional layer followed by bilinear upsampling, and a ReLU activation"
    (``relu=True``); DE NoSkip's is "a convolutional layer and an upsample layer" (``relu=False``).
    """

    def __init__(self, in_channels: int, out_channels: int, relu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = up2(self.conv(x))
        return y if self.relu is None else self.relu(y)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (``align_corners=False``): ``(B,C,H,W) -> (B,C,2H,2W)``."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


__all__ = ["ConvBNReLU", "DoubleConv", "UpResidual", "up2", "resize_to"]
