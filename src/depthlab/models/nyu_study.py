"""The NYU Depth V2 encoder-decoder study: six models that differ in their skip connections.

All encoders are timm ``features_only`` backbones built by :func:`depthlab.models.encoders.create_encoder`
(random init by default; ``encoder_pretrained=True`` asks timm for ImageNet weights, online or from the
Hugging Face cache; ``encoder_checkpoint=PATH`` loads a local ImageNet file; offline without either, a one-line
:class:`~depthlab.errors.WeightsUnavailableError` names both). The study configs (configs/nyu_study.yaml)
default to ``encoder_pretrained: true``, as the study used ImageNet-pretrained encoders. Every model maps ``x (B,3,H,W)``
(ImageNet-normalised) to ``{"depth": (B,1,H,W)}`` in metres (NYU, capped at 10 m).

Notation: ``up2`` = bilinear x2, ``T`` = 3x3 transposed conv with stride 2 (exact x2),
``res`` = decoder-internal residual (1x1 conv on the block's lower-resolution input, then bilinear x2;
in the ResNetE decoders followed by a ReLU: "convolutional layer followed by bilinear upsampling, and a ReLU"),
``f0..f4`` = encoder features at strides 2, 4, 8, 16, 32.

* ``de_noskip`` -- ResNet50 cut after ``layer3`` (no ``layer4``, no classifier; stride 16, 1024 ch);
  bridge ``1x1 conv + BN`` (1024 -> 512); four blocks ``up2 -> 3x3 conv -> ReLU`` (256, 128, 64, 32 ch,
  strides 8, 4, 2, 1); blocks 2-4 add ``res`` and apply BN; final ``3x3 conv -> ReLU`` to 1 channel.
  No encoder skips. ``multiple_of=16``.
* ``resnete_v1`` -- ResNet34; five blocks ``T -> ReLU -> 3x3 conv -> ReLU`` (256, 128, 64, 64, 32 ch);
  blocks 1-4 add the encoder feature of the same stride (f3, f2, f1, f0) then BN; blocks 3-5 add
  ``res`` then BN; final 3x3 conv to 1 channel, bilinear resize to the input size (a no-op for
  multiples of 32).
* ``resnete_v2`` -- as v1 with only the last decoder residual kept, and it is not added: the input
  image (3 ch), that residual (32 ch) and the last block's output (32 ch) are concatenated before the
  final 3x3 conv (67 -> 1).
* ``resnete_v3`` -- every skip by concatenation: five blocks ``T -> ReLU`` whose outputs are
  concatenated with f3, f2, f1, f0 and, after the last block, the input image (32 + 3 ch); no decoder
  residuals; three final convs (3x3 35->32 + ReLU, 3x3 32->16 + ReLU, 3x3 16->1).
* ``densenet121_unet`` -- DenseNet121 encoder and :class:`UNetDecoder`: an intermediate 1x1 conv on the
  deepest feature (1024 -> 1024), four blocks ``up2 -> concat encoder feature -> 2x(3x3 conv-BN-ReLU)``
  (512, 256, 128, 64 ch, strides 16 .. 2), a 3x3 conv to 1 channel and bilinear x2 to the input size.
* ``resnet50_unet`` -- the same :class:`UNetDecoder` (same code, built from the encoder's channel list)
  on the full ResNet50 (intermediate conv 2048 -> 1024).

Kwargs common to all six: ``encoder_pretrained`` (bool), ``encoder_checkpoint`` (str path or None).
``densenet121_unet``/``resnet50_unet`` also take ``decoder_channels`` (list of 4 ints).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from depthlab.errors import WeightsUnavailableError
from depthlab.models.blocks import ConvBNReLU, DoubleConv, UpResidual, resize_to, up2
from depthlab.models.encoders import create_encoder
from depthlab.models.registry import IMAGENET_MEAN, IMAGENET_STD, WeightsInfo, register_model

_INIT_ONLY = ("encoder_pretrained", "encoder_checkpoint")


def _encoder(name: str, encoder_pretrained: bool, encoder_checkpoint: str | None, **kw) -> nn.Module:
    """The timm encoder ``name``; offline without a local file, a one-line WeightsUnavailableError that names
    both ways to supply the ImageNet weights in this family's config keys (hub cache, local file)."""
    try:
        return create_encoder(name, pretrained=bool(encoder_pretrained),
                              checkpoint_path=None if encoder_checkpoint is None else str(encoder_checkpoint), **kw)
    except WeightsUnavailableError as e:
        if encoder_checkpoint is not None:
            raise
        import timm

        hub = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or f"timm/{name}"
        raise WeightsUnavailableError(
            f"ImageNet weights for the {name} encoder are not available offline: either let timm fetch them from "
            f"the Hugging Face hub ({hub}; online once, then from the HF cache) or give a downloaded file with "
            f"model.kwargs.encoder_checkpoint=FILE (model.kwargs.encoder_pretrained=false trains without them)") from e


