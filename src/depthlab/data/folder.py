"""Generic folder of images with optional depth maps (also the plain NYU/KITTI sample folders in mm or m/256)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from depthlab.data.base import (DepthDataset, first_existing, make_sample, read_csv_rows, read_intrinsics_csv,
                                unit_to_scale)
from depthlab.errors import DataError, InputError, MissingFileError
from depthlab.io import IMAGE_EXTS, list_images, read_depth, read_rgb, stays_inside

DEPTH_EXTS = (".png", ".npy", ".tif", ".tiff")
_IMAGE_DIR_NAMES = ("images", "rgb", "image", "color")


class FolderDataset(DepthDataset):
    """A folder of images (``images/`` or ``rgb/``) with an optional ``depth/`` folder matched by file stem.

    Layout (``root`` or ``root/<split>`` when that sub-folder holds the layout)::

        images/ or rgb/   <name>.png|jpg|...          RGB, any PIL-readable format
        depth/            <name>.png                  16-bit (or 8-bit) PNG, value * depth_scale = metres
                          <name>.npy                  float metres, (H,W) or (H,W,1)
                          <name>.tif|.tiff            float metres
        index.csv         optional: name,rgb,depth[,depth_unit][,category]  (paths relative to the folder)
        intrinsics.csv    optional: name,fx,fy,cx,cy[,...] in pixels (blank fields = unknown)

    Depth unit of PNGs: ``depth_scale`` (metres per unit) if given, else the row's ``depth_unit`` in
    ``index.csv`` (``mm`` -> 0.001, ``m/256`` -> 1/256, ``m`` -> 1), else ``default_depth_scale``. ``.npy`` and
    TIFF depths are metres already. 0 (and non-finite) = no measurement; ``mask = depth > 0``.

    Without ``depth/`` (or for an image with no depth file) a sample has depth zeros, an all-False mask and
    ``meta["has_depth"] = False`` -- useful for inference. When ``index.csv`` exists it defines the samples
    and their order; a file it names that is missing raises DataError from ``__getitem__``.

    Args:
        root: the folder. split: recorded in meta; if ``root/<split>/`` holds images it is used.
        depth_scale: metres per PNG unit, overriding everything else.
        default_depth_scale: used for PNGs when neither ``depth_scale`` nor ``index.csv`` gives a unit.
        image_dir / depth_dir: override the sub-folder names (relative to the folder, or absolute).
        dataset_name: value of ``meta["dataset"]``.
        allow_outside_root: let ``index.csv`` name files outside the folder (absolute paths, ``../``); by
            default such a row's sample is a DataError naming ``index.csv`` (the other samples still load).
    """

    dataset_name = "folder"

    def __init__(self, root, split: str = "test", transform: Callable | None = None, depth_scale: float | None = None,
                 default_depth_scale: float | None = None, image_dir=None, depth_dir=None,
                 dataset_name: str | None = None, allow_outside_root: bool = False):
        if root is None:
            raise InputError("folder dataset needs root= (a folder with images/ or rgb/, optionally depth/)")
        super().__init__(root, split, transform)
        if dataset_name:
            self.dataset_name = dataset_name
        if not self.root.is_dir():
            raise MissingFileError(f"{self.root}: dataset folder not found")
        base = self.root
        if split and (self.root / split).is_dir() and _find_image_dir(self.root / split, image_dir) is not None:
            base = self.root / split
        self.base = base
        self.depth_scale = unit_to_scale(depth_scale) if depth_scale is not None else None
        self.default_depth_scale = default_depth_scale
        self.intrinsics = read_intrinsics_csv(base / "intrinsics.csv")
        self.allow_outside_root = allow_outside_root
        self._refused: dict[int, str] = {}  # item index -> why index.csv's row is not read

        # items: (name, rgb_path, depth_path | None, scale | None, category | None)
        self._items: list[tuple[str, Path, Path | None, float | None, str | None]] = []
        rows = read_csv_rows(base / "index.csv")
        if rows and "rgb" in rows[0]:
            self._from_index(rows)
        else:
            self._from_listing(image_dir, depth_dir, rows)
        self.names = [it[0] for it in self._items]
        needs_scale = [it[2] for it in self._items if it[2] is not None and it[2].suffix.lower() == ".png" and it[3] is None]
        if needs_scale:
            raise InputError(f"{base}: PNG depth maps (e.g. {needs_scale[0].name}) need a unit: pass depth_scale= "
                             "(metres per unit, 0.001 for mm, 1/256 for KITTI) or add a depth_unit column to index.csv")

    # ----------------------------------------------------------------------------------------- discovery
    def _scale_for(self, unit: str | None) -> float | None:
        if self.depth_scale is not None:
            return self.depth_scale
        s = unit_to_scale(unit) if unit else None
        return s if s is not None else self.default_depth_scale

    def _from_index(self, rows):
        for row in rows:
            rgb = self.base / row["rgb"]
            name = row.get("name") or rgb.stem
            depth = self.base / row["depth"] if row.get("depth") else None
            outside = [self.base / c for c in (row["rgb"], row.get("depth")) if c and not self._inside(c)]
            if outside:
                self._refused[len(self._items)] = (
                    f"row {name!r} names {outside[0]}, outside the dataset folder; pass allow_outside_root=True "
                    "(--data-opt allow_outside_root=true) to read it")
            self._items.append((name, rgb, depth, self._scale_for(row.get("depth_unit")), row.get("category") or None))

    def _from_listing(self, image_dir, depth_dir, rows):
        img_dir = _find_image_dir(self.base, image_dir)
        if img_dir is None:
            raise MissingFileError(f"{self.base}: no images/ or rgb/ folder and no images in the folder itself")
        if depth_dir is not None:
            d_dir = Path(depth_dir) if Path(depth_dir).is_absolute() else self.base / depth_dir
        else:
            d_dir = self.base / "depth"
        d_dir = d_dir if d_dir.is_dir() and d_dir != img_dir else None
        by_name = {r.get("name"): r for r in rows if r.get("name")}
        images = [p for p in list_images(img_dir) if p.is_file()]
        stems = [p.stem for p in images]
        for p in images:
            name = p.stem if stems.count(p.stem) == 1 else p.name
            row = by_name.get(name, {})
            depth = None
            if d_dir is not None:
                depth = first_existing(d_dir / f"{p.stem}{ext}" for ext in DEPTH_EXTS)
            self._items.append((name, p, depth, self._scale_for(row.get("depth_unit")), row.get("category") or None))

    # ----------------------------------------------------------------------------------------- loading
    def _inside(self, cell: str) -> bool:
        return self.allow_outside_root or stays_inside(cell)

    def load_sample(self, index: int):
        if index in self._refused:
            raise DataError(self.base / "index.csv", self._refused[index])
        name, rgb_path, depth_path, scale, category = self._items[index]
        image = read_rgb(rgb_path)
        depth = None
        if depth_path is not None:
            is_png = depth_path.suffix.lower() == ".png"
            depth = read_depth(depth_path, scale if is_png else None)
        meta = self.base_meta(name, category=category, intrinsics=dict(self.intrinsics[name]) if name in self.intrinsics else None,
                              rgb_path=str(rgb_path), depth_path=str(depth_path) if depth_path is not None else None)
        meta["has_depth"] = depth is not None
        if depth is not None and is_png:
            meta["depth_scale"] = scale
        return make_sample(image, depth, meta, depth_path=depth_path)


def _find_image_dir(base: Path, image_dir=None) -> Path | None:
    if image_dir is not None:
        p = Path(image_dir) if Path(image_dir).is_absolute() else base / image_dir
        return p if p.is_dir() else None
    for n in _IMAGE_DIR_NAMES:
        if (base / n).is_dir():
            return base / n
    if any(p.suffix.lower() in IMAGE_EXTS for p in base.iterdir() if p.is_file()):
        return base
    return None


__all__ = ["FolderDataset", "DEPTH_EXTS"]
