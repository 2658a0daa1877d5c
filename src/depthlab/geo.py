"""GeoTIFF helpers on top of rasterio: georeferencing, windowed tiling, RGB reading and float outputs.

Everything raster-shaped goes through rasterio (GDAL): no hand-written TIFF parsing. rasterio is an optional
dependency (``pip install 'depthlab[geo]'``); it is imported inside the functions so ``import depthlab`` works
without it, and a missing install gives a one-line hint.

Conventions:

* a raster's georeferencing is ``Georef(crs, transform, width, height)``; ``crs`` is a
  :class:`rasterio.crs.CRS` (or ``None`` for a plain image), ``transform`` an :class:`affine.Affine`
  mapping pixel (col, row) of the top-left corner of a pixel to map coordinates;
* tiles are :class:`rasterio.windows.Window` objects; the tile's own transform is
  ``rasterio.windows.transform(window, transform)``;
* float outputs are single-band float32 GeoTIFFs, invalid pixels = ``nodata`` (NaN by default).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.errors import DataError, one_line, require

GEOTIFF_EXTS = (".tif", ".tiff")


def require_rasterio():
    return require("rasterio", "geo", "GeoTIFF support")



@dataclass(frozen=True)
class Georef:
    """Where a raster lies: CRS (``None`` if unknown), affine transform, size in pixels."""

    crs: Any
    transform: Any
    width: int
    height: int

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None

    @classmethod
    def from_meta(cls, meta: dict[str, Any], shape: tuple[int, int] | None = None) -> "Georef":
        """Inverse of :meth:`to_meta`; also takes an aerial sample's ``meta`` (size from ``window`` or ``shape``)."""
        require_rasterio()
        from affine import Affine
        from rasterio.crs import CRS

        if shape is not None:
            h, w = shape
        elif "width" in meta and "height" in meta:
            h, w = meta["height"], meta["width"]
        else:
            w, h = meta["window"][2], meta["window"][3]
        crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
        return cls(crs, Affine(*[float(v) for v in meta["transform"][:6]]), int(w), int(h))

    def to_meta(self) -> dict[str, Any]:
        """JSON-friendly form used in sample meta and sidecars: ``crs`` string (EPSG code when there is one,
        else WKT), ``transform`` as the 6 affine coefficients ``[a, b, c, d, e, f]``."""
        crs = None
        if self.crs is not None:
            crs = self.crs.to_string() if self.crs.to_epsg() is None else f"EPSG:{self.crs.to_epsg()}"
        return {"crs": crs, "transform": [float(v) for v in tuple(self.transform)[:6]],
                "width": int(self.width), "height": int(self.height)}


def open_raster(path):
    """``rasterio.open(path)`` with a one-line DataError naming the file on failure."""
    rasterio = require_rasterio()
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as e:
        raise DataError(path, f"cannot open raster ({one_line(e)})") from None


def read_georef(path) -> Georef:
    """The CRS, transform and size of a raster file (reads the header only)."""
    with open_raster(path) as src:
        return Georef(src.crs, src.transform, src.width, src.height)


def georef_or_none(path) -> Georef | None:
    """:func:`read_georef` of a GeoTIFF that carries a CRS, else ``None`` (never raises)."""
    if path is None or Path(path).suffix.lower() not in GEOTIFF_EXTS:
        return None
    try:
        g = read_georef(path)
    except (DataError, ImportError):
        return None
    return g if g.is_georeferenced else None


def raster_gsd(src) -> float | None:
    """Ground sampling distance of an open raster in metres per pixel (mean of the x and y pixel sizes), or
    ``None`` when its CRS is missing or not projected (degrees cannot be compared with metres)."""
    if src.crs is None or not src.crs.is_projected:
        return None
    factor = src.crs.linear_units_factor[1]
    return float((abs(src.transform.a) + abs(src.transform.e)) / 2 * factor)


def check_aligned(a, b, path_a, path_b) -> None:
    """Raise DataError naming both files unless two open rasters share CRS, transform and shape."""
    problems = []
    if (a.height, a.width) != (b.height, b.width):
        problems.append(f"shape {a.width}x{a.height} vs {b.width}x{b.height} (WxH)")
    if a.crs != b.crs:
        problems.append(f"CRS {a.crs} vs {b.crs}")
    if not a.transform.almost_equals(b.transform, precision=1e-6):
        problems.append(f"transform {tuple(a.transform)[:6]} vs {tuple(b.transform)[:6]}")
    if problems:
        raise DataError(path_a, f"not co-registered with {path_b}: " + "; ".join(problems))


def window_starts(n: int, tile: int, stride: int) -> list[int]:
    """Start offsets of ``tile``-long windows stepping by ``stride`` over ``n`` pixels; the last one ends at
    ``n`` (shifted back, overlapping its neighbour more). ``n <= tile`` gives ``[0]``."""
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


def tile_windows(height: int, width: int, tile_size: int | None):
    """Windows covering a ``height x width`` raster with ``tile_size`` squares, row-major.

    Tiles step by ``tile_size``; the last row/column of tiles is shifted back to end at the raster's edge
    (overlapping its neighbour) so every tile is full-sized and no pixel is dropped. A raster smaller than
    ``tile_size`` in a dimension gives tiles of the raster's size in that dimension. ``None`` = one window.
    """
    from rasterio.windows import Window

    if tile_size is None:
        return [Window(0, 0, width, height)]
    if int(tile_size) < 1:
        raise ValueError(f"tile_size must be a positive number of pixels, got {tile_size}")
    t = int(tile_size)
    th, tw = min(t, height), min(t, width)
    return [Window(c, r, tw, th) for r in window_starts(height, t, t) for c in window_starts(width, t, t)]


