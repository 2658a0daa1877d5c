"""ONNX export, checked against PyTorch, and a cached ONNX Runtime execution backend.

``export_onnx(model, path, input_shape)`` exports ``x (B,3,H,W) -> depth (B,1,H,W)`` (the ``"depth"`` entry
of a depthlab model's output) with ``torch.onnx.export``, runs the file in ONNX Runtime on a random
input, and raises :class:`OnnxExportError` if it differs from PyTorch by more than the tolerance
(relative to the largest PyTorch output value). The file appears only once verified (temp file +
rename), so a crash never leaves a half-written model behind.

``OnnxBackend(model, input_shape, cache_dir)`` is a drop-in for the model's forward:
``backend(x) -> {"depth": tensor}``. Exports are cached under ``cache_dir`` (default
``$DEPTHLAB_CACHE/onnx`` or ``~/.cache/depthlab/onnx``) keyed by model name, a hash of the weights, the
input shape, the export settings and the torch / ONNX Runtime versions, so constructing a backend a second time for the same weights and
shape loads the file without exporting again (``backend.from_cache``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from depthlab.errors import DepthlabError, InputError, require
from depthlab.io import atomic_path
from depthlab.processing import normalize, resize_to

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump to invalidate every cached export
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
FP32_TOLERANCE = 1e-4
# The check per precision: (statistic, tolerance). "max" = max|ort - torch| / max|torch| (the worst pixel), "mean" =
# mean|ort - torch| / mean|torch|. fp32: the exporter's float error, max 1e-4. fp16: a 10-bit mantissa (2^-11 =
# 4.9e-4 per rounding) accumulated over a network, max 1e-2. int8: steps of 1/255 of each tensor's range; single
# pixels move by a third of the range on out-of-domain frames (FastDepth on KITTI: up to 0.37, mean up to
# 0.11), so int8 is gated on the mean, 0.15 -- a check that the graph still computes the same function, not an
# accuracy claim: accuracy per precision is measured by benchmarks/onnx_precision.py (docs/export.md).
CHECKS = {"fp32": "max", "fp16": "max", "int8-dynamic": "mean", "int8-static": "mean"}
TOLERANCES = {"fp32": FP32_TOLERANCE, "fp16": 1e-2, "int8-dynamic": 1.5e-1, "int8-static": 1.5e-1}


class OnnxExportError(DepthlabError, RuntimeError):
    """The exported graph failed to export or does not reproduce PyTorch within tolerance."""


def default_cache_dir() -> Path:
    root = os.environ.get("DEPTHLAB_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "depthlab") / "onnx"


CACHE_LIMIT_ENV = "DEPTHLAB_ONNX_CACHE_MB"
DEFAULT_CACHE_LIMIT_MB = 4096


def cache_limit_bytes() -> int:
    """The ONNX cache's size cap: ``$DEPTHLAB_ONNX_CACHE_MB`` megabytes (default 4096; 0 = no cap)."""
    raw = os.environ.get(CACHE_LIMIT_ENV, str(DEFAULT_CACHE_LIMIT_MB))
    try:
        mb = float(raw)
    except ValueError:
        raise InputError(f"${CACHE_LIMIT_ENV} must be a number of megabytes, got {raw!r}") from None
    return int(mb * 1024 * 1024)


def evict_cache(cache_dir: str | os.PathLike, keep=(), limit: int | None = None) -> list[Path]:
    """Delete the least recently used exports (``.onnx`` + its ``.json``) from ``cache_dir`` until it holds at
    most ``limit`` bytes (default :func:`cache_limit_bytes`; 0 = no cap); never the paths in ``keep``. Returns
    the deleted ``.onnx`` paths. Every export is keyed by its weights, so without a cap a machine that trains,
    fine-tunes or runs random-weight models fills its disk (100 MB per shape for a U-Net/ResNet34)."""
    limit = cache_limit_bytes() if limit is None else int(limit)
    root = Path(cache_dir)
    if limit <= 0 or not root.is_dir():
        return []
    keep = {Path(k).resolve() for k in keep}
    entries = []
    for f in root.glob("*.onnx"):
        try:
            st = f.stat()
        except FileNotFoundError:  # another process evicted it meanwhile
            continue
        meta = f.with_suffix(".json")
        entries.append((st.st_mtime, f, st.st_size + (meta.stat().st_size if meta.exists() else 0)))
    total, removed = sum(e[2] for e in entries), []
    for _, f, size in sorted(entries, key=lambda e: e[0]):  # oldest use first
        if total <= limit:
            break
        if f.resolve() in keep:
            continue
        for g in (f, f.with_suffix(".json")):
            g.unlink(missing_ok=True)
        total -= size
        removed.append(f)
    if removed:
        log.info("ONNX cache %s over %d MB: removed %d least recently used export(s)", root, limit >> 20, len(removed))
    return removed


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
    precision: str = "fp32"
    calibration_frames: list[str] = field(default_factory=list)  # images the non-fp32 check (and int8-static) used
    mean_rel_diff: float = 0.0  # mean|ort - torch| / mean|torch|
    check: str = "max"  # the statistic ``tolerance`` applies to: "max" (rel_diff) or "mean" (mean_rel_diff)

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


