"""Finding and loading pretrained weights: local files first, then the hub (through its cache).

Order for ``create_model(name, pretrained=True)``:

1. ``checkpoint_path`` if given (must exist);
2. the entry's ``local_file`` (absolute, or relative to the bundled ``depthlab/assets``);
3. the Hugging Face hub (``hub_id`` + ``hub_filename``) via ``huggingface_hub.hf_hub_download``,
   which reuses its cache and honours ``HF_HUB_OFFLINE``; or ``url`` via torch.hub's cache.

If none works, :class:`~depthlab.errors.WeightsUnavailableError` names the hub id / URL and the
``checkpoint_path=`` alternative in one message.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from depthlab.errors import DataError, MissingFileError, WeightsMismatchError, WeightsUnavailableError, one_line

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


class WeightsError(DataError, WeightsMismatchError):
    """A weight file that cannot be read, or whose tensors do not fit the model: ``<file>: <problem>`` on one
    line. A :class:`~depthlab.errors.WeightsMismatchError` (so a RuntimeError, as ``load_state_dict``'s own
    mismatch errors are) that also carries the file's path."""


def resolve_local(path: str | os.PathLike | None) -> Path | None:
    """A local weight file: absolute path, path relative to cwd, or relative to depthlab's assets."""
    if not path:
        return None
    p = Path(path).expanduser()
    for cand in (p, ASSETS_DIR / p):
        if cand.exists():
            return cand
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pth``/``.pt``/``.bin`` file (no code unpickled).

    Lightning/other checkpoints that wrap the weights in ``state_dict`` / ``model`` are unwrapped; a depthlab
    checkpoint is a safetensors file, so its weights read the same way (its JSON header is not needed here).
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path}: no such weight file")
    from depthlab.io import check_regular_file

    check_regular_file(path)
    if path.stat().st_size == 0:
        raise WeightsError(path, "empty weight file (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # weights_only: tensors and plain containers only; a pickle that names any other callable is refused
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # SafetensorError, UnpicklingError, EOFError, zip/RuntimeError ...: a bad file
        raise WeightsError(path, f"cannot read weights ({one_line(e)})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(path, f"not a state dict of tensors (got {type(obj).__name__})")
    return obj


# How a user passes local weights, in every place depthlab takes them (one text for every offline error).
LOCAL_WEIGHTS_HINT = ("checkpoint_path=PATH in Python; --checkpoint-path PATH for depthlab predict / eval / export / "
                      "serve; NAME:PATH in depthlab benchmark --models; model.checkpoint_path=PATH (student) or "
                      "distill.teacher_checkpoint=PATH (teacher) in a training config")


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used (``HF_HUB_OFFLINE`` set, or -- without a proxy configured --
    its host does not resolve within 5 s), else None. Checked once per process (restart to re-check): loads
    then read the local cache only (``local_files_only``) instead of spending ~30 s in huggingface_hub's
    connection retries before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    import socket
    import threading
    from urllib.parse import urlparse
    from urllib.request import getproxies

    if getproxies():  # the hub may be reached through a proxy without resolving here: let huggingface_hub try
        return None

    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    except Exception:
        host = "huggingface.co"
    result: list = []

    def resolve():
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(5.0)
    return None if result and result[0] else f"{host} does not resolve (offline?); only the local cache was read"


def download(info, model_name: str = "") -> Path:
    """Fetch ``info``'s weights from the hub or URL (cache first). Raises WeightsUnavailableError."""
    errors = []
    if info.hub_id:
        offline = None
        try:
            from huggingface_hub import hf_hub_download

            offline = hub_unreachable()
            return Path(hf_hub_download(info.hub_id, info.hub_filename or "model.safetensors",
                                        local_files_only=offline is not None))
        except Exception as e:  # offline, missing file, auth ...
            errors.append(f"hub {info.hub_id}: {type(e).__name__}" + (f" ({offline})" if offline else ""))
    if info.url:
        try:
            from torch.hub import download_url_to_file, get_dir

            dst = Path(get_dir()) / "checkpoints" / Path(info.url).name
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                download_url_to_file(info.url, str(dst), progress=True)
            return dst
        except Exception as e:
            errors.append(f"url {info.url}: {type(e).__name__}")
    where = []
    if info.hub_id:
        where.append(f"the Hugging Face hub ({info.hub_id}{'/' + info.hub_filename if info.hub_filename else ''})")
    if info.url:
        where.append(f"URL {info.url}")
    if info.local_file:
        where.append(f"local file {info.local_file}")
    src = " or ".join(where) if where else "no published source"
    raise WeightsUnavailableError(
        f"pretrained weights for {model_name or 'this model'} unavailable: tried {src}"
        f"{' (' + '; '.join(errors) + ')' if errors else ''}. Go online to download them once (they are cached), "
        f"or pass a local weights file: {LOCAL_WEIGHTS_HINT}.")


def find_weights(info, checkpoint_path=None, model_name: str = "") -> Path:
    if checkpoint_path is not None:
        p = Path(checkpoint_path).expanduser()
        if not p.exists():
            raise WeightsUnavailableError(f"{p}: checkpoint_path does not exist")
        if p.is_dir():
            raise WeightsUnavailableError(f"{p}: checkpoint_path is a folder; give the weights file "
                                          "(.safetensors, .pth or .pt)")
        return p
    local = resolve_local(info.local_file)
    if local is not None:
        return local
    if not info.has_pretrained:
        raise WeightsUnavailableError(
            f"{model_name or 'this model'} has no published pretrained weights; pass checkpoint_path=PATH")
    return download(info, model_name)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True,
              source: str = "") -> tuple[list[str], list[str]]:
    """``load_state_dict`` with a readable report. Strict unless a partial load is intended."""
    if hasattr(model, "convert_state_dict"):  # family-specific key mapping (e.g. official repos)
        state = model.convert_state_dict(state)
    where = source or "weights"
    own = model.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if bad:  # load_state_dict would raise a multi-line RuntimeError
        k = bad[0]
        raise WeightsError(where, f"weights do not match {type(model).__name__}: {len(bad)} size mismatch(es), "
                                  f"e.g. {k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise WeightsError(
            where, f"weights do not match {type(model).__name__}: {len(missing)} missing "
                   f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if missing or unexpected:
        log.warning("%s: partial load: skipped %d missing, %d unexpected keys", source, len(missing), len(unexpected))
    return missing, unexpected


def load_pretrained(model: nn.Module, info, checkpoint_path=None, model_name: str = "",
                    strict: bool = True) -> nn.Module:
    if hasattr(model, "load_pretrained_weights"):  # adapters load hub ids / HF folders / official files themselves
        return model.load_pretrained_weights(checkpoint_path, model_name=model_name, strict=strict)
    path = find_weights(info, checkpoint_path, model_name)
    load_into(model, read_state_dict(path), strict=strict, source=str(path))
    return model


@dataclass
class LoadReport:
    """What a partial load did: ``loaded`` keys, ``skipped`` file keys, ``missing`` (left at init)."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def modules(keys):
            return ", ".join(sorted({".".join(k.split(".")[:2]) if k.split(".")[0] == "features" else k.split(".")[0]
                                     for k in keys})) or "-"

        return (f"loaded {len(self.loaded)} tensors; skipped {len(self.skipped)} file keys "
                f"({modules(self.skipped)}); left at init {len(self.missing)} ({modules(self.missing)})")


def load_partial(module: nn.Module, state_or_path, what: str, *, strip_prefixes: tuple[str, ...] = ("module.",),
                 skip: Callable[[str], bool] = lambda k: False,
                 may_miss: Callable[[str], bool] = lambda k: False) -> LoadReport:
    """Load an encoder from a *classification* checkpoint: the one rule for partial loads.

    Each key loses the ``strip_prefixes`` it starts with (in order); keys for which ``skip`` is true
    (classifier heads, stages past the last tap) are dropped and reported; module keys the file lacks are
    allowed only where ``may_miss`` is true, and for BatchNorm's ``num_batches_tracked`` (left at their
    initialisation, reported). Any other missing
    or unexpected key, or any shape mismatch, means the file is not ``what``: ``RuntimeError`` naming the
    file and examples. Loads through ``nn.Module.load_state_dict`` itself (some libraries' encoders
    override it and drop the result this check reads).
    """
    if isinstance(state_or_path, dict):
        state, source = state_or_path, "state dict"
    else:
        state, source = read_state_dict(state_or_path), str(state_or_path)
    keep: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for k, v in state.items():
        for prefix in strip_prefixes:
            if k.startswith(prefix):
                k = k[len(prefix):]
        (skipped.append(k) if skip(k) else keep.__setitem__(k, v))
    own = module.state_dict()
    bad_shape = [k for k, v in keep.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    unexpected = sorted(k for k in keep if k not in own)
    missing = sorted(k for k in own if k not in keep)
    # BatchNorm's step counter: absent from older PyTorch saves and converted checkpoints, never used in
    # eval and reset by training -- load_state_dict itself tolerates its absence
    unexplained = [k for k in missing if not (may_miss(k) or k.endswith(".num_batches_tracked"))]
    if bad_shape or unexpected or unexplained:
        raise WeightsError(
            source, f"not a {what} checkpoint: {len(bad_shape)} shape mismatches (e.g. {bad_shape[:3]}), "
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(unexplained)} missing "
                    f"(e.g. {unexplained[:3]})")
    nn.Module.load_state_dict(module, keep, strict=False)
    report = LoadReport(loaded=sorted(keep), skipped=sorted(skipped), missing=missing)
    log.info("%s: %s partial load: %s", source, what, report.summary())
    return report
