"""Self-describing checkpoints: weights in safetensors, model name/args/config/metrics in its header.

Loading never unpickles code. ``load_checkpoint(path)`` rebuilds the model from the header alone.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from depthlab.errors import InputError
from depthlab.io import atomic_path

FORMAT = "depthlab-checkpoint/1"


def save_checkpoint(model: nn.Module, path: str | os.PathLike, config: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model``'s weights plus what is needed to rebuild it; atomic (temp file + rename)."""
    from depthlab import __version__

    path = Path(path)
    # Arguments that only matter when a model is first built (e.g. where to fetch ImageNet encoder
    # weights) are kept for provenance but not replayed: the checkpoint already holds those weights, and
    # replaying them would make loading depend on files or a hub that may be gone.
    init_only = set(getattr(model, "init_only_args", ()))
    all_args = dict(getattr(model, "model_args", {}) or {})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model_name": getattr(model, "model_name", None),
        "model_args": {k: v for k, v in all_args.items() if k not in init_only},
        "init_args": {k: v for k, v in all_args.items() if k in init_only},
        "depth_info": model.depth_info.to_dict() if hasattr(model, "depth_info") else None,
        "config": config or {},
        "metrics": metrics or {},
        "depthlab_version": __version__,
        **(extra or {}),
    }
    if meta["model_name"] is None:
        raise InputError("model has no model_name: build it with depthlab.create_model to checkpoint it")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"depthlab": json.dumps(meta)})
    return path


def is_depthlab_checkpoint(path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return "depthlab" in (f.metadata() or {})
    except Exception:
        return False


def read_checkpoint(path) -> tuple[dict, dict]:
    """(state_dict, metadata) of a depthlab checkpoint."""
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "depthlab" not in header:
        raise InputError(f"{path}: not a depthlab checkpoint (no 'depthlab' header); "
                         "use create_model(name, checkpoint_path=...) for plain weight files")
    return load_file(str(path)), json.loads(header["depthlab"])


def load_checkpoint(path, map_location: str = "cpu") -> nn.Module:
    """Rebuild the model stored in a depthlab checkpoint and load its weights (strict)."""
    from depthlab.models.registry import create_model
    from depthlab.models.weights import load_into

    state, meta = read_checkpoint(path)
    model = create_model(meta["model_name"], **meta.get("model_args", {}))
    if meta.get("depth_info"):
        from depthlab.models.registry import WeightsInfo

        d = dict(meta["depth_info"])
        for k in ("input_size", "mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        model.depth_info = WeightsInfo(**d)
    load_into(model, state, strict=True, source=str(path))
    model.checkpoint_meta = meta
    return model.to(map_location).eval()
