"""Prediction files (docs/outputs.md): :func:`write_outputs` writes one :class:`depthlab.predictor.Prediction` as
``.npy``, 16-bit PNG, colourised PNG, side-by-side, GeoTIFF and PLY, each file atomically, and returns the files
and the ``predictions.json`` entry. One call per prediction, no shared state: callers may run it in worker threads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from depthlab.errors import InputError

FORMATS = ("npy", "png16", "color", "side", "tiff", "ply")  # tiff: depthlab.geo; ply: depthlab.pointcloud
PNG16_METRIC_SCALE = 0.001  # metres per unit: millimetres, 0 = invalid, max 65.535 m


def parse_formats(formats: str | Sequence[str], choices: Sequence[str] = FORMATS,
                  aliases: dict[str, str] | None = None) -> list[str]:
    """``"npy,png16"`` (as on the command line) or a sequence -> known formats, duplicates dropped.

    ``choices``: the known formats (videos have their own, :data:`depthlab.video.VIDEO_FORMATS`); ``aliases``
    map other names onto them."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = list(dict.fromkeys((aliases or {}).get(f, f) for f in formats))
    bad = [f for f in formats if f not in choices]
    if bad or not formats:
        raise InputError(f"unknown output format(s) {bad or formats}; choose from {', '.join(choices)}")
    return formats


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


def valid_pixels(depth: np.ndarray, kind: str) -> np.ndarray:
    """The pixels a prediction holds: finite, and > 0 for metric depth."""
    return np.isfinite(depth) & (depth > 0 if kind == "metric" else True)


def colorize_prediction(pred, colormap: str = "Spectral_r", vmin: float | None = None,
                        vmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 HxWx3 colour map, valid pixels): near = warm for depth and disparity alike; metric <= 0 invalid.
    ``vmin``/``vmax``: the colour range (default: the 2nd/98th percentiles, :func:`depthlab.viz.colorize`)."""
    from depthlab.viz.colorize import colorize

    valid = valid_pixels(pred.depth, pred.kind)
    return colorize(pred.depth, cmap=colormap, mask=valid, reverse=pred.kind != "disparity", vmin=vmin,
                    vmax=vmax), valid


def write_outputs(pred, rgb: torch.Tensor | None, out_dir: Path, stem: str,
                  formats: Sequence[str], colormap: str = "Spectral_r", intrinsics=None,
                  ply_scale: float | None = None) -> tuple[list[str], dict]:
    """Write one prediction in the requested formats (atomically); returns (files, sidecar entry).

    ``rgb``: the input image, float ``(3,H,W)`` in [0,1] (or uint8), needed by ``side`` and ``ply``.
    ``tiff``: ``<stem>_depth.tif`` float32, NaN = invalid, CRS/transform copied from a georeferenced GeoTIFF
    input. ``ply``: ``<stem>.ply`` coloured point cloud; ``intrinsics`` (fx,fy,cx,cy) else a sidecar beside the
    input (:func:`depthlab.pointcloud.find_intrinsics`) else a 60 degree FOV guess; relative/disparity need
    ``ply_scale``. See docs/outputs.md."""
    from depthlab import io
    from depthlab.processing import to_float01
    from depthlab.viz.colorize import side_by_side

    rgb = None if rgb is None else to_float01(rgb)
    out_dir, d = Path(out_dir), pred.depth
    files, entry = [], {"kind": pred.kind, "unit": pred.unit, "height": d.shape[0], "width": d.shape[1]}
    finite = np.isfinite(d)
    if finite.any():
        entry.update(min=float(d[finite].min()), max=float(d[finite].max()))
    if "npy" in formats:
        files.append(str(io.write_npy(out_dir / f"{stem}.npy", d)))
    if "png16" in formats:
        v, desc = png16_encoding(d, pred.kind)
        files.append(str(io.write_png16(out_dir / f"{stem}_depth16.png", v, scale=1.0)))  # v: encoded units
        entry.update(desc)
    color = colorize_prediction(pred, colormap)[0] if "color" in formats or "side" in formats else None
    if "color" in formats:
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_color.png", color)))
    if "side" in formats:
        if rgb is None:
            raise InputError("format 'side' needs the input image")
        rgb_np = rgb.permute(1, 2, 0).cpu().numpy()
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_side.png", side_by_side(rgb_np, color))))
    if "tiff" in formats:
        files.append(str(_write_tiff(out_dir / f"{stem}_depth.tif", pred, entry)))
    if "ply" in formats:
        files.append(str(_write_ply(out_dir / f"{stem}.ply", pred, rgb, intrinsics, ply_scale, entry)))
    entry["colormap"] = colormap if ("color" in formats or "side" in formats) else None
    return files, entry


def _write_tiff(path: Path, pred, entry: dict) -> Path:
    """float32 TIFF, NaN = invalid, with the CRS and transform of a georeferenced GeoTIFF input of the same size."""
    from depthlab.geo import georef_or_none, write_geotiff

    g = georef_or_none(pred.source)
    if g is not None and (g.height, g.width) != tuple(pred.depth.shape):
        g = None  # a prediction at another size cannot reuse the input's pixel grid
    out = write_geotiff(path, pred.depth, g)
    meta = g.to_meta() if g is not None else {}
    entry.update(tiff_nodata="nan", tiff_crs=meta.get("crs"), tiff_transform=meta.get("transform"))
    return out


def _write_ply(path: Path, pred, rgb: torch.Tensor | None, intrinsics, scale: float | None, entry: dict) -> Path:
    """Coloured point cloud (:mod:`depthlab.pointcloud`); intrinsics: the given ones, else a sidecar beside
    ``pred.source`` (:func:`~depthlab.pointcloud.find_intrinsics`), else the default guess."""
    from depthlab.pointcloud import locate_intrinsics, prediction_to_ply

    source = "given"
    if intrinsics is None and pred.source:
        intrinsics, source = locate_intrinsics(pred.source)
    colors = None if rgb is None else np.moveaxis(rgb.detach().cpu().numpy(), 0, -1)
    out, e = prediction_to_ply(path, pred.depth, colors, intrinsics, pred.kind, scale, source)
    entry.update(e)
    return out


def unique_stems(paths: list[Path]) -> dict[Path, str]:
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


__all__ = ["FORMATS", "PNG16_METRIC_SCALE", "parse_formats", "png16_encoding", "colorize_prediction", "valid_pixels",
           "write_outputs", "unique_stems"]