def ort_session(path: str | os.PathLike, threads: int | None = None, providers=None):
    """An ONNX Runtime ``InferenceSession`` for ``path`` (``threads`` intra-op threads, no spinning)."""
    ort = require("onnxruntime", "onnx", "checking an ONNX export")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.log_severity_level = 3
    # no busy-waiting between runs: spinning threads would steal the CPU from whatever runs next
    # (PyTorch, data loading, other processes on a shared machine)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


def compare(session, torch_fn, x: torch.Tensor) -> tuple[float, float, float]:
    """(max |ort - torch|, that divided by max |torch|, mean |ort - torch| / mean |torch|) on input ``x``."""
    with torch.inference_mode():
        ref = torch_fn(x).float().cpu().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy().astype(np.float32)})[0]
    if got.shape != ref.shape:
        raise OnnxExportError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} for input {tuple(x.shape)}")
    max_abs = float(np.abs(got - ref).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    mean_abs, mean_ref = (float(np.abs(got - ref).mean()), float(np.abs(ref).mean())) if ref.size else (0.0, 0.0)
    return max_abs, (max_abs / scale if scale > 0 else max_abs), (mean_abs / mean_ref if mean_ref > 0 else mean_abs)


def _second_shape(shape: tuple[int, ...], step: int) -> tuple[int, ...]:
    b, c, h, w = shape
    return (b, c, h + step, w + 2 * step)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape, dynamic: bool = False, opset: int = 17,
                tolerance: float | None = None, dynamo: bool | None = None, seed: int = 0,
                threads: int | None = None, precision: str = "fp32", calibration=None) -> ExportReport:
    """Export ``model`` (``x -> {"depth": ...}``) to ONNX at ``path`` and verify it with ONNX Runtime.

    ``input_shape`` is (B,3,H,W). ``dynamic`` marks batch, height and width as dynamic and verifies a
    second shape too. ``dynamo=None`` tries the TorchScript-based exporter first (fast, native opset 17)
    and falls back to the dynamo exporter; ``True``/``False`` forces one. Raises :class:`OnnxExportError`
    if the export fails or ``max|ort - torch| / max|torch| > tolerance``. The file is written atomically.

    ``precision`` (see :data:`PRECISIONS`): ``fp32``; ``fp16`` (weights and activations, float32 input and
    output kept); ``int8-dynamic`` (ONNX Runtime dynamic quantisation: int8 weights, activations quantised
    at run time); ``int8-static`` (int8 weights and activations, QDQ format, activation ranges calibrated on
    ``calibration``: image files or a folder, default the bundled NYU frames). Every precision is first
    exported and verified in fp32 (``FP32_TOLERANCE``), then converted and verified against PyTorch on the
    calibration frames at the precision's ``tolerance`` (default :data:`TOLERANCES`) on the statistic of
    :data:`CHECKS` (worst pixel for fp32/fp16, mean for int8).
    """
    if getattr(model, "onnx_exportable", True) is False:  # declared by the model family (Marigold)
        raise OnnxExportError(f"{getattr(model, 'model_name', type(model).__name__)} cannot be exported to ONNX: "
                              "its forward is a sampling loop, not one graph; run it with PyTorch")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    tolerance = TOLERANCES[precision] if tolerance is None else float(tolerance)
    require("onnxruntime", "onnx", "checking an ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise InputError(f"input_shape must be (B,3,H,W), got {shape}")
    was_training = model.training
    model.eval()
    wrapper = _DepthOutput(model).eval()
    gen = torch.Generator().manual_seed(seed)
    info = getattr(model, "depth_info", None)
    x = _normalise(torch.rand(shape, generator=gen), info)  # a realistic, normalised input
    shapes = [shape, _second_shape(shape, int(getattr(info, "multiple_of", 32) or 32))] if dynamic else [shape]
    t0 = time.perf_counter()
    try:
        with atomic_path(path) as tmp:
            fp32 = tmp if precision == "fp32" else tmp.with_name(tmp.name + ".fp32.onnx")
            try:
                exporter = _export_either(wrapper, x, fp32, opset, dynamic, dynamo)
                seconds = time.perf_counter() - t0
                fp32_tol = tolerance if precision == "fp32" else FP32_TOLERANCE
                inputs = [x if s == shape else torch.rand(s, generator=gen) for s in shapes]
                worst_abs, worst_rel, mean_rel = _verify(fp32, wrapper, inputs, fp32_tol,
                                                         f"{exporter} exporter, opset {opset}", threads)
                frames: list[str] = []
                if precision != "fp32":
                    frames, (worst_abs, worst_rel, mean_rel) = _convert_and_verify(
                        fp32, tmp, precision, wrapper, shapes, tolerance, calibration, threads)
            finally:
                if fp32 != tmp:
                    fp32.unlink(missing_ok=True)
    finally:
        model.train(was_training)
    return ExportReport(path=str(path), input_shape=list(shape), opset=opset, dynamic=dynamic, exporter=exporter,
                        max_abs_diff=worst_abs, rel_diff=worst_rel, tolerance=tolerance, export_seconds=seconds,
                        verified_shapes=[list(s) for s in shapes], precision=precision, calibration_frames=frames,
                        mean_rel_diff=mean_rel, check=CHECKS[precision])


def _convert_and_verify(fp32: Path, dst: Path, precision: str, wrapper: nn.Module, shapes: list[tuple[int, ...]],
                        tolerance: float, calibration, threads: int | None) -> tuple[list[str], tuple[float, ...]]:
    """Convert the verified fp32 file to ``precision`` at ``dst`` and check it on the calibration frames (each
    input shape); returns the frame names and the worst differences."""
    info = getattr(wrapper.model, "depth_info", None)
    frames, batches = calibration_inputs(info, shapes[0], calibration)
    convert_precision(fp32, dst, precision, batches)
    inputs = [b if tuple(b.shape) == s else _resize_batch(b, s) for s in shapes for b in batches]
    diffs = _verify(dst, wrapper, inputs, tolerance, f"{precision}, verified on {len(frames)} calibration frames",
                    threads, CHECKS[precision])
    return frames, diffs


def _normalise(x: torch.Tensor, info) -> torch.Tensor:
    return x if info is None else normalize(x, info.mean, info.std)


def _export_either(wrapper: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool,
                   dynamo: bool | None) -> str:
    """Export with the TorchScript exporter, else the dynamo one (or the one forced); returns which worked."""
    errors = []
    for use_dynamo in ([False, True] if dynamo is None else [bool(dynamo)]):
        try:
            _export(wrapper, x, path, opset, dynamic, use_dynamo)
            return "dynamo" if use_dynamo else "torchscript"
        except Exception as e:  # try the other exporter, report both if neither works
            errors.append(f"{'dynamo' if use_dynamo else 'torchscript'}: {type(e).__name__}: {str(e)[:300]}")
    raise OnnxExportError(f"torch.onnx.export failed for {type(wrapper.model).__name__}: " + " | ".join(errors))


def _verify(path: Path, wrapper: nn.Module, inputs: list[torch.Tensor], tolerance: float, what: str,
            threads: int | None, check: str = "max") -> tuple[float, float, float]:
    """Worst (max abs, max-relative, mean-relative) difference ONNX Runtime vs PyTorch over ``inputs``; raises
    when the ``check`` statistic ("max" or "mean" relative, see :data:`CHECKS`) exceeds ``tolerance``."""
    sess = ort_session(path, threads)
    worst = [0.0, 0.0, 0.0]
    for xs in inputs:
        diffs = compare(sess, wrapper, xs)
        worst = [max(w, d) for w, d in zip(worst, diffs)]
        gated = diffs[1] if check == "max" else diffs[2]
        if not gated <= tolerance:  # also catches NaN
            raise OnnxExportError(
                f"ONNX Runtime output differs from PyTorch for input {tuple(xs.shape)}: max abs diff {diffs[0]:.3e}, "
                f"relative {diffs[1]:.3e} (mean relative {diffs[2]:.3e}), {check} > tolerance {tolerance:.1e} ({what})")
    del sess
    return worst[0], worst[1], worst[2]


# --------------------------------------------------------------------------------------------------------------
# Precisions: fp16 conversion, int8 quantisation (ONNX Runtime), calibration on real frames
# --------------------------------------------------------------------------------------------------------------

def default_calibration_dir() -> Path:
    """The bundled NYU-Depth V2 RGB frames (src/depthlab/assets/samples/nyu/rgb)."""
    from depthlab.models.weights import ASSETS_DIR

    return ASSETS_DIR / "samples" / "nyu" / "rgb"


def _resize_batch(x: torch.Tensor, shape) -> torch.Tensor:
    x = resize_to(x, shape)
    return x[:1].expand(int(shape[0]), -1, -1, -1).contiguous()


def calibration_inputs(info, shape, images=None) -> tuple[list[str], list[torch.Tensor]]:
    """Image files (or a folder of them; default :func:`default_calibration_dir`) -> ``(names, batches)``:
    each image resized to ``shape``'s H x W as :class:`~depthlab.predictor.Predictor` does (bilinear,
    antialiased), normalised with ``info.mean/std``, repeated to ``shape``'s batch size."""
    from depthlab.errors import DataError
    from depthlab.io import read_rgb

    source = default_calibration_dir() if images is None else images
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(folder, "calibration images must be a folder or a list of image files")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    else:
        files = [Path(p) for p in source]
    if not files:
        raise DataError(source, "no calibration images (.png/.jpg) found")
    b, _, h, w = shape
    batches = []
    for f in files:
        img = resize_to(read_rgb(f)[None], (h, w), antialias=True)
        batches.append(_normalise(img, info).expand(b, -1, -1, -1).contiguous())
    return [f.name for f in files], batches


def _calibration_reader(input_name: str, batches: list[torch.Tensor]):
    from onnxruntime.quantization import CalibrationDataReader

    class Frames(CalibrationDataReader):
        """Feeds the calibration frames to ONNX Runtime's static quantiser, one batch per call."""

        def __init__(self):
            self._feeds = iter([{input_name: b.numpy().astype(np.float32)} for b in batches])

        def get_next(self):
            return next(self._feeds, None)

    return Frames()


def convert_precision(src: str | os.PathLike, dst: str | os.PathLike, precision: str,
                      calibration: list[torch.Tensor] | None = None) -> None:
    """Write ``src`` (an fp32 ONNX file) to ``dst`` in ``precision`` (``fp16``/``int8-dynamic``/``int8-static``).

    fp16: ``onnxruntime.transformers.float16.convert_float_to_float16`` (float32 input and output kept, so
    callers feed the same arrays). int8: ``onnxruntime.quantization`` -- ``quantize_dynamic`` (int8 weights;
    activations quantised per run) or ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations,
    MinMax ranges over ``calibration``, a list of normalised ``(B,3,H,W)`` batches).
    """
    import onnx

    src, dst = Path(src), Path(dst)
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
        return
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if precision == "int8-dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    elif precision == "int8-static":
        if not calibration:
            raise InputError("int8-static needs calibration batches")
        name = onnx.load(str(src), load_external_data=False).graph.input[0].name
        quantize_static(str(src), str(dst), _calibration_reader(name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    else:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS[1:])} here, got {precision!r}")


EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")
# one export at a time in a process: quiet_exporter swaps the process's file descriptors 1 and 2, which two
# threads must not do at once (and torch.onnx.export keeps global state of its own); re-entrant for nesting
_EXPORT_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_exporter():
    """Keep the exporters' own output off the terminal while they run; the outcome is reported by depthlab.

    The TorchScript exporter prints the model's whole IR graph when it fails (torch 2.14's
    ``setup_onnx_logging`` turns its C++ log on unconditionally), and the dynamo exporter logs warnings and
    tracebacks from onnxscript's opset conversion even when the export succeeds: pages of text before
    ``depthlab predict`` starts, on the default (ONNX Runtime) backend for Depth Pro or ZoeDepth. Neither has a
    switch, and the C++ log writes to the process's stderr, so file descriptors 1 and 2 go to a temporary file
    (kept at DEBUG level in depthlab's log) and the exporters' Python loggers are raised to ERROR meanwhile.
    Other threads' output to those descriptors is hidden too while an export runs; exports themselves take
    turns (:data:`_EXPORT_LOCK`)."""
    with _EXPORT_LOCK:
        yield from _quiet_exporter()


def _quiet_exporter():
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, open(sink.fileno(), "w", closefd=False) as text:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):  # sys.std* replaced
                yield
        finally:
            for stream in (sys.stdout, sys.stderr, text):
                stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            if log.isEnabledFor(logging.DEBUG):
                sink.seek(0)
                log.debug("exporter output:\n%s", sink.read().decode(errors="replace")[-20000:])


