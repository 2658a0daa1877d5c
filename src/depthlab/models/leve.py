"""Leve: lightweight monocular depth with a DDRNet-23-slim encoder and a light upsampling decoder
(Leve master's thesis), plus its MobileNetV3 encoder variant.

The network predicts **inverse depth** ``max_depth / d`` (``target_encoding="inverse"``, ``max_depth=10``
for NYU); :func:`depthlab.types.decode_target` turns it into metres. The output passes through a softplus
so it is strictly positive (a choice of ours: the division in the decoding needs a positive value).

Decoder (:class:`LeveDecoder`): a chain of :class:`UpBlock` s, each doubling the resolution::

    u    = bilinear_x2(x)                                   (B, C_in,  2h, 2w)   pre-LCB tensor
    y    = LCB(u)                                           (B, C_out, 2h, 2w)   post-LCB tensor
    s    = conv1x1(resize_bilinear(skip, (2h, 2w)))         (B, C_out, 2h, 2w)   branch 2 (if any)
    out  = fuse(y + P(u) + s)  P = identity, or 1x1 conv + BN when C_in != C_out; fuse = 1x1 conv + BN + ReLU

(thesis ch. 5: "the post-LCB and pre-LCB tensors ... are summed up together with the altered tensor obtained
from the second branch, and the whole result goes through one more final 1x1 convolution"; ``P`` is ours:
the text sums tensors of C_in and C_out channels without saying how, and BN + ReLU after ``fuse`` follow its
"each convolution operation is followed by a batch normalization and a ReLU"), then a head 1x1 conv to 1 channel
and, if the last block is not at the input size, bilinear resizing.
(Branch 2 computes the 1x1 conv before the resize: a 1x1 conv commutes with bilinear interpolation, so the
result is the same at a fraction of the cost.)

LCB (layered convolution block) variants, every conv followed by BN + ReLU (``lcb=`` kwarg):

* ``"3x3"``               one 3x3 conv
* ``"3x3+1x1"``           3x3 conv, then 1x1 conv
* ``"3x3+3x3"`` (default) two 3x3 convs
* ``"5x5+5x5"``           two 5x5 convs
* ``"3x3-dw-separable"``  depthwise 3x3 conv (groups = C_in), then pointwise 1x1 conv

Encoders, decoder input and skip taps (``skip=`` kwarg); the block output strides are listed left to right:

* ``leve`` (DDRNet-23-slim, :mod:`depthlab.models.encoders.ddrnet`): decoder input = ``fused`` (high-resolution
  branch + upsampled DAPPM, 128 ch, /8 -- what DDRNet's segmentation head consumes); three blocks with
  ``decoder_channels=(64, 32, 16)`` at /4, /2, /1.

  - ``skip="main"`` (default): taps on the main path, the stem -> layer1 -> layer2 trunk that continues as the
    high-resolution branch, at each block's output resolution: ``layer1`` (/4, 32 ch), ``stem`` (/2, 32 ch);
    the /1 block has no tap (no encoder feature at full resolution), so no branch 2.
  - ``skip="alternative"``: taps from the other, low-resolution branch, coarsest first: ``low4`` (after the
    stage-4 fusion, /32, 256 ch) -> block 1, ``low3`` (after the stage-3 fusion, /16, 128 ch) -> block 2;
    none for the /1 block. Branch 2 upsamples them 8x to the block output size.
  - ``skip="none"``: no branch 2 anywhere.

* ``leve_mobilenetv3`` (timm ``mobilenetv3_large_100``, ``features_only``; features 16/24/40/112/960 ch at
  /2../32): decoder input = the /32 feature; five blocks with ``decoder_channels=(128, 64, 32, 16, 16)`` at
  /16, /8, /4, /2, /1; ``skip="main"`` taps the /16, /8, /4, /2 features (none for the /1 block);
  ``skip="none"``. A MobileNetV3 has a single path, so ``skip="alternative"`` is refused.

Kwargs (JSON-serialisable): ``lcb``, ``skip``, ``decoder_channels`` (list of ints), ``encoder_pretrained``
(bool: timm ImageNet download for MobileNetV3; DDRNet has no hub weights), ``encoder_checkpoint`` (local file:
the official ``DDRNet23s_imagenet.pth`` for ``leve`` -- partial load, report in
``model.encoder.load_report`` -- or a timm ``mobilenetv3_large_100`` file for ``leve_mobilenetv3``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthlab.models.blocks import ConvBNReLU, resize_to, up2
from depthlab.models.encoders import create_encoder
from depthlab.models.registry import IMAGENET_MEAN, IMAGENET_STD, WeightsInfo, register_model

LCB_VARIANTS = ("3x3", "3x3+1x1", "3x3+3x3", "5x5+5x5", "3x3-dw-separable")

# Per encoder: timm/create_encoder name, index of the decoder input feature, skip taps per variant
# (feature indices, one per block, None = no branch 2), default decoder widths.
ENCODER_SPECS: dict[str, dict] = {
    "ddrnet23_slim": {
        # DDRNet23SlimEncoder.feature_names: stem layer1 layer2 low3 low4 high dappm fused
        "input": 7,
        "skips": {"main": [1, 0, None], "alternative": [4, 3, None], "none": [None, None, None]},
        "decoder_channels": (64, 32, 16),
    },
    "mobilenetv3_large_100": {
        "input": 4,
        "skips": {"main": [3, 2, 1, 0, None], "none": [None] * 5},
        "decoder_channels": (128, 64, 32, 16, 16),
    },
}


def make_lcb(variant: str, in_channels: int, out_channels: int) -> nn.Sequential:
    """The layered convolution block ``variant``: ``(B, in, H, W) -> (B, out, H, W)``."""
    if variant == "3x3":
        layers = [ConvBNReLU(in_channels, out_channels, 3)]
    elif variant == "3x3+1x1":
        layers = [ConvBNReLU(in_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 1)]
    elif variant == "3x3+3x3":
        layers = [ConvBNReLU(in_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3)]
    elif variant == "5x5+5x5":
        layers = [ConvBNReLU(in_channels, out_channels, 5), ConvBNReLU(out_channels, out_channels, 5)]
    elif variant == "3x3-dw-separable":
        layers = [ConvBNReLU(in_channels, in_channels, 3, groups=in_channels), ConvBNReLU(in_channels, out_channels, 1)]
    else:
        raise ValueError(f"unknown LCB variant {variant!r}; choose from {LCB_VARIANTS}")
    return nn.Sequential(*layers)


class UpBlock(nn.Module):
    """One Leve upsampling block (see module docstring).

    ``forward(x (B, C_in, h, w), skip (B, C_skip, hs, ws) | None) -> (B, C_out, 2h, 2w)``.
    ``skip_channels=None`` builds no branch 2 (``self.skip is None``).
    """

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int | None, lcb: str = "3x3+3x3"):
        super().__init__()
        self.lcb = make_lcb(lcb, in_channels, out_channels)
        self.shortcut = (nn.Identity() if in_channels == out_channels
                         else ConvBNReLU(in_channels, out_channels, 1, relu=False))
        self.skip = None if skip_channels is None else nn.Conv2d(skip_channels, out_channels, kernel_size=1)
        self.fuse = ConvBNReLU(out_channels, out_channels, 1)  # the final 1x1 conv of every block (ch. 5)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        u = up2(x)
        y = self.lcb(u) + self.shortcut(u)
        if self.skip is not None:
            y = y + resize_to(self.skip(skip), y.shape[-2:])
        return self.fuse(y)


class LeveDecoder(nn.Module):
    """Chain of :class:`UpBlock` s plus a final 1x1 conv.

    ``in_channels``: decoder input channels; ``decoder_channels``: one width per block;
    ``skip_channels``: per block, channels of its skip tap or None.
    ``forward(x, skips, size) -> (B, 1, *size)`` raw (pre-activation) output.
    """

    def __init__(self, in_channels: int, decoder_channels: Sequence[int], skip_channels: Sequence[int | None],
                 lcb: str = "3x3+3x3"):
        super().__init__()
        if len(skip_channels) != len(decoder_channels):
            raise ValueError(f"{len(decoder_channels)} decoder blocks but {len(skip_channels)} skip entries")
        blocks, c = [], in_channels
        for c_out, c_skip in zip(decoder_channels, skip_channels):
            blocks.append(UpBlock(c, c_out, c_skip, lcb))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Conv2d(c, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor | None], size) -> torch.Tensor:
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return resize_to(self.final(x), size)


class Leve(nn.Module):
    """Encoder (DDRNet-23-slim or MobileNetV3) + :class:`LeveDecoder`; predicts inverse depth.

    ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}``: ``max_depth / d`` (> 0, unitless); decode with
    ``depthlab.types.decode_target(out, "inverse", max_depth)`` to get metres.
    """

    def __init__(self, encoder: str = "ddrnet23_slim", lcb: str = "3x3+3x3", skip: str = "main",
                 decoder_channels: Sequence[int] | None = None, encoder_pretrained: bool = False,
                 encoder_checkpoint: str | None = None):
        super().__init__()
        if encoder not in ENCODER_SPECS:
            raise ValueError(f"unknown Leve encoder {encoder!r}; choose from {sorted(ENCODER_SPECS)}")
        if lcb not in LCB_VARIANTS:
            raise ValueError(f"unknown LCB variant {lcb!r}; choose from {LCB_VARIANTS}")
        spec = ENCODER_SPECS[encoder]
        if skip not in spec["skips"]:
            raise ValueError(f"skip={skip!r} is not available for the {encoder} encoder; choose from "
                             f"{sorted(spec['skips'])}" + (" (a single-path encoder has no other branch)"
                                                           if skip == "alternative" else ""))
        self.lcb_variant, self.skip_variant = lcb, skip
        self.encoder = create_encoder(encoder, pretrained=bool(encoder_pretrained),
                                      checkpoint_path=None if encoder_checkpoint is None else str(encoder_checkpoint))
        self.input_index = spec["input"]
        self.skip_indices = list(spec["skips"][skip])
        widths = tuple(decoder_channels) if decoder_channels is not None else spec["decoder_channels"]
        if len(widths) != len(self.skip_indices):
            raise ValueError(f"the {encoder} Leve decoder has {len(self.skip_indices)} blocks; "
                             f"got decoder_channels={list(widths)}")
        ch = self.encoder.out_channels
        self.decoder = LeveDecoder(ch[self.input_index], widths,
                                   [None if i is None else ch[i] for i in self.skip_indices], lcb)
        self.init_only_args = ("encoder_pretrained", "encoder_checkpoint")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        skips = [None if i is None else feats[i] for i in self.skip_indices]
        raw = self.decoder(feats[self.input_index], skips, x.shape[-2:])
        return {"depth": F.softplus(raw)}


def _info(encoder_notes: str) -> WeightsInfo:
    return WeightsInfo(
        output_kind="metric", target_encoding="inverse", min_depth=0.1, max_depth=10.0, multiple_of=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        license="Apache-2.0 (architecture code; no published depth weights)",
        paper="Leve, master's thesis: lightweight monocular depth estimation (DDRNet-23-slim encoder, "
              "Hong et al. 2021; upsampling decoder with layered convolution blocks), NYU Depth V2",
        notes="Raw output is max_depth / depth (inverse). " + encoder_notes,
    )


@register_model(_info("DDRNet ImageNet weights: encoder_checkpoint=DDRNet23s_imagenet.pth (partial load)."))
def leve(lcb: str = "3x3+3x3", skip: str = "main", decoder_channels: Sequence[int] | None = None,
         encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> Leve:
    """Leve: DDRNet-23-slim encoder + LCB upsampling decoder, inverse-depth output."""
    return Leve("ddrnet23_slim", lcb, skip, decoder_channels, encoder_pretrained, encoder_checkpoint)


@register_model(_info("Encoder ImageNet weights: encoder_pretrained=True (timm download) or encoder_checkpoint=PATH."))
def leve_mobilenetv3(lcb: str = "3x3+3x3", skip: str = "main", decoder_channels: Sequence[int] | None = None,
                     encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> Leve:
    """Leve with a MobileNetV3-Large encoder (timm mobilenetv3_large_100), inverse-depth output."""
    return Leve("mobilenetv3_large_100", lcb, skip, decoder_channels, encoder_pretrained, encoder_checkpoint)
