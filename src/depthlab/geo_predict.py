"""Prediction on georeferenced rasters of any size: sliding windows in, a Cloud-Optimised GeoTIFF out.

:func:`predict_raster` never holds a whole raster. It reads overlapping tiles through rasterio windows, runs
them through a :class:`depthlab.predictor.Predictor` in batches, blends neighbouring tiles with smooth
weights (:func:`blend_weights`) and streams finished rows to a tiled temporary GeoTIFF; GDAL's COG driver
then writes the published file (deflate, 512 px blocks, overviews). Memory is bounded by one row of tiles
(two float32 accumulators of ``tile x width``) plus the network's batch, not by the raster's height; a row's
last, smaller batch runs through the batch-1 ONNX Runtime session (:class:`depthlab.backends.Network`) and
freed heap memory is returned after every batch (:func:`heap_trimmer`), so peak memory is flat in the
raster's width too (docs/aerial.md).

Steps for one raster:

1. *Ground sampling distance.* When the model records the GSD it was trained at (``depth_info.gsd``, metres
   per pixel) and the raster's (projected CRS, metres) differs by more than 1 %, the raster is read through a
   :class:`rasterio.vrt.WarpedVRT` at the model's GSD (area average when shrinking, bilinear when
   enlarging), with a warning; ``resample=False`` keeps the raster's own pixels.
2. *Tiles* of the model's training size (``depth_info.input_size``, else 512 px) step by
   ``tile * (1 - overlap)`` (overlap 25 % by default); the last row and column are shifted back to end at the
   raster's edge (:func:`window_starts`, as :func:`depthlab.geo.tile_windows` does without overlap).
3. *Blend.* Each tile's prediction is weighted by :func:`blend_weights` (a raised-cosine ramp over the
   overlap, 1 inside) and the weighted sum is divided by the summed weights, so tile borders -- where a
   convolutional network sees padding instead of context -- hardly count and leave no seam.
4. *Output*: float32 in the model's unit (metres for metric models), NaN = nodata (where the input's mask is
   0), the source's CRS and transform unchanged (a resampled prediction is resampled back bilinearly), band
   description, unit and tags (model, kind, tile, overlap, GSDs). Written to a temporary file beside the
   output and renamed when complete: a killed run leaves no half-written output, and
   :func:`predict_rasters` skips outputs that exist (resumable).

:func:`predict_rasters_ray` runs the same per-raster job on Ray Data (``pip install 'depthlab[dist]'``): one
model per worker (GPU when asked for), streaming over the list of rasters, failed tasks retried, local or
cluster mode. docs/aerial.md has the commands.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from depthlab.errors import DataError, InputError, MissingFileError, item_reason
from depthlab.geo import GEOTIFF_EXTS, open_raster, raster_gsd, read_rgb_window, require_rasterio, window_starts

DEFAULT_TILE = 512  # tile side when the model declares no training size
DEFAULT_OVERLAP = 0.25
GSD_TOLERANCE = 0.01  # relative difference below which a raster is taken to be at the model's GSD
OUTPUT_SUFFIX = "_depth.tif"  # <stem>_depth.tif, as `depthlab predict --formats tiff` names it
COG_OPTIONS = dict(compress="DEFLATE", predictor="YES", blocksize=512, overviews="AUTO", resampling="AVERAGE")
GDAL_CACHE_MB = 256  # GDAL's default block cache is 5 % of RAM; capped unless GDAL_CACHEMAX is set


# --------------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over a ``height x width`` raster: ``rows`` x ``cols`` start offsets, each tile
    ``tile_h x tile_w`` (the raster's size in a dimension smaller than the tile)."""

    height: int
    width: int
    tile_h: int
    tile_w: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    overlap_h: int
    overlap_w: int

    @classmethod
    def plan(cls, height: int, width: int, tile: tuple[int, int], overlap: float) -> "TileGrid":
        if not 0 <= overlap < 1:
            raise InputError(f"overlap must be in [0, 1), got {overlap}")
        th, tw = min(int(tile[0]), height), min(int(tile[1]), width)
        oh, ow = int(round(th * overlap)), int(round(tw * overlap))
        rows = window_starts(height, th, max(1, th - oh))
        cols = window_starts(width, tw, max(1, tw - ow))
        return cls(height, width, th, tw, tuple(rows), tuple(cols), oh, ow)

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)


