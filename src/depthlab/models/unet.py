"""``unet``: the plain U-Net of the DIODE study (trained from scratch, no pretrained encoder).

Structure (``base_channels=c``, default 64; filters ``c, 2c, 4c`` and an ``8c`` bottleneck)::

    x (B,3,H,W)
    enc1 = DoubleConv(3 -> c)        @ H      -> maxpool 2x2
    enc2 = DoubleConv(c -> 2c)       @ H/2    -> maxpool 2x2
    enc3 = DoubleConv(2c -> 4c)      @ H/4    -> maxpool 2x2
    bottleneck = DoubleConv(4c -> 8c) @ H/8
    up3: x2 (transposed conv 2x2/2, or bilinear x2 + 3x3 conv) 8c -> 4c, concat enc3, DoubleConv(8c -> 4c)
    up2: x2 4c -> 2c, concat enc2, DoubleConv(4c -> 2c)
    up1: x2 2c -> c,  concat enc1, DoubleConv(2c -> c)
    head: 1x1 conv c -> 1                      -> {"depth": (B,1,H,W)} metres

``DoubleConv`` is two 3x3 convs each followed by [BN +] ReLU (``batch_norm`` kwarg). H and W must be
multiples of 8 (three poolings). Kwargs: ``batch_norm`` (bool, default True), ``base_channels``
(int, default 64), ``upsample`` (``"transpose"`` default, or ``"bilinear"``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from depthlab.models.blocks import DoubleConv
from depthlab.models.registry import WeightsInfo, register_model

UPSAMPLE_MODES = ("transpose", "bilinear")


def _up(in_channels: int, out_channels: int, mode: str) -> nn.Module:
    """x2 upsampling that also maps ``in_channels -> out_channels``."""
    if mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    if mode == "bilinear":
        return nn.Sequential(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
                             nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
    raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")


class UNet(nn.Module):
    """Three-level U-Net with concatenation skips.

    ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}`` (metres, unconstrained sign); H, W multiples of 8.
    """

    def __init__(self, batch_norm: bool = True, base_channels: int = 64, upsample: str = "transpose"):
        super().__init__()
        c = int(base_channels)
        widths = (c, 2 * c, 4 * c)
        self.enc1 = DoubleConv(3, widths[0], batch_norm)
        self.enc2 = DoubleConv(widths[0], widths[1], batch_norm)
        self.enc3 = DoubleConv(widths[1], widths[2], batch_norm)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[2], 8 * c, batch_norm)
        self.up3 = _up(8 * c, widths[2], upsample)
        self.dec3 = DoubleConv(2 * widths[2], widths[2], batch_norm)
        self.up2 = _up(widths[2], widths[1], upsample)
        self.dec2 = DoubleConv(2 * widths[1], widths[1], batch_norm)
        self.up1 = _up(widths[1], widths[0], upsample)
        self.dec1 = DoubleConv(2 * widths[0], widths[0], batch_norm)
        self.head = nn.Conv2d(widths[0], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        b = self.bottleneck(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(b), e3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return {"depth": self.head(d1)}


@register_model(WeightsInfo(
    output_kind="metric", target_encoding="depth", min_depth=0.6, max_depth=300.0, multiple_of=8,
    license="Apache-2.0 (architecture code; no published weights)",
    paper="Ronneberger et al. 2015, U-Net; trained on DIODE (Vasiljevic et al. 2019) in the DIODE study",
    notes="Trained from scratch: inputs are images in [0, 1] (mean 0, std 1). max_depth is the DIODE "
          "outdoor cap used by the study's configs.",
))
def unet(batch_norm: bool = True, base_channels: int = 64, upsample: str = "transpose") -> UNet:
    """U-Net (3 pooling levels, 512-filter bottleneck) from the DIODE study."""
    return UNet(batch_norm=batch_norm, base_channels=base_channels, upsample=upsample)
