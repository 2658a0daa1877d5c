"""Run a depth model on images in any common form and write predictions to disk.

:class:`Predictor` runs the model's one pipeline (:mod:`depthlab.processing`: the default processor from
``depth_info``, or a foundation adapter's own) around the network, under ``torch.inference_mode()``
(batched, optional channels_last, optional bfloat16 autocast). Images are read by :func:`image_to_tensor`
(EXIF orientation honoured, grayscale replicated, alpha dropped, 16-bit scaled by 1/65535); 8-bit images stay
uint8 until the processor, as transformers' image processors treat them, so the Predictor's output equals
``transformers.pipeline("depth-estimation")`` / diffusers' Marigold pipeline on the same weights.

The network (not the pre/post-processing) runs on the fastest verified backend by default
(:class:`depthlab.backends.Network`, ``backend="auto"``): ONNX Runtime when installed and the export (once per
network input shape, cached on disk keyed by model name, weights hash, shape and versions) reproduces
PyTorch, else eager PyTorch in channels_last; ``backend="eager"`` / ``"onnx"`` force one.
``Predictor.backend_used`` says what ran.

:func:`predict_files` is the ``depthlab predict`` command: files, folders or globs in; the writers of
:mod:`depthlab.outputs` plus a ``predictions.json`` sidecar out.
"""
from __future__ import annotations

import os
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from depthlab.backends import BACKENDS, Network, resolve_backend
from depthlab.errors import InputError, MissingFileError, item_reason
from depthlab.models.registry import resolve_device, resolve_model
from depthlab.outputs import (FORMATS, PNG16_METRIC_SCALE, SIDECAR, output_clashes, parse_formats, png16_encoding,
                              unique_stems, write_outputs)
from depthlab.processing import batches_by_size, has_own_processor, processor_for

UNITS = {
    "metric": "m",
    "relative": "affine-invariant depth (unknown scale and shift)",
    "disparity": "affine-invariant inverse depth (unknown scale and shift; larger = nearer)",
}


@dataclass
class Prediction:
    """One prediction: ``depth`` float32 ``(H,W)`` at the input image's size, in ``unit``."""

    depth: np.ndarray
    kind: str  # metric | relative | disparity
    unit: str
    model: str | None = None
    source: str | None = None  # file path when the input was one
    network_size: tuple[int, int] | None = None  # (H, W) the network saw, when a Predictor made it

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


def image_to_tensor(image: Any, keep_uint8: bool = False) -> torch.Tensor:
    """Any single image -> float32 ``(3,H,W)`` in [0,1]; with ``keep_uint8``, 8-bit sources (files, PIL
    images, uint8 arrays or tensors) stay uint8 ``(3,H,W)`` (the processor converts them).

    Accepts a path (``str``/``PathLike``, read by :func:`depthlab.io.read_rgb`), a PIL image (EXIF orientation
    applied), a numpy array ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` (uint8 / uint16 / float in [0,1]; alpha
    dropped) or a torch tensor ``(3,H,W)`` / ``(1,H,W)`` / ``(H,W)`` (float in [0,1] or uint8).
    """
    from PIL import Image

    from depthlab import io

    if isinstance(image, (str, os.PathLike)):
        return io.read_rgb(image, keep_uint8)
    if isinstance(image, Image.Image):
        return io.to_float_chw(io.pil_to_rgb_array(io.upright(image)), keep_uint8)
    if isinstance(image, np.ndarray):
        a = image[..., None] if image.ndim == 2 else image
        if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
            raise InputError(f"numpy images must be HxW, HxWx1, HxWx3 or HxWx4 (channels last), got {image.shape}")
        a = np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a[..., :3]
        if a.dtype == np.bool_ or not (a.dtype in (np.uint8, np.uint16) or np.issubdtype(a.dtype, np.floating)):
            raise InputError(f"numpy images must be uint8, uint16 or float in [0,1], got {a.dtype}")
        if np.issubdtype(a.dtype, np.floating):
            _check_unit_range(float(np.nanmin(a)), float(np.nanmax(a)))
        return io.to_float_chw(a, keep_uint8)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"cannot read an image from {type(image).__name__}; "
                        "pass a path, PIL image, numpy array or torch tensor")
    t = image.detach()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise InputError(f"tensor images must be (3,H,W), (1,H,W) or (H,W), got {tuple(image.shape)}")
    if t.dtype == torch.uint8:
        t = t if keep_uint8 else t.float() / 255.0
    elif t.is_floating_point():
        t = t.float()
        _check_unit_range(float(t.min()), float(t.max()))
    else:
        raise InputError(f"tensor images must be float in [0,1] or uint8, got {t.dtype}")
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t


