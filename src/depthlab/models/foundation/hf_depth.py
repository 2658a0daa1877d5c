"""Depth Anything V2, ZoeDepth and DPT (MiDaS v3) as depthlab models: thin adapters over transformers.

Each registered variant wraps a transformers ``*ForDepthEstimation`` model (``model.hf``) and obeys the
depthlab model contract::

    forward(x (B,3,H,W) normalised per depth_info.mean/std) -> {"depth": (B,1,H,W)}

in the entry's declared output kind (``disparity`` for the relative Depth Anything / MiDaS models,
``metric`` metres for the metric Depth Anything and ZoeDepth models).

How images reach the network mirrors the transformers image processor of each family, so that
depthlab and ``transformers.pipeline("depth-estimation")`` agree to float precision on the same weights:

* Depth Anything V2 and DPT: the caller resizes (see :class:`ResizePolicy` and :meth:`HFDepthModel.preprocess`:
  keep-aspect "scale as little as possible" to 518 px, multiples of 14, bicubic with antialias for Depth
  Anything; a plain 384 x 384 bicubic resize for DPT), the forward returns depth at the size it was
  given, and :meth:`HFDepthModel.postprocess` resizes back with bicubic interpolation
  (``align_corners=False``), as ``post_process_depth_estimation`` does.
* ZoeDepth: the forward takes the image at its own resolution and does what ZoeDepth's processor and
  post-processing do around the network (reflect padding, bilinear resize to the keep-aspect size,
  bicubic resize back, padding removed), so callers must *not* resize (``depth_info.input_size`` is None).

Weights: ``pretrained=True`` uses the hub id of the entry (Hugging Face cache first, ``HF_HUB_OFFLINE``
honoured); ``checkpoint_path`` may be a local Hugging Face folder (``config.json`` + ``*.safetensors``),
a weight file in transformers layout, a depthlab checkpoint, or -- for Depth Anything V2 -- an official
``depth_anything_v2_vit{s,b,l}.pth`` / ``depth_anything_v2_metric_{hypersim,vkitti}_vit*.pth`` file,
converted on load (:mod:`depthlab.models.foundation.convert_dav2`). ``pretrained=False`` builds a
randomly initialised model from the built-in configuration, changed by ``config_overrides={...}``
(nested dicts merge, e.g. ``{"backbone_config": {"hidden_size": 32}}``) or replaced by ``config=``.

transformers is imported only when a model is built, so this module (and the registry) import without it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from depthlab.config import deep_merge
from depthlab.errors import WeightsUnavailableError, one_line, require
from depthlab.models.foundation.convert_dav2 import attention_style_of, is_official_dav2, official_to_hf
from depthlab.models.registry import IMAGENET_MEAN, IMAGENET_STD, WeightsInfo, register_model
from depthlab.processing import AdapterProcessor, ProcessorMixin, resize_to

log = logging.getLogger(__name__)

HALF = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD mean/std, used by DPT and ZoeDepth processors


def require_transformers():
    """Import transformers or fail with one line saying how to install it."""
    return require("transformers", "hf", "this model (an adapter over transformers)")


# ----------------------------------------------------------------------------------------------------------
# Resizing as transformers' image processors do it
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResizePolicy:
    """How a transformers image processor sizes an image for the network.

    ``size`` is the processor's (height, width). With ``keep_aspect_ratio`` both sides are scaled by the
    one factor (height's or width's) that is closer to 1 -- "scale as little as possible" -- so a
    640x480 image aimed at 518x518 becomes 518 x 686 with ``multiple_of=14``. Each side is then rounded
    to the nearest multiple of ``multiple_of`` (Python rounding, halves to even), as
    ``DPTImageProcessor`` / ``ZoeDepthImageProcessor`` do. ``interpolation`` / ``antialias`` describe the
    image resize (torchvision semantics, ``align_corners=False``), except for ZoeDepth, which resizes
    with ``align_corners=True`` and no antialias (``align_corners=True`` here).
    """

    size: tuple[int, int]
    keep_aspect_ratio: bool = True
    multiple_of: float = 1
    interpolation: str = "bicubic"
    antialias: bool = True
    align_corners: bool = False

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        scale_h, scale_w = self.size[0] / height, self.size[1] / width
        if self.keep_aspect_ratio:
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        return self._constrain(scale_h * height), self._constrain(scale_w * width)

    def _constrain(self, value: float) -> int:
        out = int(round(value / self.multiple_of) * self.multiple_of)
        if out < 1:  # tiny inputs: never zero
            out = int(math.ceil(value / self.multiple_of) * self.multiple_of)
        return out

    def resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize (B,C,H,W) float or uint8 images to ``size`` with this policy's filter."""
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        if self.align_corners:
            return F.interpolate(images, size=size, mode=self.interpolation, align_corners=True)
        from torchvision.transforms.v2 import functional as tvF

        mode = tvF.InterpolationMode(self.interpolation)
        return tvF.resize(images, list(size), interpolation=mode, antialias=self.antialias)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "keep_aspect_ratio": self.keep_aspect_ratio,
                "multiple_of": self.multiple_of, "interpolation": self.interpolation,
                "antialias": self.antialias, "align_corners": self.align_corners}


_PIL_TO_MODE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _policy_from_processor(proc_cfg: dict, default: ResizePolicy, family: str) -> ResizePolicy:
    """Update ``default`` from a ``preprocessor_config.json`` dict (missing keys keep the default)."""
    size = proc_cfg.get("size", None)
    if isinstance(size, dict) and "height" in size and "width" in size:
        size = (int(size["height"]), int(size["width"]))
    elif isinstance(size, int):
        size = (size, size)
    else:
        size = default.size
    resample = proc_cfg.get("resample", None)
    interp = _PIL_TO_MODE.get(resample, default.interpolation) if isinstance(resample, int) else default.interpolation
    if family == "zoedepth" and interp not in ("bilinear", "bicubic", "nearest"):
        interp = default.interpolation
    return ResizePolicy(size=size,
                        keep_aspect_ratio=bool(proc_cfg.get("keep_aspect_ratio", default.keep_aspect_ratio)),
                        multiple_of=proc_cfg.get("ensure_multiple_of", default.multiple_of) or 1,
                        interpolation=interp, antialias=default.antialias, align_corners=default.align_corners)


