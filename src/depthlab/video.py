"""Depth for video clips: decode -> :class:`~depthlab.predictor.Predictor` -> encode, one frame at a time.

:func:`predict_video` streams a clip through a predictor (frames batched by the predictor's ``batch_size``)
and writes, next to a ``<stem>_video.json`` sidecar:

* ``color``: ``<stem>_color.mp4``, the colourised depth (H.264, the input's frame rate);
* ``side``: ``<stem>_side.mp4``, input frame | colourised depth;
* ``png16``: ``<stem>_depth16/000000.png ...``, one 16-bit PNG per frame (encoding of
  :func:`depthlab.outputs.png16_encoding`) plus ``frames.csv`` (frame, time, per-frame ``png16_min`` /
  ``png16_max`` for relative/disparity models);
* ``npz``: ``<stem>_depth.npz`` with ``depth`` float32 ``(T,H,W)`` in the declared unit and ``time_s``
  float64 ``(T,)``.

Memory stays flat: frames are never collected. The ``.npz`` is assembled at the end from a temp file the
frames were appended to, and every output is written atomically (temp path, then rename).

Temporal smoothing (``smooth=w``, :class:`TemporalSmoother`): each frame is least-squares scale/shift
aligned (:func:`depthlab.evaluation.align.lstsq_scale_shift`) to the running reference, then blended into
it, ``ref = w * aligned + (1 - w) * ref``; the reference is the output. This removes the per-frame
scale/shift jumps of relative models and averages per-frame noise, at the cost of lag on motion.
:class:`FlickerMeter` measures the mean absolute frame-to-frame change (relative to the mean depth).

PyAV (``pip install 'depthlab[video]'``) decodes and encodes; its wheels ship ffmpeg. See docs/outputs.md.
"""
from __future__ import annotations

import contextlib
import csv
import glob
import itertools
import os
import shutil
import tempfile
import zipfile
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from depthlab.errors import DataError, InputError, one_line, require

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
VIDEO_FORMATS = ("color", "side", "png16", "npz")
FORMAT_ALIASES = {"npy": "npz"}  # the image formats' names for the same content, as `depthlab predict` takes them
COLOR_RANGE_EMA = 0.1  # weight of a frame's 2nd/98th percentiles in the colour range of consistent-scale output


def require_av():
    """``import av`` or a MissingExtraError (an ImportError) naming the ``[video]`` extra."""
    return require("av", "video", "video prediction")


def is_video(path) -> bool:
    """True when ``path``'s extension is a video container's (:data:`VIDEO_EXTS`)."""
    return Path(str(path)).suffix.lower() in VIDEO_EXTS


def split_video_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """``depthlab predict``'s inputs -> (video files, everything else); globs of videos are expanded."""
    videos, others = [], []
    for item in inputs:
        s = str(item)
        if not is_video(s):
            others.append(item)
        elif any(ch in s for ch in "*?["):
            videos.extend(Path(p) for p in sorted(glob.glob(s, recursive=True)))
        else:
            videos.append(Path(s))
    return videos, others


class FlickerMeter:
    """Streaming flicker of a depth sequence: mean over consecutive frame pairs of the mean absolute change
    of the pixels valid (finite) in both, divided by the mean absolute depth of all valid pixels seen.

    Scale-free, so raw relative predictions and smoothed ones compare; 0 for a constant sequence.
    """

    def __init__(self):
        self.prev: np.ndarray | None = None
        self.change_sum = 0.0
        self.pairs = 0
        self.abs_sum = 0.0
        self.count = 0

    def update(self, depth: np.ndarray) -> None:
        d = np.asarray(depth, dtype=np.float64)
        ok = np.isfinite(d)
        self.abs_sum += float(np.abs(d[ok]).sum())
        self.count += int(ok.sum())
        if self.prev is not None:
            both = ok & np.isfinite(self.prev)
            if both.any():
                self.change_sum += float(np.abs(d[both] - self.prev[both]).mean())
                self.pairs += 1
        self.prev = d

    @property
    def value(self) -> float:
        if not self.pairs or not self.abs_sum:
            return 0.0
        return (self.change_sum / self.pairs) / (self.abs_sum / self.count)


