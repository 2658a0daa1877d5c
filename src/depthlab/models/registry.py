"""timm-style model registry: ``register_model``, ``create_model``, ``list_models``.

One file per model family registers small variant functions::

    @register_model(WeightsInfo(output_kind="metric", ...))
    def fastdepth(**kwargs) -> nn.Module: ...

``create_model(name, pretrained=False, checkpoint_path=None, **kwargs)`` builds the module, attaches
its :class:`WeightsInfo` as ``model.depth_info`` plus ``model.model_name`` / ``model.model_args``
(enough for :mod:`depthlab.checkpoint` to rebuild it) and loads weights when asked.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # noqa: F401  (timm's, for the model families)
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD  # noqa: F401

from depthlab.errors import DepthlabError, InputError, MissingFileError, unknown_keyword, unknown_name
from depthlab.types import OUTPUT_KINDS, TARGET_ENCODINGS


@dataclass(frozen=True)
class WeightsInfo:
    """How to feed a model, how to read its output, and where its pretrained weights live.

    ``mean``/``std`` act on images already scaled to [0, 1]: ``x = (img - mean) / std``.
    ``output_kind`` is what the decoded output means (metric / relative / disparity);
    ``target_encoding`` is how the raw network output encodes it (``depth``, ``inverse`` =
    ``max_depth / d``, ``normalized`` = ``d / max_depth``); :func:`depthlab.types.decode_target`
    turns raw output into the declared kind.
    """

    output_kind: str = "metric"
    target_encoding: str = "depth"
    min_depth: float = 1e-3
    max_depth: float = 10.0
    input_size: tuple[int, int] | None = None  # (H, W) the weights were trained at
    gsd: float | None = None  # ground sampling distance (metres per pixel) of aerial training data; None = unknown
    multiple_of: int = 32
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hub_id: str | None = None  # Hugging Face repo id
    hub_filename: str | None = None  # file inside the hub repo
    url: str | None = None  # direct download URL (torch.hub cache)
    local_file: str | None = None  # path relative to the package assets or absolute
    license: str = "unknown"
    paper: str = ""
    notes: str = ""
    # datasets whose images the weights were trained on (lower-case ids: "nyu", "kitti", "diode", "hypersim",
    # ...; pre-training included); the zero-shot benchmark marks a score on one of them in-domain
    train_datasets: tuple[str, ...] = ()

    def __post_init__(self):
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.target_encoding not in TARGET_ENCODINGS:
            raise ValueError(f"target_encoding must be one of {TARGET_ENCODINGS}, got {self.target_encoding!r}")
        object.__setattr__(self, "train_datasets", tuple(self.train_datasets))  # a JSON list (checkpoints) too

    @property
    def has_pretrained(self) -> bool:
        return bool(self.hub_id or self.url or self.local_file)

    def replace(self, **changes) -> "WeightsInfo":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    info: WeightsInfo
    family: str  # module that registered it, e.g. "depthlab.models.fastdepth"
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    # the variant keyword that sets the size at which a model that resizes images itself (foundation
    # adapters) runs: "input_size" (transformers adapters), "processing_resolution" (Marigold); None for
    # models fed at the caller's size
    resize_kwarg: str | None = None


# Filled by the family modules, which ``depthlab/models/__init__.py`` imports eagerly (as timm does): importing
# this module imports its package first, so every family has registered before any lookup.
_REGISTRY: dict[str, ModelEntry] = {}


def register_model(info: WeightsInfo | None = None, *, name: str | None = None, description: str = "",
                   tags: tuple[str, ...] = (), resize_kwarg: str | None = None):
    """Decorator registering a variant function ``fn(**kwargs) -> nn.Module``.

    ``resize_kwarg`` names the keyword of ``fn`` that sets the processing size of a model that resizes
    images itself (see :class:`ModelEntry`)."""

    def deco(fn):
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice ({_REGISTRY[key].family} and {fn.__module__})")
        doc = description or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        _REGISTRY[key] = ModelEntry(key, fn, info or WeightsInfo(), fn.__module__, doc, tuple(tags), resize_kwarg)
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


class ModelOptionError(DepthlabError, TypeError):
    """A keyword argument (``model.kwargs`` key, checkpoint header ``model_args``) the model does not take."""


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise unknown_name("model", name, _REGISTRY, listed=False, otherwise="; see `depthlab models`", n=5)
    return _REGISTRY[name]


def get_weights_info(name: str) -> WeightsInfo:
    return get_entry(name).info


def create_model(name: str, pretrained: bool = False, checkpoint_path: str | None = None,
                 **kwargs) -> nn.Module:
    """Build a registered model.

    ``pretrained=True`` loads the entry's weights (local file, else hub / URL through their caches);
    ``checkpoint_path`` loads a given file instead (depthlab safetensors checkpoint, plain safetensors
    or a ``.pth``/``.pt`` state dict). Keyword arguments go to the variant function; a ``depth_info``
    keyword may override fields of the entry's :class:`WeightsInfo` (dict).
    """
    entry = get_entry(name)
    overrides = kwargs.pop("depth_info", None) or {}
    what = unknown_keyword(entry.fn, kwargs)
    if what:  # one line naming the key, instead of a TypeError from inside the constructor
        raise ModelOptionError(f"model {name!r} has no option {what}")
    model = entry.fn(**kwargs)
    info = getattr(model, "depth_info", None) or entry.info  # a variant may set it from its kwargs
    if overrides:
        info = info.replace(**overrides)
    model.depth_info = info
    model.model_name = name
    model.model_args = dict(kwargs)
    if checkpoint_path is not None or pretrained:
        from depthlab.models.weights import load_pretrained

        load_pretrained(model, info, checkpoint_path=checkpoint_path, model_name=name)
    return model


def resolve_device(device) -> "torch.device":
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` ... -> a usable ``torch.device``; a one-line
    DepthlabError for a name torch does not know or a device this machine does not have."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r} (use cpu, cuda, cuda:N or mps): {e}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            raise InputError(f"device {device!r} unavailable: this machine has {n} CUDA GPU(s); use --device cpu")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} unavailable (no Apple GPU); use --device cpu")
    return dev


def resolve_model(model: nn.Module | str | os.PathLike | None = None, checkpoint_path=None, checkpoint=None,
                  pretrained: bool = True) -> nn.Module:
    """The one place that turns what a user names into a model (Predictor, ``eval``, ``export``, ``serve``).

    * ``checkpoint`` -- a depthlab checkpoint, which rebuilds its own model (not with ``checkpoint_path``);
    * ``model`` an ``nn.Module`` -- used as is, with ``checkpoint_path`` weights loaded into it if given;
    * ``model`` a path to a depthlab ``.safetensors`` checkpoint -- as ``checkpoint``;
    * ``model`` a registered name -- :func:`create_model` with ``checkpoint_path`` weights (a file, or a
      Hugging Face folder for foundation adapters), else the published weights when ``pretrained``.
    """
    from depthlab.checkpoint import is_depthlab_checkpoint, load_checkpoint

    if checkpoint is not None:
        if checkpoint_path is not None:
            raise InputError("give either a depthlab checkpoint (--checkpoint) or weights for a named model "
                             "(--checkpoint-path), not both")
        if not Path(checkpoint).is_file():
            raise MissingFileError(f"{checkpoint}: checkpoint not found")
        return load_checkpoint(checkpoint)
    if isinstance(model, nn.Module):
        if checkpoint_path is not None:
            from depthlab.models.weights import load_pretrained

            load_pretrained(model, model.depth_info, checkpoint_path=checkpoint_path,
                            model_name=getattr(model, "model_name", ""))
        return model
    if model is None:
        raise InputError("no model: pass --model NAME (a registered name or checkpoint path; a module in Python) "
                         "or --checkpoint CKPT")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an nn.Module, a registered name or a checkpoint path, got {type(model).__name__}")
    p = Path(model)
    if p.suffix == ".safetensors" and p.is_file() and is_depthlab_checkpoint(p):
        if checkpoint_path is not None:
            raise InputError(f"{p}: a depthlab checkpoint carries its own weights; drop checkpoint_path")
        return load_checkpoint(p)
    return create_model(str(model), pretrained=pretrained and checkpoint_path is None, checkpoint_path=checkpoint_path)
