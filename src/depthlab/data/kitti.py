"""KITTI raw frames with the depth benchmark's annotated ground truth, listed by Eigen-style split files."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from depthlab.data.base import DepthDataset, first_existing, make_sample, read_list_file, split_file_path
from depthlab.errors import DataError, InputError, MissingFileError
from depthlab.io import read_depth, read_rgb

KITTI_DEPTH_SCALE = 1.0 / 256.0
_DRIVE_RE = re.compile(r"(\d{4}_\d{2}_\d{2})_drive_\d{4}_sync")
_SHIPPED = {"test": "kitti_eigen_test.txt", "eigen_test": "kitti_eigen_test.txt"}


@dataclass
class KittiEntry:
    date: str
    drive: str               # e.g. 2011_09_26_drive_0002_sync
    frame: str               # 10 digits
    cam: str                 # image_02 (left) | image_03 (right)
    rgb_rel: str | None      # BTS lists: the listed RGB path; None -> standard raw layout
    gt_rel: str | None       # BTS lists: the listed GT path
    gt_listed_none: bool     # BTS "None": the list says there is no ground truth
    focal: float | None      # BTS lists: focal length in pixels


def parse_split_line(line: str) -> KittiEntry:
    """One line of a KITTI split list, in either format, -> :class:`KittiEntry`.

    * monodepth2: ``<date>/<drive> <frame index> <l|r>``
    * BTS:        ``<rgb relative path> <gt relative path | None> [<focal>]``
    """
    tok = line.split()
    if len(tok) >= 2 and tok[1].isdigit() and (len(tok) == 2 or tok[2] in ("l", "r")):
        m = _DRIVE_RE.search(tok[0])
        if not m:
            raise InputError(f"cannot find a <date>_drive_<n>_sync folder in {line!r}")
        cam = "image_03" if len(tok) > 2 and tok[2] == "r" else "image_02"
        return KittiEntry(m.group(1), m.group(0), f"{int(tok[1]):010d}", cam, None, None, False, None)
    m = _DRIVE_RE.search(tok[0])
    if not m:
        raise InputError(f"cannot find a <date>_drive_<n>_sync folder in {line!r}")
    cam = "image_03" if "image_03" in tok[0] else "image_02"
    frame = Path(tok[0]).stem
    gt = tok[1] if len(tok) > 1 else "None"
    focal = None
    if len(tok) > 2:
        try:
            focal = float(tok[2])
        except ValueError:
            focal = None
    none = gt.lower() == "none"
    return KittiEntry(m.group(1), m.group(0), frame, cam, tok[0], None if none else gt, none, focal)


def read_calib_cam_to_cam(path) -> dict[str, dict[str, float]]:
    """``calib_cam_to_cam.txt`` -> {"image_02": {fx,fy,cx,cy}, "image_03": {...}} from ``P_rect_02/03``."""
    out: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, vals = line.partition(":")
            m = re.fullmatch(r"P_rect_0(\d)", key.strip())
            if not m:
                continue
            v = [float(x) for x in vals.split()]
            if len(v) != 12:
                continue
            out[f"image_0{m.group(1)}"] = {"fx": v[0], "fy": v[5], "cx": v[2], "cy": v[6]}
    return out


class KITTIEigen(DepthDataset):
    """KITTI raw RGB + annotated depth ground truth, listed by an Eigen-style split file (697-frame Eigen test).

    Layout::

        <root>/<date>/<drive>/image_02/data/<frame>.png          raw RGB (left colour camera; image_03 = right)
        <root>/<date>/calib_cam_to_cam.txt                       optional: P_rect_02 -> intrinsics
        <gt_root>[/train|/val]/<drive>/proj_depth/groundtruth/image_02/<frame>.png
                                                                 16-bit PNG, v / 256 = metres, 0 = missing

    ``gt_root`` defaults to ``root``; the ``train/`` and ``val/`` sub-folders of the depth benchmark download
    are searched too. Ground truth stays sparse: ``mask = depth > 0``.

    Split lists (``split="test"`` uses the shipped ``splits/kitti_eigen_test.txt``; ``split_file=`` any other):
      * monodepth2 style ``<date>/<drive> <frame> <l|r>`` -- RGB from the raw layout above (``.png``, then
        ``.jpg``), ground truth searched in ``gt_root``;
      * BTS style ``<rgb path> <gt path | None> <focal>`` -- paths relative to ``root`` / ``gt_root`` (an RGB
        path without the date folder is also looked up under ``<root>/<date>/``).

    Missing ground truth: with ``require_gt=True`` (default) frames without ground truth are left out at
    construction -- BTS ``None`` lines, and monodepth2 lines whose GT file is found in none of the places
    above (``self.n_without_gt`` counts them). With ``require_gt=False`` they are kept, with depth zeros and an
    all-False mask (``meta["has_depth"] = False``). A GT path that a BTS list names but that is absent, or an
    absent RGB frame, raises DataError from ``__getitem__``.

    Intrinsics: ``P_rect_02`` (``P_rect_03`` for the right camera) of ``<root>/<date>/calib_cam_to_cam.txt``
    when present, else the focal of a BTS line with the principal point at the image centre
    (``meta["intrinsics_source"]`` says which).

    Meta ``name``: ``<drive>_<frame>`` (``_r`` appended for the right camera), ``category`` = the date.
    """

    dataset_name = "kitti"

    def __init__(self, root, split: str = "test", transform: Callable | None = None, gt_root=None,
                 split_file=None, require_gt: bool = True):
        if root is None:
            raise InputError("kitti needs root= (the KITTI raw data folder holding <date>/<drive>/...)")
        super().__init__(root, split, transform)
        if not self.root.is_dir():
            raise MissingFileError(f"{self.root}: KITTI root folder not found")
        self.gt_root = Path(gt_root) if gt_root is not None else self.root
        if split_file is None:
            if split not in _SHIPPED:
                raise InputError(f"no shipped KITTI list for split {split!r} (shipped: {sorted(_SHIPPED)}); pass split_file=")
            split_file = split_file_path(_SHIPPED[split])
        self.split_file = Path(split_file)
        self.require_gt = require_gt
        entries = [parse_split_line(ln) for ln in read_list_file(self.split_file)]
        kept: list[KittiEntry] = []
        self.n_without_gt = 0
        for e in entries:
            has_gt = (not e.gt_listed_none) and (e.gt_rel is not None or self._find_gt(e) is not None)
            if not has_gt:
                self.n_without_gt += 1
                if require_gt:
                    continue
            kept.append(e)
        if require_gt and entries and not kept:
            example = self._gt_candidates(entries[0])[0]
            raise MissingFileError(f"{self.gt_root}: no ground truth found for any of the {len(entries)} listed frames "
                                    f"(looked for e.g. {example}); pass gt_root= or require_gt=False")
        self.entries = kept
        self.names = [f"{e.drive}_{e.frame}" + ("_r" if e.cam == "image_03" else "") for e in kept]
        self._calib_cache: dict[str, dict | None] = {}

    # ----------------------------------------------------------------------------------------- paths
    def _gt_candidates(self, e: KittiEntry) -> list[Path]:
        rel = e.gt_rel or f"{e.drive}/proj_depth/groundtruth/{e.cam}/{e.frame}.png"
        return [self.gt_root / rel, self.gt_root / "train" / rel, self.gt_root / "val" / rel,
                self.gt_root / e.date / rel]

    def _find_gt(self, e: KittiEntry) -> Path | None:
        return first_existing(self._gt_candidates(e))

    def _rgb_path(self, e: KittiEntry) -> Path:
        if e.rgb_rel is not None:
            cands = [self.root / e.rgb_rel, self.root / e.date / e.rgb_rel]
        else:
            base = self.root / e.date / e.drive / e.cam / "data"
            cands = [base / f"{e.frame}.png", base / f"{e.frame}.jpg"]
        return first_existing(cands) or cands[0]

    def _calib(self, e: KittiEntry) -> dict | None:
        if e.date not in self._calib_cache:
            p = self.root / e.date / "calib_cam_to_cam.txt"
            try:
                self._calib_cache[e.date] = read_calib_cam_to_cam(p) if p.is_file() else None
            except (OSError, ValueError):
                self._calib_cache[e.date] = None
        return self._calib_cache[e.date]

    # ----------------------------------------------------------------------------------------- loading
    def load_sample(self, index: int):
        e = self.entries[index]
        rgb_path = self._rgb_path(e)
        image = read_rgb(rgb_path)
        _, h, w = image.shape
        depth = None
        gt_path = None
        if not e.gt_listed_none:
            if e.gt_rel is not None:
                gt_path = self._find_gt(e) or self._gt_candidates(e)[0]   # listed: a missing file is an error
            else:
                gt_path = self._find_gt(e)                              # derived: absent = no ground truth
            if gt_path is not None:
                if not gt_path.exists():
                    raise DataError(gt_path, "ground-truth file named by the split list is missing")
                depth = read_depth(gt_path, KITTI_DEPTH_SCALE)
        calib = self._calib(e)
        if calib and e.cam in calib:
            intr, src = dict(calib[e.cam]), "calib_cam_to_cam.txt"
        elif e.focal:
            intr, src = {"fx": e.focal, "fy": e.focal, "cx": w / 2.0, "cy": h / 2.0}, "split-list focal, centred principal point"
        else:
            intr, src = None, None
        meta = self.base_meta(self.names[index], category=e.date, intrinsics=intr, intrinsics_source=src,
                              rgb_path=str(rgb_path), depth_path=str(gt_path) if gt_path is not None else None,
                              drive=e.drive, frame=e.frame, camera=e.cam)
        meta["has_depth"] = depth is not None
        return make_sample(image, depth, meta, depth_path=gt_path)


__all__ = ["KITTIEigen", "parse_split_line", "read_calib_cam_to_cam", "KittiEntry", "KITTI_DEPTH_SCALE"]
