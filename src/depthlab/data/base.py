"""Shared machinery of the dataset readers: the base class, sample assembly and small file helpers.

Every reader returns the :class:`depthlab.types.Sample` dict::

    {"image": float32 (3,H,W) in [0,1],
     "depth": float32 (1,H,W) in metres, 0 = no measurement,
     "mask":  bool (1,H,W), True = valid ground-truth pixel,
     "meta":  {"name", "dataset", "split", optional "category", "intrinsics" {fx,fy,cx,cy} (pixels),
               "rgb_path", "depth_path", ...}}

Unit conversion happens in the reader. A bad item (undecodable file, a file a split list names but that is
missing, depth size != image size) raises :class:`depthlab.errors.DataError` from ``__getitem__`` only, so
constructing a dataset never fails because of one bad item and evaluation can skip it and go on.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from depthlab.errors import DataError, InputError, MissingFileError

SPLITS_DIR = Path(__file__).resolve().parent / "splits"


class DepthDataset(Dataset):
    """Base class: subclasses fill ``self.names`` and implement :meth:`load_sample`.

    ``__getitem__(i)`` = ``load_sample(i)`` then ``self.transform(sample)`` when a transform is given
    (transforms take and return the whole Sample dict).
    """

    dataset_name: str = "dataset"

    def __init__(self, root=None, split: str = "test", transform: Callable | None = None):
        self.root = Path(root) if root is not None else None
        self.split = split
        self.transform = transform
        self.names: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def load_sample(self, index: int) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__} index {index} out of range (len {len(self)})")
        sample = self.load_sample(index)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def base_meta(self, name: str, **extra) -> dict[str, Any]:
        meta = {"name": name, "dataset": self.dataset_name, "split": self.split}
        meta.update({k: v for k, v in extra.items() if v is not None})
        return meta

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


# --------------------------------------------------------------------------------------------------- samples
def make_sample(image: torch.Tensor, depth: np.ndarray | None, meta: dict[str, Any],
                valid: np.ndarray | None = None, depth_path=None) -> dict[str, Any]:
    """Assemble a Sample from a (3,H,W) image and an (H,W) depth in metres.

    ``valid`` (H,W) bool is ANDed with ``depth > 0`` (when None, valid = depth > 0 and finite).
    ``depth=None`` means "no ground truth": zeros and an all-False mask.
    Raises DataError naming ``depth_path`` when the depth's size differs from the image's.
    """
    _, h, w = image.shape
    if depth is None:
        d = np.zeros((h, w), np.float32)
        m = np.zeros((h, w), bool)
    else:
        d = np.asarray(depth, dtype=np.float32)
        if d.shape != (h, w):
            where = depth_path if depth_path is not None else meta.get("depth_path", meta.get("name"))
            raise DataError(where, f"depth size {d.shape[1]}x{d.shape[0]} (WxH) differs from image size {w}x{h}")
        d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0)).astype(np.float32)
        m = d > 0
        if valid is not None:
            v = np.asarray(valid)
            if v.shape != (h, w):
                where = depth_path if depth_path is not None else meta.get("name")
                raise DataError(where, f"validity mask size {v.shape[1]}x{v.shape[0]} differs from image size {w}x{h}")
            m &= v.astype(bool)
            d = np.where(m, d, np.float32(0)).astype(np.float32)
    return {
        "image": image.contiguous().float(),
        "depth": torch.from_numpy(np.ascontiguousarray(d))[None],
        "mask": torch.from_numpy(np.ascontiguousarray(m))[None],
        "meta": meta,
    }


# --------------------------------------------------------------------------------------------------- units
_UNIT_WORDS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
               "mm": 0.001, "millimetre": 0.001, "millimetres": 0.001, "millimeter": 0.001, "millimeters": 0.001,
               "cm": 0.01, "dm": 0.1}


def unit_to_scale(unit: str | float | None) -> float | None:
    """A depth unit spelling -> metres per stored unit.

    ``"mm"`` -> 0.001, ``"m/256"`` -> 1/256, ``"m"`` -> 1, ``"cm"`` -> 0.01, ``"m/1000"`` -> 0.001, a plain number
    is already metres per unit. ``None`` / empty -> None. Unknown spellings raise InputError (a ValueError).
    """
    if unit is None:
        return None
    if isinstance(unit, (int, float)):
        return float(unit)
    s = str(unit).strip().lower().replace(" ", "")
    if not s:
        return None
    if s in _UNIT_WORDS:
        return _UNIT_WORDS[s]
    m = re.fullmatch(r"(m|mm|cm)/([0-9.]+(?:e[-+]?\d+)?)", s)
    if m:
        return _UNIT_WORDS[m.group(1)] / float(m.group(2))
    try:
        return float(s)
    except ValueError:
        raise InputError(f"unknown depth unit {unit!r}; use mm, m, cm, m/256, m/<N> or metres per unit as a number") from None


# --------------------------------------------------------------------------------------------------- csv files
def read_csv_rows(path) -> list[dict[str, str]]:
    """A CSV with a header -> list of row dicts (stripped strings). Missing file -> []."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def read_intrinsics_csv(path) -> dict[str, dict[str, float]]:
    """``intrinsics.csv`` (``name,fx,fy,cx,cy[,...]``, pixels) -> {name: {fx,fy,cx,cy}}; rows with blanks are skipped."""
    out: dict[str, dict[str, float]] = {}
    for row in read_csv_rows(path):
        try:
            out[row["name"]] = {k: float(row[k]) for k in ("fx", "fy", "cx", "cy")}
        except (KeyError, ValueError, TypeError):
            continue
    return out


# --------------------------------------------------------------------------------------------------- split lists
def split_file_path(name: str) -> Path:
    """Path of a split list shipped in ``depthlab/data/splits``."""
    return SPLITS_DIR / name


def read_list_file(path) -> list[str]:
    """Non-empty, non-comment (``#``) lines of a text list, stripped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: split list not found")
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def read_index_file(path) -> list[int]:
    """A text file of integers (one per line, ``#`` comments allowed) -> list of ints."""
    return [int(tok) for ln in read_list_file(path) for tok in ln.split()]


def natural_key(s: str):
    """Sort key that orders ``image_2`` before ``image_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def first_existing(paths: Iterable[Path]) -> Path | None:
    for p in paths:
        if p.exists():
            return p
    return None


class ProcessLocal:
    """A file handle (an HDF5 file, a zip archive) opened on first use in each process and never pickled.

    DataLoader workers receive a copy of the dataset (pickled under spawn, forked otherwise); a handle
    opened in the parent must not be shared with them, so :meth:`get` reopens it in a process that did not
    open it, and pickling drops it. ``opener`` builds the handle; it must itself pickle (a module-level
    function or a ``functools.partial`` of one, not a lambda).
    """

    def __init__(self, opener: Callable[[], Any]):
        self.opener = opener
        self._handle: Any = None
        self._pid: int | None = None

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open handle."""
        return self._handle is not None and self._pid == os.getpid()

    def get(self) -> Any:
        """The handle of this process, opened now if needed."""
        if not self.is_open:
            self._handle, self._pid = self.opener(), os.getpid()
        return self._handle

    def __getstate__(self) -> dict:
        return {"opener": self.opener, "_handle": None, "_pid": None}
