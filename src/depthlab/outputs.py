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
# the file each format writes: <stem><suffix> (see write_outputs)
OUTPUT_SUFFIXES = {"npy": ".npy", "png16": "_depth16.png", "color": "_color.png", "side": "_side.png",
                   "tiff": "_depth.tif", "ply": ".ply"}
SIDECAR = "predictions.json"
# What the values are, per output kind: the colour bar's label and the GeoTIFF band description.
QUANTITY_LABELS = {"metric": "depth (m)", "relative": "relative depth (no unit)",
                   "disparity": "disparity (relative, larger = nearer)"}
# PIL options of the PNGs written here: zlib level 1 with the run-length strategy (Z_RLE = 3), lossless like PIL's
# default level 6 with somewhat larger files, the right trade when writing is most of `depthlab predict`'s time.
# A 640x480 frame's 16-bit PNG: 7.6 ms / 137 kB, its colour PNG 10.1 ms / 83 kB (idle 2-core EPYC,
# `python benchmarks/outputs_speed.py` -> benchmarks/results/outputs_speed.json).
PNG_OPTIONS = {"compress_level": 1, "compress_type": 3}


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


def png16_text(desc: dict, pred) -> dict[str, str]:
    """The tEXt chunks of a 16-bit PNG (from :func:`png16_encoding`'s ``desc``), so the file alone says what it
    holds: ``kind``, ``unit`` (of the decoded value), ``scale`` and ``offset`` (``x = value * scale + offset``
    for ``value > 0``), ``invalid`` (``0``), ``decode`` (the rule in words), ``model`` and ``Software``."""
    from depthlab import __version__

    if "png16_scale" in desc:
        scale, offset = desc["png16_scale"], 0.0
    else:
        scale = (desc["png16_max"] - desc["png16_min"]) / 65534
        offset = desc["png16_min"] - scale
    return {"kind": pred.kind, "unit": pred.unit, "scale": repr(float(scale)), "offset": repr(float(offset)),
            "invalid": "0", "decode": desc["png16_decode"], "model": pred.model or "",
            "Software": f"depthlab {__version__}"}


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
    ``png16``: tEXt chunks with kind, unit, scale and offset (:func:`png16_text`). ``color``/``side``: a colour
    bar under the colour image, its limits in the entry (``color_vmin``/``color_vmax``).
    ``tiff``: ``<stem>_depth.tif`` float32, NaN = invalid, CRS/transform copied from a georeferenced GeoTIFF
    input, band description/unit and kind tags. ``ply``: ``<stem>.ply`` coloured point cloud; ``intrinsics``
    (fx,fy,cx,cy) else a sidecar beside the input (:func:`depthlab.pointcloud.find_intrinsics`) else a 60 degree
    FOV guess; relative/disparity need ``ply_scale``. See docs/outputs.md."""
    from depthlab import io
    from depthlab.processing import to_float01

    out_dir, d = Path(out_dir), pred.depth
    files, entry = [], {"kind": pred.kind, "unit": pred.unit, "height": d.shape[0], "width": d.shape[1]}
    finite = np.isfinite(d)
    if finite.any():
        entry.update(min=float(d[finite].min()), max=float(d[finite].max()))
    if "npy" in formats:
        files.append(str(io.write_npy(out_dir / f"{stem}.npy", d)))
    if "png16" in formats:
        v, desc = png16_encoding(d, pred.kind)
        text = png16_text(desc, pred)
        files.append(str(io.write_png(out_dir / f"{stem}_depth16.png", v, text, **PNG_OPTIONS)))
        entry.update(desc)
    if "color" in formats or "side" in formats:
        files += _write_color(pred, rgb, out_dir, stem, formats, colormap, entry)
    if "tiff" in formats:
        files.append(str(_write_tiff(out_dir / f"{stem}_depth.tif", pred, entry)))
    if "ply" in formats:
        rgb = None if rgb is None else to_float01(rgb)
        files.append(str(_write_ply(out_dir / f"{stem}.ply", pred, rgb, intrinsics, ply_scale, entry)))
    entry.setdefault("colormap", None)
    return files, entry


def _write_color(pred, rgb, out_dir: Path, stem: str, formats: Sequence[str], colormap: str,
                 entry: dict) -> list[str]:
    """``color`` (colour image over its colour bar) and ``side`` (input | colour image, the bar under the colour
    half); records the colour scale in ``entry``: ``colormap``, ``color_vmin``/``color_vmax`` (the values at
    the bar's ends, null without a valid pixel) and ``color_percentiles``."""
    from depthlab import io
    from depthlab.viz.colorize import COLORBAR_BACKGROUND, DEFAULT_PERCENTILES, color_limits, colorbar, side_by_side

    if "side" in formats and rgb is None:
        raise InputError("format 'side' needs the input image")
    limits = color_limits(pred.depth, mask=valid_pixels(pred.depth, pred.kind))
    color = colorize_prediction(pred, colormap, *(limits or (None, None)))[0]
    bar = colorbar(color.shape[1], limits, QUANTITY_LABELS[pred.kind], colormap, reverse=pred.kind != "disparity")
    lo, hi = limits if limits is not None else (None, None)
    entry.update(colormap=colormap, color_vmin=lo, color_vmax=hi, color_percentiles=list(DEFAULT_PERCENTILES))
    text = {"kind": pred.kind, "unit": pred.unit, "colormap": colormap, "vmin": repr(lo), "vmax": repr(hi),
            "model": pred.model or ""}
    files = []
    if "color" in formats:
        img = np.concatenate([color, bar])
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_color.png", img, text, **PNG_OPTIONS)))
    if "side" in formats:
        rgb_np = io.to_uint8(rgb.permute(1, 2, 0).cpu().numpy())
        pair = side_by_side(rgb_np, color)
        blank = np.full((bar.shape[0], rgb_np.shape[1], 3), COLORBAR_BACKGROUND, np.uint8)
        under = np.concatenate([blank, bar], axis=1)
        files.append(str(io.write_rgb_png(out_dir / f"{stem}_side.png", np.concatenate([pair, under]), text,
                                          **PNG_OPTIONS)))
    return files


def tiff_tags(kind: str, unit: str, model: str | None) -> dict[str, str]:
    """The tags of every depth GeoTIFF depthlab writes (``--formats tiff`` and the tiled raster path alike)."""
    from depthlab import __version__

    return {"kind": kind, "unit": unit, "model": model or "", "software": f"depthlab {__version__}"}


def _write_tiff(path: Path, pred, entry: dict) -> Path:
    """float32 TIFF, NaN = invalid, with the CRS and transform of a georeferenced GeoTIFF input of the same size."""
    from depthlab.geo import georef_or_none, write_geotiff

    g = georef_or_none(pred.source)
    if g is not None and (g.height, g.width) != tuple(pred.depth.shape):
        g = None  # a prediction at another size cannot reuse the input's pixel grid
    tags = tiff_tags(pred.kind, pred.unit, pred.model)
    out = write_geotiff(path, pred.depth, g, description=QUANTITY_LABELS[pred.kind], unit=pred.unit, tags=tags)
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


def output_clashes(paths: Sequence[Path], stems: dict[Path, str], out_dir: Path,
                   formats: Sequence[str]) -> dict[str, str]:
    """Inputs whose outputs (or the sidecar) would replace an input file -> one-line reason.

    ``depthlab predict DIR --out DIR`` with ``a.png`` and ``a_color.png`` in DIR would overwrite the input
    ``a_color.png`` with ``a.png``'s colourised depth: such inputs are skipped, never written over."""
    import os

    inputs = {os.path.realpath(p): p for p in paths}
    sidecar = os.path.realpath(Path(out_dir) / SIDECAR)
    if sidecar in inputs:
        raise InputError(f"{inputs[sidecar]}: an input is named {SIDECAR}, which depthlab predict writes in "
                         f"{out_dir}; choose another --out")
    out = {}
    for p in paths:
        hit = [inputs[o] for o in (os.path.realpath(Path(out_dir) / f"{stems[p]}{OUTPUT_SUFFIXES[f]}")
                                   for f in formats) if o in inputs]
        if hit:
            out[str(p)] = (f"its output would overwrite the input {hit[0]}; not predicted (write to another "
                           "folder: --out / out_dir)")
    return out


__all__ = ["OUTPUT_SUFFIXES", "SIDECAR", "output_clashes", "FORMATS", "PNG16_METRIC_SCALE", "PNG_OPTIONS",
           "QUANTITY_LABELS", "parse_formats", "tiff_tags", "png16_encoding",
           "png16_text", "valid_pixels", "colorize_prediction", "write_outputs", "unique_stems"]
