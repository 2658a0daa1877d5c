"""torchvision's MobileNetV2 as a multi-scale encoder.

The trunk is ``torchvision.models.mobilenet_v2().features`` (kept under the same attribute name, so a
torchvision-layout state dict loads into it key for key). ``forward`` returns the outputs of
``features[i]`` for ``i`` in ``out_indices`` (default 1, 3, 6, 13, 18 -> 16/24/32/96/1280 channels at
strides 2/4/8/16/32).

Weights: ``checkpoint_path`` (required for pretrained weights; ``pretrained=True`` without it raises
:class:`~depthlab.errors.WeightsUnavailableError`) points at a torchvision-layout MobileNetV2 state dict -- a file, or a folder
holding ``mobilenet_v2_imagenet.safetensors`` (the ImageNet weights distributed with depthlab's shared
weights, converted from TensorFlow). Loading is a **documented partial load**: the classifier
(``classifier.*``) and any trunk stages deeper than the last tap are not part of the encoder; they are
dropped and listed in :attr:`MobileNetV2Encoder.skipped_keys` (and logged). Every other key must match
exactly (missing or unexpected trunk keys raise).

Input convention of those ImageNet weights: RGB scaled to [-1, 1] (``x / 127.5 - 1``), i.e. in depthlab's
[0, 1] convention ``mean = std = (0.5, 0.5, 0.5)`` -- exposed as :attr:`mean` / :attr:`std` so a depth
model built on the encoder can declare them in its ``WeightsInfo``. Not ImageNet mean/std.

Batch norm in those weights is folded (identity BN + folded bias; placeholder running statistics).
``freeze_bn=True`` keeps every BN layer in eval mode even under ``model.train()`` (exact, recommended
when fine-tuning on small batches); ``frozen=True`` additionally stops gradients to the whole encoder.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

DEFAULT_OUT_INDICES = (1, 3, 6, 13, 18)
WEIGHTS_FILENAME = "mobilenet_v2_imagenet.safetensors"
# Input normalisation of the TensorFlow-trained ImageNet weights ([-1, 1]) in depthlab's [0, 1] convention.
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)


class MobileNetV2Encoder(nn.Module):
    """Multi-scale MobileNetV2 trunk: ``forward(x) -> list`` of feature maps, shallow to deep."""

    mean = TF_MEAN
    std = TF_STD

    def __init__(self, checkpoint_path: str | os.PathLike | None = None, pretrained: bool = False,
                 out_indices: tuple[int, ...] = DEFAULT_OUT_INDICES, width_mult: float = 1.0,
                 frozen: bool = False, freeze_bn: bool = False):
        super().__init__()
        from torchvision.models import mobilenet_v2

        out_indices = tuple(int(i) for i in out_indices)
        trunk = mobilenet_v2(weights=None, width_mult=width_mult).features
        if not out_indices or sorted(set(out_indices)) != list(out_indices) or out_indices[-1] >= len(trunk) \
                or out_indices[0] < 0:
            raise ValueError(f"out_indices must be increasing indices into features[0..{len(trunk) - 1}], "
                             f"got {out_indices}")
        self.out_indices = out_indices
        self.features = trunk[: out_indices[-1] + 1]  # nn.Sequential slicing keeps the key names
        self.out_channels, self.reductions = self._probe()
        self.freeze_bn = freeze_bn or frozen
        self.skipped_keys: list[str] = []
        self.checkpoint_path = None
        if checkpoint_path is not None:
            self.load_weights(checkpoint_path)
        elif pretrained:
            from depthlab.errors import WeightsUnavailableError

            raise WeightsUnavailableError(
                "tv_mobilenet_v2: the ImageNet weights are not bundled or published for download; pass "
                f"checkpoint_path= the folder holding {WEIGHTS_FILENAME} (or the file, or any torchvision-layout "
                "MobileNetV2 state dict)")
        if frozen:
            self.requires_grad_(False)
        self.train(self.training)

    @torch.no_grad()
    def _probe(self) -> tuple[list[int], list[int]]:
        size = 64
        feats = self._run(torch.zeros(1, 3, size, size))
        return [f.shape[1] for f in feats], [size // f.shape[-1] for f in feats]

    def _run(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.out_indices:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._run(x)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def load_weights(self, checkpoint_path: str | os.PathLike) -> list[str]:
        """Load a torchvision-layout MobileNetV2 state dict; returns (and stores) the skipped keys.

        Skipped on purpose: ``classifier.*`` and ``features.<i>.*`` for stages beyond the last tap.
        Anything else that does not match raises ``RuntimeError`` (strict).
        """
        from depthlab.models.weights import load_partial

        path = Path(checkpoint_path).expanduser()
        if path.is_dir():
            path = path / WEIGHTS_FILENAME
        n = len(self.features)

        def beyond_encoder(k: str) -> bool:
            parts = k.split(".")
            return parts[0] == "classifier" or (parts[0] == "features" and parts[1].isdigit() and int(parts[1]) >= n)

        report = load_partial(self, path, "MobileNetV2", strip_prefixes=(), skip=beyond_encoder)
        self.skipped_keys = report.skipped
        self.checkpoint_path = str(path)
        return report.skipped


__all__ = ["MobileNetV2Encoder", "DEFAULT_OUT_INDICES", "TF_MEAN", "TF_STD"]
