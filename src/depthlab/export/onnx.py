"""ONNX export, checked against PyTorch, and a cached ONNX Runtime execution backend.

``export_onnx(model, path, input_shape)`` exports ``x (B,3,H,W) -> depth (B,1,H,W)`` (the ``"depth"`` entry
of a depthlab model's output) with ``torch.onnx.export``, runs the file in ONNX Runtime on a random
input, and raises :class:`OnnxExportError` if it differs from PyTorch by more than the tolerance
(relative to the largest PyTorch output value). The file appears only once verified (temp file +
rename), so a crash never leaves a half-written model behind.

``OnnxBackend(model, input_shape, cache_dir)`` is a drop-in for the model's forward:
``backend(x) -> {"depth": tensor}``. Exports are cached under ``cache_dir`` (default
``$DEPTHLAB_CACHE/onnx`` or ``~/.cache/depthlab/onnx``) keyed by model name, a hash of the weights, the
input shape and the export settings, so constructing a backend a second time for the same weights and
shape loads the file without exporting again (``backend.from_cache``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from depthlab.io import atomic_path

log = logging.getLogger(__name__)

ONNX_INSTALL_HINT = "pip install 'depthlab[onnx]' (onnx, onnxruntime, onnxscript)"
CACHE_FORMAT = 1  # bump to invalidate every cached export


class OnnxExportError(RuntimeError):
    """The exported graph failed to export or does not reproduce PyTorch within tolerance."""


def default_cache_dir() -> Path:
    root = os.environ.get("DEPTHLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "depthlab") / "onnx"


def _require_ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - only without the [onnx] extra
        raise ImportError(f"ONNX Runtime is not installed: {ONNX_INSTALL_HINT}") from e
    return onnxruntime


class _DepthOutput(nn.Module):
    """``x -> model(x)["depth"]``: a single tensor output for the exporter."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["depth"] if isinstance(out, dict) else out


@dataclass
class ExportReport:
    path: str
    input_shape: list[int]
    opset: int
    dynamic: bool
    exporter: str
    max_abs_diff: float
    rel_diff: float
    tolerance: float
    export_seconds: float
    verified_shapes: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def weights_hash(model: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes), independent of device."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _session(path: str | os.PathLike, threads: int | None = None, providers=None):
    ort = _require_ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    # no busy-waiting between runs: spinning threads would steal the CPU from whatever runs next
    # (PyTorch, data loading, other processes on a shared machine)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


def compare(session, torch_fn, x: torch.Tensor) -> tuple[float, float]:
    """(max |ort - torch|, that divided by max |torch|) on input ``x``."""
    with torch.inference_mode():
        ref = torch_fn(x).float().cpu().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy().astype(np.float32)})[0]
    if got.shape != ref.shape:
        raise OnnxExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} for input {tuple(x.shape)}")
    max_abs = float(np.abs(got - ref).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


def _second_shape(shape: tuple[int, ...], step: int) -> tuple[int, ...]:
    b, c, h, w = shape
    return (b, c, h + step, w + 2 * step)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape, dynamic: bool = False, opset: int = 17,
                tolerance: float = 1e-4, dynamo: bool | None = None, seed: int = 0,
                threads: int | None = None) -> ExportReport:
    """Export ``model`` (``x -> {"depth": ...}``) to ONNX at ``path`` and verify it with ONNX Runtime.

    ``input_shape`` is (B,3,H,W). ``dynamic`` marks batch, height and width as dynamic and verifies a
    second shape too. ``dynamo=None`` tries the TorchScript-based exporter first (fast, native opset 17)
    and falls back to the dynamo exporter; ``True``/``False`` forces one. Raises :class:`OnnxExportError`
    if the export fails or ``max|ort - torch| / max|torch| > tolerance``. The file is written atomically.
    """
    if getattr(model, "onnx_exportable", True) is False:  # declared by the model family (Marigold)
        raise OnnxExportError(f"{getattr(model, 'model_name', type(model).__name__)} cannot be exported to ONNX: "
                              "its forward is a sampling loop, not one graph; run it with PyTorch")
    _require_ort()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (B,3,H,W), got {shape}")
    was_training = model.training
    model.eval()
    wrapper = _DepthOutput(model).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    info = getattr(model, "depth_info", None)
    if info is not None:  # a realistic, normalised input
        x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    t0 = time.perf_counter()
    exporter = ""
    try:
        with atomic_path(path) as tmp:
            errors = []
            for use_dynamo in ([False, True] if dynamo is None else [bool(dynamo)]):
                try:
                    _export(wrapper, x, tmp, opset, dynamic, use_dynamo)
                    exporter = "dynamo" if use_dynamo else "torchscript"
                    break
                except Exception as e:  # try the other exporter, report both if neither works
                    errors.append(f"{'dynamo' if use_dynamo else 'torchscript'}: {type(e).__name__}: {str(e)[:300]}")
            else:
                raise OnnxExportError(f"torch.onnx.export failed for {type(model).__name__}: " + " | ".join(errors))
            seconds = time.perf_counter() - t0
            sess = _session(tmp, threads)
            shapes = [shape]
            if dynamic:
                step = int(getattr(info, "multiple_of", 32) or 32)
                shapes.append(_second_shape(shape, step))
            worst_abs, worst_rel = 0.0, 0.0
            for s in shapes:
                xs = x if s == shape else torch.rand(s, generator=gen)
                max_abs, rel = compare(sess, wrapper, xs)
                worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, rel)
                if not rel <= tolerance:  # also catches NaN
                    raise OnnxExportError(
                        f"ONNX Runtime output differs from PyTorch for input {s}: max abs diff {max_abs:.3e}, "
                        f"relative {rel:.3e} > tolerance {tolerance:.1e} ({exporter} exporter, opset {opset})")
            del sess
    finally:
        model.train(was_training)
    return ExportReport(path=str(path), input_shape=list(shape), opset=opset, dynamic=dynamic, exporter=exporter,
                        max_abs_diff=worst_abs, rel_diff=worst_rel, tolerance=tolerance, export_seconds=seconds,
                        verified_shapes=[list(s) for s in shapes])