def _export(wrapper: nn.Module, x: torch.Tensor, path: Path, opset: int, dynamic: bool, use_dynamo: bool) -> None:
    kwargs: dict[str, Any] = dict(input_names=["x"], output_names=["depth"], opset_version=opset)
    if dynamic:
        if use_dynamo:
            from torch.export import Dim

            kwargs["dynamic_shapes"] = {"x": {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}}
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            kwargs["dynamic_axes"] = {"x": axes, "depth": axes}
    with warnings.catch_warnings(), torch.no_grad(), quiet_exporter():
        warnings.simplefilter("ignore")  # tracer warnings about python ints; verification decides
        if use_dynamo:
            torch.onnx.export(wrapper, (x,), str(path), dynamo=True, verbose=False, **kwargs)
        else:
            torch.onnx.export(wrapper, (x,), str(path), dynamo=False, **kwargs)


def cache_key(model_name: str, weights_sha: str, input_shape, opset: int, dynamic: bool) -> str:
    """The cache file's key: model name, weights hash, input shape, export settings and the torch / ONNX Runtime
    versions (a new exporter or runtime re-exports and re-verifies instead of trusting an old file)."""
    blob = json.dumps([CACHE_FORMAT, model_name, weights_sha, list(input_shape), opset, dynamic, torch.__version__,
                       require("onnxruntime", "onnx", "the ONNX Runtime backend").__version__])
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
        self._sessions[None if self.dynamic else shape] = ort_session(path, self.threads, self.providers)
        if cached:
            with contextlib.suppress(OSError):  # used now: the last to be evicted (read-only caches stay as they are)
                os.utime(path)
        else:
            evict_cache(self.cache_dir, keep=list(map(self.path_for, self.reports)))
        return cached

    @property
    def max_abs_diff(self) -> float:
        return float(self.reports[self.input_shape]["max_abs_diff"])

    # -- running -------------------------------------------------------------------------------------------
    def session_for(self, shape: tuple[int, ...]):
        if self.dynamic:
            return self._sessions[None]
        if shape not in self._sessions:
            if self.strict_shape:
                raise InputError(f"ONNX model exported for input {self.input_shape}, got {shape}; "
                                 "build an OnnxBackend for that shape (exports are cached)")
            self._prepare(shape)
        return self._sessions[shape]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shape = tuple(x.shape)
        sess = self.session_for(shape)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = sess.run(None, {sess.get_inputs()[0].name: arr})[0]
        return {"depth": torch.from_numpy(out).to(x.device)}

    forward = __call__

    def eval(self) -> "OnnxBackend":  # drop-in for code that calls model.eval() / model.to(device)
        return self

    def to(self, *args, **kwargs) -> "OnnxBackend":
        return self


__all__ = ["export_onnx", "OnnxBackend", "OnnxExportError", "ExportReport", "weights_hash", "default_cache_dir",
           "cache_key", "compare", "ort_session", "quiet_exporter", "evict_cache", "cache_limit_bytes", "PRECISIONS",
           "TOLERANCES", "CHECKS", "convert_precision", "calibration_inputs", "default_calibration_dir"]
