"""What the web page shows beyond the two images: colour scale, pixel readout, point cloud, warnings, samples.

Pure functions of a prediction (numpy in, JSON-able dicts or bytes out), so ``app.py`` stays a thin layer and
these are tested without a server.
"""
from __future__ import annotations

import base64
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.viz.colorize import DEFAULT_PERCENTILES as COLOR_PERCENTILES  # colorize's: the page's bar states it
READOUT_MAX_SIDE = 640  # the pixel readout grid: full resolution up to 640 px, else every s-th pixel
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg")


def png_bytes(array: np.ndarray, compress_level: int = 1, text: dict | None = None) -> bytes:
    """PNG bytes, with ``text`` as tEXt chunks (as :func:`depthlab.io.write_png` writes them); level 1 (fast
    deflate), the better trade for a response built per request."""
    import io

    from PIL import Image

    from depthlab.io import png_info

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level, pnginfo=png_info(text))
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def color_scale(depth: np.ndarray, valid: np.ndarray, kind: str, unit: str, colormap: str) -> dict[str, Any]:
    """The colour scale of the colourised depth: ``vmin``/``vmax`` (the values at the bar's two ends, in
    ``unit``; None when no pixel is valid), ``kind``, ``unit``, ``colormap``, ``percentiles`` and ``bar_png``
    (base64 256x1 PNG running from ``vmin`` on the left to ``vmax`` on the right).

    The limits come from :func:`depthlab.viz.colorize.color_limits` with colorize's defaults, and the bar is
    coloured by :func:`~depthlab.viz.colorize.colorize` itself, so both match the depth image exactly (depth:
    reversed map, near = warm; disparity: larger = nearer = warm).
    """
    from depthlab.viz.colorize import color_limits, colorize

    limits = color_limits(depth, mask=valid, percentiles=COLOR_PERCENTILES)
    out = {"vmin": None, "vmax": None, "kind": kind, "unit": unit, "colormap": colormap,
           "percentiles": list(COLOR_PERCENTILES), "bar_png": None}
    if limits is None:
        return out
    lo, hi = limits
    ramp = np.linspace(lo, hi, 256, dtype=np.float64)[None]
    bar = colorize(ramp, cmap=colormap, vmin=lo, vmax=hi, reverse=kind != "disparity")
    out.update(vmin=lo, vmax=hi, bar_png=b64(png_bytes(bar)))
    return out


def readout_grid(depth: np.ndarray, valid: np.ndarray, max_side: int = READOUT_MAX_SIDE) -> dict[str, Any]:
    """The depth values for the page's pixel readout: ``{"stride", "height", "width", "f32"}``.

    ``f32`` is base64 of little-endian float32 ``depth[::stride, ::stride]`` (row-major, NaN = invalid);
    ``stride`` = ceil(max(H, W) / ``max_side``), 1 (every pixel, exact) for images up to ``max_side``.
    Pixel (row r, column c) of the full map reads ``grid[r // stride, c // stride]``.
    """
    h, w = depth.shape
    stride = max(1, math.ceil(max(h, w) / max_side))
    grid = np.where(valid, depth, np.nan)[::stride, ::stride].astype("<f4")
    return {"stride": stride, "height": int(grid.shape[0]), "width": int(grid.shape[1]),
            "f32": b64(np.ascontiguousarray(grid).tobytes())}


def upload_warnings(image, name: str) -> list[str]:
    """One-line warnings about an upload that decodes but is probably not a photo.

    A single-channel 16-bit image (PIL modes ``I;16*`` / ``I``) is how depth maps are stored (NYU, KITTI,
    depthlab's own 16-bit PNGs): predicting depth from it is almost never what the user meant.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        return [f"{name}: single-channel 16-bit image -- this looks like a depth map, not a photo; "
                "the prediction treats it as a grey photo"]
    return []


def cloud_ply(pred, rgb: np.ndarray, max_side: int | None = None, scale: float | None = None) -> bytes:
    """A prediction as the coloured binary PLY that ``depthlab predict --formats ply`` writes, as bytes.

    ``rgb``: ``(H,W,3)`` at the depth's size, uint8 or float in [0, 1]. ``max_side``: keep every s-th pixel
    in both directions (s = ceil(max(H,W) / max_side)) for a light cloud in the browser; the intrinsics (a 60
    degree horizontal FOV guess at full resolution: uploads carry none) are divided by s, so each kept point is
    exactly where it is in the full cloud. ``scale``: metres per unit for relative/disparity models
    (ValueError without).
    """
    from depthlab.pointcloud import DEFAULT_HFOV_DEG, default_intrinsics, prediction_to_ply

    h, w = pred.depth.shape
    s = 1 if not max_side else max(1, math.ceil(max(h, w) / max_side))
    k = {key: v / s for key, v in default_intrinsics(h, w).items()}
    src = f"default {DEFAULT_HFOV_DEG:g} deg horizontal FOV guess" + (f", every {s}th pixel" if s > 1 else "")
    with tempfile.TemporaryDirectory(prefix="depthlab-web-") as tmp:
        path = Path(tmp) / "cloud.ply"
        prediction_to_ply(path, pred.depth[::s, ::s], rgb[::s, ::s], k, pred.kind, scale, src)
        return path.read_bytes()


def sample_images() -> dict[str, Path]:
    """The bundled NYU sample photos by file name (the page's *Example* button)."""
    from depthlab.demo import SAMPLES

    folder = SAMPLES / "rgb"
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in SAMPLE_SUFFIXES}


__all__ = ["png_bytes", "b64", "color_scale", "readout_grid", "upload_warnings", "cloud_ply", "sample_images",
           "COLOR_PERCENTILES", "READOUT_MAX_SIDE"]
