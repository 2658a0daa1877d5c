"""Readers for what survey portals publish next to orthophotos: XYZ height grids, LiDAR point clouds (LAS/LAZ)
and area polygons (GeoPackage, GeoJSON, Shapefile ...). Used by :mod:`depthlab.data.aerial_prepare`.

* :func:`read_xyz_grid` -- an ``x y z`` ASCII grid (NRW publishes DGM1/DOM1 so) -> float32 raster + transform.
* :func:`lidar_surfaces` -- a LAS/LAZ point cloud -> DSM (highest return per cell) and DTM (ground points,
  gridded, gaps interpolated) on one grid.
* :func:`read_category_polygons` -- polygons with a class field, reprojected, in an STRtree for per-chip queries.

Libraries: laspy (+ lazrs for LAZ), pyogrio + shapely for vectors, rasterio for CRSs and coordinate transforms,
scipy for the interpolation (``pip install 'depthlab[aerial]'``). All are imported inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthlab.errors import DataError, first_line, one_line, require

#: ASPRS classes: 2 = ground; 7 = low noise, 18 = high noise (never a surface)
GROUND_CLASS = 2
NOISE_CLASSES = (7, 18)


def _require(module: str):
    return require(module, "aerial", "preparing aerial data")


# ------------------------------------------------------------------------------------------------ XYZ grids
def _grid_axis(values: np.ndarray, path, axis: str) -> tuple[float, float, float | None]:
    """(min, max, step) of the distinct coordinates along one axis; step None for a single value.

    The step is the smallest gap between distinct coordinates; every coordinate must lie on that lattice."""
    u = np.unique(values)
    if len(u) == 1:
        return float(u[0]), float(u[0]), None
    step = float(np.diff(u).min())
    k = np.rint((u - u[0]) / step)
    if np.abs(u - (u[0] + k * step)).max() > 1e-3 * step:
        raise DataError(path, f"{axis} coordinates are not on a regular grid (smallest spacing {step:g})")
    return float(u[0]), float(u[-1]), step


def read_xyz_grid(path) -> tuple[np.ndarray, object]:
    """An ASCII grid of ``x y z`` lines (space, comma or semicolon separated, any line order, cell centres)
    -> float32 ``(H,W)`` north-up raster and its :class:`affine.Affine` transform; cells without a line are NaN.

    Hand-written over GDAL's XYZ driver (which rasterio could open) on purpose: GDAL fills missing cells with
    0 and sets no nodata, which would silently become a 0 m terrain under a DSM. XYZ carries no CRS: the
    caller supplies it.
    """
    from affine import Affine

    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = next((ln for ln in f if ln.strip() and not ln.lstrip().startswith("#")), "")
    except OSError as e:
        raise DataError(path, f"cannot read XYZ grid ({one_line(e)})") from None
    delim = "," if "," in first else (";" if ";" in first else None)
    try:
        float(first.replace(",", " ").replace(";", " ").split()[0])
        skip = 0
    except (ValueError, IndexError):
        skip = 1  # a header line such as "x y z"
    try:
        xyz = np.loadtxt(path, delimiter=delim, usecols=(0, 1, 2), dtype=np.float64, comments="#", skiprows=skip,
                         ndmin=2)
    except ValueError as e:
        raise DataError(path, f"not an 'x y z' text grid ({first_line(e)})") from None
    if len(xyz) < 2:
        raise DataError(path, f"XYZ grid needs at least 2 points, got {len(xyz)}")
    x0, x1, dx = _grid_axis(xyz[:, 0], path, "x")
    y0, y1, dy = _grid_axis(xyz[:, 1], path, "y")
    dx, dy = dx or dy, dy or dx  # a single row or column: square cells
    cols = np.rint((xyz[:, 0] - x0) / dx).astype(np.int64)
    rows = np.rint((y1 - xyz[:, 1]) / dy).astype(np.int64)
    grid = np.full((int(rows.max()) + 1, int(cols.max()) + 1), np.nan, dtype=np.float32)
    grid[rows, cols] = xyz[:, 2]
    return grid, Affine(dx, 0.0, x0 - dx / 2, 0.0, -dy, y1 + dy / 2)


# ------------------------------------------------------------------------------------------------ LAS / LAZ
def las_crs(header):
    """The CRS a LAS header declares (OGC WKT VLR, else the GeoTIFF keys' EPSG code) as a rasterio CRS, or None.

    Read here instead of ``header.parse_crs()``, which needs pyproj: depthlab's CRS type is rasterio's."""
    from laspy.vlrs.known import GeoKeyDirectoryVlr, WktCoordinateSystemVlr
    from rasterio.crs import CRS

    vlrs = list(header.vlrs) + list(getattr(header, "evlrs", None) or [])
    for vlr in vlrs:
        if isinstance(vlr, WktCoordinateSystemVlr) and vlr.string.strip("\x00 "):
            return CRS.from_wkt(vlr.string.strip("\x00 "))
    for vlr in vlrs:
        if isinstance(vlr, GeoKeyDirectoryVlr):
            keys = {k.id: k.value_offset for k in vlr.geo_keys}
            code = keys.get(3072) or keys.get(2048)  # ProjectedCSTypeGeoKey, GeographicTypeGeoKey
            if code and code != 32767:  # 32767 = user-defined
                return CRS.from_epsg(int(code))
    return None


@dataclass
class Surfaces:
    """A DSM and a DTM on one grid (float32 ``(H,W)`` metres, NaN = no data), its transform and CRS."""

    dsm: np.ndarray
    dtm: np.ndarray
    transform: object
    crs: object
    n_points: int
    n_ground: int


def fill_gaps(grid: np.ndarray, rim: int = 2) -> np.ndarray:
    """NaN cells of a gridded ground surface filled from the ground cells around them.

    Linear interpolation on the Delaunay triangulation of the ground cells (the TIN a DTM is classically built
    from: exact on planar ground, no overshoot between ground points, e.g. under buildings); outside the convex
    hull of the ground cells linear extrapolation is undefined, so the nearest ground cell's height is used.
    Only the ground cells within ``rim`` cells of a gap enter the triangulation, so a 1 km² DTM at 1 m whose
    gaps are buildings and water triangulates their borders instead of a million cells. For a gap surrounded
    by ground this changes nothing (a Delaunay triangle covering it has an empty circumcircle, so its corners
    are cells bordering the gap); where gaps cluster the triangles may differ from a full triangulation's,
    both interpolating linearly between nearby ground cells.
    """
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
    from scipy.ndimage import binary_dilation

    hole = np.isnan(grid)
    if not hole.any() or hole.all():
        return grid
    near = binary_dilation(hole, structure=np.ones((3, 3), bool), iterations=max(1, int(rim))) & ~hole
    known = np.argwhere(near).astype(np.float64)
    values = grid[near].astype(np.float64)
    want = np.argwhere(hole).astype(np.float64)
    filled = grid.copy()
    est = LinearNDInterpolator(known, values)(want) if len(known) >= 3 else np.full(len(want), np.nan)
    outside = np.isnan(est)
    if outside.any():  # the nearest ground cell of a gap cell always borders the gap, so it is in the rim
        est[outside] = NearestNDInterpolator(known, values)(want[outside])
    filled[hole] = est.astype(np.float32)
    return filled


def lidar_surfaces(path, resolution: float = 1.0, crs=None, chunk_size: int = 2_000_000) -> Surfaces:
    """A LAS/LAZ point cloud -> :class:`Surfaces` on a ``resolution`` metre grid aligned to multiples of it.

    DSM = the highest return in each cell (noise classes 7 and 18 ignored; cells without a return are NaN).
    DTM = the mean height of the ground-class (2) points in each cell, gaps filled by :func:`fill_gaps`.
    Points are read in chunks of ``chunk_size``, so a whole 1 km² tile is never held as float64 arrays.
    ``crs`` is used when the file declares none.
    """
    laspy = _require("laspy")
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    res = float(resolution)
    try:
        reader = laspy.open(path)
    except Exception as e:
        raise DataError(path, f"cannot open point cloud ({one_line(e)})") from None
    with reader:
        h = reader.header
        crs = las_crs(h) or crs
        if crs is None:
            raise DataError(path, "point cloud declares no CRS; pass height_crs (e.g. EPSG:25832)")
        x0, y0 = np.floor(h.mins[0] / res) * res, np.ceil(h.maxs[1] / res) * res
        shape = (int((y0 - h.mins[1]) // res) + 1, int((h.maxs[0] - x0) // res) + 1)
        n = shape[0] * shape[1]
        top = np.full(n, -np.inf)
        gsum, gcount, n_points = np.zeros(n), np.zeros(n), 0
        try:
            for pts in reader.chunk_iterator(chunk_size):
                x, y, z = np.asarray(pts.x), np.asarray(pts.y), np.asarray(pts.z)
                cls = np.asarray(pts.classification)
                r = np.clip(((y0 - y) // res).astype(np.int64), 0, shape[0] - 1)
                c = np.clip(((x - x0) // res).astype(np.int64), 0, shape[1] - 1)
                idx, keep, ground = r * shape[1] + c, ~np.isin(cls, NOISE_CLASSES), cls == GROUND_CLASS
                np.maximum.at(top, idx[keep], z[keep])
                gsum += np.bincount(idx[ground], weights=z[ground], minlength=n)
                gcount += np.bincount(idx[ground], minlength=n)
                n_points += len(x)
        except Exception as e:
            raise DataError(path, f"cannot read points ({one_line(e)})") from None
    if not gcount.any():
        raise DataError(path, f"no ground-class ({GROUND_CLASS}) points: classify the cloud first (e.g. PDAL's "
                              "filters.smrf) or use DSM/DTM rasters")
    from affine import Affine

    dsm = np.where(np.isfinite(top), top, np.nan).astype(np.float32).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        dtm = (gsum / gcount).astype(np.float32).reshape(shape)  # NaN where a cell has no ground point
    return Surfaces(dsm, fill_gaps(dtm), Affine(res, 0.0, x0, 0.0, -res, y0), crs, n_points, int(gcount.sum()))


# ------------------------------------------------------------------------------------------------ polygons
@dataclass
class CategoryPolygons:
    """Polygons with category labels in the orthophoto's CRS, and an STRtree over them."""

    geometries: list
    labels: list[str]
    tree: object
    path: Path

    def query(self, bounds) -> list[tuple[object, str]]:
        """(geometry, label) pairs whose envelope meets ``bounds`` = (left, bottom, right, top)."""
        import shapely

        hits = self.tree.query(shapely.box(*bounds))
        return [(self.geometries[i], self.labels[i]) for i in sorted(hits)]


def read_category_polygons(path, field: str, dst_crs, allowed=None) -> CategoryPolygons:
    """Polygons and their ``field`` values from any vector file GDAL/OGR reads (GeoPackage, GeoJSON,
    Shapefile, FlatGeobuf), reprojected to ``dst_crs``. Labels outside ``allowed`` are a DataError."""
    pyogrio = _require("pyogrio")
    shapely = _require("shapely")
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    try:
        info = pyogrio.read_info(path)
        if field not in list(info["fields"]):
            raise DataError(path, f"no field {field!r} (fields: {', '.join(map(str, info['fields'])) or 'none'})")
        meta, _, wkb, values = pyogrio.raw.read(path, columns=[field])
    except DataError:
        raise
    except Exception as e:
        raise DataError(path, f"cannot read polygons ({one_line(e)})") from None
    if not meta.get("crs"):
        raise DataError(path, "polygons declare no CRS")
    geoms = shapely.from_wkb(wkb)
    labels = ["" if v is None else str(v).strip() for v in values[0]]
    keep = [i for i, g in enumerate(geoms) if g is not None and not g.is_empty and labels[i]]
    geoms, labels = [geoms[i] for i in keep], [labels[i] for i in keep]
    if allowed is not None:
        bad = sorted(set(labels) - set(allowed))
        if bad:
            raise DataError(path, f"{field} values {bad} are not categories ({', '.join(allowed)})")
    src_crs = CRS.from_user_input(meta["crs"])
    if src_crs != dst_crs and geoms:
        def to_dst(xy):
            xs, ys = warp_transform(src_crs, dst_crs, xy[:, 0], xy[:, 1])
            return np.column_stack([xs, ys])

        geoms = list(shapely.transform(np.asarray(geoms, dtype=object), to_dst))
    return CategoryPolygons(geoms, labels, shapely.STRtree(geoms), path)


__all__ = ["read_xyz_grid", "lidar_surfaces", "Surfaces", "fill_gaps", "las_crs", "read_category_polygons",
           "CategoryPolygons", "GROUND_CLASS", "NOISE_CLASSES"]