def _export(wrapper: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool, use_dynamo: bool) -> None:
    kwargs: dict[str, Any] = dict(input_names=["x"], output_names=["depth"], opset_version=opset)
    if dynamic:
        if use_dynamo:
            from torch.export import Dim

            kwargs["dynamic_shapes"] = {"x": {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}}
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            kwargs["dynamic_axes"] = {"x": axes, "depth": axes}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python ints; verification decides
        if use_dynamo:
            torch.onnx.export(wrapper, (x,), str(path), dynamo=True, verbose=False, **kwargs)
        else:
            torch.onnx.export(wrapper, (x,), str(path), dynamo=False, **kwargs)


def cache_key(model_name: str, weights_sha: str, input_shape, opset: int, dynamic: bool) -> str:
    blob = json.dumps([CACHE_FORMAT, model_name, weights_sha, list(input_shape), opset, dynamic])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class OnnxBackend:
    """Run a depthlab model through ONNX Runtime: ``backend(x) -> {"depth": (B,1,H,W)}``.

    The first construction for given weights and input shape exports and verifies the model
    (:func:`export_onnx`) into ``cache_dir``; later ones reuse the file (``from_cache`` is True).
    Inputs of another shape are exported on first use (cached too) unless ``strict_shape``.
    ``depth_info`` / ``model_name`` are those of the wrapped model, so the backend can stand in for it.
    """

    def __init__(self, model: nn.Module, input_shape, cache_dir: str | os.PathLike | None = None,
                 opset: int = 17, dynamic: bool = False, tolerance: float = 1e-4, threads: int | None = None,
                 providers=None, strict_shape: bool = False, dynamo: bool | None = None):
        self.model = model
        self.model_name = getattr(model, "model_name", None) or type(model).__name__
        self.depth_info = getattr(model, "depth_info", None)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.opset, self.dynamic, self.tolerance = opset, dynamic, tolerance
        self.threads, self.providers, self.strict_shape, self.dynamo = threads, providers, strict_shape, dynamo
        self.weights_sha = weights_hash(model)
        self.input_shape = tuple(int(s) for s in input_shape)
        self._sessions: dict[tuple[int, ...] | None, Any] = {}
        self.reports: dict[tuple[int, ...], dict] = {}
        self.from_cache = self._prepare(self.input_shape)

    # -- files ---------------------------------------------------------------------------------------------
    def path_for(self, shape) -> Path:
        key = cache_key(self.model_name, self.weights_sha, shape, self.opset, self.dynamic)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in self.model_name)
        return self.cache_dir / f"{safe}-{'x'.join(map(str, shape))}-{key}.onnx"

    @property
    def path(self) -> Path:
        return self.path_for(self.input_shape)

    def _prepare(self, shape: tuple[int, ...]) -> bool:
        """Export (or find in the cache) the model for ``shape`` and open a session. True if cached."""
        path = self.path_for(shape)
        meta = path.with_suffix(".json")
        cached = path.exists() and meta.exists()
        if cached:
            report = json.loads(meta.read_text())
        else:
            report = export_onnx(self.model, path, shape, dynamic=self.dynamic, opset=self.opset,
                                 tolerance=self.tolerance, dynamo=self.dynamo, threads=self.threads).to_dict()
            report.update(model_name=self.model_name, weights_sha256=self.weights_sha,
                          torch_version=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
            from depthlab.io import write_json

            write_json(meta, report)
            log.info("exported %s for %s to %s (max abs diff %.2e)", self.model_name, shape, path,
                     report["max_abs_diff"])
        self.reports[shape] = report
        self._sessions[None if self.dynamic else shape] = _session(path, self.threads, self.providers)
        return cached

    @property
    def max_abs_diff(self) -> float:
        return float(self.reports[self.input_shape]["max_abs_diff"])

    # -- running -------------------------------------------------------------------------------------------
    def _session_for(self, shape: tuple[int, ...]):
        if self.dynamic:
            return self._sessions[None]
        if shape not in self._sessions:
            if self.strict_shape:
                raise ValueError(f"ONNX model exported for input {self.input_shape}, got {shape}; "
                                 "build an OnnxBackend for that shape (exports are cached)")
            self._prepare(shape)
        return self._sessions[shape]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shape = tuple(x.shape)
        sess = self._session_for(shape)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = sess.run(None, {sess.get_inputs()[0].name: arr})[0]
        return {"depth": torch.from_numpy(out).to(x.device)}

    forward = __call__

    def eval(self) -> "OnnxBackend":  # drop-in for code that calls model.eval() / model.to(device)
        return self

    def to(self, *args, **kwargs) -> "OnnxBackend":
        return self


__all__ = ["export_onnx", "OnnxBackend", "OnnxExportError", "ExportReport", "weights_hash", "default_cache_dir",
           "cache_key", "compare"]