def _tconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """3x3 transposed conv, stride 2, exact x2: ``(B,Cin,H,W) -> (B,Cout,2H,2W)``."""
    return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)


# --------------------------------------------------------------------------------------------------
# de_noskip
# --------------------------------------------------------------------------------------------------
class NoSkipBlock(nn.Module):
    """``up2 -> 3x3 conv -> ReLU`` [+ ``res`` from the block input, then BN].

    ``(B,Cin,H,W) -> (B,Cout,2H,2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, residual: bool):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3, batch_norm=False)
        self.residual = UpResidual(in_channels, out_channels) if residual else None
        self.bn = nn.BatchNorm2d(out_channels) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(up2(x))
        if self.residual is not None:
            y = self.bn(y + self.residual(x))
        return y


class DENoSkip(nn.Module):
    """ResNet50 (to layer3) encoder, residual bilinear decoder, no encoder skips.

    ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}`` (metres, >= 0); H, W multiples of 16.
    """

    def __init__(self, encoder_pretrained: bool = False, encoder_checkpoint: str | None = None,
                 decoder_channels: Sequence[int] = (256, 128, 64, 32)):
        super().__init__()
        self.encoder = _encoder("resnet50", encoder_pretrained, encoder_checkpoint, out_indices=(3,))
        c_enc = self.encoder.out_channels[-1]
        width = 2 * decoder_channels[0]
        self.bridge = ConvBNReLU(c_enc, width, 1, relu=False)
        blocks, c = [], width
        for i, c_out in enumerate(decoder_channels):
            blocks.append(NoSkipBlock(c, c_out, residual=i > 0))  # 3 residuals for 4 blocks
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Conv2d(c, 1, kernel_size=3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.bridge(self.encoder(x)[-1])
        for block in self.blocks:
            y = block(y)
        return {"depth": resize_to(self.head(y), x.shape[-2:])}


# --------------------------------------------------------------------------------------------------
# ResNetE v1 / v2 / v3 (ResNet34 encoder, transposed-conv decoders)
# --------------------------------------------------------------------------------------------------
class TConvBlock(nn.Module):
    """``T -> ReLU -> 3x3 conv -> ReLU``, then optional ``+ skip -> BN`` and ``+ res -> BN``.

    ``forward(x (B,Cin,H,W), skip (B,Cout,2H,2W) | None) -> (B,Cout,2H,2W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, skip: bool, residual: bool):
        super().__init__()
        self.up = nn.Sequential(_tconv(in_channels, out_channels), nn.ReLU(inplace=True))
        self.conv = ConvBNReLU(out_channels, out_channels, 3, batch_norm=False)
        self.skip_bn = nn.BatchNorm2d(out_channels) if skip else None
        self.residual = UpResidual(in_channels, out_channels, relu=True) if residual else None
        self.res_bn = nn.BatchNorm2d(out_channels) if residual else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(self.up(x))
        if self.skip_bn is not None:
            y = resize_to(y, skip.shape[-2:])
            y = self.skip_bn(y + skip)
        if self.residual is not None:
            y = self.res_bn(y + resize_to(self.residual(x), y.shape[-2:]))
        return y


