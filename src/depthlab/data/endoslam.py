"""EndoSLAM, synthetic part (UnityCam): colon, small intestine and stomach frames with rendered depth."""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from depthlab.data.base import DepthDataset, make_sample
from depthlab.errors import DataError, InputError, MissingFileError
from depthlab.io import open_pil, read_rgb

ORGANS = ("colon", "small_intestine", "stomach")
_RGB_RE = re.compile(r"^image_(\d+)\.(png|jpe?g)$", re.IGNORECASE)
_DEPTH_RE = re.compile(r"^aov_image_(\d+)\.png$", re.IGNORECASE)
DEFAULT_RATIOS = (0.8, 0.1, 0.1)


def canonical_organ(name: str) -> str | None:
    """``"Small Intestine"`` / ``"small_intestine"`` / ``"SmallIntestine"`` -> ``"small_intestine"``; else None."""
    key = re.sub(r"[^a-z]", "", name.lower())
    return {"colon": "colon", "smallintestine": "small_intestine", "intestine": "small_intestine",
            "stomach": "stomach"}.get(key)


class EndoSLAM(DepthDataset):
    """EndoSLAM UnityCam (synthetic) frames, 320x320, with per-pixel rendered depth, per organ.

    Expected layout (as unpacked from the EndoSLAM release; ``root`` may be the release folder, its
    ``UnityCam/`` folder, or any folder holding the organ folders)::

        UnityCam/
          Colon/            Frames/image_0001.png ...        RGB (PNG or JPEG; nested Frames/Frames also found)
                            Pixelwise Depths/aov_image_0001.png ...   Unity AOV depth, 8-bit (RGBA or grey)
          Small Intestine/  (same)
          Stomach/          (same)
          Calibration/cam.txt                                optional: 3x3 K (9 numbers) -> meta intrinsics

    Frames and depth maps are paired by frame number, searched anywhere below each organ folder.

    Depth encoding (what this reader assumes): the depth PNG's first channel is a grey level proportional to
    depth, 0..255 spanning 0..``max_depth``: ``depth_m = v / 255 * max_depth`` (``v / 65535`` for 16-bit
    files). The dataset does not publish a metric scale (the Unity AOV recorder writes depth normalised to
    0..1); ``max_depth`` defaults to 1.0 m, the value used in the Leve thesis. ``v = 0`` is treated as missing.

    Split: EndoSLAM has no official split, so each organ's frames, ordered by frame number, are cut into
    contiguous blocks -- the first 80 % ``train``, the next 10 % ``val``, the last 10 % ``test`` (``ratios=``
    changes this, ``all`` takes everything). Contiguous blocks keep near-identical neighbouring frames from
    leaking across splits.

    Args:
        organs: subset of colon / small_intestine / stomach (any spelling); None = all found.
        max_depth: metres represented by grey level 255.
        ratios: (train, val, test) fractions.
        per_organ: keep this many frames of each organ from the split, evenly spaced over its frames in
            frame order (the Leve thesis' 600-image set: ``split="all", per_organ=200``; which 200 the thesis
            took is not stated, so depthlab spreads them over each sequence); None = every frame.

    Meta: ``name`` = ``<organ>_<frame>``, ``category`` = organ, ``frame`` (int).
    A frame whose depth map is missing or whose size differs raises DataError from ``__getitem__``.
    """

    dataset_name = "endoslam"

    def __init__(self, root, split: str = "test", transform: Callable | None = None, organs: Iterable[str] | None = None,
                 max_depth: float = 1.0, ratios: tuple[float, float, float] = DEFAULT_RATIOS,
                 per_organ: int | None = None):
        if root is None:
            raise InputError("endoslam needs root= (the EndoSLAM folder, its UnityCam/ folder or the organ folders' parent)")
        super().__init__(root, split, transform)
        if split not in ("train", "val", "test", "all"):
            raise InputError(f"unknown EndoSLAM split {split!r}; choose train, val, test or all")
        if not self.root.is_dir():
            raise MissingFileError(f"{self.root}: EndoSLAM folder not found")
        if max_depth <= 0:
            raise InputError("max_depth must be positive")
        self.max_depth = float(max_depth)
        self.ratios = tuple(float(r) for r in ratios)
        if len(self.ratios) != 3 or min(self.ratios) < 0 or sum(self.ratios) <= 0:
            raise InputError(f"ratios must be three non-negative fractions, got {ratios!r}")
        wanted = None
        if organs is not None:
            organs = [organs] if isinstance(organs, str) else list(organs)
            wanted = set()
            for o in organs:
                c = canonical_organ(o)
                if c is None:
                    raise InputError(f"unknown organ {o!r}; choose from {ORGANS}")
                wanted.add(c)
        found = _find_organ_dirs(self.root)
        if not found:
            raise MissingFileError(f"{self.root}: no Colon / Small Intestine / Stomach folders found (also looked in UnityCam/)")
        self.organ_dirs = {k: v for k, v in found.items() if wanted is None or k in wanted}
        self.intrinsics = _read_cam_txt(self.root)
        # items: (organ, frame number, rgb path, depth path)
        self.items: list[tuple[str, int, Path, Path]] = []
        for organ in ORGANS:
            if organ not in self.organ_dirs:
                continue
            pairs = _pair_frames(self.organ_dirs[organ])
            block = _evenly_spaced(_select_block(pairs, split, self.ratios), per_organ)
            self.items.extend((organ, n, rgb, dep) for n, rgb, dep in block)
        self.names = [f"{o}_{n:04d}" for o, n, _, _ in self.items]

    def load_sample(self, index: int):
        organ, num, rgb_path, depth_path = self.items[index]
        image = read_rgb(rgb_path)
        depth = decode_endoslam_depth(depth_path, self.max_depth)
        meta = self.base_meta(self.names[index], category=organ, frame=num,
                              intrinsics=dict(self.intrinsics) if self.intrinsics else None,
                              rgb_path=str(rgb_path), depth_path=str(depth_path))
        meta["max_depth"] = self.max_depth
        return make_sample(image, depth, meta, depth_path=depth_path)


