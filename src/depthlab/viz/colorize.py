"""Depth maps to colour images (matplotlib colormaps, robust percentile normalisation) and their colour bar."""
from __future__ import annotations

import functools
import threading

import numpy as np

from depthlab.errors import unknown_name

DEFAULT_PERCENTILES = (2, 98)  # colour limits of a map without given ones: these percentiles of its valid values


def get_cmap(name: str):
    """A matplotlib colormap by name; an unknown name raises ValueError with close matches."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise unknown_name("matplotlib colormap", name, matplotlib.colormaps, listed=False, n=5, cutoff=0.6) from None


@functools.lru_cache(maxsize=32)
def colormap_lut(name: str, reverse: bool = False) -> np.ndarray:
    """The colormap's own table as read-only uint8 RGB ``(N, 3)`` (matplotlib's entries, read once per name).

    :func:`colorize` indexes it as matplotlib's ``Colormap.__call__`` does (``min(int(t * N), N - 1)``), so the
    colours are identical, without matplotlib's per-call masked-array work (a third of the time of a
    640x480 colour PNG before)."""
    cm = get_cmap(name)
    if reverse:
        cm = cm.reversed()
    lut = np.ascontiguousarray(cm(np.arange(cm.N), bytes=True)[:, :3])
    lut.flags.writeable = False
    return lut


def _as_2d(a) -> np.ndarray:
    """(H,W), (1,H,W), (1,1,H,W) or (H,W,1) array/tensor -> (H,W) numpy (other shapes pass through)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def color_limits(values, vmin: float | None = None, vmax: float | None = None,
                 percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES,
                 mask=None) -> tuple[float, float] | None:
    """The ``(vmin, vmax)`` that :func:`colorize` maps onto the colormap's two ends (same arguments).

    Missing limits come from the ``percentiles`` of the valid values (finite and ``mask``), or their full
    min..max with ``percentiles=None``. ``None`` when no value is valid and a limit is missing.
    """
    v = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(v) if mask is None else np.isfinite(v) & _as_2d(mask).astype(bool)
    if vmin is not None and vmax is not None:
        return float(vmin), float(vmax)
    if not valid.any():
        return None
    vals = v[valid]
    lo, hi = np.percentile(vals, percentiles) if percentiles is not None else (vals.min(), vals.max())
    return float(lo) if vmin is None else float(vmin), float(hi) if vmax is None else float(vmax)


def colorize(depth, cmap: str = "Spectral_r", vmin: float | None = None, vmax: float | None = None,
             percentiles: tuple[float, float] | None = DEFAULT_PERCENTILES, invalid_color=(0, 0, 0),
             mask=None, reverse: bool = False) -> np.ndarray:
    """Colour a depth (or disparity) map: ``(H,W)`` array or tensor -> uint8 ``(H,W,3)`` RGB.

    Values are mapped linearly from ``[vmin, vmax]`` onto the colormap and clipped outside.
    Missing ``vmin``/``vmax`` come from the ``percentiles`` (default 2nd and 98th) of the valid pixels,
    which keeps a few outliers from washing out the image (``percentiles=None`` = full min..max).
    Valid = finite and ``mask`` (bool ``(H,W)``, True = valid) where given; the rest gets ``invalid_color``.
    ``reverse=True`` flips the colormap. With the default ``Spectral_r`` large values are warm (red):
    pass ``reverse=True`` for depth so that *near* is warm, keep it False for disparity.
    """
    d = _as_2d(depth).astype(np.float64, copy=False)
    if d.ndim != 2:
        raise ValueError(f"colorize expects an (H,W) map, got shape {np.shape(depth)}")
    valid = np.isfinite(d)
    if mask is not None:
        m = _as_2d(mask).astype(bool)
        if m.shape != d.shape:
            raise ValueError(f"mask shape {m.shape} does not match depth shape {d.shape}")
        valid &= m
    invalid = np.asarray(invalid_color, dtype=np.uint8)
    if not valid.any():
        return np.broadcast_to(invalid, d.shape + (3,)).copy()
    all_valid = bool(valid.all())
    lo, hi = color_limits(d if all_valid else d[valid], vmin=vmin, vmax=vmax, percentiles=percentiles)
    lut = colormap_lut(cmap, reverse)
    # Whole-array arithmetic in place (invalid pixels replaced at the end): boolean indexing costs more.
    if hi <= lo:
        t = np.full(d.shape, 0.5)
    else:
        t = np.subtract(d, lo)
        t /= hi - lo
    with np.errstate(invalid="ignore"):
        np.clip(t, 0.0, 1.0, out=t)
        t *= len(lut)
        np.minimum(t, len(lut) - 1, out=t)
    if not all_valid:
        t[~valid] = 0
    out = np.take(lut, t.astype(np.intp), axis=0)
    return out if all_valid else np.where(valid[..., None], out, invalid)