def rgb_to_float(arr: np.ndarray, path, rgb_max: float | None = None) -> np.ndarray:
    """Band-first raster ``(C,H,W)`` with C in {3, 4} -> float32 ``(3,H,W)`` in [0,1].

    The first three bands are red, green, blue (a 4th band, alpha or near-infrared, is dropped). uint8 is
    divided by 255, uint16 by 65535 unless ``rgb_max`` (the sensor's white level, e.g. 4095 for 12-bit data)
    is given; values above ``rgb_max`` clip to 1.
    """
    if arr.ndim != 3 or arr.shape[0] not in (3, 4):
        raise DataError(path, f"orthophoto must have 3 or 4 bands, got {arr.shape[0] if arr.ndim == 3 else arr.ndim}")
    rgb = arr[:3]
    if rgb_max is None:
        if rgb.dtype == np.uint8:
            rgb_max = 255.0
        elif rgb.dtype == np.uint16:
            rgb_max = 65535.0
        else:
            raise DataError(path, f"orthophoto bands must be uint8 or uint16 (or pass rgb_max), got {rgb.dtype}")
    out = rgb.astype(np.float32) / np.float32(rgb_max)
    return np.clip(out, 0.0, 1.0)


def write_geotiff(path, array: np.ndarray, georef: Georef | None = None, nodata: float = float("nan"),
                  compress: str = "deflate", description: str | None = None, unit: str | None = None,
                  tags: dict | None = None) -> Path:
    """Write an ``(H,W)`` array as a single-band float32 GeoTIFF, atomically.

    Non-finite values become ``nodata`` (NaN by default, recorded in the file). With a georeferenced
    ``georef`` the file carries its CRS and transform; otherwise it is a plain float TIFF (no CRS, identity
    transform). ``description`` and ``unit`` are band 1's description and unit (rasterio ``descriptions[0]``,
    ``units[0]``); ``tags`` are written on the file and on band 1 (``tags()``, ``tags(1)``). Written into a
    rasterio MemoryFile, then through :func:`depthlab.io.atomic_write`.
    """
    rasterio = require_rasterio()
    from rasterio.io import MemoryFile

    from depthlab.io import atomic_write

    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"write_geotiff expects an (H,W) array, got shape {a.shape}")
    a = np.where(np.isfinite(a), a, np.float32(nodata)).astype(np.float32)
    h, w = a.shape
    profile: dict[str, Any] = dict(driver="GTiff", width=w, height=h, count=1, dtype="float32", nodata=nodata,
                                   compress=compress, predictor=3 if compress else None)
    profile = {k: v for k, v in profile.items() if v is not None}
    if georef is not None and georef.is_georeferenced:
        if (georef.height, georef.width) != (h, w):
            raise ValueError(f"georeferencing is for {georef.width}x{georef.height} pixels, array is {w}x{h}")
        profile.update(crs=georef.crs, transform=georef.transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(a, 1)
                describe_band(dst, description, unit, tags)
            data = mem.read()
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def describe_band(dst, description: str | None, unit: str | None, tags: dict | None) -> None:
    """Band 1's description, unit and tags (and the same tags on the file) on an open rasterio dataset."""
    if description:
        dst.set_band_description(1, description)
    if unit:
        dst.set_band_unit(1, unit)
    if tags:
        text = {str(k): str(v) for k, v in tags.items()}
        dst.update_tags(**text)
        dst.update_tags(1, **text)


def read_geotiff(path) -> tuple[np.ndarray, Georef, float | None]:
    """Band 1 of a raster as float32 ``(H,W)``, its :class:`Georef` and its nodata value."""
    with open_raster(path) as src:
        try:
            a = src.read(1).astype(np.float32)
        except Exception as e:
            raise DataError(path, f"cannot read raster ({one_line(e)})") from None
        return a, Georef(src.crs, src.transform, src.width, src.height), src.nodata


def read_rgb_raster(path, rgb_max: float | None = None, window=None, max_pixels: int | None = None):
    """A 3/4-band orthophoto (uint8 or uint16, any GDAL-readable raster) -> float32 ``(3,H,W)`` tensor in [0,1].

    For the rasters PIL cannot decode (16-bit multi-band GeoTIFFs); see :func:`rgb_to_float` for the scaling.
    ``max_pixels``: refuse (:class:`~depthlab.io.ImageTooLargeError`) a read of more pixels, before reading.
    """
    with open_raster(path) as src:
        if max_pixels is not None:
            from depthlab.io import check_pixels

            h, w = (window.height, window.width) if window is not None else (src.height, src.width)
            check_pixels(path, int(w), int(h), max_pixels)
        return read_rgb_window(src, window, rgb_max, path)


def read_rgb_window(src, window, rgb_max: float | None, path, indexes=None):
    """``window`` (None = all) of an open raster ``src`` -> float32 ``(3,H,W)`` tensor in [0,1]; ``indexes``: the
    bands to read (None = all); a read error is a :class:`DataError` naming ``path``."""
    import torch

    try:
        arr = src.read(indexes=indexes, window=window)
    except Exception as e:
        raise DataError(path, f"cannot read raster ({one_line(e)})") from None
    return torch.from_numpy(np.ascontiguousarray(rgb_to_float(arr, path, rgb_max)))


__all__ = ["read_rgb_raster", "read_rgb_window", "Georef", "open_raster", "read_georef", "georef_or_none",
           "raster_gsd", "check_aligned", "tile_windows", "rgb_to_float", "write_geotiff", "read_geotiff",
           "require_rasterio", "GEOTIFF_EXTS"]
