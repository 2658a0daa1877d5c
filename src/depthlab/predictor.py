"""Run a depth model on images in any common form and write predictions to disk.

:class:`Predictor` reads everything it needs from the model's ``depth_info``
(:class:`~depthlab.models.registry.WeightsInfo`): ``multiple_of``, ``mean``/``std``, ``target_encoding``,
``max_depth`` and ``output_kind``. Steps for each image:

1. to float32 ``(3,H,W)`` in [0,1] (paths go through :mod:`depthlab.io`: EXIF orientation honoured,
   grayscale replicated, alpha dropped, 16-bit scaled by 1/65535);
2. geometry: by default keep the resolution and pad (``pad_mode``, replicate by default) up to a
   multiple of ``multiple_of``; or, with ``input_size``, resize (bilinear, antialiased) to a short side
   or an explicit ``(H, W)`` rounded to ``multiple_of``;
3. normalise ``(x - mean) / std``; run under ``torch.inference_mode()`` (batched, optional channels_last,
   optional bfloat16 autocast);
4. decode the raw output with :func:`depthlab.types.decode_target` into the declared unit (metres for
   ``metric``), then crop the padding away / resize bilinearly back to the input size.

Models that bring their own image processing (the foundation adapters: ``preprocess(images)`` and
``postprocess(depth, size)``, see :mod:`depthlab.models.foundation`) replace steps 2-4 by theirs, so the
Predictor's output equals ``transformers.pipeline("depth-estimation")`` / diffusers' Marigold pipeline on
the same weights: 8-bit inputs (paths, PIL images, uint8 arrays/tensors) stay uint8 until the adapter's
resize, exactly as transformers' image processors treat them.

``backend="onnx"`` runs the network (not the pre/post-processing) in ONNX Runtime through
:class:`depthlab.export.onnx.OnnxBackend`: exported once per network input shape, verified against
PyTorch, cached on disk keyed by model name, weights hash and shape.

:func:`predict_files` is the ``depthlab predict`` command: files, folders or globs in; ``.npy``,
16-bit PNG, colourised PNG and side-by-side outputs plus a ``predictions.json`` sidecar out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from depthlab.errors import DataError, one_line
from depthlab.models.registry import resolve_model
from depthlab.types import decode_target

FORMATS = ("npy", "png16", "color", "side", "tiff", "ply")  # tiff: depthlab.geo; ply: depthlab.pointcloud
UNITS = {
    "metric": "m",
    "relative": "affine-invariant depth (unknown scale and shift)",
    "disparity": "affine-invariant inverse depth (unknown scale and shift; larger = nearer)",
}
BACKENDS = ("torch", "onnx")
PNG16_METRIC_SCALE = 0.001  # metres per unit: millimetres, 0 = invalid, max 65.535 m


@dataclass
class Prediction:
    """One prediction: ``depth`` float32 ``(H,W)`` at the input image's size, in ``unit``."""

    depth: np.ndarray
    kind: str  # metric | relative | disparity
    unit: str
    model: str | None = None
    source: str | None = None  # file path when the input was one

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.depth.shape)


@dataclass
class PredictReport:
    n_ok: int
    failures: dict[str, str] = field(default_factory=dict)  # input path -> one-line reason
    out_dir: Path | None = None
    outputs: dict[str, list[str]] = field(default_factory=dict)  # input path -> written files


# --------------------------------------------------------------------------------------------------
# Input conversion


def image_to_tensor(image: Any) -> torch.Tensor:
    """Any single image -> float32 ``(3,H,W)`` in [0,1].

    Accepts a path (``str``/``PathLike``), a PIL image (EXIF orientation applied), a numpy array
    ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` (uint8 / uint16 / float in [0,1]; alpha dropped) or a torch
    tensor ``(3,H,W)`` / ``(1,H,W)`` / ``(H,W)`` (float in [0,1] or uint8).
    """
    from PIL import Image, ImageOps

    from depthlab import io

    if isinstance(image, (str, os.PathLike)):
        return io.read_rgb(image)
    if isinstance(image, Image.Image):
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block must not make a readable image unreadable
            pass
        return io.to_float_chw(io.pil_to_rgb_array(image))
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise ValueError(f"numpy images must be HxW, HxWx1, HxWx3 or HxWx4 (channels last), got {image.shape}")
        if a.shape[2] == 4:
            a = a[..., :3]
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        if a.dtype == np.bool_ or not (a.dtype in (np.uint8, np.uint16) or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"numpy images must be uint8, uint16 or float in [0,1], got {a.dtype}")
        if np.issubdtype(a.dtype, np.floating):
            _check_unit_range(float(np.nanmin(a)), float(np.nanmax(a)))
        return io.to_float_chw(a)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"tensor images must be (3,H,W), (1,H,W) or (H,W), got {tuple(image.shape)}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            t = t.float()
            _check_unit_range(float(t.min()), float(t.max()))
        else:
            raise ValueError(f"tensor images must be float in [0,1] or uint8, got {t.dtype}")
        return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t
    raise TypeError(f"cannot read an image from {type(image).__name__}; "
                    "pass a path, PIL image, numpy array or torch tensor")