def _check_unit_range(lo: float, hi: float, tol: float = 1e-3) -> None:
    if lo < -tol or hi > 1 + tol:
        raise InputError(f"float images must be in [0,1], got values in [{lo:.4g}, {hi:.4g}] "
                         "(divide 8-bit data by 255)")


def parse_input_size(value: Any, key: str = "input_size") -> str | int | tuple[int, int] | None:
    """The one reader of an "input size", from the CLI (text), a YAML spec or Python.

    ``"auto"``, ``"model"`` and ``"keep-aspect"`` stay as they are; ``"native"`` or ``None`` -> ``None``
    (the image's own size); an int or ``"N"`` -> ``N`` (short side); ``(H, W)``, ``[H, W]`` or ``"HxW"`` -> ``(H, W)``.
    Sizes must be positive. A bad value is a one-line ``ConfigError`` (a ``ValueError``) naming ``key``.
    """
    from depthlab.config import ConfigError

    if value is None or value in ("auto", "model", "native", "keep-aspect"):
        return None if value == "native" else value
    size, bad = value, ConfigError(f"{key} must be auto, native, model, keep-aspect, N or HxW, got {value!r}")
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
    weights were trained at when they declare one (FastDepth: 224x224), else the image's own size; ``None`` =
    keep resolution and pad to ``multiple_of``; an int = resize so the short side is that many pixels;
    ``(H, W)`` = resize to that (rounded to ``multiple_of``); ``"model"`` = ``depth_info.input_size``;
    ``"keep-aspect"`` = the image's aspect ratio with the trained size's short side (FastDepth: 224, so a
    375x1242 KITTI frame runs at 224x736 instead of 224x224). ``"auto"`` warns (once per image size) when the
    trained size changes an image's aspect ratio by more than :data:`ASPECT_WARN_RATIO`. Models with their
    own processor (foundation adapters) size images themselves: ``input_size`` must then be None.

    ``backend``: ``"auto"`` (default; ``None`` = ``$DEPTHLAB_BACKEND``, else auto) runs the network in ONNX Runtime
    when it is installed, the device is the CPU and the export verifies against PyTorch, else in eager PyTorch
    (channels_last when it reproduces the contiguous forward), with a one-line warning when an export fails;
    ``"eager"`` (``"torch"``) = PyTorch; ``"onnx"`` = ONNX Runtime or an error. Exports happen on first use per
    network input shape, verified once, cached in ``onnx_cache_dir`` (default ``~/.cache/depthlab/onnx``);
    ``onnx_input_shape=(B,3,h,w)`` prepares that shape at construction. ``backend_used`` records what ran
    (see :mod:`depthlab.backends`).
    """

    def __init__(self, model: nn.Module | str, device: str | torch.device = "cpu", checkpoint_path=None,
                 pretrained: bool = True, input_size: int | tuple[int, int] | str | None = "auto",
                 batch_size: int = 1, channels_last: bool = False, autocast_bf16: bool = False,
                 pad_mode: str = "replicate", backend: str | None = None, onnx_cache_dir=None,
                 onnx_input_shape: tuple[int, int, int, int] | None = None):
        backend = resolve_backend(backend)
        self.device = resolve_device(device)
        self.model = resolve_model(model, checkpoint_path, pretrained=pretrained).eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        info = getattr(self.model, "depth_info", None)
        if info is None:
            raise InputError("the model has no depth_info: build it with depthlab.create_model(...) "
                             "or set model.depth_info = WeightsInfo(...)")
        self.info, self.kind, self.unit = info, info.output_kind, UNITS[info.output_kind]
        self.model_name = getattr(self.model, "model_name", None) or type(self.model).__name__
        self.input_size_setting = requested = parse_input_size(input_size)
        input_size = requested
        if input_size in ("auto", "model", "keep-aspect") and has_own_processor(self.model):
            input_size = None  # it sizes images itself
        elif input_size == "auto":
            input_size = "model" if info.input_size is not None else None
        elif input_size == "keep-aspect":  # the trained short side, the image's own aspect ratio
            input_size = min(info.input_size) if info.input_size is not None else None
        if input_size == "model":
            if info.input_size is None:
                raise InputError(f"{self.model_name} declares no input_size; pass an int or (H, W)")
            input_size = tuple(info.input_size)
        self.input_size = input_size
        self._aspect_warned: set[tuple[int, int]] | None = set() if requested == "auto" and isinstance(
            input_size, tuple) else None  # "auto" chose a fixed size: say when it distorts an image
        self.pad_mode = pad_mode
        self.processor = processor_for(self.model, input_size, pad_mode)  # pre-process -> network -> post-process
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.channels_last, self.autocast_bf16 = int(batch_size), channels_last, autocast_bf16
        self.backend, self.onnx_cache_dir = backend, onnx_cache_dir
        self.network = Network(self.model, backend, self.device, channels_last, autocast_bf16, onnx_cache_dir)
        if onnx_input_shape is not None:
            if backend == "eager":
                raise InputError("onnx_input_shape needs backend='onnx' or 'auto'")
            self.network.prepare(onnx_input_shape)  # export (or load from the cache) and verify now

    @property
    def backend_used(self) -> str | None:
        """What ran the network so far: ``onnx``, ``eager``, ``eager-channels_last`` (or several joined by
        ``+``); None before the first prediction."""
        return self.network.backend

    def _network(self, x: torch.Tensor):
        """Run the network (:attr:`network`: ONNX Runtime or PyTorch) on a normalised batch -> raw ``(B,1,h,w)`` float."""
        out = self.network(x)
        raw = out["depth"] if isinstance(out, dict) else out
        if raw.ndim == 3:
            raw = raw[:, None]
        return raw.float()

    def network_size(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) the network sees for an ``h x w`` input."""
        return tuple(self.processor.network_size(h, w))

    def predict_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """``(B,3,H,W)`` float in [0,1] (or uint8) -> ``(B,1,H,W)`` float32 in the declared unit, on the input's device.

        uint8 batches reach a model with its own processor as uint8 (resized as 8-bit data, like
        transformers' processors); other models get them as float / 255.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"predict_tensor expects (B,3,H,W), got {tuple(images.shape)}")
        if self._aspect_warned is not None:
            self._warn_if_squeezed(int(images.shape[-2]), int(images.shape[-1]))
        outs = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                outs.append(self.processor(images[i: i + self.batch_size].to(self.device), self._network))
        return torch.cat(outs).to(images.device)

    def _warn_if_squeezed(self, h: int, w: int) -> None:
        """One warning per image size that "auto" resizes to the trained size with a changed aspect ratio."""
        nh, nw = self.network_size(h, w)
        change = (w / h) / (nw / nh)
        if (h, w) in self._aspect_warned or max(change, 1 / change) <= ASPECT_WARN_RATIO:
            return
        self._aspect_warned.add((h, w))
        kh, kw = processor_for(self.model, min(self.input_size), self.pad_mode).network_size(h, w)
        warnings.warn(f"{self.model_name}: a {h}x{w} image runs at {nh}x{nw}, the size its weights were trained "
                      f"at (aspect ratio {w / h:.2f} -> {nw / nh:.2f}); input_size='keep-aspect' (--input-size "
                      f"keep-aspect) keeps its aspect ratio ({kh}x{kw} here)", stacklevel=3)

    def __call__(self, image):
        """One image -> :class:`Prediction`; a list/tuple (or a ``(B,3,H,W)`` tensor) -> list of them."""
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            return self([im for im in image])
        if isinstance(image, (list, tuple)):
            return self._predict_many(image)
        return self._predict_many([image])[0]

    def _predict_many(self, images: Sequence) -> list[Prediction]:
        tensors = [image_to_tensor(im, keep_uint8=True) for im in images]
        sources = [str(im) if isinstance(im, (str, os.PathLike)) else None for im in images]
        depths = self.predict_batches(tensors)
        return [self._wrap(d, s) for d, s in zip(depths, sources)]

    def predict_batches(self, tensors: Iterable[torch.Tensor]) -> list[np.ndarray]:
        """``(3,H,W)`` tensors -> float32 ``(H,W)`` arrays; consecutive same-size images share a batch."""
        out: list[np.ndarray] = []
        for batch in batches_by_size(tensors, self.batch_size):
            d = self.predict_tensor(torch.stack(batch))
            out.extend(d[:, 0].cpu().numpy().astype(np.float32, copy=False))
        return out

    def _wrap(self, depth: np.ndarray, source: str | None = None) -> Prediction:
        return Prediction(depth=np.ascontiguousarray(depth, dtype=np.float32), kind=self.kind, unit=self.unit,
                          model=self.model_name, source=source, network_size=self.network_size(*depth.shape[-2:]))


ASPECT_WARN_RATIO = 1.5
"""``"auto"`` warns when the trained size changes an image's width/height ratio by more than this factor.
Not 1: weights trained at a square size from 4:3 frames (FastDepth: NYU 640x480 -> 224x224) saw that
distortion in training; a KITTI frame squeezed from 3.3:1 to 1:1 did not."""


# --------------------------------------------------------------------------------------------------
# Files in, files out


def predict_files(inputs, model: str | nn.Module = "fastdepth", checkpoint_path=None, pretrained: bool = True,
                  out_dir="outputs/predict", formats: Sequence[str] = ("npy", "png16", "color"),
                  colormap: str = "Spectral_r", batch_size: int = 1, device: str = "cpu",
                  progress: bool = False, input_size="auto", intrinsics=None,
                  ply_scale: float | None = None, io_workers: int | None = None,
                  max_pixels: int | None = None,
                  backend: str | None = None) -> PredictReport:
    """Predict every image in ``inputs`` (files, folders, globs) and write the requested ``formats``.

    Per image (``<stem>`` = file name without extension; made unique on clashes):
    ``<stem>.npy`` float32 in the declared unit; ``<stem>_depth16.png`` (see :func:`png16_encoding`);
    ``<stem>_color.png`` (colormap, 2-98 percentile normalisation, near = warm, colour bar underneath);
    ``<stem>_side.png`` (RGB | colour). ``predictions.json`` lists model, kind, unit, the ``input_size``
    setting, and per file the 16-bit decoding, the colour scale and ``network_input_size`` ([H, W] the
    network saw). ``tiff`` and ``ply`` (GeoTIFF, point cloud) as in
    :func:`depthlab.outputs.write_outputs`; ``intrinsics`` (fx, fy, cx, cy in pixels of the input image) and
    ``ply_scale`` are passed to it.
    Decoding, the network and writing overlap: ``io_workers`` threads decode images ahead and ``io_workers``
    threads write finished predictions (default :func:`default_io_workers`); files, ``predictions.json`` and
    ``failures`` are the same, in input order, for any ``io_workers``.
    A file that cannot be read is skipped and reported in ``failures`` with a one-line reason; so is an image
    whose header declares more than ``max_pixels`` pixels (None: :data:`depthlab.io.MAX_PIXELS`), before it is
    decoded, and an input whose outputs would overwrite an input file (``out_dir`` = the input folder).
    ``predictions.json`` is rewritten as the run goes (at most once a second), so an interrupted run leaves a
    sidecar that lists only files completely written.
    ``backend``: as :class:`Predictor` takes it (default auto); ``predictions.json`` records the one used.
    """
    from rich.console import Console
    from rich.progress import Progress

    from depthlab import __version__, io
    from depthlab.viz.colorize import get_cmap

    formats = parse_formats(formats)
    io_workers = default_io_workers() if io_workers is None else int(io_workers)
    if io_workers < 1:
        raise InputError(f"io_workers must be >= 1, got {io_workers}")
    get_cmap(colormap)  # fail before any work on an unknown colormap
    if intrinsics is not None:  # likewise for malformed intrinsics (one ValueError, not one per image)
        from depthlab.pointcloud import as_intrinsics

        intrinsics = as_intrinsics(intrinsics)
    paths = io.list_images(inputs)
    if not paths:
        named = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
        raise MissingFileError(f"no images found in {', '.join(map(str, named))}")
    out_dir = io.make_dir(out_dir)
    io.remove_orphan_temps(out_dir)  # left by a run killed with SIGKILL
    predictor = Predictor(model, device=device, checkpoint_path=checkpoint_path, pretrained=pretrained,
                          batch_size=batch_size, input_size=input_size, backend=backend)
    if "ply" in formats and predictor.kind != "metric" and ply_scale is None:  # before any file is written
        raise InputError(f"ply: {predictor.model_name} predicts {predictor.kind} values without a metric scale; "
                         "pass ply_scale (--ply-scale: metres per unit for relative depth, metres x disparity "
                         "for disparity) or drop ply")
    report = PredictReport(n_ok=0, out_dir=out_dir)
    sidecar: dict[str, Any] = {
        "model": predictor.model_name, "output_kind": predictor.kind, "unit": predictor.unit,
        "input_size": predictor.input_size_setting,
        "checkpoint_path": str(checkpoint_path) if checkpoint_path else None,
        "formats": formats, "depthlab_version": __version__, "files": {}, "failures": report.failures,
    }
    stems = unique_stems(paths)
    report.failures.update(output_clashes(paths, stems, out_dir, formats))
    paths = [p for p in paths if str(p) not in report.failures]
    write = dict(out_dir=out_dir, formats=formats, colormap=colormap, intrinsics=intrinsics, ply_scale=ply_scale)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("predicting", total=len(paths))
        save = _throttled(lambda: io.write_json(out_dir / SIDECAR, sidecar), seconds=1.0)

        def advance():
            bar.advance(task)
            save()  # an interrupted run keeps a sidecar of what it wrote

        _pipeline(predictor, paths, stems, write, report, sidecar, io_workers, advance, max_pixels)
    sidecar["backend"] = predictor.backend_used  # what ran the network (auto: onnx or eager)
    io.write_json(out_dir / SIDECAR, sidecar)
    return report


def _throttled(fn, seconds: float, max_share: float = 0.05):
    """``fn`` called at most once per ``seconds`` (the first call runs it), and at most ``max_share`` of the
    time: after a call that took ``t``, the next waits ``t / max_share`` at least. The sidecar rewritten during a
    folder run grows with the folder, and so does the time to write it: its rewrites stay a twentieth of the run
    instead of taking over the thread that runs the network."""
    import time

    last, wait = [-float("inf")], [seconds]

    def call():
        start = time.monotonic()
        if start - last[0] >= wait[0]:
            fn()
            last[0] = time.monotonic()
            wait[0] = max(seconds, (last[0] - start) / max_share)

    return call


def default_io_workers() -> int:
    """Threads per pool of :func:`predict_files` when not given: the usable CPU cores, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def _pipeline(predictor: Predictor, paths: list[Path], stems: dict, write: dict, report: PredictReport,
              sidecar: dict, io_workers: int, advance, max_pixels: int | None = None) -> None:
    """Read (``io_workers`` threads) -> predict (this thread, batched by size) -> write (``io_workers`` threads).

    Decoding (PIL), the forward pass (torch) and encoding (zlib, numpy) release the GIL, so threads overlap
    them. Both queues are bounded (at most ``2 * io_workers + batch_size`` images decoded ahead,
    ``2 * io_workers`` predictions waiting to be written), which bounds memory; results are taken in
    submission order, so the sidecar and the report are filled in input order."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    with ThreadPoolExecutor(io_workers, thread_name_prefix="depthlab-read") as readers, \
            ThreadPoolExecutor(io_workers, thread_name_prefix="depthlab-write") as writers:
        pending: deque = deque()  # (prediction, stem, future of write_outputs), in input order
        try:
            reads = _bounded_map(readers, partial(_read_one, max_pixels=max_pixels), paths,
                                 2 * io_workers + predictor.batch_size)
            for batch in batches_by_size(_readable(reads, report, advance), predictor.batch_size, lambda pt: pt[1]):
                for p, rgb, pred, err in _predict_batch(predictor, batch):
                    if err:
                        report.failures[str(p)] = err
                        advance()
                        continue
                    pending.append((pred, stems[p], writers.submit(write_outputs, pred, rgb, stem=stems[p], **write)))
                    while len(pending) > 2 * io_workers:
                        _record(*pending.popleft(), report, sidecar, advance)
            while pending:
                _record(*pending.popleft(), report, sidecar, advance)
        except BaseException:  # Ctrl-C or a bug: drop the queued work (files being written finish atomically)
            readers.shutdown(cancel_futures=True)
            writers.shutdown(cancel_futures=True)
            raise
    order = {str(p): i for i, p in enumerate(paths)}  # failures in input order, whichever stage found them
    failed = sorted(report.failures.items(), key=lambda kv: order.get(kv[0], len(order)))
    report.failures.clear()
    report.failures.update(failed)


def _bounded_map(pool, fn, items: Iterable, ahead: int) -> Iterator:
    """``fn(item)`` for each item, computed in ``pool`` at most ``ahead`` items in advance, yielded in order.

    ``Executor.map`` submits every item at once (all decoded images in memory); this keeps ``ahead``."""
    queue: deque = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def _read_one(p: Path, max_pixels: int | None = None) -> tuple[Path, torch.Tensor | None, str | None]:
    """(path, image or None, failure reason or None); 8-bit images stay uint8; above ``max_pixels`` refused from
    the header. Runs in a reader thread."""
    from depthlab import io

    try:
        return p, io.read_rgb(p, keep_uint8=True, max_pixels=max_pixels), None
    except Exception as e:  # corrupt / unreadable / not an image
        return p, None, item_reason(e)


def _readable(reads: Iterable, report: PredictReport, advance) -> Iterator[tuple[Path, torch.Tensor]]:
    """(path, image) of the files read; the others go to ``report.failures``."""
    for p, t, err in reads:
        if err is None:
            yield p, t
        else:
            report.failures[str(p)] = err
            advance()


def _predict_batch(predictor: Predictor, batch: list[tuple[Path, torch.Tensor]]):
    """(path, image, Prediction or None, failure reason or None) per image of a same-size batch."""
    try:
        depths = predictor.predict_batches([t for _, t in batch])
    except Exception as e:  # keep going: report every image of the failed batch
        return [(p, t, None, f"prediction failed ({item_reason(e)})") for p, t in batch]
    return [(p, t, predictor._wrap(d, str(p)), None) for (p, t), d in zip(batch, depths)]


def _record(pred: Prediction, stem: str, written, report: PredictReport, sidecar: dict, advance) -> None:
    """Wait for one prediction's ``write_outputs`` and record its files (or its failure) in ``report`` and
    ``sidecar``."""
    path = pred.source
    try:
        files, entry = written.result()
    except Exception as e:
        report.failures[path] = f"writing outputs failed ({item_reason(e)})"
    else:
        report.outputs[path] = files
        sidecar["files"][stem] = {"input": path, **entry, "outputs": [Path(f).name for f in files]}
        if pred.network_size is not None:
            sidecar["files"][stem]["network_input_size"] = list(pred.network_size)
        report.n_ok += 1
    finally:
        advance()


__all__ = ["Predictor", "Prediction", "PredictReport", "predict_files", "image_to_tensor", "png16_encoding",
           "write_outputs", "FORMATS", "BACKENDS", "PNG16_METRIC_SCALE", "parse_input_size", "default_io_workers"]