# ----------------------------------------------------------------------------------------------------------
# The adapter modules
# ----------------------------------------------------------------------------------------------------------

class HFDepthModel(ProcessorMixin, nn.Module):
    """A transformers depth model behind depthlab's ``forward(x) -> {"depth": (B,1,H,W)}`` contract.

    ``self.hf`` is the transformers model (its weights are this module's state dict under ``hf.``).
    ``resize_policy`` is what the caller should do to an image before ``forward`` (None: nothing).
    """

    family = "depth_anything"
    model_types: tuple[str, ...] = ("depth_anything",)

    def __init__(self, hf_model: nn.Module, resize_policy: ResizePolicy | None, hub_id: str | None = None,
                 official_filename: str | None = None, load_overrides: dict | None = None):
        super().__init__()
        self.hf = hf_model
        self.resize_policy = resize_policy
        self.hub_id = hub_id
        self.official_filename = official_filename
        self.load_overrides = dict(load_overrides or {})  # config fields re-applied to loaded configs

    @property
    def config(self):
        return self.hf.config

    def encoder_parameter_names(self) -> set[str]:
        """The pretrained backbone's parameters (embeddings, transformer blocks, final norm): what
        :class:`depthlab.training.DepthTask` trains at ``optim.encoder_lr`` and freezes for
        ``train.freeze_encoder_epochs``. Everything else (neck, fusion, head) is the decoder."""
        prefixes = ("hf.backbone.", "hf.dpt.")  # Depth Anything / ZoeDepth backbones; DPT's ViT
        return {n for n, _ in self.named_parameters() if n.startswith(prefixes)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        depth = self.hf(pixel_values=x).predicted_depth.unsqueeze(1)  # (B,1,h,w)
        return {"depth": resize_to(depth, x.shape, mode="bicubic")}  # input not a multiple of the patch size

    # -- the image side, as the matching transformers image processor does it --------------------------------
    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for an image of ``height`` x ``width`` (unchanged if no resize policy)."""
        return self.resize_policy.output_size(height, width) if self.resize_policy else (height, width)

    def processor(self) -> AdapterProcessor:
        """What the matching transformers image processor does around the network: :meth:`input_size_for`,
        the resize policy's image resize, :meth:`postprocess` back (normalisation: ``depth_info``)."""
        policy = self.resize_policy
        return AdapterProcessor(self.depth_info, self.input_size_for, policy.resize if policy else None,
                                self.postprocess)

    @staticmethod
    def postprocess(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B,1,h,w) network output -> (B,1,H,W), bicubic, ``align_corners=False`` (transformers' post-processing)."""
        return resize_to(depth, size, mode="bicubic")

    # -- weights -------------------------------------------------------------------------------------------
    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map any supported weight layout onto this module's keys (called by ``weights.load_into``).

        * depthlab layout (``hf.*``) -- unchanged;
        * official Depth-Anything-V2 layout (``pretrained.*`` / ``depth_head.*``) -- converted;
        * transformers layout, current or older key names -- passed through transformers' own loader
          (which applies its renaming rules) with this module's configuration.
        """
        if any(k.startswith("hf.") for k in state):
            return state
        own = self.hf.state_dict()
        if is_official_dav2(state):
            if self.family != "depth_anything":
                raise ValueError(f"an official Depth-Anything-V2 checkpoint cannot load into a {self.family} model")
            conv = official_to_hf(state, attention=attention_style_of(own))
            return {"hf." + k: v for k, v in conv.items()}
        if set(state) == set(own):
            return {"hf." + k: v for k, v in state.items()}
        return {"hf." + k: v for k, v in _load_via_transformers(self.hf, state).items()}

    def load_pretrained_weights(self, checkpoint_path=None, model_name: str = "", strict: bool = True) -> "HFDepthModel":
        """Load weights: ``None`` = the hub id; a folder = ``from_pretrained``; a file = state dict (+ conversion).

        Loading from a hub id or folder takes that source's ``config.json`` (architecture) and, when
        present, its ``preprocessor_config.json`` (resize policy, mean/std), so ``depth_info`` follows the
        weights. Raises :class:`WeightsUnavailableError` naming the hub id and the local alternatives.
        """
        name = model_name or getattr(self, "model_name", "") or self.family
        if checkpoint_path is None:
            if not self.hub_id:
                raise WeightsUnavailableError(f"{name} has no published weights; pass checkpoint_path=PATH")
            self._load_from_pretrained(self.hub_id, name, from_hub=True)
            return self
        path = Path(checkpoint_path).expanduser()
        if not path.exists():
            raise WeightsUnavailableError(f"{path}: checkpoint_path does not exist")
        if path.is_dir():
            self._load_from_pretrained(str(path), name, from_hub=False)
            return self
        from depthlab.models.weights import load_into, read_state_dict

        load_into(self, read_state_dict(path), strict=strict, source=str(path))
        return self

    def _unavailable(self, name: str, err: Exception) -> WeightsUnavailableError:
        from depthlab.models.weights import LOCAL_WEIGHTS_HINT, hub_unreachable

        offline = hub_unreachable()
        alt = "a local Hugging Face folder (config.json + model.safetensors)"
        if self.official_filename:
            alt += f" or the official checkpoint file {self.official_filename}"
        return WeightsUnavailableError(
            f"pretrained weights for {name} unavailable: could not get {self.hub_id} from the Hugging Face hub "
            f"or its local cache ({type(err).__name__}{'; ' + offline if offline else ''}). "
            f"Download it once while online (it is cached), or pass a local copy, PATH = {alt}: "
            f"{LOCAL_WEIGHTS_HINT}.")

    def _load_from_pretrained(self, source: str, name: str, from_hub: bool) -> None:
        transformers = require_transformers()
        kwargs: dict[str, Any] = dict(self.load_overrides)
        if not from_hub:
            kwargs["local_files_only"] = True
        else:
            from depthlab.models.weights import hub_unreachable

            if hub_unreachable():  # the cache only: no ~30 s of connection retries before the same failure
                kwargs["local_files_only"] = True
        try:
            loaded, info = transformers.AutoModelForDepthEstimation.from_pretrained(
                source, dtype=torch.float32, output_loading_info=True, **kwargs)
        except Exception as e:
            if from_hub:
                raise self._unavailable(name, e) from e
            raise WeightsUnavailableError(f"{source}: cannot load a transformers model from this folder "
                                          f"({one_line(e)})") from e
        if loaded.config.model_type not in self.model_types:
            raise ValueError(f"{source}: holds a {loaded.config.model_type!r} model, {name} needs {self.model_types}")
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise RuntimeError(f"{source}: weights do not match the configuration: {_short(bad)}")
        self.hf = loaded.train(self.training)  # from_pretrained returns eval mode; follow the adapter
        self._adopt_processor(source, from_hub)
        if hasattr(self, "model_args"):  # self-describing checkpoints: rebuild with the loaded architecture
            args = {k: v for k, v in self.model_args.items() if k not in ("config", "config_overrides")}
            self.model_args = {**args, "config": _json_safe(self.hf.config.to_dict())}

    def _adopt_processor(self, source: str, from_hub: bool) -> None:
        """Follow the source's preprocessor_config.json (resize policy, mean/std) when it has one."""
        proc = _read_processor_config(source, from_hub)
        if not proc:
            return
        if self.resize_policy is not None:
            policy = _policy_from_processor(proc, self.resize_policy, self.family)
            if getattr(self, "fixed_input_size", False):
                policy = replace(policy, size=self.resize_policy.size)
            self.resize_policy = policy
        info = getattr(self, "depth_info", None)
        if info is not None and proc.get("do_normalize", True) and "image_mean" in proc and "image_std" in proc:
            changes = {"mean": tuple(float(v) for v in proc["image_mean"]),
                       "std": tuple(float(v) for v in proc["image_std"])}
            if self.family != "zoedepth" and self.resize_policy is not None:
                changes["input_size"] = tuple(self.resize_policy.size)
            self.depth_info = info.replace(**changes)
        self._sync_info_from_config()

    def _sync_info_from_config(self) -> None:
        info = getattr(self, "depth_info", None)
        cfg = self.hf.config
        if info is not None and getattr(cfg, "depth_estimation_type", None) == "metric" and cfg.max_depth:
            self.depth_info = info.replace(output_kind="metric", max_depth=float(cfg.max_depth))


class ZoeDepthModel(HFDepthModel):
    """ZoeDepth: the forward does ZoeDepth's own padding / resizing, so callers feed the native resolution."""

    family = "zoedepth"
    model_types = ("zoedepth",)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if torch.is_inference_mode_enabled():
            # transformers' BEiT keeps its relative-position index per window size in a process-wide LRU
            # cache; created under inference mode it would be an inference tensor and break any later
            # autograd use of a ZoeDepth model at that size (fine-tuning, tests). no_grad has no such effect.
            with torch.inference_mode(False), torch.no_grad():
                return self._forward(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from torchvision.transforms.v2 import functional as tvF

        height, width = x.shape[-2:]
        # reflect padding of sqrt(side / 2) * 3 pixels per border against boundary artefacts
        pad_h, pad_w = int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)
        padded = tvF.pad(x, padding=[pad_w, pad_h], padding_mode="reflect")
        policy = self.resize_policy or ResizePolicy((384, 512), True, 1 / 32, "bilinear", False, True)
        net_in = policy.resize(padded, policy.output_size(*padded.shape[-2:]))
        depth = self.hf(pixel_values=net_in).predicted_depth.unsqueeze(1)
        depth = tvF.resize(depth, [height + 2 * pad_h, width + 2 * pad_w],
                           interpolation=tvF.InterpolationMode.BICUBIC, antialias=False)
        return {"depth": depth[..., pad_h:pad_h + height, pad_w:pad_w + width]}

    def input_size_for(self, height: int, width: int) -> tuple[int, int]:
        return height, width  # resizing happens inside forward

    def _sync_info_from_config(self) -> None:
        info = getattr(self, "depth_info", None)
        bins = getattr(self.hf.config, "bin_configurations", None) or []
        if info is not None and bins:
            self.depth_info = info.replace(max_depth=float(max(b["max_depth"] for b in bins)),
                                           min_depth=float(min(b["min_depth"] for b in bins)))


class DPTDepthModel(HFDepthModel):
    """DPT / MiDaS v3. transformers' DPT takes square token grids only (the hybrid exactly its configured
    image size), so its network input size is fixed: :attr:`fixed_network_size` (the processor's square
    size, 384 x 384 for the hub weights). ``forward`` given any other size (e.g. 480 x 640 in the zoo cost
    table) resizes to that size (bicubic, as the processor) and the output back (bicubic, as the
    post-processing), so every caller gets ``(B,1,H,W)`` at its input size."""

    family = "dpt"
    model_types = ("dpt",)

    @property
    def fixed_network_size(self) -> tuple[int, int]:
        return tuple(self.resize_policy.size) if self.resize_policy is not None else (384, 384)

    def _accepts(self, h: int, w: int) -> bool:
        cfg = self.hf.config
        if getattr(cfg, "is_hybrid", False) or getattr(cfg, "backbone_config", None) is not None:
            return (h, w) == self.fixed_network_size  # hybrid, BEiT and SwinV2 backbones: their configured size
        return h == w

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = tuple(x.shape[-2:])
        if self._accepts(*size):
            return super().forward(x)
        net = F.interpolate(x, size=self.fixed_network_size, mode="bicubic", align_corners=False)
        depth = super().forward(net)["depth"]
        return {"depth": F.interpolate(depth, size=size, mode="bicubic", align_corners=False)}


# ----------------------------------------------------------------------------------------------------------
# Helpers: configs, loading through transformers
# ----------------------------------------------------------------------------------------------------------

def _json_safe(obj):
    return json.loads(json.dumps(obj, default=str))


def _short(d: dict) -> str:
    return "; ".join(f"{k}: {len(v)} (e.g. {list(v)[:3]})" for k, v in d.items())


def _make_config(base: dict, config=None, config_overrides: dict | None = None):
    """A transformers config from the built-in dict, a user dict/config/folder, plus overrides."""
    transformers = require_transformers()
    if config is None:
        cfg = dict(base)
    elif isinstance(config, (str, os.PathLike)):
        cfg = transformers.AutoConfig.from_pretrained(str(config), local_files_only=True).to_dict()
    elif isinstance(config, dict):
        cfg = dict(config)
    else:  # a transformers config object
        cfg = config.to_dict()
    cfg = deep_merge(cfg, config_overrides or {})
    model_type = cfg.pop("model_type", base["model_type"])
    for k in ("transformers_version", "architectures", "_name_or_path"):
        cfg.pop(k, None)
    return transformers.AutoConfig.for_model(model_type, **cfg)


def _read_processor_config(source: str, from_hub: bool) -> dict | None:
    path = Path(source) / "preprocessor_config.json"
    if not from_hub:
        return json.loads(path.read_text()) if path.exists() else None
    try:
        from huggingface_hub import hf_hub_download

        from depthlab.models.weights import hub_unreachable

        return json.loads(Path(hf_hub_download(source, "preprocessor_config.json",
                                               local_files_only=hub_unreachable() is not None)).read_text())
    except Exception:  # no processor config in the repo or offline: keep the built-in policy
        return None


def _load_via_transformers(hf_model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load a transformers-layout state dict (possibly older key names) with transformers' own renaming rules.

    The state is written next to this model's config in a temporary folder and read back with
    ``from_pretrained``; any missing / unexpected / mis-shaped key raises.
    """
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="depthlab_hf_") as tmp:
        hf_model.config.save_pretrained(tmp)
        save_file({k: v.detach().contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"))
        loaded, info = type(hf_model).from_pretrained(tmp, dtype=torch.float32, output_loading_info=True,
                                                      local_files_only=True)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise RuntimeError(f"weights do not match {type(hf_model).__name__}: {_short(bad)}")
    return loaded.state_dict()


def _build(cls: type[HFDepthModel], base_config: dict, info: WeightsInfo, resize: ResizePolicy | None,
           config=None, config_overrides: dict | None = None, input_size=None, load_overrides: dict | None = None,
           official_filename: str | None = None, **unused) -> HFDepthModel:
    """Build an adapter around a randomly initialised transformers model.

    ``input_size`` (int or (H, W)) replaces the processor's target size (e.g. 518 -> 700 for sharper
    Depth Anything maps); it also becomes ``depth_info.input_size`` for models the caller resizes.
    """
    if unused:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unused)}; "
                        "use config_overrides={...} for configuration fields")
    transformers = require_transformers()
    cfg = _make_config(base_config, config, deep_merge(config_overrides or {}, load_overrides or {}))
    hf_model = transformers.AutoModelForDepthEstimation.from_config(cfg)  # train mode, like every create_model result
    if input_size is not None:
        size = (int(input_size), int(input_size)) if isinstance(input_size, (int, float)) else tuple(map(int, input_size))
        resize = replace(resize, size=size)
        if info.input_size is not None:
            info = info.replace(input_size=size)
    model = cls(hf_model, resize, hub_id=info.hub_id, official_filename=official_filename,
                load_overrides=load_overrides)
    model.fixed_input_size = input_size is not None  # a loaded processor config must not override it
    model.depth_info = info
    model._sync_info_from_config()
    return model


# ----------------------------------------------------------------------------------------------------------
# Built-in architectures (for pretrained=False; hub and folder loads take the source's config.json)
# ----------------------------------------------------------------------------------------------------------

# DINOv2 sizes and the layers Depth Anything V2 taps (official intermediate_layer_idx + 1, since
# transformers counts the embeddings as stage 0), with the DPT decoder widths of the official models.
_DAV2_ARCH = {
    "vits": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, out_indices=[3, 6, 9, 12],
                 neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64),
    "vitb": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, out_indices=[3, 6, 9, 12],
                 neck_hidden_sizes=[96, 192, 384, 768], fusion_hidden_size=128),
    "vitl": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, out_indices=[5, 12, 18, 24],
                 neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256),
}


def _config_number(v: float):
    """transformers 5 types DepthAnythingConfig.max_depth as int: pass whole numbers as int."""
    return int(v) if float(v).is_integer() else float(v)


def dav2_config(size: str, metric_max_depth: float | None = None) -> dict:
    """Built-in transformers config dict of Depth Anything V2 ``size`` (vits/vitb/vitl), relative or metric."""
    a = _DAV2_ARCH[size]
    return {
        "model_type": "depth_anything",
        "backbone_config": {
            "model_type": "dinov2", "image_size": 518, "patch_size": 14, "hidden_size": a["hidden_size"],
            "num_hidden_layers": a["num_hidden_layers"], "num_attention_heads": a["num_attention_heads"],
            "mlp_ratio": 4, "layerscale_value": 1.0, "out_indices": a["out_indices"],
            "apply_layernorm": True, "reshape_hidden_states": False,
        },
        "patch_size": 14,
        "reassemble_hidden_size": a["hidden_size"],
        "reassemble_factors": [4, 2, 1, 0.5],
        "neck_hidden_sizes": a["neck_hidden_sizes"],
        "fusion_hidden_size": a["fusion_hidden_size"],
        "head_hidden_size": 32,
        "depth_estimation_type": "metric" if metric_max_depth else "relative",
        "max_depth": _config_number(metric_max_depth or 1),
    }


def _zoedepth_config(kind: str) -> dict:
    bins = {
        "nyu": [{"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}],
        "kitti": [{"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}],
        "nyu_kitti": [{"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0},
                      {"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}],
    }[kind]
    multi = kind == "nyu_kitti"
    return {
        "model_type": "zoedepth",
        "backbone_config": {
            "model_type": "beit", "image_size": 384, "num_hidden_layers": 24, "hidden_size": 1024,
            "intermediate_size": 4096, "num_attention_heads": 16, "use_relative_position_bias": True,
            "reshape_hidden_states": False, "out_features": ["stage6", "stage12", "stage18", "stage24"],
        },
        "neck_hidden_sizes": [256, 512, 1024, 1024],
        "bin_centers_type": "normed" if kind == "kitti" else "softplus",
        "bin_configurations": bins,
        "num_patch_transformer_layers": 4 if multi else None,
        "patch_transformer_hidden_size": 128 if multi else None,
        "patch_transformer_intermediate_size": 1024 if multi else None,
        "patch_transformer_num_attention_heads": 4 if multi else None,
    }


_DPT_LARGE = {
    "model_type": "dpt", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
    "intermediate_size": 4096, "image_size": 384, "patch_size": 16, "backbone_out_indices": [5, 11, 17, 23],
    "neck_hidden_sizes": [256, 512, 1024, 1024], "fusion_hidden_size": 256, "readout_type": "project",
}
_DPT_HYBRID = {
    "model_type": "dpt", "is_hybrid": True, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "image_size": 384, "patch_size": 16, "backbone_out_indices": [2, 5, 8, 11],
    "reassemble_factors": [1, 1, 1, 0.5], "neck_hidden_sizes": [256, 512, 768, 768], "fusion_hidden_size": 256,
    "readout_type": "project", "backbone_featmap_shape": [1, 1024, 24, 24],
}

# Image-side policies of the processors shipped with the hub weights.
DAV2_RESIZE = ResizePolicy(size=(518, 518), keep_aspect_ratio=True, multiple_of=14, interpolation="bicubic")
DPT_RESIZE = ResizePolicy(size=(384, 384), keep_aspect_ratio=False, multiple_of=1, interpolation="bicubic")
ZOEDEPTH_RESIZE = ResizePolicy(size=(384, 512), keep_aspect_ratio=True, multiple_of=1 / 32,
                               interpolation="bilinear", antialias=False, align_corners=True)

# ----------------------------------------------------------------------------------------------------------
# Weights metadata
# ----------------------------------------------------------------------------------------------------------

# Training data of the weights (WeightsInfo.train_datasets: images seen in any training stage, encoder
# pre-training included), as the papers / READMEs list them; the zero-shot benchmark marks a score on one
# of them in-domain. Ids are lower case; "nyu", "kitti", "diode" match depthlab's dataset families.
MIDAS_V30_DATA = ("redweb", "diml", "movies3d", "megadepth", "wsvd", "tartanair", "hrwsi", "apolloscape",
                  "blendedmvs", "irs", "imagenet-21k")  # MiDaS README at v3.0: 10 datasets; ViT from ImageNet-21k
# MiDaS v3.1 README: "trained on up to 12 datasets" -- the 10 above plus KITTI and NYU Depth V2; BEiT and
# SwinV2 encoders pre-trained on ImageNet-22k. ZoeDepth's relative pre-training is this mix (the study's
# "12 datasets", section V.B.1).
MIDAS_V31_DATA = MIDAS_V30_DATA[:-1] + ("kitti", "nyu", "imagenet-22k")
_DA_UNLABELED = ("sa-1b", "open-images-v7", "objects365", "imagenet-21k", "lsun", "bdd100k", "google-landmarks-v2",
                 "places365", "lvd-142m")  # 62M pseudo-labelled real images + DINOv2's pre-training set
DAV1_DATA = ("blendedmvs", "diml", "hrwsi", "irs", "megadepth", "tartanair", *_DA_UNLABELED)  # 1.5M labelled
DAV2_DATA = ("blendedmvs", "hypersim", "irs", "tartanair", "vkitti2", *_DA_UNLABELED)  # synthetic teacher data

DAV2_PAPER = "Yang, Kang, Huang, Zhao, Xu, Feng, Zhao. Depth Anything V2. NeurIPS 2024"
_DAV2_LICENSE = {"vits": "Apache-2.0", "vitb": "CC-BY-NC-4.0", "vitl": "CC-BY-NC-4.0"}
_DAV2_HUB_SIZE = {"vits": "Small", "vitb": "Base", "vitl": "Large"}


def _dav2_info(size: str, dataset: str | None = None) -> WeightsInfo:
    common = dict(input_size=(518, 518), multiple_of=14, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  hub_filename="model.safetensors", license=_DAV2_LICENSE[size], paper=DAV2_PAPER,
                  train_datasets=DAV2_DATA)
    hub_size = _DAV2_HUB_SIZE[size]
    if dataset is None:
        return WeightsInfo(
            output_kind="disparity", target_encoding="depth", min_depth=0.0, max_depth=1.0,
            hub_id=f"depth-anything/Depth-Anything-V2-{hub_size}-hf", **common,
            notes=f"Relative (affine-invariant inverse depth, larger = nearer). Official file "
                  f"depth_anything_v2_{size}.pth (depth-anything/Depth-Anything-V2-{hub_size}) also loads. "
                  "Preprocess: keep aspect, scale as little as possible to 518, multiple of 14, bicubic+antialias.")
    indoor = dataset == "hypersim"
    max_depth = 20.0 if indoor else 80.0
    scene = "Indoor" if indoor else "Outdoor"
    return WeightsInfo(
        output_kind="metric", target_encoding="depth", min_depth=1e-3, max_depth=max_depth,
        hub_id=f"depth-anything/Depth-Anything-V2-Metric-{scene}-{hub_size}-hf", **common,
        notes=f"Metric depth in metres fine-tuned on {'Hypersim (indoor)' if indoor else 'Virtual KITTI 2 (outdoor)'}, "
              f"sigmoid head x {max_depth:g} m. Official file depth_anything_v2_metric_{dataset}_{size}.pth also loads.")


def _dav2(size: str, dataset: str | None, *, metric_head: bool = False, head: str | None = None,
          max_depth: float | None = None, **kwargs) -> HFDepthModel:
    """``head="metric"`` (same as ``metric_head=True``) with ``max_depth`` turns a relative variant into a
    metric one for fine-tuning: transformers' metric head, ``sigmoid(x) * max_depth`` metres."""
    if head not in (None, "relative", "metric"):
        raise ValueError(f"head must be 'relative' or 'metric', got {head!r}")
    if head == "metric" and dataset is not None:
        raise ValueError("head='metric' applies to the relative variants; metric variants already have one")
    metric_head = metric_head or head == "metric"
    info = _dav2_info(size, dataset)
    load_overrides = {}
    if dataset is None and metric_head:  # relative weights + metric head (sigmoid x max_depth) for fine-tuning
        if not max_depth:
            raise ValueError("metric_head=True needs max_depth (metres), e.g. 20 indoors, 80 outdoors")
        load_overrides = {"depth_estimation_type": "metric", "max_depth": _config_number(max_depth)}
        info = info.replace(output_kind="metric", max_depth=float(max_depth), min_depth=1e-3,
                            notes=f"Relative Depth Anything V2 backbone with a metric head (sigmoid x {float(max_depth):g} m) "
                                  "for fine-tuning on metric ground truth: metres once fine-tuned; the head is "
                                  "untrained until then.")
    elif max_depth is not None and dataset is not None:
        load_overrides = {"max_depth": _config_number(max_depth)}
    official = f"depth_anything_v2_{size}.pth" if dataset is None else f"depth_anything_v2_metric_{dataset}_{size}.pth"
    base = dav2_config(size, None if dataset is None else info.max_depth)
    return _build(HFDepthModel, base, info, DAV2_RESIZE, load_overrides=load_overrides,
                  official_filename=official, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Registered variants
# ----------------------------------------------------------------------------------------------------------

_DAV2_SIZE_NAMES = {"vits": "Small (ViT-S/14)", "vitb": "Base (ViT-B/14)", "vitl": "Large (ViT-L/14)"}
_DAV2_DATASETS = {None: ("relative", "affine-invariant inverse depth"),
                  "hypersim": ("metric", "indoor (Hypersim), metres up to 20"),
                  "vkitti": ("metric", "outdoor (Virtual KITTI 2), metres up to 80")}


def _register_dav2(size: str, dataset: str | None) -> str:
    """Register one Depth Anything V2 variant: ``depth_anything_v2_<size>`` or
    ``depth_anything_v2_metric_<dataset>_<size>``, built by :func:`_dav2` (DINOv2 + DPT)."""
    name = f"depth_anything_v2_{size}" if dataset is None else f"depth_anything_v2_metric_{dataset}_{size}"
    kind, what = _DAV2_DATASETS[dataset]
    tags = ("foundation", kind, *({"hypersim": ("indoor",), "vkitti": ("outdoor",)}.get(dataset, ())), "hf")

    def variant(**kwargs) -> nn.Module:
        return _dav2(size, dataset, **kwargs)

    variant.__name__ = variant.__qualname__ = name
    register_model(_dav2_info(size, dataset), name=name, tags=tags, resize_kwarg="input_size",
                   description=f"Depth Anything V2 {_DAV2_SIZE_NAMES[size]} + DPT, {kind}: {what}")(variant)
    return name


DAV2_MODELS = tuple(_register_dav2(size, dataset) for dataset in _DAV2_DATASETS for size in _DAV2_SIZE_NAMES)


DAV1_PAPER = ("Yang, Kang, Huang, Xu, Feng, Zhao. Depth Anything: Unleashing the Power of Large-Scale Unlabeled Data. "
              "CVPR 2024")
_DAV1_HUB_SIZE = {"vits": "small", "vitb": "base", "vitl": "large"}


def _dav1_info(size: str) -> WeightsInfo:
    """Depth Anything V1 (relative): same transformers class and processor as V2 (518, multiple of 14);
    licences as on the LiheYoung/depth-anything-*-hf model cards (Small Apache-2.0, Base/Large CC-BY-NC-4.0)."""
    return WeightsInfo(
        output_kind="disparity", target_encoding="depth", min_depth=0.0, max_depth=1.0, input_size=(518, 518),
        multiple_of=14, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        hub_id=f"LiheYoung/depth-anything-{_DAV1_HUB_SIZE[size]}-hf", hub_filename="model.safetensors",
        license=_DAV2_LICENSE[size], paper=DAV1_PAPER, train_datasets=DAV1_DATA,
        notes=f"Relative (affine-invariant inverse depth, larger = nearer). Official file depth_anything_{size}14.pth "
              "also loads. DINOv2 + DPT head tapping the last four blocks (V2 taps evenly spaced ones). "
              "Preprocess: keep aspect, scale as little as possible to 518, multiple of 14, bicubic+antialias.")


def dav1_config(size: str) -> dict:
    """Built-in transformers config dict of Depth Anything V1 ``size``: V2's architecture, except that the
    DPT head reads the last four DINOv2 blocks (transformers' conversion of the official V1 weights)."""
    cfg = dav2_config(size)
    last = cfg["backbone_config"]["num_hidden_layers"]
    cfg["backbone_config"] = {**cfg["backbone_config"], "out_indices": list(range(last - 3, last + 1))}
    return cfg


def _register_dav1(size: str) -> str:
    """Register ``depth_anything_v1_<size>`` (relative; the Leve study's teacher)."""
    name = f"depth_anything_v1_{size}"

    def variant(**kwargs) -> nn.Module:
        return _build(HFDepthModel, dav1_config(size), _dav1_info(size), DAV2_RESIZE,
                      official_filename=f"depth_anything_{size}14.pth", **kwargs)

    variant.__name__ = variant.__qualname__ = name
    register_model(_dav1_info(size), name=name, tags=("foundation", "relative", "hf"), resize_kwarg="input_size",
                   description=f"Depth Anything V1 {_DAV2_SIZE_NAMES[size]} + DPT, relative: affine-invariant "
                               "inverse depth")(variant)
    return name


DAV1_MODELS = tuple(_register_dav1(size) for size in _DAV2_SIZE_NAMES)


ZOEDEPTH_PAPER = "Bhat, Birkl, Wofk, Wonka, Mueller. ZoeDepth: Zero-shot Transfer by Combining Relative and Metric Depth. 2023"


def _zoedepth_info(kind: str) -> WeightsInfo:
    hub = {"nyu": "Intel/zoedepth-nyu", "kitti": "Intel/zoedepth-kitti", "nyu_kitti": "Intel/zoedepth-nyu-kitti"}[kind]
    max_depth = 10.0 if kind == "nyu" else 80.0
    return WeightsInfo(
        output_kind="metric", target_encoding="depth", min_depth=1e-3, max_depth=max_depth,
        input_size=None, multiple_of=1, mean=HALF, std=HALF, hub_id=hub, hub_filename="model.safetensors",
        license="MIT", paper=ZOEDEPTH_PAPER,
        train_datasets=MIDAS_V31_DATA + {"nyu": (), "kitti": (), "nyu_kitti": ()}[kind],  # M12 includes NYU, KITTI
        notes="BEiT-L/16 384 + metric bins head. Feed the image at its native size: the model pads (reflect), "
              "resizes to 384x512 keep-aspect and back, like transformers' ZoeDepthImageProcessor."
              + (" Two heads (NYU indoor, KITTI outdoor) chosen per batch by a learned router." if kind == "nyu_kitti" else ""))


@register_model(_zoedepth_info("nyu"), tags=("foundation", "metric", "indoor", "hf"), resize_kwarg="input_size")
def zoedepth_nyu(config=None, config_overrides=None, **kwargs) -> nn.Module:
    """ZoeDepth (BEiT-L) fine-tuned on NYU-Depth V2, metric depth in metres."""
    return _build(ZoeDepthModel, _zoedepth_config("nyu"), _zoedepth_info("nyu"), ZOEDEPTH_RESIZE,
                  config=config, config_overrides=config_overrides, **kwargs)


@register_model(_zoedepth_info("kitti"), tags=("foundation", "metric", "outdoor", "hf"), resize_kwarg="input_size")
def zoedepth_kitti(config=None, config_overrides=None, **kwargs) -> nn.Module:
    """ZoeDepth (BEiT-L) fine-tuned on KITTI, metric depth in metres."""
    return _build(ZoeDepthModel, _zoedepth_config("kitti"), _zoedepth_info("kitti"), ZOEDEPTH_RESIZE,
                  config=config, config_overrides=config_overrides, **kwargs)


@register_model(_zoedepth_info("nyu_kitti"), tags=("foundation", "metric", "hf"), resize_kwarg="input_size")
def zoedepth_nyu_kitti(config=None, config_overrides=None, **kwargs) -> nn.Module:
    """ZoeDepth (BEiT-L) with NYU and KITTI heads and a domain router, metric depth in metres."""
    return _build(ZoeDepthModel, _zoedepth_config("nyu_kitti"), _zoedepth_info("nyu_kitti"), ZOEDEPTH_RESIZE,
                  config=config, config_overrides=config_overrides, **kwargs)


DPT_PAPER = "Ranftl, Bochkovskiy, Koltun. Vision Transformers for Dense Prediction. ICCV 2021 (MiDaS v3.0)"


def _midas_info(hub_id: str, backbone: str) -> WeightsInfo:
    return WeightsInfo(
        output_kind="disparity", target_encoding="depth", min_depth=0.0, max_depth=1.0,
        input_size=(384, 384), multiple_of=32, mean=HALF, std=HALF, hub_id=hub_id, hub_filename="model.safetensors",
        license="Apache-2.0 (Hugging Face model card); the original isl-org/DPT weights are MIT",
        paper=DPT_PAPER, train_datasets=MIDAS_V30_DATA,
        notes=f"MiDaS v3.0 DPT with a {backbone} backbone; relative inverse depth (larger = nearer). "
              "Preprocess like transformers' DPTImageProcessor: plain 384x384 bicubic resize (aspect not kept), "
              "mean/std 0.5. transformers' DPT takes square inputs only (the hybrid exactly its image size).")


@register_model(_midas_info("Intel/dpt-large", "ViT-L/16"), tags=("foundation", "relative", "hf"), resize_kwarg="input_size")
def midas_dpt_large(config=None, config_overrides=None, **kwargs) -> nn.Module:
    """MiDaS v3.0 DPT-Large (ViT-L/16), relative inverse depth."""
    return _build(DPTDepthModel, _DPT_LARGE, _midas_info("Intel/dpt-large", "ViT-L/16"), DPT_RESIZE,
                  config=config, config_overrides=config_overrides, **kwargs)


@register_model(_midas_info("Intel/dpt-hybrid-midas", "ViT-hybrid (BiT-R50 + ViT-B/16)"),
                tags=("foundation", "relative", "hf"), resize_kwarg="input_size")
def midas_dpt_hybrid(config=None, config_overrides=None, **kwargs) -> nn.Module:
    """MiDaS v3.0 DPT-Hybrid (BiT ResNet-50 + ViT-B/16), relative inverse depth."""
    return _build(DPTDepthModel, _DPT_HYBRID, _midas_info("Intel/dpt-hybrid-midas", "ViT-hybrid (BiT-R50 + ViT-B/16)"),
                  DPT_RESIZE, config=config, config_overrides=config_overrides, **kwargs)


MIDAS31_PAPER = "Birkl, Wofk, Mueller. MiDaS v3.1 -- A Model Zoo for Robust Monocular Relative Depth Estimation. 2023"
# MiDaS v3.1 backbones in transformers (DPT with a BEiT or SwinV2 backbone), as transformers' conversion
# scripts configure them: name -> (backbone, size, side, backbone config, neck widths)
_BEIT = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      out_features=["stage3", "stage6", "stage9", "stage12"]),
         "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       out_features=["stage6", "stage12", "stage18", "stage24"])}
_SWINV2 = {"tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=16,
                        pretrained_window_sizes=[0, 0, 0, 0]),
           "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=24,
                        pretrained_window_sizes=[12, 12, 12, 6]),
           "large": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=24,
                         pretrained_window_sizes=[12, 12, 12, 6])}
