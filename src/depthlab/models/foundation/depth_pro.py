"""Depth Pro (Apple, 2024) as a depthlab model: a thin adapter over transformers' ``DepthProForDepthEstimation``.

Depth Pro predicts *canonical inverse depth* at 1536 x 1536 and, with its field-of-view head, the camera's
horizontal field of view. Metric depth needs the focal length: ``inverse = canonical * W / f_px`` with
``W / f_px = 2 tan(fov / 2)`` (resolution-free), then ``depth = 1 / clamp(inverse, 1e-4, 1e4)`` metres.
:class:`DepthProModel` obeys the depthlab model contract::

    forward(x (B,3,H,W) normalised with mean = std = 0.5, fov_deg=None) -> {"depth": (B,1,H,W) metres,
                                                                           "fov_deg": (B,) degrees}

The field of view used is, first match wins: the ``fov_deg`` argument of ``forward`` (a number or one per
image), the adapter's ``fov_deg`` attribute (``create_model("depth_pro", fov_deg=63.3)``), the FOV head's
prediction. With known intrinsics, :func:`fov_from_focal` turns ``fx`` (pixels) and the image width into
degrees. depthlab's :class:`~depthlab.predictor.Predictor` passes no intrinsics to models (its intrinsics
only place point clouds), hence the adapter option.

Images reach the network as transformers' ``DepthProImageProcessor`` sends them: scaled to [0, 1],
normalised *first*, then resized to 1536 x 1536 (bilinear, no antialias, aspect not kept). The network
output is resized back in inverse-depth space (bilinear), as ``post_process_depth_estimation`` and Apple's
``infer`` do, so the Predictor's output equals the transformers pipeline on the same weights -- except next
to pixels whose inverse depth is below 1e-4 (beyond 10 km: sky), which ``forward`` has already clamped to
1e4 m and the others interpolate unclamped.

Weights: ``pretrained=True`` uses ``apple/DepthPro-hf`` (cache first, ``HF_HUB_OFFLINE`` honoured);
``checkpoint_path`` may be a local Hugging Face folder (``config.json`` + ``model.safetensors``), a weight
file in transformers layout or a depthlab checkpoint (loading is :class:`HFDepthModel`'s).
transformers is imported only when a model is built.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn

from depthlab.config import deep_merge
from depthlab.models.foundation.hf_depth import HALF, HFDepthModel, ResizePolicy, require_transformers
from depthlab.models.registry import WeightsInfo, register_model
from depthlab.processing import AdapterProcessor, resize_to

DEPTH_PRO_HUB = "apple/DepthPro-hf"
DEPTH_PRO_PAPER = ("Bochkovskii, Delaunoy, Germain, Santos, Zhou, Richter, Koltun. Depth Pro: Sharp Monocular "
                   "Metric Depth in Less Than a Second. ICLR 2025 (arXiv 2410.02073)")
DEPTH_PRO_LICENSE = ("apple-amlr (Apple Machine Learning Research Model licence, research use only) on the "
                     "apple/DepthPro-hf card; the apple/ml-depth-pro code is under the Apple Sample Code License, "
                     "whose README also names it for the weights: treat the weights as research-only")
INVERSE_CLAMP = (1e-4, 1e4)  # inverse depth clamp of Apple's infer() and transformers' post-processing
DEPTH_PRO_RESIZE = ResizePolicy(size=(1536, 1536), keep_aspect_ratio=False, multiple_of=1, interpolation="bilinear",
                                antialias=False)

# DINOv2-L/16 at 384 px, three times: patch encoder, image encoder, FOV encoder (apple/DepthPro-hf layout)
_DINOV2_L16 = {"model_type": "dinov2", "image_size": 384, "patch_size": 16, "hidden_size": 1024,
               "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4, "layerscale_value": 1.0}
DEPTH_PRO_CONFIG = {
    "model_type": "depth_pro", "patch_size": 384, "fusion_hidden_size": 256, "intermediate_hook_ids": [11, 5],
    "intermediate_feature_dims": [256, 256], "scaled_images_ratios": [0.25, 0.5, 1],
    "scaled_images_overlap_ratios": [0.0, 0.5, 0.25], "scaled_images_feature_dims": [1024, 1024, 512],
    "merge_padding_value": 3, "use_fov_model": True, "num_fov_head_layers": 2,
    "image_model_config": _DINOV2_L16, "patch_model_config": _DINOV2_L16, "fov_model_config": _DINOV2_L16,
}


def fov_from_focal(fx: float, width: float) -> float:
    """Horizontal field of view in degrees of a pinhole camera: ``2 atan(width / (2 fx))`` (both in pixels)."""
    if fx <= 0 or width <= 0:
        raise ValueError(f"focal length and width must be positive pixels, got fx={fx}, width={width}")
    return math.degrees(2.0 * math.atan(0.5 * width / fx))


def focal_from_fov(fov_deg: float, width: float) -> float:
    """Focal length in pixels for an image ``width`` pixels wide seen with a horizontal FOV of ``fov_deg``."""
    return 0.5 * width / math.tan(0.5 * math.radians(fov_deg))


def metric_depth(canonical_inverse: torch.Tensor, fov_deg: torch.Tensor, size: tuple[int, int] | None = None
                 ) -> torch.Tensor:
    """Canonical inverse depth ``(B,1,h,w)`` + horizontal FOV ``(B,)`` degrees -> depth ``(B,1,H,W)`` metres.

    ``inverse = canonical * 2 tan(fov / 2)`` (that is ``W / f_px``), resized (bilinear, ``align_corners=False``)
    to ``size`` in inverse-depth space, then ``1 / clamp(inverse, 1e-4, 1e4)``.
    """
    ratio = 2.0 * torch.tan(0.5 * torch.deg2rad(fov_deg.to(canonical_inverse.dtype)))
    inverse = canonical_inverse * ratio.view(-1, 1, 1, 1)
    inverse = inverse if size is None else resize_to(inverse, size)
    return 1.0 / inverse.clamp(*INVERSE_CLAMP)


class DepthProModel(HFDepthModel):
    """Depth Pro behind ``forward(x) -> {"depth": metres, "fov_deg": degrees}``; ``self.hf`` is transformers' model.

    The network runs at :attr:`fixed_network_size` (1536 x 1536 for the hub weights, ``4 x patch_size``):
    ``forward`` given another size resizes the input there and the depth back (in inverse depth).
    """

    family = "depth_pro"
    model_types = ("depth_pro",)

    def __init__(self, hf_model: nn.Module, resize_policy: ResizePolicy | None, hub_id: str | None = None,
                 fov_deg: float | None = None, **kwargs):
        super().__init__(hf_model, resize_policy, hub_id=hub_id, **kwargs)
        self.fov_deg = fov_deg

    @property
    def fixed_network_size(self) -> tuple[int, int]:
        return tuple(self.resize_policy.size) if self.resize_policy is not None else DEPTH_PRO_RESIZE.size

    def encoder_parameter_names(self) -> set[str]:
        """The three DINOv2 encoders (patch, image, field of view); the rest (neck, fusion, heads) is the decoder."""
        prefixes = ("hf.depth_pro.encoder.", "hf.fov_model.fov_encoder.model.")
        return {n for n, _ in self.named_parameters() if n.startswith(prefixes)}

    def _fov(self, predicted: torch.Tensor | None, fov_deg, batch: int, device) -> torch.Tensor:
        fov = fov_deg if fov_deg is not None else self.fov_deg
        if fov is None:
            if predicted is None:
                raise ValueError("this Depth Pro has no field-of-view head (use_fov_model=False): pass fov_deg "
                                 "(degrees; fov_from_focal(fx, width) converts a focal length)")
            return predicted.reshape(batch).float()
        return torch.as_tensor(fov, dtype=torch.float32, device=device).reshape(-1).expand(batch)

    def forward(self, x: torch.Tensor, fov_deg=None) -> dict[str, torch.Tensor]:
        size = tuple(x.shape[-2:])
        out = self.hf(pixel_values=resize_to(x, self.fixed_network_size))
        fov = self._fov(out.field_of_view, fov_deg, x.shape[0], x.device)
        return {"depth": metric_depth(out.predicted_depth.unsqueeze(1), fov, size), "fov_deg": fov}

    # -- the image side, as DepthProImageProcessor does it: normalise first, then resize ------------------
    def processor(self) -> AdapterProcessor:
        """Normalised, then resized to :attr:`fixed_network_size` (as floats); back by :meth:`postprocess`."""
        policy = self.resize_policy or DEPTH_PRO_RESIZE
        return AdapterProcessor(self.depth_info, self.input_size_for, policy.resize, self.postprocess,
                                normalize_first=True)

    @staticmethod
    def postprocess(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Metric depth ``(B,1,h,w)`` -> ``(B,1,H,W)``: bilinear in inverse depth, as the post-processing does."""
        if tuple(depth.shape[-2:]) == tuple(size):
            return depth
        return 1.0 / resize_to(1.0 / depth, size).clamp(*INVERSE_CLAMP)


