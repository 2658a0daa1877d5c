"""NYU-Depth V2 in the forms people download: the official labelled ``.mat``, the DenseDepth "reduced" zip,
and plain rgb/ + depth/ folders in millimetres. :func:`open_nyu` picks the right reader from ``root``."""
from __future__ import annotations

import functools
import re
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from depthlab.data.base import DepthDataset, ProcessLocal, make_sample, read_index_file, split_file_path
from depthlab.errors import DataError, InputError, MissingFileError, one_line
from depthlab.io import open_pil, pil_to_rgb_array, to_float_chw

#: Colour-camera intrinsics of NYU-Depth V2 (NYU toolbox ``camera_params.m``), pixels, for 640x480 frames.
NYU_INTRINSICS = {"fx": 518.857901, "fy": 519.469611, "cx": 325.582449, "cy": 253.736166}
NYU_LABELED_SIZE = 1449
MAT_NAME = "nyu_depth_v2_labeled.mat"
#: The NYU six-model study's split of the labelled set: 1111 train / 338 test frames, drawn by
#: :func:`seeded_split` with this seed (the study gives no seed; 0 is depthlab's choice).
STUDY_SPLIT = {"n_test": 338, "seed": 0, "names": ("train1111", "test338")}


def seeded_split(n_frames: int, n_test: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """A random train/test split of frames ``1..n_frames``: ``(train, test)``, 1-based, each sorted.

    ``test`` = the first ``n_test`` entries of ``numpy.random.default_rng(seed).permutation(n_frames)``
    (+1), ``train`` = the others. ``seeded_split(1449, 338, 0)`` is the NYU study's 1111/338 split; it
    ships frozen as ``splits/nyu_labeled_{train1111,test338}.txt`` (the files, not this call, are the
    reference for the real 1449-frame set, so a change of NumPy's permutation algorithm cannot move it).
    """
    if not 0 <= n_test <= n_frames:
        raise InputError(f"n_test must be in [0, {n_frames}], got {n_test}")
    perm = np.random.default_rng(seed).permutation(n_frames) + 1
    return sorted(int(i) for i in perm[n_test:]), sorted(int(i) for i in perm[:n_test])


def study_split_indices(split: str, n_frames: int) -> list[int]:
    """1-based frames of the study split ``train1111`` / ``test338`` for a file of ``n_frames`` frames.

    The real set (1449 frames) reads the shipped lists. A smaller file (a fixture, a subset) gets the
    same seeded draw with the test share scaled, ``round(n_frames * 338 / 1449)`` frames (at least 1).
    """
    names = STUDY_SPLIT["names"]
    if n_frames == NYU_LABELED_SIZE:
        return read_index_file(split_file_path(f"nyu_labeled_{split}.txt"))
    n_test = min(n_frames - 1, max(1, round(n_frames * STUDY_SPLIT["n_test"] / NYU_LABELED_SIZE)))
    train, test = seeded_split(n_frames, n_test, STUDY_SPLIT["seed"])
    return train if split == names[0] else test


# ================================================================================================ labelled .mat
def _open_h5(path: Path):
    """The labelled ``.mat`` (HDF5), read-only (a module-level opener: :class:`ProcessLocal` pickles it)."""
    import h5py

    return h5py.File(path, "r")


class NYUv2Labeled(DepthDataset):
    """NYU-Depth V2 labelled set: the official ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5), read with h5py.

    MATLAB stores arrays column-major, so in HDF5 ``images`` is ``(N, 3, W=640, H=480)`` uint8 and ``depths`` /
    ``rawDepths`` are ``(N, W, H)`` float metres; samples come back as image ``(3,480,640)`` in [0,1] and depth
    ``(1,480,640)`` in metres (``mask = depth > 0``; ``depths`` is hole-filled, ``rawDepths`` has 0 = missing).

    Splits (1-based indices into the 1449 frames, as in the official ``splits.mat``): ``test`` = the 654 of
    ``testNdxs``, ``train`` = the other 795, ``all`` = 1..N; ``train1111`` / ``test338`` = the NYU six-model
    study's seeded random split (:func:`seeded_split`, :data:`STUDY_SPLIT`). They ship as ``splits/nyu_labeled_{train,test}.txt``;
    ``splits_mat=`` reads ``trainNdxs``/``testNdxs`` from a user's ``splits.mat`` instead (v7.3 via h5py, older
    via scipy), ``indices=`` gives them directly. An index beyond the file's frame count raises DataError from
    ``__getitem__``.

    Args:
        root: the ``.mat`` file, or a folder containing ``nyu_depth_v2_labeled.mat``.
        split: ``test`` | ``train`` | ``all``.
        depth_key: ``depths`` (filled, default) or ``rawDepths`` (raw Kinect, holes = 0).
        splits_mat, indices: override the shipped split (1-based).

    Meta: ``name`` = 1-based index as ``"%04d"``, ``index`` (1-based), ``category`` = the frame's scene type when
    the file has ``sceneTypes``, ``intrinsics`` = NYU colour camera. The HDF5 file is opened lazily once per
    process, so DataLoader workers each get their own handle.
    """

    dataset_name = "nyu_mat"

    def __init__(self, root, split: str = "test", transform: Callable | None = None, depth_key: str = "depths",
                 splits_mat=None, indices=None):
        if root is None:
            raise InputError(f"nyu_mat needs root= (the {MAT_NAME} file or its folder)")
        super().__init__(root, split, transform)
        path = Path(root)
        if path.is_dir():
            cands = [path / MAT_NAME] if (path / MAT_NAME).is_file() else sorted(path.glob("*.mat"))
            cands = [c for c in cands if c.name.lower() != "splits.mat"]
            if not cands:
                raise MissingFileError(f"{path}: no {MAT_NAME} in this folder")
            path = cands[0]
        if not path.is_file():
            raise MissingFileError(f"{path}: file not found")
        self.mat_path = path
        self.depth_key = depth_key
        import h5py

        if not h5py.is_hdf5(path):
            raise DataError(path, "not an HDF5 (MATLAB v7.3) file; expected the official nyu_depth_v2_labeled.mat")
        with h5py.File(path, "r") as f:
            for key in ("images", depth_key):
                if key not in f:
                    raise DataError(path, f"no dataset {key!r} in the file (has {sorted(f.keys())})")
            self.n_frames = int(f["images"].shape[0])
            self._has_scene_types = "sceneTypes" in f

        if indices is not None:
            idx = [int(i) for i in indices]
        elif splits_mat is not None:
            idx = read_splits_mat(splits_mat, split, self.n_frames)
        elif split == "all":
            idx = list(range(1, self.n_frames + 1))
        elif split in ("train", "test"):
            idx = read_index_file(split_file_path(f"nyu_labeled_{split}.txt"))
        elif split in STUDY_SPLIT["names"]:
            idx = study_split_indices(split, self.n_frames)
        else:
            raise InputError(f"unknown NYU labelled split {split!r}; choose test, train, all, train1111 or test338 "
                             "(or pass indices=)")
        self.indices = idx
        self.names = [f"{i:04d}" for i in idx]
        self._h5 = ProcessLocal(functools.partial(_open_h5, self.mat_path))

    def load_sample(self, index: int):
        i1 = self.indices[index]
        where = f"{self.mat_path}[{i1}]"
        if not 1 <= i1 <= self.n_frames:
            raise DataError(where, f"index {i1} out of range: the file holds frames 1..{self.n_frames}")
        f = self._h5.get()
        try:
            img = np.asarray(f["images"][i1 - 1])          # (3, W, H) uint8
            dep = np.asarray(f[self.depth_key][i1 - 1])     # (W, H) float metres
        except Exception as e:  # broken HDF5 chunk
            raise DataError(where, f"cannot read frame ({one_line(e)})") from None
        if img.ndim != 3 or img.shape[0] != 3:
            raise DataError(where, f"images frame has shape {img.shape}, expected (3, W, H)")
        image = to_float_chw(np.ascontiguousarray(img.transpose(2, 1, 0)))  # -> (H, W, 3) -> (3, H, W)
        depth = np.ascontiguousarray(dep.T).astype(np.float32)
        meta = self.base_meta(self.names[index], index=i1, intrinsics=dict(NYU_INTRINSICS),
                              category=self._scene_type(f, i1 - 1), rgb_path=where, depth_path=f"{where}:{self.depth_key}")
        return make_sample(image, depth, meta, depth_path=f"{where}:{self.depth_key}")

    def _scene_type(self, f, i0: int) -> str | None:
        if not self._has_scene_types:
            return None
        try:
            ref = f["sceneTypes"][0, i0]
            return "".join(chr(int(c)) for c in np.asarray(f[ref]).ravel())
        except Exception:
            return None


def read_splits_mat(path, split: str, n_frames: int | None = None) -> list[int]:
    """1-based frame indices of ``split`` (train/test/all) from an official-style ``splits.mat``.

    Reads ``trainNdxs`` / ``testNdxs`` with h5py (v7.3) or scipy.io.loadmat (older MATLAB formats).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: splits file not found")
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            data = {k: np.asarray(f[k]).ravel() for k in ("trainNdxs", "testNdxs") if k in f}
    else:
        try:
            from scipy.io import loadmat
        except ImportError:  # pragma: no cover - scipy ships with most installs
            raise DataError(path, "reading a pre-v7.3 .mat needs scipy (pip install scipy)") from None
        m = loadmat(path)
        data = {k: np.asarray(m[k]).ravel() for k in ("trainNdxs", "testNdxs") if k in m}
    if split == "all":
        return sorted(int(i) for k in data for i in data[k])
    key = {"train": "trainNdxs", "test": "testNdxs"}.get(split)
    if key is None:
        raise InputError(f"unknown split {split!r}; choose train, test or all")
    if key not in data:
        raise DataError(path, f"no {key} in the splits file")
    return [int(i) for i in data[key]]


# ================================================================================================ reduced zip
class NYUReduced(DepthDataset):
    """NYU-Depth V2 "reduced" set of DenseDepth / GuidedDecoding: ``nyu_data.zip`` or its extracted folder.

    Layout: ``data/nyu2_train.csv`` and ``data/nyu2_test.csv`` whose rows are ``rgb_path,depth_path`` relative
    to the zip root (``data/nyu2_train/<scene>/<k>.jpg,...png``; ``data/nyu2_test/<k>_colors.png,..._depth.png``).
    Read straight from the zip (no extraction); the archive is opened lazily once per process.

    Units, decided by the depth PNG's bit depth (which is how the two splits are stored):
      * 8-bit PNG (train): ``depth = v / 255 * 10`` metres (255 = 10 m);
      * 16-bit PNG (test): ``depth = v / 1000`` metres (millimetres).
    0 = missing; ``mask = depth > 0``. Images are 640x480 and carry the NYU colour intrinsics.

    Args:
        root: the zip, a folder holding ``nyu_data.zip``, or the extracted folder (containing ``data/``).
        split: ``train`` | ``test``.
    """

    dataset_name = "nyu_reduced"

    def __init__(self, root, split: str = "test", transform: Callable | None = None):
        if root is None:
            raise InputError("nyu_reduced needs root= (nyu_data.zip or its extracted folder)")
        super().__init__(root, split, transform)
        if split not in ("train", "test"):
            raise InputError(f"unknown nyu_reduced split {split!r}; choose train or test")
        path = Path(root)
        if path.is_dir() and not _reduced_csv_in_dir(path, split) and (path / "nyu_data.zip").is_file():
            path = path / "nyu_data.zip"
        self._zip_path: Path | None = None
        self._dir: Path | None = None
        self._prefix = ""
        csv_name = f"nyu2_{split}.csv"
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise DataError(path, "not a zip archive")
            self._zip_path = path
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.endswith("data/" + csv_name) or n == csv_name]
                if not members:
                    raise DataError(path, f"no data/{csv_name} in the archive")
                member = min(members, key=len)
                self._prefix = member[: -len("data/" + csv_name)] if member.endswith("data/" + csv_name) else ""
                text = zf.read(member).decode("utf-8")
        elif path.is_dir():
            csv_path = _reduced_csv_in_dir(path, split)
            if csv_path is None:
                raise MissingFileError(f"{path}: no data/{csv_name} (nor nyu_data.zip) here")
            self._dir = csv_path.parent.parent if csv_path.parent.name == "data" else csv_path.parent
            text = csv_path.read_text(encoding="utf-8")
        else:
            raise MissingFileError(f"{path}: not found")
        self.csv_name = csv_name
        self.pairs: list[tuple[str, str]] = []
        for line in text.splitlines():
            parts = [p.strip() for p in line.strip().split(",")]
            if len(parts) < 2 or not parts[0] or parts[0].lower() in ("rgb", "image", "rgb_path"):
                continue
            self.pairs.append((parts[0], parts[1]))
        self.names = [_reduced_name(r) for r, _ in self.pairs]
        self._zf = ProcessLocal(functools.partial(zipfile.ZipFile, self._zip_path)) if self._zip_path else None

    def _read(self, rel: str) -> tuple[bytes | None, str, Path | None]:
        """-> (bytes from the zip or None, display path, disk path or None)."""
        if self._zip_path is not None:
            member = self._prefix + rel
            where = f"{self._zip_path}::{member}"
            try:
                return self._zf.get().read(member), where, None
            except KeyError:
                raise DataError(where, "listed in the CSV but not found in the archive") from None
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise DataError(where, f"cannot read from archive ({type(e).__name__}: {e})") from None
        p = self._dir / rel
        return None, str(p), p

    def load_sample(self, index: int):
        rgb_rel, depth_rel = self.pairs[index]
        data, rgb_where, rgb_disk = self._read(rgb_rel)
        # files and zip members decode the same way (io.open_pil: EXIF orientation, one-line errors)
        image = to_float_chw(pil_to_rgb_array(open_pil(rgb_disk or rgb_where, data=data)))
        data, d_where, d_disk = self._read(depth_rel)
        arr = np.asarray(open_pil(d_disk or d_where, data=data))
        depth = decode_reduced_depth(arr, d_where)
        scene = _reduced_scene(rgb_rel)
        meta = self.base_meta(self.names[index], category=scene, intrinsics=dict(NYU_INTRINSICS),
                              rgb_path=rgb_where, depth_path=d_where)
        return make_sample(image, depth, meta, depth_path=d_where)


def decode_reduced_depth(arr: np.ndarray, where: str = "depth") -> np.ndarray:
    """Raw PNG array of the reduced NYU set -> metres: uint8 -> v/255*10, 16-bit -> v/1000."""
    if arr.ndim == 3:
        raise DataError(where, f"depth PNG must be single-channel, got {arr.shape[2]} channels")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0) * np.float32(10.0)
    if arr.dtype in (np.uint16, np.int32, np.uint32, np.int16):
        return arr.astype(np.float32) / np.float32(1000.0)
    raise DataError(where, f"unexpected depth PNG dtype {arr.dtype}")


def _reduced_csv_in_dir(path: Path, split: str) -> Path | None:
    for cand in (path / "data" / f"nyu2_{split}.csv", path / f"nyu2_{split}.csv"):
        if cand.is_file():
            return cand
    return None


def _reduced_name(rgb_rel: str) -> str:
    p = Path(rgb_rel)
    stem = re.sub(r"_colors$", "", p.stem)
    parent = p.parent.name
    if parent.startswith("nyu2_") or parent in ("", "data"):
        return stem
    return f"{parent}_{stem}"


def _reduced_scene(rgb_rel: str) -> str | None:
    parent = Path(rgb_rel).parent.name
    if parent.startswith("nyu2_") or parent in ("", "data"):
        return None
    return re.sub(r"_\d+[a-z]?(_out)?$", "", parent) or None


# ================================================================================================ auto-detect
def detect_nyu_layout(root) -> str:
    """``"mat"``, ``"reduced"`` or ``"folder"`` for a NYU ``root``; ValueError when none fits."""
    if root is None:
        raise InputError("nyu needs root=: the labelled .mat, nyu_data.zip (or its folder), or an rgb/ + depth/ folder")
    p = Path(root)
    if not p.exists():
        raise MissingFileError(f"{p}: not found")
    if p.is_file():
        if p.suffix.lower() == ".mat":
            return "mat"
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                if any(re.search(r"nyu2_(train|test)\.csv$", n) for n in zf.namelist()):
                    return "reduced"
            raise InputError(f"{p}: zip without data/nyu2_train.csv or data/nyu2_test.csv")
        raise InputError(f"{p}: not a NYU .mat or nyu_data.zip")
    if (p / MAT_NAME).is_file():
        return "mat"
    if any((p / "data" / f"nyu2_{s}.csv").is_file() or (p / f"nyu2_{s}.csv").is_file() for s in ("train", "test")):
        return "reduced"
    if (p / "nyu_data.zip").is_file():
        return "reduced"
    if any((p / d).is_dir() for d in ("rgb", "images")) or any((p / s / d).is_dir() for s in ("train", "test") for d in ("rgb", "images")):
        return "folder"
    mats = [m for m in p.glob("*.mat") if m.name.lower() != "splits.mat"]
    if mats:
        return "mat"
    raise InputError(f"{p}: no NYU layout found (expected {MAT_NAME}, data/nyu2_*.csv / nyu_data.zip, or rgb/ + depth/)")


def open_nyu(root=None, split: str = "test", transform: Callable | None = None, **kwargs):
    """NYU-Depth V2, layout auto-detected: labelled .mat, DenseDepth reduced zip/folder, or rgb/ + depth/ in mm.

    * a ``.mat`` file (or a folder with ``nyu_depth_v2_labeled.mat``) -> :class:`NYUv2Labeled`;
    * a zip / folder with ``data/nyu2_*.csv`` (or a folder holding ``nyu_data.zip``) -> :class:`NYUReduced`;
    * a folder with ``rgb/`` (or ``images/``) and ``depth/`` -> :class:`~depthlab.data.folder.FolderDataset`
      with 16-bit PNG depth in millimetres unless ``index.csv``'s ``depth_unit`` (or ``depth_scale=``) says
      otherwise; ``meta["dataset"] = "nyu"``.
    Extra keyword arguments go to the chosen reader.
    """
    layout = detect_nyu_layout(root)
    if layout == "mat":
        return NYUv2Labeled(root, split=split, transform=transform, **kwargs)
    if layout == "reduced":
        return NYUReduced(root, split=split, transform=transform, **kwargs)
    from depthlab.data.folder import FolderDataset

    kwargs.setdefault("default_depth_scale", 0.001)
    kwargs.setdefault("dataset_name", "nyu")
    return FolderDataset(root, split=split, transform=transform, **kwargs)


__all__ = ["NYUv2Labeled", "NYUReduced", "open_nyu", "detect_nyu_layout", "read_splits_mat",
           "decode_reduced_depth", "NYU_INTRINSICS", "seeded_split", "study_split_indices", "STUDY_SPLIT"]