MIDAS31_VARIANTS = {  # registered as midas_dpt_<backbone>_<size>_<side>; hub id Intel/dpt-<backbone>-<size>-<side>
    ("beit", "large", 512), ("beit", "large", 384), ("beit", "base", 384),
    ("swinv2", "large", 384), ("swinv2", "base", 384), ("swinv2", "tiny", 256)}


def midas31_config(backbone: str, size: str, side: int) -> dict:
    """Built-in transformers DPT config of a MiDaS v3.1 variant (BEiT or SwinV2 backbone)."""
    if backbone == "beit":
        bb = {"model_type": "beit", "image_size": side, "use_relative_position_bias": True,
              "reshape_hidden_states": False, **_BEIT[size]}
        neck = [256, 512, 1024, 1024] if size == "large" else [96, 192, 384, 768]
    else:
        bb = {"model_type": "swinv2", "image_size": side, "out_features": ["stage1", "stage2", "stage3", "stage4"],
              **_SWINV2[size]}
        neck = [bb["embed_dim"] * 2 ** i for i in range(4)]
    return {"model_type": "dpt", "backbone_config": bb, "neck_hidden_sizes": neck}


def _midas31_info(backbone: str, size: str, side: int) -> WeightsInfo:
    hub = f"Intel/dpt-{backbone}-{size}-{side}"
    return WeightsInfo(
        output_kind="disparity", target_encoding="depth", min_depth=0.0, max_depth=1.0, input_size=(side, side),
        multiple_of=32, mean=HALF, std=HALF, hub_id=hub, hub_filename="model.safetensors",
        license=f"MIT (isl-org/MiDaS v3.1 weights; see the {hub} model card)", paper=MIDAS31_PAPER,
        train_datasets=MIDAS_V31_DATA,
        notes=f"MiDaS v3.1 DPT with a {'BEiT' if backbone == 'beit' else 'SwinV2'}-{size.capitalize()} backbone at "
              f"{side}x{side}; relative inverse depth (larger = nearer). Trained on a mix that includes KITTI and "
              f"NYU Depth V2 (not zero-shot there). Preprocess: plain {side}x{side} bicubic resize, mean/std 0.5; "
              "the network takes exactly that size.")


