"""Build an ``aerial`` training set from survey-portal downloads: orthophoto tiles + LiDAR (DSM/DTM rasters,
XYZ grids or LAS/LAZ point clouds) -> chips of ``rgb/<name>.tif`` + ``height/<name>.tif`` (nDSM, metres),
``categories.csv``, ``splits/{train,val,test}.txt`` and ``prepare.json``, the layout
:class:`depthlab.data.aerial.AerialHeights` reads.

>>> from depthlab.data.aerial_prepare import prepare_aerial
>>> prepare_aerial("city", ortho=["dop/"], dsm=["dom/"], dtm=["dgm/"], height_crs="EPSG:25832")  # doctest: +SKIP

Steps (each chip is processed on its own, with windowed reads, so a 10000 x 10000 orthophoto is never loaded):

1. XYZ grids become GeoTIFFs and point clouds a DSM (highest return per cell) + DTM (ground class, gaps
   interpolated), written under ``<out>/sources/`` (see :mod:`depthlab.data.aerial_sources`).
2. Every orthophoto is cut into ``chip_size`` chips (:func:`depthlab.geo.tile_windows`).
3. The chips are split by spatial blocks (:func:`spatial_split`) before anything is written.
4. Per chip: DSM and DTM are reprojected and resampled onto the chip's grid with ``rasterio.warp.reproject``
   (several files of one kind are mosaicked, the first listed wins where they overlap), nDSM = DSM - DTM,
   negative heights are clipped to ground (0), and pixels where the DSM, the DTM or the orthophoto has no
   data are nodata (NaN). Orthophoto bands are copied unchanged (uint8/uint16, RGB or RGBI).
5. A chip's category is the most frequent class of the polygons rasterised on its grid, or its orthophoto
   tile's row in a per-tile CSV.

An orthophoto that no DSM/DTM file overlaps (a wrong CRS, a wrong tile) is a one-line DataError naming the
orthophoto and the nearest height file with both extents.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from depthlab.errors import DataError, InputError, OutputExistsError

SPLITS = ("train", "val", "test")
_PRIORITY = {"train": 0, "val": 1, "test": 2}  # a chip next to a higher-priority split's chip is dropped
_GDAL_EXTS = (".tif", ".tiff", ".vrt", ".asc")  # read in place by rasterio (.asc = ESRI ASCII grid)
_XYZ_EXTS = (".xyz", ".txt", ".csv")            # x y z lines: read_xyz_grid
_RASTER_EXTS = _GDAL_EXTS + _XYZ_EXTS
_LIDAR_EXTS = (".las", ".laz")


@dataclass
class Source:
    """One height raster opened for warping: ``path`` is read, ``origin`` is the file the user gave."""

    role: str  # "DSM" | "DTM"
    path: Path
    origin: Path
    dataset: object = None
    crs: object = None


@dataclass
class Chip:
    name: str
    tile: str
    window: object
    bounds: tuple  # (left, bottom, right, top) in the orthophoto's CRS
    split: str | None = None
    block: tuple = ()
    dropped: str | None = None
    valid_fraction: float = 0.0
    category: str | None = None


@dataclass
class PrepareResult:
    root: Path
    counts: dict = field(default_factory=dict)   # split -> number of chips written
    dropped: dict = field(default_factory=dict)  # chip name -> reason
    manifest: Path | None = None


# --------------------------------------------------------------------------------------------- inputs
def _expand(inputs, exts, what: str) -> list[Path]:
    from depthlab.io import list_images

    paths = list_images(list(inputs or []), exts=exts)
    for p in paths:
        if not p.is_file():
            raise DataError(p, f"{what} file not found")
    return paths


def _derive_sources(dsm, dtm, laz, height_crs, lidar_resolution, work: Path, progress=None) -> list[Source]:
    """GeoTIFFs are used in place; XYZ grids and point clouds are turned into GeoTIFFs under ``work``."""
    from depthlab.data.aerial_sources import lidar_surfaces, read_xyz_grid
    from depthlab.geo import Georef, write_geotiff

    out: list[Source] = []
    for role, paths in (("DSM", dsm), ("DTM", dtm)):
        for p in paths:
            if p.suffix.lower() not in _XYZ_EXTS:
                out.append(Source(role, p, p))
                continue
            if height_crs is None:
                raise DataError(p, "an XYZ grid carries no CRS: pass height_crs (e.g. EPSG:25832)")
            grid, tf = read_xyz_grid(p)
            target = work / f"{role.lower()}_{len(out):03d}_{p.stem}.tif"
            write_geotiff(target, grid, Georef(height_crs, tf, grid.shape[1], grid.shape[0]))
            out.append(Source(role, target, p))
    for p in laz:
        s = lidar_surfaces(p, lidar_resolution, crs=height_crs)
        if progress:
            progress(f"{p.name}: DSM + DTM at {lidar_resolution:g} m from {s.n_points} points ({s.n_ground} ground)")
        for role, grid in (("DSM", s.dsm), ("DTM", s.dtm)):
            target = work / f"{role.lower()}_{len(out):03d}_{p.stem}.tif"
            write_geotiff(target, grid, Georef(s.crs, s.transform, grid.shape[1], grid.shape[0]))
            out.append(Source(role, target, p))
    return out


def _overlapping(sources: list[Source], role: str, ortho_path: Path, ortho) -> list[Source]:
    """The ``role`` sources whose extent meets the orthophoto's; none is a DataError naming both files."""
    from rasterio.coords import disjoint_bounds
    from rasterio.warp import transform_bounds

    mine = [s for s in sources if s.role == role]
    if not mine:
        raise DataError(ortho_path, f"no {role} given: pass {role.lower()} rasters or LiDAR point clouds")
    hits, seen = [], []
    for s in mine:
        if s.crs is None:
            raise DataError(s.origin, f"{role} has no CRS, so it cannot be placed on {ortho_path} ({ortho.crs})")
        try:
            b = transform_bounds(s.crs, ortho.crs, *s.dataset.bounds)
        except Exception:  # outside the projection's domain
            b = (np.inf,) * 4
        seen.append((s, b))
        if np.all(np.isfinite(b)) and not disjoint_bounds(b, ortho.bounds):
            hits.append(s)
    if hits:
        return hits
    o = ortho.bounds
    s, b = min(seen, key=lambda sb: abs(sb[1][0] + sb[1][2] - o.left - o.right) + abs(sb[1][1] + sb[1][3] - o.bottom - o.top))

    def fmt(bb) -> str:
        bb = list(bb)
        ok = len(bb) == 4 and np.all(np.isfinite(bb))  # parentheses: rich markup would eat "[...]" in the CLI
        return "(" + ", ".join(f"{v:.1f}" for v in bb) + ")" if ok else "(outside its domain)"

    hint = ""
    if s.crs != ortho.crs and not disjoint_bounds(s.dataset.bounds, o):
        hint = f"; its coordinates would overlap read as {ortho.crs}: is its CRS (or height_crs) right?"
    others = f" nor any of {len(mine) - 1} other {role} file(s)" if len(mine) > 1 else ""
    raise DataError(ortho_path, f"does not overlap {role} {s.origin}{others}: orthophoto {ortho.crs} {fmt(o)}, "
                                f"{role} {s.crs} {fmt(s.dataset.bounds)} = {fmt(b)} in {ortho.crs}{hint}")