def flicker(frames) -> float:
    """:class:`FlickerMeter` over ``frames`` (an iterable of ``(H,W)`` arrays or a ``(T,H,W)`` array)."""
    meter = FlickerMeter()
    for d in frames:
        meter.update(d)
    return meter.value


class TemporalSmoother:
    """Per-frame scale/shift alignment to the running reference, then an exponential moving average.

    ``weight`` in (0, 1]: the new frame's share, ``ref = weight * aligned + (1 - weight) * ref`` (1 = align
    only). ``align``: fit ``s * depth + t`` to the reference by least squares over the pixels finite in
    both (:func:`depthlab.evaluation.align.lstsq_scale_shift`) before blending; off, frames are blended as
    they are (sensible for metric models, whose unit must stay metres). The first frame starts the reference.
    Pixels not finite in the new frame keep the reference's value. Returns the reference (float32 ``(H,W)``).
    """

    def __init__(self, weight: float, align: bool = True):
        if not 0 < weight <= 1:
            raise InputError(f"smooth must be in (0, 1] (the new frame's weight), got {weight!r}")
        self.weight = float(weight)
        self.align = align
        self.ref: np.ndarray | None = None

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        from depthlab.evaluation.align import lstsq_scale_shift

        d = np.asarray(depth, dtype=np.float32)
        if self.ref is None or self.ref.shape != d.shape:
            self.ref = d.copy()
            return self.ref.copy()
        ok = np.isfinite(d)
        if self.align:
            valid = ok & np.isfinite(self.ref)
            aligned, _, _ = lstsq_scale_shift(torch.from_numpy(np.where(ok, d, 0))[None],
                                              torch.from_numpy(self.ref)[None], torch.from_numpy(valid)[None])
            d = np.where(ok, aligned[0].numpy(), d)
        self.ref = np.where(ok, self.weight * d + (1 - self.weight) * self.ref, self.ref).astype(np.float32)
        return self.ref.copy()


@dataclass
class VideoInfo:
    """A clip's frame rate, frame count and size, from its container."""

    fps: float
    n_frames: int | None  # from the container's header; None when it does not say
    height: int
    width: int


