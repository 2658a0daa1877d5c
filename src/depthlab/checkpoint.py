"""Self-describing checkpoints: weights in safetensors, model name/args/config/metrics in its header.

Loading never unpickles code. ``load_checkpoint(path)`` rebuilds the model from the header alone.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from depthlab.errors import InputError, one_line
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
    """(state_dict, metadata) of a depthlab checkpoint; a file that is not one is a one-line error naming it
    (:class:`~depthlab.models.weights.WeightsError`, a DataError)."""
    state, meta = _open_checkpoint(path, shapes_only=False)
    return state, meta


def _open_checkpoint(path, shapes_only: bool) -> tuple[dict, dict]:
    """(``{key: tensor}`` or, with ``shapes_only``, ``{key: shape}`` read from the header alone, metadata)."""
    from depthlab.io import check_regular_file
    from depthlab.models.weights import WeightsError

    check_regular_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} if shapes_only else None
    except Exception as e:  # SafetensorError (not safetensors, truncated, bad header), OSError ...
        raise WeightsError(path, f"cannot read checkpoint ({one_line(e)})") from None
    if "depthlab" not in header:
        raise InputError(f"{path}: not a depthlab checkpoint (no 'depthlab' header); "
                         "use create_model(name, checkpoint_path=...) for plain weight files")
    try:
        meta = json.loads(header["depthlab"])
    except ValueError as e:
        raise WeightsError(path, f"checkpoint header is not valid JSON ({one_line(e)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model_name"), str):
        raise WeightsError(path, "checkpoint header has no model_name")
    if not isinstance(meta.get("model_args", {}), dict) or not isinstance(meta.get("depth_info") or {}, dict):
        raise WeightsError(path, "checkpoint header: model_args and depth_info must be mappings")
    if shapes_only:
        return shapes, meta
    try:
        return load_file(str(path)), meta
    except Exception as e:
        raise WeightsError(path, f"cannot read checkpoint tensors ({one_line(e)})") from None


# header keys that name files, hubs or weights to fetch: a checkpoint's header never makes depthlab open them
_PATH_LIKE = ("path", "file", "dir", "url", "hub", "pretrained", "checkpoint", "root")


def safe_model_args(path, args: dict) -> dict:
    """The header's ``model_args``, refused (WeightsError naming ``path``) when they could make loading open
    another file or fetch weights: keys that name paths/URLs/hubs (``checkpoint_path``, ``encoder_checkpoint``,
    ``pretrained`` ...) or string values that look like paths. Architecture arguments (sizes, names of
    encoders, flags) pass; whether they fit the file's tensors is checked before allocation
    (:func:`_check_shapes`)."""
    from depthlab.models.weights import WeightsError

    for k, v in args.items():
        if any(word in str(k).lower() for word in _PATH_LIKE):
            raise WeightsError(path, f"checkpoint header: model_args may not set {k!r} (files and downloads are "
                                     f"never taken from a checkpoint header)")
        if isinstance(v, str) and ("/" in v or "\\" in v or v.startswith(".")):
            raise WeightsError(path, f"checkpoint header: model_args {k}={v!r} looks like a path; refused")
    return dict(args)


def _check_shapes(path, model_name: str, args: dict, shapes: dict) -> None:
    """Build the model on the meta device (no memory) and compare its tensor shapes with the file's: a header
    asking for ``base_channels: 100000`` is refused before anything is allocated."""
    import torch

    from depthlab.models.registry import ModelOptionError, create_model
    from depthlab.models.weights import WeightsError

    try:
        with torch.device("meta"):
            meta_model = create_model(model_name, **args)
    except ModelOptionError as e:  # an argument the architecture does not take
        raise WeightsError(path, f"checkpoint header: model_args do not fit {model_name} ({e})") from None
    except Exception:  # a constructor that cannot run on the meta device: the load-time checks still apply
        return
    own = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    bad = [k for k in own if k in shapes and own[k] != shapes[k]]
    n_own, n_file = sum(math.prod(s) for s in own.values()), sum(math.prod(s) for s in shapes.values())
    if bad or n_own > 2 * n_file + 1_000_000:
        what = f"e.g. {bad[0]}: {shapes[bad[0]]} in the file, {own[bad[0]]} from the header" if bad else \
            f"{n_own:,} parameters from the header, {n_file:,} in the file"
        raise WeightsError(path, f"checkpoint header's model_args do not match its tensors ({what})")


def load_checkpoint(path, map_location: str = "cpu") -> nn.Module:
    """Rebuild the model stored in a depthlab checkpoint and load its weights (strict).

    The header is not trusted: its ``model_args`` may not name files (:func:`safe_model_args`), the model
    they describe must match the file's tensor shapes before it is built for real (:func:`_check_shapes`),
    and ``depth_info`` keeps how to feed and read the model, never where weights come from."""
    from depthlab.models.registry import create_model, get_entry
    from depthlab.models.weights import WeightsError, load_into

    shapes, meta = _open_checkpoint(path, shapes_only=True)
    name = meta["model_name"]
    try:
        get_entry(name)
    except KeyError as e:
        raise WeightsError(path, f"checkpoint header: {e}") from None
    args = safe_model_args(path, meta.get("model_args") or {})
    _check_shapes(path, name, args, shapes)
    state, _ = read_checkpoint(path)
    try:
        model = create_model(name, **args)
    except TypeError as e:  # the header is input: a variant taking **kwargs may refuse them only when built
        raise WeightsError(path, f"checkpoint header: model_args do not fit {name} ({one_line(e)})") from None
    if meta.get("depth_info"):
        d = {k: v for k, v in meta["depth_info"].items() if k not in ("hub_id", "hub_filename", "url", "local_file")}
        for k in ("input_size", "mean", "std"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        try:
            model.depth_info = model.depth_info.replace(**d)  # weight sources: the registry's, not the header's
        except (TypeError, ValueError) as e:
            raise WeightsError(path, f"checkpoint header: bad depth_info ({one_line(e)})") from None
    load_into(model, state, strict=True, source=str(path))
    model.checkpoint_meta = meta
    return model.to(map_location).eval()
