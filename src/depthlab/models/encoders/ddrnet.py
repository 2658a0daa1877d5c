"""DDRNet-23-slim encoder (Hong et al. 2021, "Deep Dual-resolution Networks for Real-time and
Accurate Semantic Segmentation of Road Scenes").

Hand-written because timm (and smp) do not provide DDRNet. Module names follow the authors' official
repository (``ydhongHIT/DDRNet``) so that its ImageNet-pretrained classification checkpoint
``DDRNet23s_imagenet.pth`` loads by name from a local file. Widths are the slim ones: ``planes=32``,
high-resolution branch ``2 * planes = 64``, ``spp_planes=128`` (``head_planes=64`` belongs to the
segmentation head, which this encoder does not contain; Leve has its own decoder).

Structure for an input ``(B, 3, H, W)`` (strides w.r.t. the input)::

    conv1      3x3/2 conv-BN-ReLU (32)  [/2]  -> 3x3/2 conv-BN-ReLU (32)  [/4]
    layer1     2 BasicBlocks, 32 ch                                        /4
    layer2     2 BasicBlocks, 64 ch (first strided)                        /8
    -- dual resolution: high branch stays at /8 (64 ch), low branch goes /16 -> /32 -> /64 --
    layer3     low:  2 BasicBlocks 64 -> 128, /16       layer3_  high: 2 BasicBlocks 64 -> 64, /8
      fusion:  low  += down3(high)          (3x3/2 conv + BN)
               high += up(compression3(low)) (1x1 conv + BN, bilinear to the high size)
    layer4     low:  2 BasicBlocks 128 -> 256, /32      layer4_  high: 2 BasicBlocks 64 -> 64, /8
      fusion:  low  += down4(high)          (3x3/2 conv-BN-ReLU, 3x3/2 conv + BN)
               high += up(compression4(low))
    layer5     low:  1 Bottleneck 256 -> 512, stride 2, /64
    layer5_    high: 1 Bottleneck 64 -> 128, /8
    spp        DAPPM on the low branch: 512 -> 128 ch at /64 (avg pools k5/s2, k9/s4, k17/s8, global;
               hierarchical 3x3 "process" convs; 1x1 compression + 1x1 shortcut)
    fused      high (layer5_) + bilinear(spp) at /8, 128 ch: the input of DDRNet's segmentation head

ReLUs sit between stages (pre-activation of each stage input), as in the official code; the last block
of every multi-block stage and the bottlenecks end without ReLU.

``forward(x)`` returns, in this order (``feature_names``), with ``out_channels`` / ``reductions``::

    stem   32 /2    layer1 32 /4    layer2 64 /8    low3 128 /16    low4 256 /32
    high  128 /8    dappm 128 /64   fused 128 /8

Non-multiples of 64 work: each fusion interpolates to the actual size of the other branch.

Pretrained weights: the official ImageNet file is a classification network (``DualResNet`` with
``layer5`` at stride 1, ``down5``, ``last_layer``, ``linear``; usually saved from DataParallel with a
``module.`` prefix). :func:`load_official_imagenet` strips the prefix, skips the classifier
(``down5.*``, ``last_layer.*``, ``linear.*``), loads everything else by name (the stride of ``layer5``
does not change its weights) and reports what it skipped and what stayed randomly initialised
(``spp.*``: DAPPM exists only in the segmentation network). The official weights are published on
Google Drive / Baidu links from the repository README, not on a model hub, so
``pretrained=True`` needs ``checkpoint_path=`` (a local copy).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from depthlab.models.weights import LoadReport, load_partial
from depthlab.processing import resize_to

BN_MOMENTUM = 0.1
CLASSIFIER_PREFIXES = ("down5.", "last_layer.", "linear.")  # official classification-only modules
SEGMENTATION_ONLY_PREFIXES = ("spp.",)  # not in the ImageNet classification network


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 conv-BN, identity or 1x1 projection shortcut).

    ``(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)``; ``no_relu`` skips the final ReLU.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y)) + shortcut
        return y if self.no_relu else self.relu(y)


class Bottleneck(nn.Module):
    """Bottleneck block 1x1 -> 3x3 (strided) -> 1x1 with expansion 2.

    ``(B, inplanes, H, W) -> (B, 2 * planes, H/stride, W/stride)``; no final ReLU by default.
    """

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 no_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y)) + shortcut
        return y if self.no_relu else self.relu(y)


def _stage(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first may stride/project, the last of several ends without ReLU."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), _bn(out))
    layers = [block(inplanes, planes, stride, downsample)]
    for i in range(1, blocks):
        layers.append(block(out, planes, 1, no_relu=(i == blocks - 1)))
    return nn.Sequential(*layers)


def _bn_relu_conv(cin: int, cout: int, kernel_size: int = 1) -> list[nn.Module]:
    return [_bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)]


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module (pre-activation BN-ReLU-conv units).

    ``scale0`` is a 1x1 branch at full size; ``scale1..3`` average-pool with kernels 5/9/17 and strides
    2/4/8, ``scale4`` pools globally; each pooled branch is upsampled, added to the previous level and
    refined by a 3x3 ``process{i}`` conv; the five levels are concatenated, compressed by 1x1 and added to
    a 1x1 ``shortcut``. ``(B, inplanes, h, w) -> (B, outplanes, h, w)``.
    """

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int):
        super().__init__()
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1)]
        for i, pool in enumerate(pools, start=1):
            setattr(self, f"scale{i}", nn.Sequential(pool, *_bn_relu_conv(inplanes, branch_planes)))
        self.scale0 = nn.Sequential(*_bn_relu_conv(inplanes, branch_planes))
        for i in range(1, 5):
            setattr(self, f"process{i}", nn.Sequential(*_bn_relu_conv(branch_planes, branch_planes, 3)))
        self.compression = nn.Sequential(*_bn_relu_conv(branch_planes * 5, outplanes))
        self.shortcut = nn.Sequential(*_bn_relu_conv(inplanes, outplanes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = [self.scale0(x)]
        for i in range(1, 5):
            pooled = getattr(self, f"scale{i}")(x)
            levels.append(getattr(self, f"process{i}")(resize_to(pooled, x.shape) + levels[-1]))
        return self.compression(torch.cat(levels, dim=1)) + self.shortcut(x)


class DDRNet23SlimEncoder(nn.Module):
    """DDRNet-23-slim backbone returning multi-scale features (see module docstring).

    ``forward(x (B,3,H,W)) -> list`` of 8 maps, ``out_channels`` / ``reductions`` / ``feature_names``
    describe them. ``checkpoint_path`` loads the official ImageNet classification checkpoint (partial,
    reported in ``self.load_report``).
    """

    feature_names = ("stem", "layer1", "layer2", "low3", "low4", "high", "dappm", "fused")

    def __init__(self, pretrained: bool = False, checkpoint_path: str | None = None, planes: int = 32,
                 spp_planes: int = 128, layers: tuple[int, int, int, int] = (2, 2, 2, 2)):
        super().__init__()
        hp = planes * 2  # high-resolution branch width
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, planes, 3, stride=2, padding=1), _bn(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=2, padding=1), _bn(planes), nn.ReLU(inplace=True),
        )
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = _stage(BasicBlock, planes, planes, layers[0])
        self.layer2 = _stage(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.layer3 = _stage(BasicBlock, planes * 2, planes * 4, layers[2], stride=2)
        self.layer4 = _stage(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, hp, 1, bias=False), _bn(hp))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, hp, 1, bias=False), _bn(hp))
        self.down3 = nn.Sequential(nn.Conv2d(hp, planes * 4, 3, stride=2, padding=1, bias=False), _bn(planes * 4))
        self.down4 = nn.Sequential(
            nn.Conv2d(hp, planes * 4, 3, stride=2, padding=1, bias=False), _bn(planes * 4), nn.ReLU(inplace=True),
            nn.Conv2d(planes * 4, planes * 8, 3, stride=2, padding=1, bias=False), _bn(planes * 8),
        )
        self.layer3_ = _stage(BasicBlock, planes * 2, hp, 2)
        self.layer4_ = _stage(BasicBlock, hp, hp, 2)
        self.layer5_ = _stage(Bottleneck, hp, hp, 1)
        self.layer5 = _stage(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)

        self.out_channels = [planes, planes, planes * 2, planes * 4, planes * 8, hp * 2, planes * 4, planes * 4]
        self.reductions = [2, 4, 8, 16, 32, 8, 64, 8]
        self._init_weights()
        self.load_report: LoadReport | None = None
        if checkpoint_path is not None:
            self.load_report = load_official_imagenet(self, checkpoint_path)
        elif pretrained:
            from depthlab.errors import WeightsUnavailableError

            raise WeightsUnavailableError(
                "DDRNet-23-slim ImageNet weights are published by the authors (ydhongHIT/DDRNet README, "
                "DDRNet23s_imagenet.pth) on Google Drive/Baidu, not on a model hub: download the file once and "
                "pass checkpoint_path='path/to/DDRNet23s_imagenet.pth' (Leve: encoder_checkpoint=...).")

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _bilateral(self, low, high, down, compression):
        """Bilateral fusion: high -> low by strided convs, low -> high by 1x1 conv + bilinear upsampling."""
        fused_low = low + down(self.relu(high))
        fused_high = high + resize_to(compression(self.relu(low)), high.shape)
        return fused_low, fused_high

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.conv1[:3](x)
        x1 = self.layer1(self.conv1[3:](stem))
        x2 = self.layer2(self.relu(x1))
        low3, high = self._bilateral(self.layer3(self.relu(x2)), self.layer3_(self.relu(x2)),
                                     self.down3, self.compression3)
        low4, high = self._bilateral(self.layer4(self.relu(low3)), self.layer4_(self.relu(high)),
                                     self.down4, self.compression4)
        high = self.layer5_(self.relu(high))
        dappm = self.spp(self.layer5(self.relu(low4)))
        fused = high + resize_to(dappm, high.shape)
        return [stem, x1, x2, low3, low4, high, dappm, fused]


def load_official_imagenet(encoder: DDRNet23SlimEncoder, path_or_state) -> LoadReport:
    """Load the official ``DDRNet23s_imagenet.pth`` (or a state dict with its key names) by name.

    Strips ``module.``, skips the classification head (``down5``, ``last_layer``, ``linear``) and reports
    it; keys of the DAPPM (``spp.*``) absent from the file stay at their initialisation and are reported as
    missing. Any other missing/unexpected key or shape mismatch means the file is not DDRNet-23-slim: raises.
    """
    return load_partial(encoder, path_or_state, "DDRNet-23-slim",
                        skip=lambda k: k.startswith(CLASSIFIER_PREFIXES),
                        may_miss=lambda k: k.startswith(SEGMENTATION_ONLY_PREFIXES))


__all__ = ["DDRNet23SlimEncoder", "DAPPM", "BasicBlock", "Bottleneck", "LoadReport",
           "load_official_imagenet"]
