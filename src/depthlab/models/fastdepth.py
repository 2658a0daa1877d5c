"""FastDepth: MobileNet-NNConv5 (depthwise decoder, additive skips), pruned -- Wofk et al., ICRA 2019.

Built from ``assets/weights/fastdepth_nyu/SPEC.md``: a NetAdapt-pruned MobileNet-v1 encoder (ReLU6),
a five-stage depthwise-separable decoder (5x5 dw + 1x1 pw, ReLU, nearest x2 upsampling) with three
additive skips, and a 1x1 head followed by ReLU. Batch norm is folded into the conv biases of the
published weights, so every conv carries a bias and there are no BN layers.

Input: RGB in [0, 1] (no mean/std), H and W multiples of 32. Output: ``{"depth": (B,1,H,W)}`` metres.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthlab.models.registry import WeightsInfo, register_model

# Pruned channel widths of the published model (SPEC.md section 3). Entry 0 is the first full conv;
# entries 1..13 are (out channels, stride) of the depthwise-separable blocks.
ENCODER_CHANNELS = (16, 56, 88, 120, 144, 256, 408, 376, 272, 288, 296, 328, 480, 512)
ENCODER_STRIDES = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
DECODER_CHANNELS = (200, 256, 120, 56, 16)
# decoder stage index -> encoder block whose output is added after that stage's upsampling
SKIPS = {1: 5, 2: 3, 3: 1}


class SeparableConv(nn.Module):
    """Depthwise k x k conv + activation, then pointwise 1x1 conv + activation (keys ``dw``, ``pw``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, kernel, stride=stride, padding=kernel // 2, groups=cin, bias=True)
        self.pw = nn.Conv2d(cin, cout, 1, bias=True)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pw(self.act(self.dw(x))))


class FastDepth(nn.Module):
    """MobileNet-NNConv5-dw-skipadd. ``forward(x (B,3,H,W) in [0,1]) -> {"depth": (B,1,H,W)}`` metres."""

    def __init__(self, encoder_channels=ENCODER_CHANNELS, encoder_strides=ENCODER_STRIDES,
                 decoder_channels=DECODER_CHANNELS):
        super().__init__()
        enc: list[nn.Module] = [nn.Conv2d(3, encoder_channels[0], 3, stride=encoder_strides[0], padding=1, bias=True)]
        for i in range(1, len(encoder_channels)):
            enc.append(SeparableConv(encoder_channels[i - 1], encoder_channels[i], 3, encoder_strides[i], nn.ReLU6))
        self.encoder = nn.ModuleList(enc)
        dec, cin = [], encoder_channels[-1]
        for cout in decoder_channels:
            dec.append(SeparableConv(cin, cout, 5, 1, nn.ReLU))
            cin = cout
        self.decoder = nn.ModuleList(dec)
        self.head = nn.Conv2d(cin, 1, 1, bias=True)
        self.skips = dict(SKIPS)
        # Shapes must agree at the skip additions.
        for d, e in self.skips.items():
            if decoder_channels[d] != encoder_channels[e]:
                raise ValueError(f"decoder stage {d} ({decoder_channels[d]} ch) cannot add encoder block {e} "
                                 f"({encoder_channels[e]} ch)")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"FastDepth needs H and W multiples of 32, got {tuple(x.shape[-2:])}; "
                             "pad or resize first (depthlab.Predictor does this)")
        saved: dict[int, torch.Tensor] = {}
        x = F.relu6(self.encoder[0](x))
        for i in range(1, len(self.encoder)):
            x = self.encoder[i](x)
            if i in self.skips.values():
                saved[i] = x
        for k, stage in enumerate(self.decoder):
            x = F.interpolate(stage(x), scale_factor=2, mode="nearest")
            if k in self.skips:
                x = x + saved[self.skips[k]]
        return {"depth": F.relu(self.head(x))}


FASTDEPTH_NYU = WeightsInfo(
    output_kind="metric",
    target_encoding="depth",
    min_depth=0.1,
    max_depth=10.0,
    input_size=(224, 224),
    multiple_of=32,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    local_file="weights/fastdepth_nyu/fastdepth_nyu.safetensors",
    license="MIT (c) 2019 Diana Wofk (dwofk/fast-depth); see assets/weights/fastdepth_nyu/PROVENANCE.md "
            "for the licence note on the container file before commercial redistribution",
    paper="Wofk, Ma, Yang, Karaman, Sze. FastDepth: Fast Monocular Depth Estimation on Embedded Systems. ICRA 2019",
    notes="NYU-Depth V2, pruned MobileNet-NNConv5-dw-skipadd; BN folded; fp16-stored weights widened to fp32. "
          "Input RGB in [0,1], no normalisation.",
    train_datasets=("imagenet", "nyu"),  # ImageNet-pretrained MobileNet encoder, trained on NYU-Depth V2
)


@register_model(FASTDEPTH_NYU, tags=("nyu", "indoor", "mobile"))
def fastdepth(**kwargs) -> nn.Module:
    """FastDepth (MobileNet-NNConv5-dw-skipadd, pruned), NYU-Depth V2, metric depth in metres."""
    return FastDepth(**kwargs)


__all__ = ["FastDepth", "SeparableConv", "fastdepth", "FASTDEPTH_NYU"]