def decode_endoslam_depth(path, max_depth: float = 1.0) -> np.ndarray:
    """An EndoSLAM Unity depth PNG -> (H,W) float32 metres: first channel / 255 (or / 65535) * ``max_depth``."""
    arr = np.asarray(open_pil(path))
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        full = 255.0
    elif arr.dtype in (np.uint16, np.int32, np.uint32):
        full = 65535.0
    else:
        raise DataError(path, f"unexpected depth image dtype {arr.dtype}")
    return (arr.astype(np.float32) / np.float32(full) * np.float32(max_depth)).astype(np.float32)


def _find_organ_dirs(root: Path) -> dict[str, Path]:
    bases = [root, root / "UnityCam"]
    out: dict[str, Path] = {}
    if canonical_organ(root.name):
        out[canonical_organ(root.name)] = root
    for b in bases:
        if not b.is_dir():
            continue
        for d in sorted(b.iterdir()):
            c = canonical_organ(d.name) if d.is_dir() else None
            if c and c not in out:
                out[c] = d
    return out


def _best_folder(paths: dict[int, list[Path]]) -> dict[int, Path]:
    """Frame number -> one path; when a frame exists in several folders prefer the folder holding most frames."""
    counts: dict[Path, int] = defaultdict(int)
    for ps in paths.values():
        for p in ps:
            counts[p.parent] += 1
    return {n: max(ps, key=lambda p: (counts[p.parent], p.suffix.lower() == ".png")) for n, ps in paths.items()}


def _pair_frames(organ_dir: Path) -> list[tuple[int, Path, Path]]:
    rgb: dict[int, list[Path]] = defaultdict(list)
    dep: dict[int, list[Path]] = defaultdict(list)
    for p in organ_dir.rglob("*"):
        if not p.is_file():
            continue
        m = _DEPTH_RE.match(p.name)
        if m:
            dep[int(m.group(1))].append(p)
            continue
        m = _RGB_RE.match(p.name)
        if m:
            rgb[int(m.group(1))].append(p)
    rgb1, dep1 = _best_folder(rgb), _best_folder(dep)
    depth_dir = max({p.parent for p in dep1.values()}, key=lambda d: sum(q.parent == d for q in dep1.values()), default=None)
    out = []
    for n in sorted(rgb1):
        rp = rgb1[n]
        if n in dep1:
            dp = dep1[n]
        else:  # expected name in the depth folder: __getitem__ reports the missing file
            width = len(re.match(r"^image_(\d+)", rp.name, re.IGNORECASE).group(1))
            dp = (depth_dir or organ_dir / "Pixelwise Depths") / f"aov_image_{n:0{width}d}.png"
        out.append((n, rp, dp))
    return out


def _evenly_spaced(items: list, k: int | None) -> list:
    """``k`` items spread evenly over ``items`` (first and last included); all of them when k is None or >= len."""
    if k is None or k >= len(items):
        return items
    if k < 1:
        raise InputError(f"per_organ must be a positive number of frames, got {k}")
    if k == 1:
        return items[:1]
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def _select_block(pairs: list, split: str, ratios: tuple[float, float, float]) -> list:
    if split == "all":
        return pairs
    n = len(pairs)
    total = sum(ratios)
    n_train = math.floor(n * ratios[0] / total)
    n_val = math.floor(n * ratios[1] / total)
    if split == "train":
        return pairs[:n_train]
    if split == "val":
        return pairs[n_train:n_train + n_val]
    return pairs[n_train + n_val:]


def _read_cam_txt(root: Path) -> dict[str, float] | None:
    for p in (root / "Calibration" / "cam.txt", root / "UnityCam" / "Calibration" / "cam.txt",
              root.parent / "Calibration" / "cam.txt"):
        if p.is_file():
            try:
                vals = [float(x) for x in re.split(r"[\s,;]+", p.read_text().strip()) if x]
            except (OSError, ValueError):
                return None
            if len(vals) == 9:
                return {"fx": vals[0], "fy": vals[4], "cx": vals[2], "cy": vals[5]}
            return None
    return None


__all__ = ["EndoSLAM", "decode_endoslam_depth", "canonical_organ", "ORGANS"]