# --------------------------------------------------------------------------------------------- split
def spatial_split(bounds: np.ndarray, block_size: float, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0, buffer: float | None = 0.0):
    """Assign chips to train/val/test by square map blocks, then drop chips that touch another split.

    Args:
        bounds: ``(N,4)`` chip footprints (left, bottom, right, top) in one projected CRS (metres).
        block_size: side of the blocks in map units; blocks are aligned to multiples of it (so the same
            place lands in the same block whatever tiles are prepared together). A chip belongs to the block
            of its centre.
        fractions: target shares of chips for (train, val, test). Blocks are shuffled with ``seed`` and
            handed to test, then val, until each has its share; the rest is train.
        buffer: chips of train (or val) whose footprint lies within ``buffer`` map units of a val/test (or
            test) chip are dropped, so no kept chip touches or overlaps a chip of another split. ``0`` drops
            only touching/overlapping neighbours; ``None`` keeps everything.

    Returns ``(splits, blocks, dropped)``: a split name per chip, its block index ``(bx, by)``, and a bool
    mask of the chips dropped by the buffer.

    Why: neighbouring chips share buildings and trees cut at their common edge (and the last chip of a row
    overlaps its neighbour), the same roofs, shadows and flight strip; with a random per-chip split the
    test set holds halves of objects whose other halves were trained on, and test scores measure memory
    of the place instead of generalisation. Blocks keep whole neighbourhoods on one side; the buffer
    removes the remaining contact along block borders.
    """
    from scipy.spatial import cKDTree

    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    f = np.asarray(fractions, dtype=np.float64)
    if len(f) != 3 or (f < 0).any() or f.sum() <= 0:
        raise InputError(f"fractions must be three non-negative shares (train, val, test), got {tuple(fractions)}")
    if not block_size > 0:
        raise InputError(f"block_size must be positive, got {block_size}")
    f = f / f.sum()
    centres = np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])
    blocks = [tuple(v) for v in np.floor(centres / float(block_size)).astype(np.int64)]
    uniq = sorted(set(blocks))
    count = {u: 0 for u in uniq}
    for blk in blocks:
        count[blk] += 1
    split_of, done = {}, 0
    for i in np.random.default_rng(seed).permutation(len(uniq)):
        share = done / len(b)
        split_of[uniq[i]] = "test" if share < f[2] else ("val" if share < f[2] + f[1] else "train")
        done += count[uniq[i]]
    splits = [split_of[blk] for blk in blocks]
    dropped = np.zeros(len(b), dtype=bool)
    if buffer is not None and len(b) > 1:
        size = np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).max()
        tol = 1e-6 * size
        for i, j in cKDTree(centres).query_pairs(size + float(buffer) + tol):
            if splits[i] == splits[j]:
                continue
            gap = np.hypot(max(0.0, b[i, 0] - b[j, 2], b[j, 0] - b[i, 2]), max(0.0, b[i, 1] - b[j, 3], b[j, 1] - b[i, 3]))
            if gap <= float(buffer) + tol:
                dropped[i if _PRIORITY[splits[i]] < _PRIORITY[splits[j]] else j] = True
    return splits, blocks, dropped