def image_to_model_tensor(image: Any) -> torch.Tensor:
    """Like :func:`image_to_tensor`, but 8-bit RGB sources (files, PIL images, uint8 arrays or tensors)
    stay uint8 ``(3,H,W)``: transformers' image processors resize 8-bit images as 8-bit data, and
    parity with them needs the same. Anything else -> float32 in [0,1]."""
    from depthlab import io

    pil = None
    if isinstance(image, (str, os.PathLike)):
        pil = io.open_pil(image)
    else:
        from PIL import Image, ImageOps

        if isinstance(image, Image.Image):
            try:
                pil = ImageOps.exif_transpose(image)
            except Exception:  # a broken EXIF block must not make a readable image unreadable
                pil = image
    if pil is not None:
        a = io.pil_to_rgb_array(pil)
        if a.dtype == np.uint8:
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
        return io.to_float_chw(a)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        a = image[..., None] if image.ndim == 2 else image
        if a.ndim == 3 and a.shape[2] in (1, 3, 4):
            a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim in (2, 3):
        t = image.detach()[None] if image.ndim == 2 else image.detach()
        if t.shape[0] in (1, 3):
            return t.expand(3, -1, -1).contiguous()
    return image_to_tensor(image)


def _check_unit_range(lo: float, hi: float, tol: float = 1e-3) -> None:
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"float images must be in [0,1], got values in [{lo:.4g}, {hi:.4g}] "
                         "(divide 8-bit data by 255)")


def _round_to(v: float, m: int) -> int:
    return max(m, int(round(v / m)) * m)


def parse_input_size(value: Any, key: str = "input_size") -> str | int | tuple[int, int] | None:
    """The one reader of an "input size", from the CLI (text), a YAML spec or Python.

    ``"auto"`` and ``"model"`` stay as they are; ``"native"`` or ``None`` -> ``None`` (the image's own
    size); an int or ``"N"`` -> ``N`` (short side); ``(H, W)``, ``[H, W]`` or ``"HxW"`` -> ``(H, W)``.
    Sizes must be positive. A bad value is a one-line ``ConfigError`` (a ``ValueError``) naming ``key``.
    """
    from depthlab.config import ConfigError

    if value is None or value in ("auto", "model", "native"):
        return None if value == "native" else value
    size, bad = value, ConfigError(f"{key} must be auto, native, model, N or HxW, got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            size = tuple(int(p) for p in text.split("x")) if "x" in text else int(text)
        except ValueError:
            raise bad from None
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size):
        size = (int(size[0]), int(size[1]))
    elif not _is_int(size):
        raise bad
    if min(size if isinstance(size, tuple) else (size,)) <= 0:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    return size if isinstance(size, tuple) else int(size)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------------
# Predictor