def _depth_pro_info() -> WeightsInfo:
    return WeightsInfo(
        output_kind="metric", target_encoding="depth", min_depth=INVERSE_CLAMP[0], max_depth=INVERSE_CLAMP[1],
        input_size=DEPTH_PRO_RESIZE.size, multiple_of=1, mean=HALF, std=HALF, hub_id=DEPTH_PRO_HUB,
        hub_filename="model.safetensors", license=DEPTH_PRO_LICENSE, paper=DEPTH_PRO_PAPER,
        notes="Metric depth in metres from canonical inverse depth and the horizontal field of view: the FOV head's "
              "prediction, or fov_deg=... when the camera is known (fov_from_focal(fx, width)). Network input "
              "1536x1536 (aspect not kept; normalise, then bilinear resize); output clamped to [1e-4, 1e4] m.")


@register_model(_depth_pro_info(), tags=("foundation", "metric", "hf"), resize_kwarg="input_size")
def depth_pro(fov_deg: float | None = None, use_fov_model: bool | None = None, config=None,
              config_overrides: dict | None = None, input_size=None) -> nn.Module:
    """Depth Pro (DINOv2-L/16 multi-scale ViT + FOV head), metric depth in metres.

    ``fov_deg``: the camera's horizontal field of view in degrees, used instead of the FOV head's estimate.
    ``use_fov_model=False`` builds (or loads) the model without its FOV head; ``fov_deg`` is then required
    at call time. ``input_size`` (int or (H, W)) replaces the 1536 x 1536 processing size (it must stay
    ``4 x patch_size`` for the hub weights). ``config`` / ``config_overrides`` as for the other adapters.
    """
    transformers = require_transformers()
    base = dict(DEPTH_PRO_CONFIG)
    if isinstance(config, (str, os.PathLike)):  # a local Hugging Face folder
        config = transformers.AutoConfig.from_pretrained(str(config), local_files_only=True)
    if config is not None:  # a dict or a transformers config (hub / folder loads take the source's config.json)
        base = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    load = {} if use_fov_model is None else {"use_fov_model": bool(use_fov_model)}
    cfg = deep_merge(deep_merge(base, config_overrides or {}), load)
    cfg.pop("model_type", None)
    for k in ("transformers_version", "architectures", "_name_or_path"):
        cfg.pop(k, None)
    hf_model = transformers.DepthProForDepthEstimation(transformers.DepthProConfig(**cfg))
    patch = int(hf_model.config.patch_size)
    ratio = float(min(hf_model.config.scaled_images_ratios))
    size = (round(patch / ratio),) * 2
    if input_size is not None:
        size = (int(input_size),) * 2 if isinstance(input_size, (int, float)) else tuple(map(int, input_size))
    resize = ResizePolicy(size=size, keep_aspect_ratio=False, multiple_of=1, interpolation="bilinear", antialias=False)
    model = DepthProModel(hf_model, resize, hub_id=DEPTH_PRO_HUB, fov_deg=fov_deg, load_overrides=load)
    model.fixed_input_size = input_size is not None
    model.depth_info = _depth_pro_info().replace(input_size=size)
    return model


__all__ = ["DepthProModel", "depth_pro", "fov_from_focal", "focal_from_fov", "metric_depth", "DEPTH_PRO_CONFIG",
           "DEPTH_PRO_RESIZE", "DEPTH_PRO_HUB"]