@contextlib.contextmanager
def open_video(path):
    """Open ``path`` with PyAV; yields ``(container, video stream)``. DataError naming the file on failure."""
    av = require_av()
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:  # invalid data, unknown format, unreadable
        raise DataError(path, f"cannot open video ({one_line(e)})") from None
    try:
        if not container.streams.video:
            raise DataError(path, "no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def video_info(path) -> VideoInfo:
    with open_video(path) as (_, stream):
        return _info(stream)


def _info(stream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or 30
    return VideoInfo(fps=float(rate), n_frames=int(stream.frames) or None, height=stream.codec_context.height,
                     width=stream.codec_context.width)


def iter_frames(path, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Decode ``path`` frame by frame: ``(uint8 (H,W,3) RGB, time in seconds)``. Rotation metadata is not applied."""
    av = require_av()
    with open_video(path) as (container, stream):
        try:
            for i, frame in enumerate(itertools.islice(container.decode(stream), max_frames)):
                t = float(frame.time) if frame.time is not None else i / _info(stream).fps
                yield frame.to_ndarray(format="rgb24"), t
        except av.FFmpegError as e:  # a corrupt packet mid-clip
            raise DataError(path, f"cannot decode video ({one_line(e)})") from None


@contextlib.contextmanager
def mp4_writer(path: Path, fps: float, crf: int = 18):
    """Yields ``write(rgb uint8 (H,W,3))``; H.264 yuv420p (odd sizes padded by one edge pixel), atomic."""
    from fractions import Fraction

    from depthlab import io

    av = require_av()
    with io.atomic_path(path) as tmp:
        container = av.open(str(tmp), "w", format="mp4")
        try:
            stream = None

            def write(rgb: np.ndarray):
                nonlocal stream
                h, w = rgb.shape[:2]
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
                    stream.options = {"crf": str(crf)}
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                    container.mux(packet)

            yield write
            if stream is not None:
                for packet in stream.encode():  # flush the encoder
                    container.mux(packet)
        finally:
            container.close()


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temp folder beside ``path``; on success it replaces ``path`` (a previous one is removed), on
    error it is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def png16_frames_writer(folder: Path, kind: str):
    """Yields ``write(index, time_s, depth)``: ``folder/000000.png`` ... + ``frames.csv``; the folder is atomic."""
    from PIL import Image

    from depthlab.outputs import png16_encoding

    with atomic_dir(folder) as tmp, open(tmp / "frames.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["frame", "file", "time_s", "png16_min", "png16_max"])

        def write(index: int, time_s: float, depth: np.ndarray):
            v, desc = png16_encoding(depth, kind)
            name = f"{index:06d}.png"
            Image.fromarray(v).save(tmp / name, format="PNG")
            rows.writerow([index, name, f"{time_s:.6f}", desc.get("png16_min", ""), desc.get("png16_max", "")])

        yield write


@contextlib.contextmanager
def npz_writer(path: Path):
    """Yields ``write(time_s, depth)``; frames go to a temp file, assembled into ``depth`` (T,H,W) float32 and
    ``time_s`` (T,) in an uncompressed ``.npz`` (as ``np.savez``) at the end, streaming, atomically."""
    from depthlab import io

    path.parent.mkdir(parents=True, exist_ok=True)
    times, shape = array("d"), []
    with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".raw") as raw:
        def write(time_s: float, depth: np.ndarray):
            if shape and depth.shape != shape[0]:
                raise ValueError(f"{path.name}: frame size changed from {shape[0]} to {depth.shape}")
            shape[:] = [depth.shape]
            raw.write(np.ascontiguousarray(depth, dtype="<f4").tobytes())
            times.append(time_s)

        yield write
        h, w = shape[0] if shape else (0, 0)
        header = {"descr": "<f4", "fortran_order": False, "shape": (len(times), h, w)}
        with io.atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("depth.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                raw.seek(0)
                shutil.copyfileobj(raw, f)  # 64 KiB chunks: the clip never sits in memory
            with zf.open("time_s.npy", "w") as f:
                np.lib.format.write_array(f, np.frombuffer(times, dtype=np.float64) if times else np.zeros(0))


class _Colorizer:
    """Depth frame -> uint8 RGB with :func:`depthlab.outputs.colorize_prediction` (near = warm). Per-frame 2-98
    percentile range for raw relative output (its scale changes per frame); a running average of that range
    (:data:`COLOR_RANGE_EMA`) when the scale is consistent (metric or smoothed), so colours do not pump."""

    def __init__(self, kind: str, colormap: str, consistent: bool):
        from depthlab.viz.colorize import get_cmap

        get_cmap(colormap)  # fail early on an unknown name
        self.kind, self.colormap, self.consistent = kind, colormap, consistent
        self.range: np.ndarray | None = None

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        from depthlab.outputs import colorize_prediction, valid_pixels
        from depthlab.predictor import UNITS, Prediction
        from depthlab.viz.colorize import color_limits

        limits = color_limits(depth, mask=valid_pixels(depth, self.kind)) if self.consistent else None
        if limits is not None:
            r = np.asarray(limits)
            self.range = r if self.range is None else COLOR_RANGE_EMA * r + (1 - COLOR_RANGE_EMA) * self.range
        vmin, vmax = self.range if limits is not None else (None, None)
        pred = Prediction(depth=depth, kind=self.kind, unit=UNITS[self.kind])
        return colorize_prediction(pred, self.colormap, vmin=vmin, vmax=vmax)[0]


def _open_sinks(stack: contextlib.ExitStack, out_dir: Path, stem: str, formats: Sequence[str], fps: float,
                kind: str, colormap: str, consistent: bool) -> tuple[Callable, list[Path]]:
    """Open the writers of ``formats`` on ``stack``; returns ``(write(index, time_s, rgb, depth), files)``."""
    from depthlab.viz.colorize import side_by_side

    files = {"color": out_dir / f"{stem}_color.mp4", "side": out_dir / f"{stem}_side.mp4",
             "png16": out_dir / f"{stem}_depth16", "npz": out_dir / f"{stem}_depth.npz"}
    colorizer = _Colorizer(kind, colormap, consistent) if {"color", "side"} & set(formats) else None
    w: dict[str, Callable] = {}
    for name in ("color", "side"):
        if name in formats:
            w[name] = stack.enter_context(mp4_writer(files[name], fps))
    if "png16" in formats:
        w["png16"] = stack.enter_context(png16_frames_writer(files["png16"], kind))
    if "npz" in formats:
        w["npz"] = stack.enter_context(npz_writer(files["npz"]))

    def write(index: int, time_s: float, rgb: np.ndarray, depth: np.ndarray):
        color = colorizer(depth) if colorizer else None
        if "color" in w:
            w["color"](color)
        if "side" in w:
            w["side"](side_by_side(rgb, color))
        if "png16" in w:
            w["png16"](index, time_s, depth)
        if "npz" in w:
            w["npz"](time_s, depth)

    return write, [files[f] for f in VIDEO_FORMATS if f in formats]


def _depth_frames(path, predictor, max_frames: int | None) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """``(rgb, time_s, depth)`` per frame; frames go through the predictor ``batch_size`` at a time (uint8, as
    decoded: the predictor scales them, or hands them to a model's own 8-bit processing)."""
    batch: list[tuple[np.ndarray, float]] = []

    def run():
        depths = predictor.predict_batches([torch.from_numpy(rgb).permute(2, 0, 1) for rgb, _ in batch])
        out = [(rgb, t, d) for (rgb, t), d in zip(batch, depths)]
        batch.clear()
        return out

    for rgb, t in iter_frames(path, max_frames):
        batch.append((rgb, t))
        if len(batch) >= predictor.batch_size:
            yield from run()
    if batch:
        yield from run()


def _progress_callback(progress, total: int | None, label: str, stack: contextlib.ExitStack) -> Callable[[int], None]:
    """``progress``: a callable ``(frames_done, total_or_None)``, True (a rich bar on stderr) or False."""
    if callable(progress):
        return lambda done: progress(done, total)
    if not progress:
        return lambda done: None
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    bar.start()
    stack.callback(bar.stop)
    task = bar.add_task(f"{label} (frames)", total=total)
    return lambda done: bar.update(task, completed=done)


def parse_video_formats(formats: str | Sequence[str]) -> list[str]:
    """``"color,npz"`` or a list -> checked, de-duplicated list of :data:`VIDEO_FORMATS`; ``npy`` is ``npz``."""
    from depthlab.outputs import parse_formats

    return parse_formats(formats, choices=VIDEO_FORMATS, aliases=FORMAT_ALIASES)


@dataclass
class VideoReport:
    """What :func:`predict_video` wrote. ``flicker_raw``: :class:`FlickerMeter` of the model's per-frame
    predictions; ``flicker``: of the written depth (equal without smoothing)."""

    source: str
    n_frames: int
    fps: float
    height: int
    width: int
    kind: str
    unit: str
    outputs: list[str] = field(default_factory=list)
    flicker_raw: float = 0.0
    flicker: float = 0.0
    smooth: float | None = None
    align: bool | None = None
    sidecar: str | None = None


def predict_video(path, model: Any = "fastdepth", out_dir="outputs/predict", formats=("color", "npz"),
                  smooth: float | None = None, align: bool | None = None, colormap: str = "Spectral_r",
                  progress: bool | Callable[[int, int | None], Any] = False, max_frames: int | None = None,
                  stem: str | None = None, **predictor_kwargs) -> VideoReport:
    """Predict depth for every frame of the clip ``path`` and write ``formats`` (see the module docstring).

    ``model``: a :class:`~depthlab.predictor.Predictor` (used as is), or what ``Predictor`` takes, built with
    ``predictor_kwargs`` (device, checkpoint_path, pretrained, input_size, batch_size). ``smooth``: the new
    frame's weight in (0, 1] of the :class:`TemporalSmoother` (None or 0 = off); ``align``: scale/shift
    alignment before blending (default: on for relative/disparity models, off for metric ones).
    ``progress``: True = a bar in frames on stderr, or a callable ``(frames_done, total_or_None)`` called
    after each frame. Raises :class:`~depthlab.errors.DataError` for an unreadable clip (nothing is written).
    """
    from depthlab import __version__, io
    from depthlab.predictor import Predictor

    formats = parse_video_formats(formats)
    predictor = model if isinstance(model, Predictor) else Predictor(model, **predictor_kwargs)
    path, out_dir = Path(path), Path(out_dir)
    info = video_info(path)
    align = predictor.kind != "metric" if align is None else bool(align)
    smoother = TemporalSmoother(smooth, align) if smooth else None
    rep = VideoReport(source=str(path), n_frames=0, fps=info.fps, height=info.height, width=info.width,
                      kind=predictor.kind, unit=predictor.unit, smooth=smooth or None, align=align if smooth else None)
    raw_meter, meter = FlickerMeter(), FlickerMeter()
    with contextlib.ExitStack() as stack:
        write, files = _open_sinks(stack, out_dir, stem or path.stem, formats, info.fps, predictor.kind, colormap,
                                   consistent=predictor.kind == "metric" or smoother is not None)
        total = min(n for n in (info.n_frames, max_frames) if n is not None) if (info.n_frames or max_frames) else None
        tick = _progress_callback(progress, total, path.name, stack)
        for i, (rgb, t, depth) in enumerate(_depth_frames(path, predictor, max_frames)):
            raw_meter.update(depth)
            depth = smoother(depth) if smoother else depth
            meter.update(depth)
            write(i, t, rgb, depth)
            rep.n_frames = i + 1
            tick(rep.n_frames)
        if not rep.n_frames:
            raise DataError(path, "no frames decoded")
    rep.outputs = [str(f) for f in files]
    rep.flicker_raw, rep.flicker = raw_meter.value, meter.value
    rep.sidecar = str(io.write_json(out_dir / f"{stem or path.stem}_video.json",
                                    _sidecar(rep, predictor, formats, colormap, __version__)))
    return rep


def _sidecar(rep: VideoReport, predictor, formats: list[str], colormap: str, version: str) -> dict:
    from depthlab.outputs import png16_encoding

    _, png16 = png16_encoding(np.zeros((1, 1), np.float32), rep.kind)  # the decoding rule of this kind
    png16 = {k: v for k, v in png16.items() if k not in ("png16_min", "png16_max")}
    if rep.kind != "metric":
        png16["png16_per_frame"] = "png16_min / png16_max of each frame in <stem>_depth16/frames.csv"
    return {"model": predictor.model_name, "output_kind": rep.kind, "unit": rep.unit, "input": rep.source,
            "fps": rep.fps, "n_frames": rep.n_frames, "height": rep.height, "width": rep.width,
            "formats": formats, "outputs": [Path(f).name for f in rep.outputs],
            "colormap": colormap if {"color", "side"} & set(formats) else None,
            "smooth": rep.smooth, "align": rep.align, "flicker_raw": rep.flicker_raw, "flicker": rep.flicker,
            **(png16 if "png16" in formats else {}), "depthlab_version": version}


def predict_videos(paths: Sequence, model: Any = "fastdepth", out_dir="outputs/predict", **kwargs):
    """:func:`predict_video` for each clip with one predictor; a clip that fails is reported, the rest go on.

    Returns a :class:`~depthlab.predictor.PredictReport` (``outputs``: clip -> files written, sidecar last).
    Clips sharing a file name get distinct stems (:func:`depthlab.outputs.unique_stems`).
    ``kwargs``: :func:`predict_video`'s options and the ``Predictor``'s."""
    from depthlab.outputs import unique_stems
    from depthlab.predictor import Predictor, PredictReport

    parse_video_formats(kwargs.get("formats", ("color", "npz")))  # one error up front, not one per clip
    names = {"device", "checkpoint_path", "pretrained", "input_size", "batch_size", "backend"}
    predictor = model if isinstance(model, Predictor) else \
        Predictor(model, **{k: kwargs.pop(k) for k in list(kwargs) if k in names})
    report = PredictReport(n_ok=0, out_dir=Path(out_dir))
    paths = [Path(p) for p in paths]
    stems = unique_stems(paths)  # a/clip.mp4 and b/clip.mp4 -> clip, clip_mp4
    for p in paths:
        try:
            r = predict_video(p, predictor, out_dir, stem=stems[p], **kwargs)
        except DataError as e:
            report.failures[str(p)] = e.problem
            continue
        report.outputs[str(p)] = r.outputs + [r.sidecar]
        report.n_ok += 1
    return report


__all__ = ["predict_video", "predict_videos", "VideoReport", "TemporalSmoother", "FlickerMeter", "flicker",
           "iter_frames", "video_info", "VideoInfo", "open_video", "is_video", "split_video_inputs",
           "parse_video_formats", "require_av", "VIDEO_EXTS", "VIDEO_FORMATS"]