def _ramp(n: int, overlap: int, start_edge: bool = False, end_edge: bool = False) -> np.ndarray:
    """1-D weights over ``n`` pixels: a raised cosine ``sin^2(pi/2 * k / overlap)`` rising from 0 over the
    first and last ``overlap`` pixels, 1 in between. A side on the raster's edge (``start_edge``/``end_edge``)
    has no neighbour to give way to and stays 1; an overlap under 2 pixels gives plain averaging."""
    w = np.ones(n, dtype=np.float64)
    r = min(int(overlap), n // 2)
    if r >= 2:
        ramp = np.sin(0.5 * np.pi * np.arange(r) / r) ** 2
        if not start_edge:
            w[:r] = ramp
        if not end_edge:
            w[n - r:] = ramp[::-1]
    return w


def blend_weights(tile_h: int, tile_w: int, overlap_h: int, overlap_w: int,
                  edges: tuple[bool, bool, bool, bool] = (False, False, False, False)) -> np.ndarray:
    """``(tile_h, tile_w)`` float32 blending weights of one tile: the outer product of two raised-cosine ramps.

    ``edges`` = (top, bottom, left, right): which sides lie on the raster's edge (weight 1 there). Blended
    value = ``sum(w_i * d_i) / sum(w_i)`` over the tiles covering a pixel. A tile's border pixels, where a
    convolutional network sees padding instead of context, get weight 0 and give way to the neighbour whose
    interior covers them; the weights vary smoothly across the overlap, so tiles meet without a seam. A
    translation-equivariant network whose border effect is narrower than the ramp's zero gives exactly its
    whole-raster output (tests/test_geo_predict.py)."""
    top, bottom, left, right = edges
    return np.outer(_ramp(tile_h, overlap_h, top, bottom), _ramp(tile_w, overlap_w, left, right)).astype(np.float32)


def model_tile(info, tile: int | Sequence[int] | None) -> tuple[int, int]:
    """The tile ``(H, W)``: ``tile`` if given, else the weights' training size (``input_size``), else
    :data:`DEFAULT_TILE`; rounded up to the model's ``multiple_of``."""
    if tile is None:
        tile = info.input_size if info.input_size is not None else DEFAULT_TILE
    th, tw = (int(tile), int(tile)) if np.isscalar(tile) else (int(tile[0]), int(tile[1]))
    if th < 1 or tw < 1:
        raise InputError(f"tile must be positive, got {tile}")
    from depthlab.processing import padded_size

    return padded_size((th, tw), info.multiple_of)


# --------------------------------------------------------------------------------------------------
# One raster


@dataclass
class RasterOptions:
    """How :func:`predict_raster` tiles and reads: ``tile`` (None = the model's training size),
    ``overlap`` (fraction of the tile), ``resample`` (to the model's GSD), ``rgb_max`` (white level of
    16-bit data, see :func:`depthlab.geo.rgb_to_float`)."""

    tile: int | tuple[int, int] | None = None
    overlap: float = DEFAULT_OVERLAP
    resample: bool = True
    rgb_max: float | None = None


def _reader(src, model_gsd: float | None, resample: bool, path):
    """The dataset tiles are read from: ``src`` itself, or a WarpedVRT at the model's GSD."""
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    gsd = raster_gsd(src)
    if model_gsd is None or gsd is None or abs(gsd / model_gsd - 1) <= GSD_TOLERANCE:
        return src, gsd
    if not resample:
        warnings.warn(f"{path}: ground sampling distance {gsd:.4g} m, the model was trained at {model_gsd:.4g} m; "
                      "predicting at the raster's own (resample=False)", stacklevel=3)
        return src, gsd
    warnings.warn(f"{path}: ground sampling distance {gsd:.4g} m resampled to the model's {model_gsd:.4g} m "
                  "(pass resample=False / --no-resample to keep it)", stacklevel=3)
    s = model_gsd / gsd
    w, h = max(1, int(round(src.width / s))), max(1, int(round(src.height / s)))
    tf = src.transform * Affine.scale(src.width / w, src.height / h)
    how = Resampling.average if s > 1 else Resampling.bilinear
    return WarpedVRT(src, crs=src.crs, transform=tf, width=w, height=h, resampling=how), gsd


@functools.cache
def heap_trimmer() -> Callable[[], int]:
    """``trim()``: hand the C heap's free memory back to the system (glibc's ``malloc_trim(0)``; a no-op returning
    0 where there is none: macOS, Windows, musl).

    Why: the tile loop frees megabyte-sized buffers (tiles, network outputs, ONNX Runtime's per-run allocations)
    from several threads; glibc keeps freed memory in per-thread arenas, so the process's resident memory crept up
    with the number of tiles per row (docs/aerial.md, *Measured*). A trim after each batch is small next to the
    batch's network time."""
    import ctypes
    import ctypes.util

    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: 0
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return functools.partial(trim, 0)


def predict_strips(predictor, reader, grid: TileGrid, rgb_max=None, path="", on_tiles: Callable | None = None):
    """Yield ``(row0, rows)``: finished, blended output rows (float32 ``(n, width)``) from top to bottom.

    One row of tiles is predicted (batches of ``predictor.batch_size`` tiles) and added, weighted, into a
    ``tile_h x width`` accumulator; the rows above the next tile row's start are then final and leave. ``rows`` is
    a view of that accumulator, valid until the next row is asked for (copy it to keep it)."""
    import torch
    from rasterio.windows import Window

    th, tw, width = grid.tile_h, grid.tile_w, grid.width
    last_r, last_c = len(grid.rows) - 1, len(grid.cols) - 1
    weights: dict[tuple, np.ndarray] = {}  # by (top, bottom, left, right) edge flags; at most 9 kinds of tile
    acc = np.zeros((th, width), np.float32)
    wsum = np.zeros((th, width), np.float32)
    for i, r0 in enumerate(grid.rows):
        wins = [Window(c, r0, tw, th) for c in grid.cols]
        for chunk in (wins[b: b + predictor.batch_size] for b in range(0, len(wins), predictor.batch_size)):
            x = torch.stack([read_rgb_window(reader, w, rgb_max, path, indexes=[1, 2, 3]) for w in chunk])
            depth = predictor.predict_tensor(x)[:, 0].cpu().numpy()
            for w, d in zip(chunk, depth):
                c = int(w.col_off)
                key = (i == 0, i == last_r, c == grid.cols[0], c == grid.cols[last_c])
                if key not in weights:
                    weights[key] = blend_weights(th, tw, grid.overlap_h, grid.overlap_w, key)
                wt = weights[key]
                acc[:, c: c + tw] += d * wt
                wsum[:, c: c + tw] += wt
            heap_trimmer()()
            if on_tiles is not None:
                on_tiles(len(chunk))
        done = (grid.rows[i + 1] if i + 1 < len(grid.rows) else grid.height) - r0
        # in place: no width-sized temporaries per tile row (they fragmented the heap of wide rasters)
        yield r0, np.divide(acc[:done], wsum[:done], out=acc[:done])
        acc[: th - done], wsum[: th - done] = acc[done:], wsum[done:]  # numpy buffers overlapping copies
        acc[th - done:], wsum[th - done:] = 0, 0


def _masked(ds, rows: np.ndarray, r0: int) -> np.ndarray:
    """``rows`` (float32, starting at row ``r0`` of ``ds``'s grid) set to NaN, in place, where ``ds``'s dataset
    mask is 0; returns ``rows``."""
    from rasterio.windows import Window

    mask = ds.dataset_mask(window=Window(0, r0, rows.shape[1], rows.shape[0]))
    rows[mask == 0] = np.nan
    return rows


def _tiff_profile(ds) -> dict:
    """Tiled, uncompressed float32 scratch GeoTIFF on ``ds``'s grid (compression comes with the COG)."""
    return dict(driver="GTiff", width=ds.width, height=ds.height, count=1, dtype="float32", nodata=float("nan"),
                crs=ds.crs, transform=ds.transform, tiled=True, blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER")


def _resample_back(scratch: Path, src, out: Path, strip: int = 512) -> None:
    """Write ``scratch`` (a prediction at the model's GSD) onto ``src``'s grid, bilinear, strip by strip."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    with rasterio.open(scratch) as pred, WarpedVRT(pred, crs=src.crs, transform=src.transform, width=src.width,
                                                   height=src.height, resampling=Resampling.bilinear,
                                                   nodata=float("nan")) as vrt, \
            rasterio.open(out, "w", **_tiff_profile(src)) as dst:
        for r0 in range(0, src.height, strip):
            n = min(strip, src.height - r0)
            rows = vrt.read(1, window=Window(0, r0, src.width, n)).astype(np.float32, copy=False)
            dst.write(_masked(src, rows, r0), 1, window=Window(0, r0, src.width, n))


def _describe(path: Path, predictor, extra: dict) -> None:
    """Band description, unit and tags of the finished scratch file (the COG copy keeps them): those of every
    depthlab GeoTIFF (:func:`depthlab.outputs.tiff_tags`), and ``extra`` (how the raster was tiled)."""
    import rasterio

    from depthlab.geo import describe_band
    from depthlab.outputs import QUANTITY_LABELS, tiff_tags

    with rasterio.open(path, "r+") as dst:
        describe_band(dst, QUANTITY_LABELS[predictor.kind], predictor.unit,
                      tiff_tags(predictor.kind, predictor.unit, predictor.model_name) | extra)


def _threads() -> int:
    """Threads for GDAL's COG compression: torch's (the process's CPU budget, 1 in a Ray worker of 1 CPU).
    Blocks are compressed in parallel and written in order: the file is the same bytes whatever the count."""
    import torch

    return max(1, torch.get_num_threads())


def predict_raster(predictor, path, out_path, options: RasterOptions | None = None,
                   on_tiles: Callable | None = None) -> dict:
    """Predict one georeferenced raster (3/4 bands, uint8/uint16) into a COG at ``out_path``; returns a summary.

    ``predictor``: a :class:`~depthlab.predictor.Predictor` built with ``input_size=None`` (tiles are fed at
    their own size). ``on_tiles(n)`` is called after every batch of ``n`` tiles (progress)."""
    rasterio = require_rasterio()
    from rasterio.shutil import copy as gdal_copy

    from depthlab.io import atomic_path, temp_beside

    o = options or RasterOptions()
    path, out_path = Path(path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    env = {} if os.environ.get("GDAL_CACHEMAX") else {"GDAL_CACHEMAX": GDAL_CACHE_MB}
    with rasterio.Env(**env), open_raster(path) as src, atomic_path(out_path) as tmp_cog:
        if src.count not in (3, 4):
            raise DataError(path, f"orthophoto must have 3 or 4 bands, got {src.count}")
        reader, gsd = _reader(src, predictor.info.gsd, o.resample, path)
        grid = TileGrid.plan(reader.height, reader.width, model_tile(predictor.info, o.tile), o.overlap)
        # scratch files named as atomic_path names its temp files: a killed run's are removed by the next run
        scratch = [temp_beside(out_path), temp_beside(out_path)]
        try:
            with rasterio.open(scratch[0], "w", **_tiff_profile(reader)) as dst:
                for r0, rows in predict_strips(predictor, reader, grid, o.rgb_max, path, on_tiles):
                    dst.write(_masked(reader, rows, r0), 1, window=((r0, r0 + len(rows)), (0, grid.width)))
            final = scratch[0]
            if reader is not src:
                reader.close()
                _resample_back(scratch[0], src, scratch[1])
                final = scratch[1]
            tags = dict(source=path.name, tile=f"{grid.tile_h}x{grid.tile_w}", overlap=o.overlap, source_gsd=gsd,
                        model_gsd=predictor.info.gsd, resampled=reader is not src, backend=predictor.backend_used)
            _describe(final, predictor, tags)
            gdal_copy(str(final), str(tmp_cog), driver="COG", num_threads=str(_threads()),
                      **COG_OPTIONS)
        finally:
            for p in scratch:
                p.unlink(missing_ok=True)
    return {"input": str(path), "output": str(out_path), "width": grid.width, "height": grid.height,
            "tiles": grid.n_tiles, "resampled": tags["resampled"], "source_gsd": gsd}


# --------------------------------------------------------------------------------------------------
# Many rasters, one machine


@dataclass
class RasterReport:
    """What :func:`predict_rasters` did: written and skipped (output existed) rasters, failures with reasons."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def n_ok(self) -> int:
        """Rasters written by this run (skipped ones are not counted)."""
        return len(self.written)

    @property
    def any(self) -> bool:
        """Whether there were any rasters at all (written, skipped or failed)."""
        return bool(self.written or self.skipped or self.failures)


def is_raster_input(path) -> bool:
    """Whether ``path`` is a georeferenced GeoTIFF (a CRS in its header): the inputs predicted tile by tile."""
    from depthlab.geo import georef_or_none

    return Path(path).suffix.lower() in GEOTIFF_EXTS and georef_or_none(path) is not None


def output_path(out_dir, path) -> Path:
    """``<out_dir>/<stem>_depth.tif``: where the prediction of raster ``path`` goes."""
    return Path(out_dir) / f"{Path(path).stem}{OUTPUT_SUFFIX}"


def pending_rasters(paths: Sequence, out_dir, overwrite: bool = False) -> tuple[list[Path], list[Path]]:
    """(to predict, already done): an output that exists is complete (outputs are renamed into place). An input
    that is another input's output (a run again into the input folder: ``a_depth.tif`` beside ``a.tif``) is
    neither: it is left out."""
    todo, done = [], []
    stems: set[str] = set()
    paths = list(map(Path, paths))
    outputs = {os.path.realpath(output_path(out_dir, p)) for p in paths}
    for p in paths:
        if os.path.realpath(p) in outputs:
            continue
        if p.stem in stems:
            raise DataError(p, f"another input has the same name {p.stem!r}; outputs would overwrite each other")
        stems.add(p.stem)
        (done if output_path(out_dir, p).exists() and not overwrite else todo).append(p)
    return todo, done


def count_tiles(paths: Sequence, predictor, options: RasterOptions) -> int:
    """The number of tiles :func:`predict_raster` will run over ``paths`` (headers only; for progress)."""
    n = 0
    for p in paths:
        with warnings.catch_warnings(), open_raster(p) as src:
            warnings.simplefilter("ignore")
            reader, _ = _reader(src, predictor.info.gsd, options.resample, p)
            n += TileGrid.plan(reader.height, reader.width, model_tile(predictor.info, options.tile),
                               options.overlap).n_tiles
            if reader is not src:
                reader.close()
    return n


def _tile_progress(total: int):
    """A rich progress bar counting tiles, with rate and ETA; returns (bar, advance)."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    bar = Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = bar.add_task("tiles", total=total)
    return bar, lambda n: bar.advance(task, n)


def build_predictor(model, checkpoint_path=None, pretrained: bool = True, device: str = "cpu",
                    batch_size: int = 4, backend: str | None = None):
    """A :class:`~depthlab.predictor.Predictor` that feeds tiles at their own size (``input_size=None``);
    ``backend`` as the Predictor takes it (None: ``$DEPTHLAB_BACKEND``, else auto)."""
    from depthlab.predictor import Predictor

    return Predictor(model, device=device, checkpoint_path=checkpoint_path, pretrained=pretrained,
                     batch_size=batch_size, input_size=None, backend=backend)


def _plan(inputs, out_dir, overwrite: bool) -> tuple[RasterReport, list[Path]]:
    """The rasters of ``inputs`` still to predict, and a report listing those skipped as already done; removes
    the temp files a killed run left in ``out_dir`` (those untouched for :data:`~depthlab.io.ORPHAN_TEMP_AGE_S`:
    a live writer's are newer)."""
    from depthlab.io import list_images, remove_orphan_temps

    paths = list_images(inputs, exts=GEOTIFF_EXTS)
    if not paths:
        raise MissingFileError(f"no GeoTIFFs found in {inputs}")
    remove_orphan_temps(out_dir)
    report = RasterReport(out_dir=Path(out_dir))
    todo, done = pending_rasters(paths, out_dir, overwrite)
    report.skipped = [str(p) for p in done]
    return report, todo


def predict_rasters(inputs, out_dir, model="smp_unet_resnet34", checkpoint_path=None, pretrained: bool = True,
                    device: str = "cpu", batch_size: int = 4, options: RasterOptions | None = None,
                    overwrite: bool = False, progress: bool = False, predictor=None,
                    backend: str | None = None) -> RasterReport:
    """Predict every raster of ``inputs`` (files, folders, globs of GeoTIFFs) into ``<out_dir>/<stem>_depth.tif``.

    Resumable: rasters whose output exists are skipped (``overwrite=True`` redoes them); an interrupted run
    leaves no partial output. A raster that fails is reported in ``failures`` and the others go on."""
    options = options or RasterOptions()
    report, todo = _plan(inputs, out_dir, overwrite)
    if not todo:
        return report
    predictor = predictor or build_predictor(model, checkpoint_path, pretrained, device, batch_size, backend)
    bar, advance = _tile_progress(count_tiles(todo, predictor, options)) if progress else (None, None)
    if bar:
        bar.start()
    try:
        for p in todo:
            try:
                predict_raster(predictor, p, output_path(out_dir, p), options, advance)
                report.written.append(str(p))
            except (DataError, OSError, ValueError) as e:
                report.failures[str(p)] = item_reason(e)
    finally:
        if bar:
            bar.stop()
    return report


def write_mosaic_vrt(inputs, out_path) -> int:
    """A GDAL VRT mosaic of single-band rasters on one grid (same CRS, pixel size and alignment): the COGs of a
    whole area as one virtual raster that QGIS or GDAL read lazily. Written by hand because ``gdalbuildvrt``
    is GDAL's command-line tool, not part of rasterio's wheels; it writes the same VRT structure (one
    ``ComplexSource`` per file, placed by its pixel offset in the union of the extents)."""
    from xml.sax.saxutils import escape

    from depthlab.io import list_images

    rasterio = require_rasterio()
    from rasterio.dtypes import dtype_rev, typename_fwd  # numpy dtype name -> GDAL's (uint8 -> Byte)

    heads = []
    for p in list_images(inputs, exts=GEOTIFF_EXTS):
        with open_raster(p) as r:
            heads.append((p, r.crs, r.transform, r.width, r.height, r.nodata, r.dtypes[0], r.units[0]))
    if not heads:
        raise MissingFileError(f"no GeoTIFFs found in {inputs}")
    p0, crs, tf, *_ = heads[0]
    for p, c, t, *_ in heads[1:]:
        off = ((t.c - tf.c) / tf.a, (t.f - tf.f) / tf.e)
        if c != crs or (t.a, t.e, t.b, t.d) != (tf.a, tf.e, tf.b, tf.d) or any(abs(o - round(o)) > 1e-6 for o in off):
            raise DataError(p, f"not on the grid of {p0} (CRS, pixel size or pixel alignment differ)")
    cols = [round((t.c - tf.c) / tf.a) for _, _, t, *_ in heads]
    rows = [round((t.f - tf.f) / tf.e) for _, _, t, *_ in heads]
    x0, y0 = min(cols), min(rows)
    width = max(c + h[3] for c, h in zip(cols, heads)) - x0
    height = max(r + h[4] for r, h in zip(rows, heads)) - y0
    origin = tf * (x0, y0)
    nodata = heads[0][5]
    sources = "".join(
        f'    <ComplexSource><SourceFilename relativeToVRT="0">{escape(str(p.resolve()))}</SourceFilename>'
        f"<SourceBand>1</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{w}\" ySize=\"{h}\"/>"
        f'<DstRect xOff="{c - x0}" yOff="{r - y0}" xSize="{w}" ySize="{h}"/>'
        + (f"<NODATA>{nd}</NODATA>" if nd is not None else "") + "</ComplexSource>\n"
        for (p, _, _, w, h, nd, _, _), c, r in zip(heads, cols, rows))
    doc = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
           f"  <SRS>{escape(crs.to_wkt()) if crs else ''}</SRS>\n"
           f"  <GeoTransform>{origin[0]!r}, {tf.a!r}, {tf.b!r}, {origin[1]!r}, {tf.d!r}, {tf.e!r}</GeoTransform>\n"
           f'  <VRTRasterBand dataType="{typename_fwd[dtype_rev[heads[0][6]]]}" band="1">\n'
           + (f"    <NoDataValue>{nodata}</NoDataValue>\n" if nodata is not None else "")
           + (f"    <UnitType>{escape(heads[0][7])}</UnitType>\n" if heads[0][7] else "")
           + sources + "  </VRTRasterBand>\n</VRTDataset>\n")
    from depthlab.io import atomic_write

    with atomic_write(out_path, "w") as f:
        f.write(doc)
    with rasterio.open(out_path) as check:  # GDAL must read what was written
        check.read(1, window=((0, 1), (0, 1)))
    return len(heads)


# --------------------------------------------------------------------------------------------------
# Many rasters, many machines: Ray Data


class RasterWorker:
    """A Ray Data callable class: one model per worker process, one raster per row ``{"path": ...}``."""

    def __init__(self, model_spec: dict, out_dir: str, options: RasterOptions):
        self.predictor = build_predictor(**model_spec)
        self.out_dir, self.options = out_dir, options

    def __call__(self, batch: dict) -> dict:
        outs, errors = [], []
        for p in batch["path"]:
            try:
                outs.append(predict_raster(self.predictor, p, output_path(self.out_dir, p), self.options)["output"])
                errors.append("")
            except (DataError, OSError, ValueError) as e:  # a bad raster is a result, not a task to retry
                outs.append("")
                errors.append(item_reason(e))
        return {"path": np.asarray(batch["path"]), "output": np.asarray(outs), "error": np.asarray(errors)}


def require_ray():
    from depthlab.errors import require

    return require("ray", "dist", "distributed prediction (--ray)")


def predict_rasters_ray(inputs, out_dir, model="smp_unet_resnet34", checkpoint_path=None, pretrained: bool = True,
                        batch_size: int = 4, options: RasterOptions | None = None, overwrite: bool = False,
                        workers: int = 2, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
                        address: str | None = None, backend: str | None = None) -> RasterReport:
    """:func:`predict_rasters` on Ray Data: ``workers`` actors each hold one model (on a GPU when
    ``gpus_per_worker > 0``) and take rasters from a stream; a task whose worker dies (killed, out of memory,
    node lost) is retried on a restarted worker -- Ray Data's actor-pool policy, which retries without a limit
    (a Python error inside a raster's job is not retried: it comes back as that raster's failure). Outputs are
    bit-identical to the serial run (same code per raster). ``address``: None = the running cluster or a new local
    one (``ray.init()``), ``"auto"`` or ``ray://host:10001`` = a cluster. Outputs and skipping as in
    :func:`predict_rasters`."""
    ray = require_ray()
    options = options or RasterOptions()
    report, todo = _plan(inputs, out_dir, overwrite)
    if not todo:
        return report
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    model, checkpoint_path = (str(Path(v).resolve()) if isinstance(v, (str, os.PathLike)) and Path(v).exists() else v
                              for v in (model, checkpoint_path))  # local files: absolute for the workers
    from depthlab.backends import resolve_backend

    spec = dict(model=model, checkpoint_path=checkpoint_path, pretrained=pretrained, batch_size=batch_size,
                device="cuda" if gpus_per_worker > 0 else "cpu",
                backend=resolve_backend(backend))  # resolved here: the workers' environment may differ
    ds = ray.data.from_items([{"path": str(Path(p).resolve())} for p in todo], override_num_blocks=len(todo))
    rows = ds.map_batches(RasterWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=int(workers)),
                          fn_constructor_kwargs=dict(model_spec=spec, out_dir=str(Path(out_dir).resolve()),
                                                     options=options),
                          num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None).take_all()
    by_resolved = {str(Path(p).resolve()): str(p) for p in todo}
    for r in rows:
        src = by_resolved[str(r["path"])]
        if r["error"]:
            report.failures[src] = str(r["error"])
        else:
            report.written.append(src)
    # a retried task's first attempt was killed mid-raster: its temp files are left beside the output the retry
    # finished. All of this run's tasks are done, so those of its outputs are nobody's now.
    from depthlab.io import remove_orphan_temps

    remove_orphan_temps(out_dir, min_age_s=0, of=[output_path(out_dir, p).name for p in todo])
    return report


def predict_raster_inputs(inputs, out_dir, ray_address: str | None = None, workers: int = 2,
                          progress: bool = False, **kwargs) -> tuple[list[str], RasterReport]:
    """What ``depthlab predict`` does with georeferenced GeoTIFFs among ``inputs`` (files, folders, globs):
    predicts them with :func:`predict_rasters` (or :func:`predict_rasters_ray` when ``ray_address`` is given:
    ``"local"``, ``"auto"``, ``"ray://host:port"``) and returns the other inputs, for the image path, with the
    report. ``kwargs``: model, checkpoint_path, pretrained, device, batch_size, options, overwrite, backend."""
    from depthlab.io import list_images

    paths = list_images(inputs)
    if not paths:
        return list(map(str, [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)), RasterReport()
    rasters = [p for p in paths if is_raster_input(p)]
    others = [str(p) for p in paths if p not in rasters]
    if not rasters:
        return others, RasterReport()
    if ray_address is None:
        return others, predict_rasters(rasters, out_dir, progress=progress, **kwargs)
    device = kwargs.pop("device", "cpu")
    gpus = 1.0 if str(device).startswith("cuda") else 0.0
    return others, predict_rasters_ray(rasters, out_dir, address=ray_address, workers=workers,
                                       gpus_per_worker=gpus, **kwargs)


__all__ = ["predict_raster", "predict_rasters", "predict_rasters_ray", "predict_strips", "heap_trimmer",
           "blend_weights", "TileGrid", "RasterOptions", "RasterReport", "RasterWorker", "model_tile",
           "is_raster_input", "output_path", "pending_rasters", "count_tiles", "build_predictor",
           "predict_raster_inputs", "write_mosaic_vrt", "DEFAULT_TILE", "DEFAULT_OVERLAP", "OUTPUT_SUFFIX"]
