"""Depth maps to colour images (matplotlib colormaps, robust percentile normalisation)."""
from __future__ import annotations

import numpy as np

from depthlab.errors import unknown_name


def get_cmap(name: str):
    """A matplotlib colormap by name; an unknown name raises ValueError with close matches."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise unknown_name("matplotlib colormap", name, matplotlib.colormaps, listed=False, n=5, cutoff=0.6) from None


def _as_2d(a) -> np.ndarray:
    """(H,W), (1,H,W), (1,1,H,W) or (H,W,1) array/tensor -> (H,W) numpy (other shapes pass through)."""
    a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return a


def color_limits(values, vmin: float | None = None, vmax: float | None = None,
                 percentiles: tuple[float, float] | None = (2, 98), mask=None) -> tuple[float, float] | None:
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
             percentiles: tuple[float, float] | None = (2, 98), invalid_color=(0, 0, 0),
             mask=None, reverse: bool = False) -> np.ndarray:
    """Colour a depth (or disparity) map: ``(H,W)`` array or tensor -> uint8 ``(H,W,3)`` RGB.

    Values are mapped linearly from ``[vmin, vmax]`` onto the colormap and clipped outside.
    Missing ``vmin``/``vmax`` come from the ``percentiles`` (default 2nd and 98th) of the valid pixels,
    which keeps a few outliers from washing out the image (``percentiles=None`` = full min..max).
    Valid = finite and ``mask`` (bool ``(H,W)``, True = valid) where given; the rest gets ``invalid_color``.
    ``reverse=True`` flips the colormap. With the default ``Spectral_r`` large values are warm (red):
    pass ``reverse=True`` for depth so that *near* is warm, keep it False for disparity.
    """
    d = _as_2d(depth).astype(np.float64)
    if d.ndim != 2:
        raise ValueError(f"colorize expects an (H,W) map, got shape {np.shape(depth)}")
    valid = np.isfinite(d)
    if mask is not None:
        m = _as_2d(mask).astype(bool)
        if m.shape != d.shape:
            raise ValueError(f"mask shape {m.shape} does not match depth shape {d.shape}")
        valid &= m
    out = np.empty(d.shape + (3,), dtype=np.uint8)
    out[...] = np.asarray(invalid_color, dtype=np.uint8)
    if not valid.any():
        return out
    vals = d[valid]
    lo, hi = color_limits(vals, vmin=vmin, vmax=vmax, percentiles=percentiles)
    t = np.full(vals.shape, 0.5) if hi <= lo else np.clip((vals - lo) / (hi - lo), 0.0, 1.0)
    cm = get_cmap(cmap)
    if reverse:
        cm = cm.reversed()
    out[valid] = cm(t, bytes=True)[:, :3]
    return out


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


__all__ = ["colorize", "color_limits", "get_cmap", "side_by_side"]
