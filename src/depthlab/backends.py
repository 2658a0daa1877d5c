"""Which engine runs the network: the fastest verified one by default.

The :class:`~depthlab.processing.Processor` pipeline is pre-process -> network -> post-process; a backend
replaces only the middle. :class:`Network` is that middle, a callable ``x (B,3,h,w) -> model output``:

* ``"eager"`` -- the PyTorch module itself (``torch`` is accepted as an older name of it);
* ``"onnx"`` -- ONNX Runtime (:class:`depthlab.export.onnx.OnnxBackend`): exported per input shape, verified
  against PyTorch once (max relative difference 1e-4), cached on disk (``$DEPTHLAB_CACHE/onnx`` or
  ``~/.cache/depthlab/onnx``) keyed by model name, a hash of the weights, the shape and the torch / ONNX
  Runtime versions; any failure is an error;
* ``"auto"`` (the default) -- ONNX Runtime when the device is the CPU, ``onnxruntime`` is installed, the model
  does not declare ``onnx_exportable = False`` (Marigold) and the export verifies; otherwise (and after any
  export or verification failure, with a one-line warning) eager PyTorch in ``channels_last`` memory format,
  itself checked once against the contiguous forward (falls back to contiguous if it differs or fails).

The default can be changed per process with ``DEPTHLAB_BACKEND=eager|onnx|auto``; an explicit ``backend=``
argument wins. ``Network.used`` records what actually ran (``backend_name``) so callers can report it.

Weights that change after an export (further training, ``load_state_dict``) are noticed before the next call
(parameter storage and version counters) and the stale ONNX Runtime session is dropped and re-exported.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
import weakref
from typing import Any

import torch
import torch.nn as nn

from depthlab.errors import InputError, one_line

BACKENDS = ("auto", "eager", "onnx")
ALIASES = {"torch": "eager"}  # the name before "eager" existed
ENV_VAR = "DEPTHLAB_BACKEND"
AUTO_MAX_SHAPES = 4  # auto exports at most this many input shapes per Network; later new shapes run eager
CHANNELS_LAST_RTOL = 1e-4  # channels_last vs contiguous eager: the same tolerance as the ONNX check
# auto's channels_last check costs one more forward: tried only when the first forward took less than this
# (a Marigold forward is over a minute on a CPU; doubling the first image for a speculative gain is not worth it)
CHANNELS_LAST_CHECK_MAX_S = 2.0
EAGER, EAGER_CL, ONNX = "eager", "eager-channels_last", "onnx"
log = logging.getLogger(__name__)


def resolve_backend(backend: str | None) -> str:
    """``backend`` -> one of :data:`BACKENDS`; ``None`` = ``$DEPTHLAB_BACKEND``, else ``"auto"``."""
    source = "backend"
    if backend is None:
        backend, source = os.environ.get(ENV_VAR) or "auto", f"${ENV_VAR}"
    name = ALIASES.get(str(backend).strip().lower(), str(backend).strip().lower())
    if name not in BACKENDS:
        raise InputError(f"{source} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return name


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# models whose export failed in this process (auto): later Networks on the same module skip it, warning once
_EXPORT_FAILED: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def _weights_stamp(model: nn.Module) -> tuple:
    """Cheap fingerprint of the weights' storage and in-place modifications (no hashing of the values).

    Inference tensors (weights created or loaded under ``torch.inference_mode()``) have no version counter;
    they can only change in place inside inference mode, so their storage stands for them (-1)."""
    return tuple((t.data_ptr(), -1 if t.is_inference() else t._version)
                 for t in (*model.parameters(), *model.buffers()))


def backend_name(used: dict[str, int]) -> str | None:
    """``{"onnx": 3, "eager": 1}`` -> ``"onnx+eager"`` (order of first use); None when nothing ran."""
    return "+".join(used) or None


class Network:
    """``model``'s forward, run by ``backend`` (see the module doc). ``network(x)`` -> the model's output.

    ``channels_last`` / ``autocast_bf16`` apply to eager runs (``autocast_bf16`` makes ``auto`` choose eager:
    reduced precision is an explicit opt-in of PyTorch). ``onnx_cache_dir``: where exports are cached.
    """

    def __init__(self, model: nn.Module, backend: str | None = None, device: str | torch.device = "cpu",
                 channels_last: bool = False, autocast_bf16: bool = False, onnx_cache_dir=None):
        self.model, self.device = model, torch.device(device)
        self.requested = resolve_backend(backend)
        if self.requested == "onnx" and self.device.type != "cpu":
            raise InputError(f"backend='onnx' runs on the CPU (ONNX Runtime CPU provider), got device={device}")
        self.channels_last, self.autocast_bf16, self.onnx_cache_dir = channels_last, autocast_bf16, onnx_cache_dir
        self.used: dict[str, int] = {}  # backend -> number of calls it ran
        self.fallback_reason: str | None = None  # why auto did not use ONNX Runtime
        self._onnx = None  # OnnxBackend, built on first use
        self._stamp = None  # weights fingerprint of the exported model
        self._cl_checked = channels_last or autocast_bf16  # chosen by the caller / bf16 kept as asked: no check
        if self.requested == "auto":
            self.fallback_reason = self._auto_blocker()

    # -- choosing ------------------------------------------------------------------------------------------
    def _auto_blocker(self) -> str | None:
        """Why ``auto`` cannot use ONNX Runtime for this model at all (None = it can try)."""
        if self.device.type != "cpu":
            return f"device {self.device} (ONNX Runtime runs on the CPU)"
        if getattr(self.model, "onnx_exportable", True) is False:
            return "the model declares it cannot be exported to ONNX"
        if self.autocast_bf16:
            return "bf16 autocast asked for (a PyTorch option)"
        if not onnx_available():
            return "onnxruntime is not installed (pip install 'depthlab[onnx]')"
        return _EXPORT_FAILED.get(self.model)

    @property
    def backend(self) -> str | None:
        """What ran (``onnx``, ``eager``, ``eager-channels_last``, or several joined by ``+``); None before a call."""
        return backend_name(self.used)

    @property
    def onnx_backend(self):
        """The :class:`~depthlab.export.onnx.OnnxBackend` in use (None before the first ONNX Runtime call or without one)."""
        return self._onnx

    def prepare(self, shape) -> str:
        """Decide (and export, for ONNX Runtime) for input ``shape`` without timing anything; returns the backend."""
        shape = tuple(int(s) for s in shape)
        if self.requested == "eager" or self.fallback_reason is not None:
            return EAGER_CL if self.channels_last else EAGER
        if self._onnx is not None and self._stamp != _weights_stamp(self.model):
            self._onnx = None  # the weights changed since the export: the session is stale
        if self.requested == "auto" and self._onnx is not None and shape not in self._onnx.reports \
                and len(self._onnx.reports) >= AUTO_MAX_SHAPES:
            return EAGER_CL if self.channels_last else EAGER  # a new shape past the cap: not worth another export
        try:
            self._onnx_for(shape)
        except Exception as e:  # auto: any export / verification failure falls back to eager
            if self.requested == "onnx":
                raise
            self.fallback_reason = one_line(e)
            _EXPORT_FAILED[self.model] = self.fallback_reason
            warnings.warn(f"{self._name()}: ONNX Runtime backend unavailable ({self.fallback_reason[:300]}); "
                          "running eager PyTorch", stacklevel=3)
            return EAGER_CL if self.channels_last else EAGER
        return ONNX

    def _onnx_for(self, shape: tuple[int, ...]) -> None:
        from depthlab.export.onnx import OnnxBackend

        if self._onnx is None:
            self._stamp = _weights_stamp(self.model)
            self._onnx = OnnxBackend(self.model, shape, cache_dir=self.onnx_cache_dir)
        else:
            self._onnx.session_for(shape)  # exported (or loaded from the cache) now, not in a timed call

    def _name(self) -> str:
        return getattr(self.model, "model_name", None) or type(self.model).__name__

    def _as_single_frames(self, shape) -> bool:
        """Whether a batch runs frame by frame: ONNX Runtime keeps one session per input shape, each with its own
        memory arena sized to that shape, so a batch smaller than one already exported for the same image size
        (the end of a folder, of a row of raster tiles) runs through the batch-1 session instead of adding a
        session of its own. Remainders of every size then share one session: memory stops depending on them
        (a raster's peak grew with its width, docs/aerial.md *Measured*), and they stop using up the
        :data:`AUTO_MAX_SHAPES` exports. On the CPU a frame alone costs about what it costs in a batch."""
        if self._onnx is None or self.fallback_reason is not None or int(shape[0]) <= 1:
            return False
        shape = tuple(int(s) for s in shape)
        return shape not in self._onnx.reports and any(
            s[1:] == shape[1:] and s[0] > shape[0] for s in self._onnx.reports)

    # -- running -------------------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> Any:
        if self._as_single_frames(x.shape):
            return _cat_outputs([self(x[i: i + 1]) for i in range(x.shape[0])])
        which = self.prepare(x.shape)
        if which == ONNX:
            out = self._onnx(x)
        else:
            out, which = self._eager(x)
        self.used[which] = self.used.get(which, 0) + 1
        return out

    def _eager(self, x: torch.Tensor) -> tuple[Any, str]:
        if not self._cl_checked and self.fallback_reason is not None and self.requested == "auto":
            return self._check_channels_last(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            return self.model(x), EAGER_CL if self.channels_last else EAGER

    def _check_channels_last(self, x: torch.Tensor) -> tuple[Any, str]:
        """auto's eager path, first call: run contiguous, then channels_last; keep channels_last if it agrees.
        Not tried when the contiguous forward took over :data:`CHANNELS_LAST_CHECK_MAX_S`."""
        self._cl_checked = True
        t0 = time.perf_counter()
        ref = self.model(x)
        took = time.perf_counter() - t0
        if took > CHANNELS_LAST_CHECK_MAX_S:
            log.info("%s: channels_last not tried (a forward takes %.1f s); running contiguous", self._name(), took)
            return ref, EAGER
        try:
            self.model.to(memory_format=torch.channels_last)
            got = self.model(x.contiguous(memory_format=torch.channels_last))
            diff = _rel_diff(_depth(got), _depth(ref))
            ok = diff <= CHANNELS_LAST_RTOL
        except Exception as e:  # a model whose forward needs contiguous tensors (views): stay contiguous
            ok, diff = False, one_line(e)
        if ok:
            self.channels_last = True
            return ref, EAGER_CL
        self.model.to(memory_format=torch.contiguous_format)
        # an internal choice the user cannot act on (backend_used says "eager"): logged, not warned. Models
        # whose output amplifies rounding (Marigold's diffusion and min-max normalisation) land here.
        log.info("%s: channels_last differs from the contiguous forward (%s); running contiguous", self._name(), diff)
        return ref, EAGER


def _cat_outputs(outs: list) -> Any:
    """Model outputs of single frames joined into one batch (a tensor, or a dict whose tensors are joined)."""
    if isinstance(outs[0], dict):
        return {k: torch.cat([o[k] for o in outs]) if torch.is_tensor(v) else v for k, v in outs[0].items()}
    return torch.cat(outs)


def _depth(out) -> torch.Tensor:
    return (out["depth"] if isinstance(out, dict) else out).float()


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.abs().max()) if b.numel() else 0.0
    d = float((a - b).abs().max()) if b.numel() else 0.0
    return d / scale if scale > 0 else d


__all__ = ["Network", "BACKENDS", "resolve_backend", "onnx_available", "backend_name", "ENV_VAR",
           "AUTO_MAX_SHAPES"]