COLORBAR_BACKGROUND = (255, 255, 255)
_FONT_LOCK = threading.Lock()  # one cached FreeType face is shared: writer threads draw text one at a time


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """PIL's bundled font at ``size`` px (FreeType), or its fixed bitmap font where FreeType is missing."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType
        return ImageFont.load_default()


def format_limit(v: float) -> str:
    """A colour bar end value: 3 significant digits (``0.853``, ``4.21``, ``1.2e+03``)."""
    return f"{v:.3g}"


def colorbar(width: int, limits: tuple[float, float] | None, label: str, cmap: str = "Spectral_r",
             reverse: bool = False) -> np.ndarray:
    """A horizontal colour bar, uint8 ``(h, width, 3)`` on white, to put under a :func:`colorize` image.

    The ramp runs from ``vmin`` (left) to ``vmax`` (right) of ``limits`` and is coloured by :func:`colorize`
    with those limits, so it matches the image pixel for pixel; the two end values are written under its ends
    (:func:`format_limit`) and ``label`` (the quantity and its unit) between them. Sizes scale with ``width``
    (text 10-18 px). ``limits=None`` (no valid pixel): a grey ramp and ``label: no valid pixels``. A label
    that does not fit between the end values is left out; the ends are always drawn.
    """
    from PIL import Image, ImageDraw

    fs = int(np.clip(width // 40, 10, 18))
    pad, ramp_h = max(2, fs // 3), fs
    m = min(fs // 2, max(0, width // 8))  # side margin: room for the first and last glyph
    h = pad + ramp_h + 2 + int(fs * 1.3) + pad
    bar = np.empty((h, width, 3), np.uint8)
    bar[...] = COLORBAR_BACKGROUND
    rw = max(1, width - 2 * m)
    if limits is None:
        bar[pad:pad + ramp_h, m:m + rw] = 128
        ends, label = ("", ""), f"{label}: no valid pixels"
    else:
        ramp = np.linspace(limits[0], limits[1], rw, dtype=np.float64)[None]
        bar[pad:pad + ramp_h, m:m + rw] = colorize(ramp, cmap=cmap, vmin=limits[0], vmax=limits[1], reverse=reverse)
        ends = (format_limit(limits[0]), format_limit(limits[1]))
    img = Image.fromarray(bar)
    draw, y = ImageDraw.Draw(img), pad + ramp_h + 2
    with _FONT_LOCK:
        font = _font(fs)
        lw = draw.textlength(ends[0], font=font)
        rx = m + rw - draw.textlength(ends[1], font=font)
        draw.text((m, y), ends[0], fill=(0, 0, 0), font=font)
        draw.text((rx, y), ends[1], fill=(0, 0, 0), font=font)
        cw = draw.textlength(label, font=font)
        cx = (width - cw) / 2
        if cx >= m + lw + fs // 2 and cx + cw <= rx - fs // 2:
            draw.text((cx, y), label, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def side_by_side(rgb, depth_rgb, gap: int = 0) -> np.ndarray:
    """Two HxWx3 images (uint8 or float [0,1], same height) -> one uint8 image, left | right."""
    from depthlab.io import to_uint8

    imgs = [to_uint8(rgb), to_uint8(depth_rgb)]
    if imgs[0].shape[0] != imgs[1].shape[0]:
        raise ValueError(f"heights differ: {imgs[0].shape[0]} vs {imgs[1].shape[0]}")
    parts = [imgs[0]]
    if gap:
        parts.append(np.full((imgs[0].shape[0], gap, 3), 255, np.uint8))
    parts.append(imgs[1])
    return np.concatenate(parts, axis=1)


__all__ = ["colorize", "color_limits", "colorbar", "colormap_lut", "format_limit", "get_cmap", "side_by_side",
           "COLORBAR_BACKGROUND", "DEFAULT_PERCENTILES"]