class Predictor:
    """Image(s) in any common form -> depth in the model's declared unit, at the input resolution.

    ``model``: an ``nn.Module`` with ``depth_info`` (built by :func:`depthlab.create_model`), a registered
    model name, or the path of a depthlab checkpoint. ``input_size``: ``"auto"`` (default) = the size the
    weights were trained at when they declare one (FastDepth: 224x224), else the image's own size;
    ``None`` = keep resolution and pad to
    ``multiple_of``; an int = resize so the short side is that many pixels; ``(H, W)`` = resize to that
    (rounded to ``multiple_of``); ``"model"`` = the size the weights were trained at
    (``depth_info.input_size``). Models with their own ``preprocess``/``postprocess`` (foundation adapters)
    size images themselves: ``input_size`` must then be None (or ``"model"``).

    ``backend``: ``"torch"`` (default) or ``"onnx"`` -- the network runs in ONNX Runtime
    (:class:`depthlab.export.onnx.OnnxBackend`, exported per network input shape, verified against PyTorch,
    cached in ``onnx_cache_dir``, default ``~/.cache/depthlab/onnx``); ``onnx_input_shape=(B,3,h,w)``
    exports (or loads from the cache) at construction instead of on first use.
    """

    def __init__(self, model: nn.Module | str, device: str | torch.device = "cpu", checkpoint_path=None,
                 pretrained: bool = True, input_size: int | tuple[int, int] | str | None = "auto",
                 batch_size: int = 1, channels_last: bool = False, autocast_bf16: bool = False,
                 pad_mode: str = "replicate", backend: str = "torch", onnx_cache_dir=None,
                 onnx_input_shape: tuple[int, int, int, int] | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.device = torch.device(device)
        self.model = resolve_model(model, checkpoint_path, pretrained=pretrained).eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        info = getattr(self.model, "depth_info", None)
        if info is None:
            raise ValueError("the model has no depth_info: build it with depthlab.create_model(...) "
                             "or set model.depth_info = WeightsInfo(...)")
        self.info = info
        self.kind = info.output_kind
        self.unit = UNITS[self.kind]
        self.model_name = getattr(self.model, "model_name", None) or type(self.model).__name__
        # the model's own image processing (foundation adapters): it decides the network input size
        self.own_processing = callable(getattr(self.model, "preprocess", None)) and \
            callable(getattr(self.model, "postprocess", None))
        input_size = parse_input_size(input_size)
        if input_size == "auto":
            input_size = "model" if info.input_size is not None else None
        if self.own_processing:
            if input_size not in (None, "model"):
                raise ValueError(
                    f"{self.model_name} resizes images itself (like its transformers/diffusers processor), so "
                    f"input_size must be None; build it with create_model({self.model_name!r}, input_size=...) "
                    "to change the processing size")
            input_size = None
        if input_size == "model":
            if info.input_size is None:
                raise ValueError(f"{self.model_name} declares no input_size; pass an int or (H, W)")
            input_size = tuple(info.input_size)
        self.input_size = input_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.channels_last = channels_last
        self.autocast_bf16 = autocast_bf16
        if pad_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"pad_mode must be replicate, reflect or constant, got {pad_mode!r}")
        self.pad_mode = pad_mode
        self._mean = torch.tensor(info.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.backend = backend
        self.onnx_cache_dir = onnx_cache_dir
        self._onnx = None
        if backend == "onnx":
            if self.device.type != "cpu":
                raise ValueError(f"backend='onnx' runs on the CPU (ONNX Runtime CPU provider), got device={device}")
            if onnx_input_shape is not None:  # export (or load from the cache) and verify now
                self._onnx_runner(tuple(int(v) for v in onnx_input_shape))
        elif onnx_input_shape is not None:
            raise ValueError("onnx_input_shape needs backend='onnx'")

    def _onnx_runner(self, shape: tuple[int, ...]):
        """The ONNX Runtime backend, built on first use for ``shape`` (later shapes export lazily, cached)."""
        if self._onnx is None:
            from depthlab.export.onnx import OnnxBackend

            self._onnx = OnnxBackend(self.model, shape, cache_dir=self.onnx_cache_dir)
        return self._onnx

    def _network(self, x: torch.Tensor):
        """Run the network (PyTorch or ONNX Runtime) on a normalised batch -> raw ``(B,1,h,w)`` float."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.backend == "onnx":
            out = self._onnx_runner(tuple(x.shape))(x)
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                out = self.model(x)
        raw = out["depth"] if isinstance(out, dict) else out
        if raw.ndim == 3:
            raw = raw[:, None]
        return raw.float()

    def _run_own_processing(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's preprocess -> network -> postprocess, as its transformers/diffusers pipeline does."""
        h, w = x.shape[-2:]
        raw = self._network(self.model.preprocess(x))
        raw = self.model.postprocess(raw, (h, w))
        if tuple(raw.shape[-2:]) != (h, w):  # an adapter whose postprocess leaves the size to the caller
            raw = F.interpolate(raw, size=(h, w), mode="bilinear", align_corners=False)
        return decode_target(raw, self.info.target_encoding, self.info.max_depth).contiguous()

    # ---- geometry --------------------------------------------------------------------------------
    def network_size(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) the network sees for an ``h x w`` input."""
        if self.own_processing:
            return tuple(self.model.input_size_for(h, w)) if hasattr(self.model, "input_size_for") else (h, w)
        m = int(self.info.multiple_of or 1)
        if self.input_size is None:
            return -(-h // m) * m, -(-w // m) * m
        if isinstance(self.input_size, int):
            s = self.input_size / min(h, w)
            return _round_to(h * s, m), _round_to(w * s, m)
        th, tw = self.input_size
        return _round_to(th, m), _round_to(tw, m)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] (or uint8 for models with their own processing) on device -> (B,1,H,W) decoded."""
        if self.own_processing:
            return self._run_own_processing(x)
        x = x.float()
        h, w = x.shape[-2:]
        nh, nw = self.network_size(h, w)
        pad = None
        if self.input_size is None:
            ph, pw = nh - h, nw - w
            if ph or pw:
                pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
                mode = self.pad_mode
                if mode == "reflect" and (ph >= h or pw >= w):
                    mode = "replicate"  # reflect needs pad < size
                x = F.pad(x, pad, mode=mode)
        elif (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self._mean) / self._std
        raw = self._network(x)
        if raw.shape[-2:] != (nh, nw):  # a model predicting at a lower resolution
            raw = F.interpolate(raw, size=(nh, nw), mode="bilinear", align_corners=False)
        depth = decode_target(raw, self.info.target_encoding, self.info.max_depth)
        if pad is not None:
            depth = depth[..., pad[2]: pad[2] + h, pad[0]: pad[0] + w]
        elif (nh, nw) != (h, w):
            depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
        return depth.contiguous()

    def predict_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` float in [0,1] (or uint8) -> ``(B,1,H,W)`` float32 in the declared unit, on the input's device.

        uint8 batches reach a model with its own processing as uint8 (resized as 8-bit data, like
        transformers' processors); other models get them as float / 255.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict_tensor expects (B,3,H,W), got {tuple(images.shape)}")
        keep_uint8 = self.own_processing and images.dtype == torch.uint8
        outs = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                chunk = images[i: i + self.batch_size].to(self.device)
                if not keep_uint8:
                    chunk = chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()
                outs.append(self._run(chunk))
        return torch.cat(outs).to(images.device)

    def __call__(self, image):
        """One image -> :class:`Prediction`; a list/tuple (or a ``(B,3,H,W)`` tensor) -> list of them."""
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            return self([im for im in image])
        if isinstance(image, (list, tuple)):
            return self._predict_many(image)
        return self._predict_many([image])[0]

    def _predict_many(self, images: Sequence) -> list[Prediction]:
        convert = image_to_model_tensor if self.own_processing else image_to_tensor
        tensors = [convert(im) for im in images]
        sources = [str(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        depths = self.predict_batches(tensors)
        return [self._wrap(d, s) for d, s in zip(depths, sources)]

    def predict_batches(self, tensors: Iterable[torch.Tensor]) -> list[np.ndarray]:
        """``(3,H,W)`` tensors -> float32 ``(H,W)`` arrays; consecutive same-size images share a batch."""
        out: list[np.ndarray] = []
        batch: list[torch.Tensor] = []

        def flush():
            if batch:
                d = self.predict_tensor(torch.stack(batch))
                out.extend(d[:, 0].cpu().numpy().astype(np.float32, copy=False))
                batch.clear()

        for t in tensors:
            if batch and (t.shape != batch[0].shape or len(batch) >= self.batch_size):
                flush()
            batch.append(t)
        flush()
        return out

    def _wrap(self, depth: np.ndarray, source: str | None = None) -> Prediction:
        return Prediction(depth=np.ascontiguousarray(depth, dtype=np.float32), kind=self.kind, unit=self.unit,
                          model=self.model_name, source=source)


# --------------------------------------------------------------------------------------------------
# Files in, files out


def png16_encoding(depth: np.ndarray, kind: str) -> tuple[np.ndarray, dict]:
    """Depth -> uint16 array + a description of how to decode it.

    ``metric``: millimetres, ``value = round(m * 1000)``, 0 = invalid, clipped at 65.535 m.
    ``relative``/``disparity``: min-max over the valid (finite) pixels onto 1..65535, 0 = invalid;
    decode with ``x = min + (value - 1) / 65534 * (max - min)``.
    """
    d = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(d)
    if kind == "metric":
        v = np.where(finite, d, 0.0)
        v = np.clip(np.round(v / PNG16_METRIC_SCALE), 0, 65535).astype(np.uint16)
        return v, {"png16_unit": "mm", "png16_scale": PNG16_METRIC_SCALE,
                   "png16_decode": "metres = value * 0.001; 0 = invalid; clipped at 65.535 m"}
    v = np.zeros(d.shape, dtype=np.uint16)
    lo = float(d[finite].min()) if finite.any() else 0.0
    hi = float(d[finite].max()) if finite.any() else 0.0
    if finite.any():
        t = (d[finite] - lo) / (hi - lo) if hi > lo else np.zeros(int(finite.sum()))
        v[finite] = np.round(1 + t * 65534).astype(np.uint16)
    return v, {"png16_unit": "normalised", "png16_min": lo, "png16_max": hi,
               "png16_decode": "x = png16_min + (value - 1) / 65534 * (png16_max - png16_min); 0 = invalid"}


def _unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output stem per input; inputs sharing a stem (a.png, a.jpg, dir2/a.png) get distinct ones."""
    used: set[str] = set()
    out = {}
    for p in paths:
        stem = p.stem
        if stem in used:
            stem = f"{p.stem}_{p.suffix.lstrip('.').lower()}" if p.suffix else p.stem
            base, n = stem, 2
            while stem in used:
                stem, n = f"{base}_{n}", n + 1
        used.add(stem)
        out[p] = stem
    return out


def _one_line(e: BaseException) -> str:
    """A failed item's reason; the caller already names the file, so a DataError gives its problem only."""
    return e.problem if isinstance(e, DataError) else one_line(e)


def write_outputs(pred: Prediction, rgb: torch.Tensor | None, out_dir: Path, stem: str,
                  formats: Sequence[str], colormap: str = "Spectral_r", intrinsics=None,
                  ply_scale: float | None = None) -> tuple[list[str], dict]:
    """Write one prediction in the requested formats (atomically); returns (files, sidecar entry).

    ``tiff``: ``<stem>_depth.tif`` float32, NaN = invalid, CRS/transform copied from a georeferenced GeoTIFF
    input. ``ply``: ``<stem>.ply`` coloured point cloud; ``intrinsics`` (fx,fy,cx,cy) else a sidecar beside the
    input (:func:`depthlab.pointcloud.find_intrinsics`) else a 60 degree FOV guess; relative/disparity need
    ``ply_scale``. See docs/outputs.md."""
    from PIL import Image

    from depthlab import io
    from depthlab.viz.colorize import colorize, side_by_side

    files, entry = [], {"kind": pred.kind, "unit": pred.unit, "height": pred.depth.shape[0],
                        "width": pred.depth.shape[1]}
    d = pred.depth
    finite = np.isfinite(d)
    if finite.any():
        entry.update(min=float(d[finite].min()), max=float(d[finite].max()))
    if "npy" in formats:
        files.append(str(io.write_npy(out_dir / f"{stem}.npy", d)))
    if "png16" in formats:
        v, desc = png16_encoding(d, pred.kind)
        with io.atomic_write(out_dir / f"{stem}_depth16.png") as f:
            Image.fromarray(v).save(f, format="PNG")
        files.append(str(out_dir / f"{stem}_depth16.png"))
        entry.update(desc)
    color = None
    if "color" in formats or "side" in formats:
        valid = finite & (d > 0) if pred.kind == "metric" else finite
        color = colorize(d, cmap=colormap, mask=valid, reverse=pred.kind != "disparity")
    if "color" in formats:
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_color.png", color)))
    if "side" in formats:
        if rgb is None:
            raise ValueError("format 'side' needs the input image")
        rgb_np = rgb.permute(1, 2, 0).cpu().numpy()
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_side.png", side_by_side(rgb_np, color))))
    if "tiff" in formats:
        from depthlab.geo import write_prediction_tiff

        files.append(str(write_prediction_tiff(out_dir / f"{stem}_depth.tif", d, pred.source, entry)))
    if "ply" in formats:
        from depthlab.pointcloud import write_prediction_ply

        files.append(str(write_prediction_ply(out_dir / f"{stem}.ply", pred, rgb, intrinsics, ply_scale, entry)))
    entry["colormap"] = colormap if ("color" in formats or "side" in formats) else None
    return files, entry


def predict_files(inputs, model: str | nn.Module = "fastdepth", checkpoint_path=None, pretrained: bool = True,
                  out_dir="outputs/predict", formats: Sequence[str] = ("npy", "png16", "color"),
                  colormap: str = "Spectral_r", batch_size: int = 1, device: str = "cpu",
                  progress: bool = False, input_size="auto", intrinsics=None,
                  ply_scale: float | None = None) -> PredictReport:
    """Predict every image in ``inputs`` (files, folders, globs) and write the requested ``formats``.

    Per image (``<stem>`` = file name without extension; made unique on clashes):
    ``<stem>.npy`` float32 in the declared unit; ``<stem>_depth16.png`` (see :func:`png16_encoding`);
    ``<stem>_color.png`` (colormap, 2-98 percentile normalisation, near = warm); ``<stem>_side.png``
    (RGB | colour). ``predictions.json`` lists model, kind, unit and the 16-bit scale per file.
    ``tiff`` and ``ply`` (GeoTIFF, point cloud) as in :func:`write_outputs`; ``intrinsics`` (fx, fy, cx, cy
    in pixels of the input image) and ``ply_scale`` are passed to it.
    A file that cannot be read is skipped and reported in ``failures`` with a one-line reason.
    """
    from depthlab import __version__, io
    from depthlab.io import list_images
    from depthlab.viz.colorize import get_cmap

    if isinstance(formats, str):  # "npy,png16" as on the command line
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown output format(s) {bad or formats}; choose from {', '.join(FORMATS)}")
    get_cmap(colormap)  # fail before any work on an unknown colormap
    if intrinsics is not None:  # likewise for malformed intrinsics (one ValueError, not one per image)
        from depthlab.pointcloud import as_intrinsics

        intrinsics = as_intrinsics(intrinsics)
    paths = list_images(inputs)
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs))}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(model, device=device, checkpoint_path=checkpoint_path, pretrained=pretrained,
                          batch_size=batch_size, input_size=input_size)
    if "ply" in formats and predictor.kind != "metric" and ply_scale is None:  # before any file is written
        raise ValueError(f"ply: {predictor.model_name} predicts {predictor.kind} values without a metric scale; "
                         "pass ply_scale (--ply-scale: metres per unit for relative depth, metres x disparity "
                         "for disparity) or drop ply")
    stems = _unique_stems(paths)
    report = PredictReport(n_ok=0, out_dir=out_dir)
    sidecar: dict[str, Any] = {
        "model": predictor.model_name, "output_kind": predictor.kind, "unit": predictor.unit,
        "checkpoint_path": str(checkpoint_path) if checkpoint_path else None,
        "formats": formats, "depthlab_version": __version__, "files": {}, "failures": report.failures,
    }

    def handle(batch: list[tuple[Path, torch.Tensor]]):
        try:
            depths = predictor.predict_batches([t for _, t in batch])
        except Exception as e:  # keep going: report every image of the failed batch
            for p, _ in batch:
                report.failures[str(p)] = f"prediction failed ({_one_line(e)})"
            return
        for (p, t), d in zip(batch, depths):
            t = t.float() / 255.0 if t.dtype == torch.uint8 else t  # 8-bit input kept for the model's processing
            try:
                files, entry = write_outputs(predictor._wrap(d, str(p)), t, out_dir, stems[p], formats, colormap,
                                             intrinsics=intrinsics, ply_scale=ply_scale)
            except Exception as e:
                report.failures[str(p)] = f"writing outputs failed ({_one_line(e)})"
                continue
            report.outputs[str(p)] = files
            sidecar["files"][stems[p]] = {"input": str(p), **entry, "outputs": [Path(f).name for f in files]}
            report.n_ok += 1

    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("predicting", total=len(paths))
    try:
        batch: list[tuple[Path, torch.Tensor]] = []
        for p in paths:
            try:
                t = image_to_model_tensor(p) if predictor.own_processing else io.read_rgb(p)
            except Exception as e:  # corrupt / unreadable / not an image
                report.failures[str(p)] = _one_line(e)
                if bar:
                    bar.advance(task)
                continue
            if batch and (t.shape != batch[0][1].shape or len(batch) >= predictor.batch_size):
                handle(batch)
                batch = []
            batch.append((p, t))
            if bar:
                bar.advance(task)
        handle(batch)
    finally:
        if bar:
            bar.stop()
    io.write_json(out_dir / "predictions.json", sidecar)
    return report


__all__ = ["Predictor", "Prediction", "PredictReport", "predict_files", "image_to_tensor", "png16_encoding",
           "write_outputs", "FORMATS", "image_to_model_tensor", "BACKENDS", "parse_input_size"]
