"""Aerial orthophotos with co-registered LiDAR heights (normalised DSM), optionally tiled, read with rasterio."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from depthlab.data.base import DepthDataset, first_existing, make_sample, natural_key, read_csv_rows, read_list_file
from depthlab.errors import DataError, InputError, MissingFileError

#: the area categories of the aerial study, in its order (Depth Maps 1-11: residential areas, suburbs, a campus of
#: larger buildings, an industrial area, a garden centre, farms surrounded by fields / fields)
CATEGORIES = ("residential", "suburbs", "campus", "industrial", "garden_centre", "fields")
_TIF = (".tif", ".tiff")


class AerialHeights(DepthDataset):
    """Aerial orthophoto GeoTIFF tiles with LiDAR heights above ground (nDSM, metres) as the target.

    Layout::

        <root>/rgb/<name>.tif        orthophoto, 3 or 4 bands (R, G, B[, alpha/NIR]), uint8 or uint16
        <root>/height/<name>.tif     float32 height above ground in metres, same CRS/transform/shape; nodata -> invalid
        <root>/categories.csv        optional: name,category (one of CATEGORIES: residential | suburbs | campus |
                                     industrial | garden_centre | fields)
        <root>/splits/<split>.txt    optional: one name per line (without extension); all tiles when absent

    Target: ``sample["depth"]`` holds the **height above ground** in metres, not a distance from a camera:
    larger = higher = nearer to a nadir-looking sensor (the opposite sign of camera depth). Following the
    depthlab convention 0 = missing, heights <= 0 (bare ground at exactly 0, negative noise) and the
    raster's nodata are invalid (``mask`` False). Pairs are matched by file stem; an orthophoto without a
    height raster is a DataError from ``__getitem__``, as is a pair whose CRS, transform or shape differ
    (the message names both files).

    Args:
        root: the folder holding ``rgb/`` and ``height/``.
        split: ``train`` | ``val`` | ``test``; read from ``splits/<split>.txt`` when ``splits/`` exists.
        tile_size: cut each raster into ``tile_size`` x ``tile_size`` patches (windowed reads, the last
            row/column shifted back to the edge so all tiles are full-sized; see
            :func:`depthlab.geo.tile_windows`); ``None`` = whole rasters.
        categories: keep only tiles of these categories (needs ``categories.csv``).
        ground_height: when set (e.g. 0.01 m), valid heights below it (bare ground at 0, negative noise)
            are raised to it and stay valid targets, so a model is trained and scored on ground too (field
            tiles are mostly ground); only nodata is then invalid. Score such targets with MAE/RMSE: AbsRel
            is not meaningful near zero height. ``None`` keeps the depthlab convention (<= 0 invalid).
        rgb_max: white level of uint16 orthophotos (e.g. 4095 for 12-bit data); default: the dtype's maximum.

    Meta: ``name`` (``<stem>`` or ``<stem>_r<row>_c<col>`` for tiles, pixel offsets), ``category``, ``crs``
    (e.g. ``"EPSG:25832"``), ``transform`` (the tile's 6 affine coefficients, for GeoTIFF output),
    ``window`` (col_off, row_off, width, height), ``target`` = ``"height_above_ground"``, ``rgb_path``,
    ``depth_path``.
    """

    dataset_name = "aerial"
    category_order = CATEGORIES  # the order of figure rows by category (experiment report.samples_by)

    def __init__(self, root, split: str = "test", transform: Callable | None = None, tile_size: int | None = None,
                 categories: Iterable[str] | str | None = None, rgb_max: float | None = None,
                 ground_height: float | None = None):
        from depthlab.geo import read_georef, tile_windows

        if root is None:
            raise InputError("aerial needs root= (a folder with rgb/ and height/ GeoTIFFs)")
        super().__init__(root, split, transform)
        self.ground_height = None if ground_height is None else float(ground_height)
        self.rgb_dir, self.height_dir = self.root / "rgb", self.root / "height"
        if not self.rgb_dir.is_dir():
            raise MissingFileError(f"{self.rgb_dir}: aerial orthophoto folder not found")
        self.tile_size = int(tile_size) if tile_size is not None else None
        self.rgb_max = rgb_max
        self.category_of = {r["name"]: r["category"] for r in read_csv_rows(self.root / "categories.csv")
                            if r.get("name") and r.get("category")}
        stems = sorted((p.stem for p in self.rgb_dir.iterdir() if p.suffix.lower() in _TIF), key=natural_key)
        if (self.root / "splits").is_dir():
            listed = read_list_file(self.root / "splits" / f"{split}.txt")
            stems = [Path(s).stem for s in listed]  # names may carry an extension
        if categories is not None:
            wanted = [categories] if isinstance(categories, str) else list(categories)
            unknown = [c for c in wanted if c not in CATEGORIES]
            if unknown:
                raise InputError(f"unknown aerial categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                                 f"choose from {', '.join(CATEGORIES)}")
            if not self.category_of:
                raise MissingFileError(f"{self.root / 'categories.csv'}: needed to filter by category")
            stems = [s for s in stems if self.category_of.get(s) in wanted]
        # items: (name, stem, window or None); raster sizes come from the headers (cheap)
        self.items: list[tuple[str, str, object]] = []
        for stem in stems:
            rgb_path = self._raster(self.rgb_dir, stem)
            if self.tile_size is None:
                self.items.append((stem, stem, None))
                continue
            try:
                g = read_georef(rgb_path)
            except DataError:  # reported when the item is loaded; construction never fails on one file
                self.items.append((stem, stem, None))
                continue
            for w in tile_windows(g.height, g.width, self.tile_size):
                self.items.append((f"{stem}_r{int(w.row_off)}_c{int(w.col_off)}", stem, w))
        self.names = [n for n, _, _ in self.items]

    @functools.cached_property
    def gsd(self) -> float | None:
        """Ground sampling distance (metres per pixel) of the first orthophoto (:func:`depthlab.geo.raster_gsd`;
        ``None`` without items or a projected CRS). Training records it in the model (``depth_info.gsd``)."""
        from depthlab.geo import open_raster, raster_gsd

        if not self.items:
            return None
        with open_raster(self._raster(self.rgb_dir, self.items[0][1])) as src:
            return raster_gsd(src)

    def item_category(self, index: int) -> str | None:
        """``meta["category"]`` of item ``index`` without reading its rasters."""
        return self.category_of.get(self.items[index][1])

    @staticmethod
    def _raster(folder: Path, stem: str) -> Path:
        """``<folder>/<stem>.tif`` (or .tiff, any case); the .tif name when none exists (the reader reports it)."""
        found = first_existing(folder / f"{stem}{ext}" for ext in (".tif", ".tiff", ".TIF", ".TIFF"))
        return found or folder / f"{stem}.tif"

    def load_sample(self, index: int):
        from depthlab.geo import Georef, check_aligned, open_raster, require_rasterio, rgb_to_float

        require_rasterio()  # the install hint, not a bare ModuleNotFoundError
        from rasterio.windows import transform as window_transform

        name, stem, window = self.items[index]
        rgb_path, height_path = self._raster(self.rgb_dir, stem), self._raster(self.height_dir, stem)
        with open_raster(rgb_path) as src, open_raster(height_path) as hsrc:
            check_aligned(src, hsrc, rgb_path, height_path)
            if hsrc.count != 1:
                raise DataError(height_path, f"height raster must have 1 band, got {hsrc.count}")
            try:
                rgb = src.read(window=window)
            except Exception as e:
                raise DataError(rgb_path, f"cannot read orthophoto ({type(e).__name__}: {e})") from None
            try:
                height = hsrc.read(1, window=window, masked=True)
            except Exception as e:
                raise DataError(height_path, f"cannot read heights ({type(e).__name__}: {e})") from None
            tf = window_transform(window, src.transform) if window is not None else src.transform
            h, w = height.shape
            georef = Georef(src.crs, tf, w, h).to_meta()
        image = torch.from_numpy(np.ascontiguousarray(rgb_to_float(rgb, rgb_path, self.rgb_max)))
        valid = ~np.ma.getmaskarray(height)
        depth = np.ma.getdata(height).astype(np.float32)
        if self.ground_height is not None:
            depth = np.where(valid, np.maximum(depth, np.float32(self.ground_height)), depth)
        win = (int(window.col_off), int(window.row_off), int(window.width), int(window.height)) if window is not None \
            else (0, 0, w, h)
        meta = self.base_meta(name, category=self.category_of.get(stem), crs=georef["crs"],
                              transform=georef["transform"], window=win, target="height_above_ground",
                              rgb_path=str(rgb_path), depth_path=str(height_path))
        return make_sample(image, depth, meta, valid=valid, depth_path=height_path)


__all__ = ["AerialHeights", "CATEGORIES"]