# --------------------------------------------------------------------------------------------- per chip
def _warp(sources: list[Source], transform, shape, crs, resampling) -> np.ndarray:
    """The sources mosaicked onto one chip grid (float32, NaN = no data; the first source wins)."""
    import rasterio
    from rasterio.warp import reproject

    out = np.full(shape, np.nan, dtype=np.float32)
    for s in sources:
        tmp = np.full(shape, np.nan, dtype=np.float32)
        nodata = s.dataset.nodata
        if nodata is None and np.issubdtype(np.dtype(s.dataset.dtypes[0]), np.floating):
            nodata = np.nan
        reproject(rasterio.band(s.dataset, 1), tmp, src_nodata=nodata, dst_transform=transform, dst_crs=crs,
                  dst_nodata=np.nan, resampling=resampling)
        fill = np.isnan(out) & ~np.isnan(tmp)
        out[fill] = tmp[fill]
        if not np.isnan(out).any():
            break
    return out


def chip_ndsm(dsm: np.ndarray, dtm: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """nDSM = DSM - DTM (float32 metres); negative heights clipped to ground (0); NaN where DSM, DTM or
    ``valid`` (e.g. the orthophoto's mask) has no data."""
    h = (np.asarray(dsm, np.float32) - np.asarray(dtm, np.float32)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        h = np.where(h < 0, np.float32(0.0), h)
    if valid is not None:
        h = np.where(valid, h, np.float32(np.nan))
    return h


def _chip_category(polygons, chip: Chip, transform, shape) -> str | None:
    """Most frequent polygon class on the chip's pixels (ties: alphabetical), None when none covers it."""
    from rasterio.features import rasterize

    hits = polygons.query(chip.bounds)
    if not hits:
        return None
    labels = sorted({lab for _, lab in hits})
    code = {lab: i + 1 for i, lab in enumerate(labels)}
    raster = rasterize([(g, code[lab]) for g, lab in hits], out_shape=shape, transform=transform, fill=0,
                       dtype="uint8")
    counts = np.bincount(raster.ravel(), minlength=len(labels) + 1)[1:]
    return labels[int(counts.argmax())] if counts.any() else None


def _write_ortho_chip(path: Path, src, bands: np.ndarray, transform) -> None:
    """The orthophoto's bands of one chip, unchanged (dtype, band count, nodata, colour interpretation)."""
    import rasterio

    from depthlab.io import atomic_path

    c, h, w = bands.shape
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=c, dtype=bands.dtype.name,
                           crs=src.crs, transform=transform, nodata=src.nodata, compress="deflate") as dst:
            dst.write(bands)
            dst.colorinterp = src.colorinterp


def _process_chip(chip: Chip, src, ortho_path, dsm, dtm, root: Path, resampling, polygons, min_valid) -> None:
    """Write one chip's orthophoto and nDSM; sets ``valid_fraction``/``category`` or ``dropped``."""
    from rasterio.windows import transform as window_transform

    from depthlab.geo import Georef, write_geotiff

    w = chip.window
    tf, shape = window_transform(w, src.transform), (int(w.height), int(w.width))
    try:
        bands = src.read(window=w)
        ortho_ok = src.dataset_mask(window=w) > 0
    except Exception as e:
        raise DataError(ortho_path, f"cannot read window {w} ({type(e).__name__}: {e})") from None
    height = chip_ndsm(_warp(dsm, tf, shape, src.crs, resampling), _warp(dtm, tf, shape, src.crs, resampling),
                       ortho_ok)
    chip.valid_fraction = float(np.isfinite(height).mean())
    if chip.valid_fraction <= min_valid:
        chip.dropped = f"valid heights {chip.valid_fraction:.3f} <= min_valid {min_valid}"
        return
    if polygons is not None:
        chip.category = _chip_category(polygons, chip, tf, shape)
    _write_ortho_chip(root / "rgb" / f"{chip.name}.tif", src, bands, tf)
    write_geotiff(root / "height" / f"{chip.name}.tif", height, Georef(src.crs, tf, shape[1], shape[0]))


# --------------------------------------------------------------------------------------------- whole run
@dataclass
class _Tile:
    path: Path
    crs: object
    chips: list


def _plan_tiles(orthos: list[Path], chip_size: int) -> list[_Tile]:
    """Chip windows of every orthophoto (headers only); checks CRS, band count and unique names."""
    from rasterio.windows import bounds as window_bounds

    from depthlab.geo import open_raster, tile_windows

    tiles, stems = [], {}
    for p in orthos:
        if p.stem in stems:
            raise DataError(p, f"two orthophotos are named {p.stem!r} (also {stems[p.stem]}): chip names would clash")
        stems[p.stem] = p
        with open_raster(p) as src:
            if src.crs is None:
                raise DataError(p, "orthophoto has no CRS: it cannot be matched with LiDAR heights")
            if src.count not in (3, 4):
                raise DataError(p, f"orthophoto must have 3 or 4 bands (RGB or RGBI), got {src.count}")
            chips = [Chip(f"{p.stem}_r{int(w.row_off)}_c{int(w.col_off)}", p.stem, w, tuple(window_bounds(w, src.transform)))
                     for w in tile_windows(src.height, src.width, chip_size)]
            tiles.append(_Tile(p, src.crs, chips))
    return tiles


def _assign_splits(tiles: list[_Tile], block_size, fractions, seed, buffer) -> None:
    """:func:`spatial_split` over every chip, in the first orthophoto's CRS."""
    from rasterio.warp import transform_bounds

    crs = tiles[0].crs
    chips = [c for t in tiles for c in t.chips]
    bounds = np.array([c.bounds if t.crs == crs else transform_bounds(t.crs, crs, *c.bounds)
                       for t in tiles for c in t.chips])
    splits, blocks, dropped = spatial_split(bounds, block_size, fractions, seed, buffer)
    for c, s, b, d in zip(chips, splits, blocks, dropped):
        c.split, c.block = s, (int(b[0]), int(b[1]))
        if d:
            c.dropped = f"within buffer {buffer} of a chip of another split"


def _tile_categories(path: Path) -> dict[str, str]:
    """A per-tile CSV ``name,category`` (name = orthophoto file stem) -> {stem: category}."""
    from depthlab.data.aerial import CATEGORIES
    from depthlab.data.base import read_csv_rows

    rows = read_csv_rows(path)
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise DataError(path, "per-tile categories need a CSV with columns name,category")
    table = {Path(r["name"]).stem: r["category"] for r in rows if r.get("name") and r.get("category")}
    bad = sorted(set(table.values()) - set(CATEGORIES))
    if bad:
        raise DataError(path, f"categories {bad} are not aerial categories ({', '.join(CATEGORIES)})")
    return table


def _resampling(name: str):
    from rasterio.enums import Resampling

    try:
        return Resampling[name]
    except KeyError:
        raise InputError(f"unknown resampling {name!r}; use bilinear, cubic, nearest, average, ...") from None


def _write_lists(root: Path, chips: list[Chip]) -> dict[str, int]:
    from depthlab.io import atomic_write

    kept = [c for c in chips if c.dropped is None]
    counts = {}
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = [c.name for c in kept if c.split == split]
        counts[split] = len(names)
        with atomic_write(root / "splits" / f"{split}.txt", "w") as f:
            f.write("".join(f"{n}\n" for n in names))
    rows = [f"{c.name},{c.category}" for c in kept if c.category]
    if rows:
        with atomic_write(root / "categories.csv", "w") as f:
            f.write("name,category\n" + "".join(f"{r}\n" for r in rows))
    return counts


def _manifest(work: Path, chips: list[Chip], tiles: list[_Tile], sources: list[Source], options: dict,
              counts: dict) -> dict:
    def shown(p: Path) -> str:  # derived sources relative to the dataset folder (it is renamed afterwards)
        return p.relative_to(work).as_posix() if p.is_relative_to(work) else str(p)

    return {
        "format": "depthlab aerial prepare v1",
        "options": options,
        "crs": tiles[0].crs.to_string(),
        "orthophotos": [str(t.path) for t in tiles],
        "sources": [{"role": s.role, "path": shown(s.path), "from": str(s.origin)} for s in sources],
        "counts": counts,
        "chips": [{"name": c.name, "tile": c.tile, "split": c.split, "block": list(c.block),
                   "window": [int(c.window.col_off), int(c.window.row_off), int(c.window.width), int(c.window.height)],
                   "bounds": [float(v) for v in c.bounds], "valid_fraction": round(c.valid_fraction, 6),
                   "category": c.category, "dropped": c.dropped} for c in chips],
    }


def _build(work: Path, orthos, dsm, dtm, laz, opts: dict, progress) -> PrepareResult:
    from depthlab.data.aerial import CATEGORIES
    from depthlab.data.aerial_sources import read_category_polygons
    from depthlab.geo import open_raster
    from depthlab.io import write_json

    sources = _derive_sources(dsm, dtm, laz, opts["height_crs"], opts["lidar_resolution"], work / "sources", progress)
    tiles = _plan_tiles(orthos, opts["chip_size"])
    _assign_splits(tiles, opts["block_size"], opts["fractions"], opts["seed"], opts["buffer"])
    cats = opts["categories"]
    per_tile = _tile_categories(cats) if cats is not None and cats.suffix.lower() == ".csv" else None
    polygons: dict = {}  # CRS string -> polygons reprojected to it
    with contextlib.ExitStack() as stack:
        for s in sources:
            s.dataset = stack.enter_context(open_raster(s.path))
            s.crs = s.dataset.crs
        for t in tiles:
            if progress:
                progress(f"{t.path.name}: {len(t.chips)} chips")
            if cats is not None and per_tile is None and t.crs.to_string() not in polygons:
                polygons[t.crs.to_string()] = read_category_polygons(cats, opts["category_field"], t.crs, CATEGORIES)
            with open_raster(t.path) as src:
                hits = {role: _overlapping(sources, role, t.path, src) for role in ("DSM", "DTM")}
                for c in t.chips:
                    if c.dropped is None:
                        _process_chip(c, src, t.path, hits["DSM"], hits["DTM"], work, opts["resampling_enum"],
                                      polygons.get(t.crs.to_string()), opts["min_valid"])
                    if c.dropped is None and per_tile is not None:
                        c.category = per_tile.get(t.path.stem)
    chips = [c for t in tiles for c in t.chips]
    counts = _write_lists(work, chips)
    options = {k: (str(v) if isinstance(v, Path) or k == "height_crs" and v is not None else v)
               for k, v in opts.items() if k != "resampling_enum"}
    write_json(work / "prepare.json", _manifest(work, chips, tiles, sources, options, counts))
    return PrepareResult(work, counts, {c.name: c.dropped for c in chips if c.dropped})


def prepare_aerial(out, ortho: Iterable, dsm: Iterable = (), dtm: Iterable = (), laz: Iterable = (), *,
                   chip_size: int = 512, height_crs=None, lidar_resolution: float = 1.0,
                   resampling: str = "bilinear", categories=None, category_field: str = "category",
                   block_size: float = 500.0, fractions: Sequence[float] = (0.7, 0.15, 0.15), buffer: float | None = 0.0,
                   seed: int = 0, min_valid: float = 0.0, overwrite: bool = False,
                   progress: Callable[[str], None] | None = None) -> PrepareResult:
    """Build an ``aerial`` dataset folder at ``out`` from orthophotos and LiDAR (see the module docstring).

    Args:
        out: the folder to create (built as ``<out>.partial`` and renamed when complete).
        ortho: orthophoto GeoTIFFs (files, folders or globs): 3 or 4 bands, uint8 or uint16, with a CRS.
        dsm, dtm: surface and terrain models: GeoTIFFs or ``x y z`` ASCII grids (``.xyz``/``.txt``).
        laz: LAS/LAZ point clouds with ground classified (class 2); each gives a DSM and a DTM.
        chip_size: chip side in orthophoto pixels (edge chips are shifted back inside, overlapping).
        height_crs: CRS of the inputs that carry none (XYZ grids, point clouds without a CRS record).
        lidar_resolution: cell size in metres of the DSM/DTM gridded from point clouds.
        resampling: rasterio resampling of heights onto the orthophoto grid (``bilinear``, ``nearest`` ...).
        categories: per-chip categories from polygons (GeoPackage, GeoJSON, Shapefile; the most frequent
            ``category_field`` value on the chip) or a per-tile ``name,category`` CSV (``.csv``).
        block_size, fractions, seed, buffer: the spatial split (:func:`spatial_split`).
        min_valid: chips whose share of valid height pixels is not above this are dropped (default: only
            chips without any valid height).
        overwrite: replace an existing non-empty ``out``.
        progress: called with a line per orthophoto.

    Returns a :class:`PrepareResult` (chip counts per split, dropped chips with reasons); ``prepare.json``
    in ``out`` records the options, the derived sources and every chip's block, split and category.
    """
    from rasterio.crs import CRS

    from depthlab.geo import require_rasterio

    rasterio = require_rasterio()
    out = Path(out)
    orthos = _expand(ortho, (".tif", ".tiff", ".jp2", ".vrt"), "orthophoto")
    dsm_p, dtm_p = _expand(dsm, _RASTER_EXTS, "DSM"), _expand(dtm, _RASTER_EXTS, "DTM")
    laz_p = _expand(laz, _LIDAR_EXTS, "point cloud")
    if not orthos:
        raise InputError("no orthophoto given (ortho= files, folders or globs)")
    if not laz_p and not (dsm_p and dtm_p):
        raise InputError("heights need a DSM and a DTM (GeoTIFF or XYZ grids) or LiDAR point clouds (LAS/LAZ)")
    try:
        hcrs = CRS.from_user_input(height_crs) if height_crs else None
    except Exception:
        raise InputError(f"height_crs {height_crs!r} is not a CRS (e.g. EPSG:25832)") from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out}: exists and is not empty (pass overwrite=True / --overwrite)")
    opts = dict(chip_size=int(chip_size), height_crs=hcrs, lidar_resolution=float(lidar_resolution),
                resampling=resampling, resampling_enum=_resampling(resampling),
                categories=Path(categories) if categories else None, category_field=category_field,
                block_size=float(block_size), fractions=[float(f) for f in fractions], buffer=buffer,
                seed=int(seed), min_valid=float(min_valid))
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # GDAL's block cache defaults to 5 % of RAM and fills up as the chips walk through a large tile: 256 MB
    # keeps the process small (measured in docs/aerial.md) unless the user set GDAL_CACHEMAX.
    cache = {} if os.environ.get("GDAL_CACHEMAX") else {"GDAL_CACHEMAX": 256}
    try:
        with rasterio.Env(**cache):
            result = _build(work, orthos, dsm_p, dtm_p, laz_p, opts, progress)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    work.rename(out)
    result.root, result.manifest = out, out / "prepare.json"
    return result


__all__ = ["prepare_aerial", "PrepareResult", "spatial_split", "chip_ndsm", "SPLITS"]
