"""``smp_unet_resnet34``: the U-Net/ResNet34 baseline of the aerial study, built by
segmentation-models-pytorch itself (no re-implementation).

``segmentation_models_pytorch.Unet(encoder_name="resnet34", encoder_weights=..., in_channels=3,
classes=1)``: a ResNet34 encoder (strides 2..32), smp's U-Net decoder (channels 256, 128, 64, 32, 16,
nearest x2 + concat skip + two conv-BN-ReLU per block) and a 3x3 conv head to 1 channel. Its raw
output is wrapped as ``{"depth": (B,1,H,W)}`` (metres). H and W must be multiples of 32.

Kwargs (JSON-serialisable, stored in checkpoints):

* ``encoder_pretrained`` (bool, default False): ``encoder_weights="imagenet"`` -- smp downloads the
  ImageNet ResNet34 (online only; this is the path the study used).
* ``encoder_checkpoint`` (str | None): a local ImageNet ResNet34 file (torchvision or timm key layout,
  ``.pth``/``.safetensors``; ``fc.*`` classifier keys are skipped and reported). The offline way; when
  given, it is loaded instead of the download even with ``encoder_pretrained=True``.
* ``decoder_channels`` (list[int], default smp's ``[256, 128, 64, 32, 16]``).
"""
from __future__ import annotations


import torch
import torch.nn as nn

from depthlab.models.registry import IMAGENET_MEAN, IMAGENET_STD, WeightsInfo, register_model


def load_resnet_encoder(encoder: nn.Module, path: str):
    """Load an ImageNet ResNet state dict (torchvision/timm names) into smp's ResNet encoder.

    Keys may carry an ``encoder.`` or ``module.`` prefix. Classifier keys (``fc.*``) are skipped; any
    other mismatch raises. Returns the :class:`depthlab.models.weights.LoadReport`.
    """
    from depthlab.models.weights import load_partial

    return load_partial(encoder, path, "ResNet34 encoder", strip_prefixes=("module.", "net.encoder.", "encoder."),
                        skip=lambda k: k.startswith("fc."))


class SmpUNet(nn.Module):
    """Wraps ``smp.Unet`` so that ``forward(x (B,3,H,W)) -> {"depth": (B,1,H,W)}``."""

    def __init__(self, encoder_name: str = "resnet34", encoder_pretrained: bool = False,
                 encoder_checkpoint: str | None = None, decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        import segmentation_models_pytorch as smp

        try:
            # a local file wins: encoder_checkpoint with encoder_pretrained=True loads the file, no download
            download = bool(encoder_pretrained) and encoder_checkpoint is None
            self.net = smp.Unet(encoder_name=encoder_name, encoder_weights="imagenet" if download else None,
                                decoder_channels=tuple(decoder_channels), in_channels=3, classes=1)
        except OSError as e:  # offline / hub unreachable (huggingface_hub errors are OSErrors)
            from depthlab.errors import WeightsUnavailableError

            raise WeightsUnavailableError(
                f"ImageNet {encoder_name} weights for smp are unavailable ({type(e).__name__}): smp downloads them "
                f"from the Hugging Face hub (smp-hub/{encoder_name}.imagenet). Go online once (encoder_pretrained=True), "
                f"or pass a local file: encoder_checkpoint='path/to/{encoder_name}.pth'.") from None
        self.encoder_load_report = None
        if encoder_checkpoint is not None:
            self.encoder_load_report = load_resnet_encoder(self.net.encoder, str(encoder_checkpoint))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"depth": self.net(x)}


@register_model(WeightsInfo(
    output_kind="metric", target_encoding="depth", min_depth=1e-3, max_depth=100.0, multiple_of=32,
    mean=IMAGENET_MEAN, std=IMAGENET_STD,
    license="MIT (segmentation-models-pytorch); no published depth weights",
    paper="Ronneberger et al. 2015 U-Net with a ResNet34 encoder (He et al. 2016), via "
          "segmentation-models-pytorch (Iakubovskii); aerial study baseline",
    notes="Encoder ImageNet weights: encoder_pretrained=True (smp download) or encoder_checkpoint=PATH.",
))
def smp_unet_resnet34(encoder_pretrained: bool = False, encoder_checkpoint: str | None = None,
                      decoder_channels=(256, 128, 64, 32, 16)) -> SmpUNet:
    """smp U-Net with a ResNet34 encoder (aerial study baseline)."""
    model = SmpUNet("resnet34", encoder_pretrained, encoder_checkpoint, decoder_channels)
    model.init_only_args = ("encoder_pretrained", "encoder_checkpoint")
    return model