class ResNetE(nn.Module):
    """ResNet34 encoder + five x2 transposed-conv blocks; ``version`` 1, 2 or 3 (see module docstring).

    ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}`` (metres); H, W multiples of 32.
    """

    def __init__(self, version: int = 1, encoder_pretrained: bool = False, encoder_checkpoint: str | None = None):
        super().__init__()
        if version not in (1, 2, 3):
            raise ValueError(f"ResNetE version must be 1, 2 or 3, got {version!r}")
        self.version = version
        self.encoder = _encoder("resnet34", encoder_pretrained, encoder_checkpoint)
        enc = list(self.encoder.out_channels)  # [64, 64, 128, 256, 512] at strides 2..32
        skips = enc[-2::-1]  # f3, f2, f1, f0 -> [256, 128, 64, 64]
        dec = skips + [enc[0] // 2]  # block outputs [256, 128, 64, 64, 32]
        n = len(dec)
        if version in (1, 2):
            # v1: residuals in the last three blocks; v2: only the last one, used by concatenation.
            self.blocks = nn.ModuleList(
                TConvBlock(c_in, c_out, skip=i < len(skips), residual=(version == 1 and i >= n - 3))
                for i, (c_in, c_out) in enumerate(zip([enc[-1]] + dec[:-1], dec)))
            if version == 1:
                self.head = nn.Conv2d(dec[-1], 1, kernel_size=3, padding=1)
            else:
                self.last_residual = UpResidual(dec[-2], dec[-1], relu=True)
                self.head = nn.Conv2d(3 + 2 * dec[-1], 1, kernel_size=3, padding=1)
        else:
            concatenated = skips + [3]  # after each block: f3, f2, f1, f0, then the RGB image
            blocks, c = [], enc[-1]
            for c_out, c_cat in zip(dec, concatenated):
                blocks.append(nn.Sequential(_tconv(c, c_out), nn.ReLU(inplace=True)))
                c = c_out + c_cat
            self.blocks = nn.ModuleList(blocks)
            self.head = nn.Sequential(
                ConvBNReLU(c, dec[-1], 3, batch_norm=False),
                ConvBNReLU(dec[-1], dec[-1] // 2, 3, batch_norm=False),
                nn.Conv2d(dec[-1] // 2, 1, kernel_size=3, padding=1),
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        skips = feats[-2::-1]
        y = feats[-1]
        if self.version == 1:
            for i, block in enumerate(self.blocks):
                y = block(y, skips[i] if i < len(skips) else None)
            out = self.head(y)
        elif self.version == 2:
            for i, block in enumerate(self.blocks):
                prev = y
                y = block(y, skips[i] if i < len(skips) else None)
            res = resize_to(self.last_residual(prev), y.shape[-2:])
            out = self.head(torch.cat([resize_to(x, y.shape[-2:]), res, y], dim=1))
        else:
            for i, block in enumerate(self.blocks):
                y = block(y)
                skip = skips[i] if i < len(skips) else x  # the input image after the last block
                y = torch.cat([resize_to(y, skip.shape[-2:]), skip], dim=1)
            out = self.head(y)
        return {"depth": resize_to(out, x.shape[-2:])}


# --------------------------------------------------------------------------------------------------
# U-Net decoder shared by densenet121_unet and resnet50_unet
# --------------------------------------------------------------------------------------------------
class UNetDecoder(nn.Module):
    """smp-style decoder built from the encoder's channel list (DenseDepth-like).

    ``encoder_channels``: channels of the encoder features, shallow to deep (each stride 2x the
    previous). An intermediate 1x1 conv maps the deepest feature to ``2 * decoder_channels[0]``; each of
    the ``len(encoder_channels) - 1`` blocks does ``up2 -> concat(skip) -> 2x(3x3 conv-BN-ReLU)`` with
    the next-shallower feature as skip. ``forward(features) -> (B, decoder_channels[-1], H_f0, W_f0)``.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int] = (512, 256, 128, 64)):
        super().__init__()
        encoder_channels = list(encoder_channels)
        skip_channels = encoder_channels[-2::-1]
        if len(decoder_channels) != len(skip_channels):
            raise ValueError(f"need {len(skip_channels)} decoder channels for encoder channels "
                             f"{encoder_channels}, got {list(decoder_channels)}")
        c = 2 * decoder_channels[0]
        self.intermediate = nn.Conv2d(encoder_channels[-1], c, kernel_size=1)
        blocks = []
        for c_skip, c_out in zip(skip_channels, decoder_channels):
            blocks.append(DoubleConv(c + c_skip, c_out))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = c

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.intermediate(features[-1])
        for block, skip in zip(self.blocks, features[-2::-1]):
            y = block(torch.cat([resize_to(up2(y), skip.shape[-2:]), skip], dim=1))
        return y


class EncoderUNet(nn.Module):
    """A timm encoder + :class:`UNetDecoder` + 3x3 conv head, resized to the input size.

    ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}`` (metres); H, W multiples of 32.
    """

    def __init__(self, encoder_name: str, encoder_pretrained: bool = False, encoder_checkpoint: str | None = None,
                 decoder_channels: Sequence[int] = (512, 256, 128, 64)):
        super().__init__()
        self.encoder = _encoder(encoder_name, encoder_pretrained, encoder_checkpoint)
        self.decoder = UNetDecoder(self.encoder.out_channels, decoder_channels)
        self.head = nn.Conv2d(self.decoder.out_channels, 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"depth": resize_to(self.head(self.decoder(self.encoder(x))), x.shape[-2:])}


# --------------------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------------------
def _info(multiple_of: int = 32, notes: str = "") -> WeightsInfo:
    return WeightsInfo(
        output_kind="metric", target_encoding="depth", min_depth=1e-3, max_depth=10.0, multiple_of=multiple_of,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        license="Apache-2.0 (architecture code; no published weights)",
        paper="NYU Depth V2 skip-connection study (encoder-decoder variants; timm ImageNet encoders)",
        notes=notes or "Encoder ImageNet weights: encoder_pretrained=True (timm download) or encoder_checkpoint=PATH.",
    )


def _mark(model: nn.Module) -> nn.Module:
    model.init_only_args = _INIT_ONLY  # encoder weights are inside any depthlab checkpoint
    return model


@register_model(_info(multiple_of=16))
def de_noskip(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> DENoSkip:
    """ResNet50 (to layer3) + residual bilinear decoder without encoder skips (NYU study)."""
    return _mark(DENoSkip(encoder_pretrained, encoder_checkpoint))


@register_model(_info())
def resnete_v1(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> ResNetE:
    """ResNet34 + transposed-conv decoder, sum skips and 3 decoder residuals (NYU study)."""
    return _mark(ResNetE(1, encoder_pretrained, encoder_checkpoint))


@register_model(_info())
def resnete_v2(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> ResNetE:
    """ResNetE v1 with only the last residual, concatenated with the image before the head (NYU study)."""
    return _mark(ResNetE(2, encoder_pretrained, encoder_checkpoint))


@register_model(_info())
def resnete_v3(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None) -> ResNetE:
    """ResNet34 + transposed-conv decoder with concatenation skips incl. the image (NYU study)."""
    return _mark(ResNetE(3, encoder_pretrained, encoder_checkpoint))


@register_model(_info())
def densenet121_unet(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None,
                     decoder_channels: Sequence[int] = (512, 256, 128, 64)) -> EncoderUNet:
    """DenseNet121 encoder + U-Net decoder (bilinear x2, concat, 2x conv-BN-ReLU) (NYU study)."""
    return _mark(EncoderUNet("densenet121", encoder_pretrained, encoder_checkpoint, decoder_channels))


@register_model(_info())
def resnet50_unet(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None,
                  decoder_channels: Sequence[int] = (512, 256, 128, 64)) -> EncoderUNet:
    """ResNet50 encoder + the same U-Net decoder as densenet121_unet (NYU study)."""
    return _mark(EncoderUNet("resnet50", encoder_pretrained, encoder_checkpoint, decoder_channels))
