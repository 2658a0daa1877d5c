"""Encoders: a common interface over timm ``features_only`` backbones and DDRNet-23-slim (not in timm).

Every encoder is an ``nn.Module`` whose ``forward(x)`` returns a list of feature maps (shallow to
deep) and which exposes ``out_channels`` (list[int]) and ``reductions`` (list[int], stride of each
feature map w.r.t. the input).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from depthlab.errors import one_line


class TimmEncoder(nn.Module):
    """A timm backbone built with ``features_only=True``.

    ``pretrained`` uses timm's own weight loading (hub + cache); ``checkpoint_path`` loads a local file
    (timm's ``pretrained_cfg_overlay=dict(file=...)``), so offline users can point at downloaded weights.
    """

    def __init__(self, name: str, pretrained: bool = False, checkpoint_path: str | None = None,
                 out_indices: tuple[int, ...] | None = None, **kwargs):
        super().__init__()
        import timm

        kw = dict(features_only=True, pretrained=pretrained or checkpoint_path is not None, **kwargs)
        if out_indices is not None:
            kw["out_indices"] = tuple(out_indices)
        if checkpoint_path is not None:
            kw["pretrained_cfg_overlay"] = dict(file=str(checkpoint_path))
        self.name = name
        try:
            self.model = timm.create_model(name, **kw)
        except (OSError, RuntimeError) as e:  # hub unreachable / not cached, or a bad local file
            if checkpoint_path is None and pretrained and _looks_offline(e):
                from depthlab.errors import WeightsUnavailableError

                raise WeightsUnavailableError(
                    f"ImageNet weights for timm encoder '{name}' could not be downloaded from the Hugging Face "
                    f"hub (timm/{name}) and are not in the local cache; pass a downloaded file with "
                    f"encoder checkpoint_path=... or build the model with pretrained=False "
                    f"({one_line(e)})") from e
            raise
        self.out_channels = list(self.model.feature_info.channels())
        self.reductions = list(self.model.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def _looks_offline(e: BaseException) -> bool:
    """True when ``e`` (or its cause chain) is a failed download rather than a bad weight file."""
    while e is not None:
        text = f"{type(e).__name__} {e}".lower()
        if any(k in text for k in ("connection", "offline", "resolve", "localentrynotfound", "max retries",
                                   "network", "timed out", "name or service")):
            return True
        e = e.__cause__ or e.__context__
    return False


def create_encoder(name: str, pretrained: bool = False, checkpoint_path: str | None = None,
                   out_indices: tuple[int, ...] | None = None, **kwargs) -> nn.Module:
    """Build an encoder by name: ``ddrnet23_slim`` or any timm model name."""
    if name == "ddrnet23_slim":
        from depthlab.models.encoders.ddrnet import DDRNet23SlimEncoder

        return DDRNet23SlimEncoder(pretrained=pretrained, checkpoint_path=checkpoint_path, **kwargs)
    return TimmEncoder(name, pretrained=pretrained, checkpoint_path=checkpoint_path, out_indices=out_indices, **kwargs)


def encoder_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that live under a submodule attribute called ``encoder``, or those a
    model lists itself with an ``encoder_parameter_names()`` method (foundation adapters, whose
    backbone sits inside the wrapped transformers model)."""
    own = getattr(model, "encoder_parameter_names", None)
    if callable(own):
        return set(own())
    return {n for n, _ in model.named_parameters() if "encoder" in n.split(".")[:-1]}


def freeze_encoder(model: nn.Module, frozen: bool = True) -> None:
    """The one encoder freeze (smp's ``freeze_encoder`` / ``unfreeze_encoder``): the encoder's parameters
    (:func:`encoder_parameter_names`) stop -- or resume -- requiring gradients, and while frozen every
    submodule called ``encoder`` is in eval mode (batch-norm statistics kept, no dropout). ``model.train()``
    undoes the eval part: call this again after it, as :class:`depthlab.training.DepthTask` does."""
    names = encoder_parameter_names(model)
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(not frozen)
    if frozen:
        for name, module in model.named_modules():
            if name.split(".")[-1] == "encoder":
                module.eval()


__all__ = ["TimmEncoder", "create_encoder", "encoder_parameter_names", "freeze_encoder"]