def _register_midas31(backbone: str, size: str, side: int) -> str:
    name = f"midas_dpt_{backbone}_{size}_{side}"
    resize = replace(DPT_RESIZE, size=(side, side))

    def variant(config=None, config_overrides=None, **kwargs) -> nn.Module:
        return _build(DPTDepthModel, midas31_config(backbone, size, side), _midas31_info(backbone, size, side),
                      resize, config=config, config_overrides=config_overrides, **kwargs)

    variant.__name__ = variant.__qualname__ = name
    register_model(_midas31_info(backbone, size, side), name=name, tags=("foundation", "relative", "hf"),
                   resize_kwarg="input_size",
                   description=f"MiDaS v3.1 DPT-{backbone}-{size} {side}, relative inverse depth")(variant)
    return name


MIDAS31_MODELS = tuple(_register_midas31(*v) for v in sorted(MIDAS31_VARIANTS))


__all__ = [
    "HFDepthModel", "ZoeDepthModel", "DPTDepthModel", "ResizePolicy", "DAV2_RESIZE", "DPT_RESIZE", "ZOEDEPTH_RESIZE",
    "dav2_config", "require_transformers",
    "DAV2_MODELS", "DAV1_MODELS", "MIDAS31_MODELS", "dav1_config", "midas31_config",
    "zoedepth_nyu", "zoedepth_kitti", "zoedepth_nyu_kitti", "midas_dpt_large", "midas_dpt_hybrid",
]
