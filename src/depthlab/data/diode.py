"""DIODE (Dense Indoor/Outdoor DEpth): 1024x768 RGB with dense laser depth and validity masks."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from depthlab.data.base import DepthDataset, make_sample, natural_key
from depthlab.errors import DataError, InputError, MissingFileError, one_line
from depthlab.io import read_depth, read_rgb

#: Camera intrinsics published with DIODE (pixels, 1024x768 images).
DIODE_INTRINSICS = {"fx": 886.81, "fy": 927.06, "cx": 512.0, "cy": 384.0}
SCENE_TYPES = ("indoors", "outdoors")


class DIODE(DepthDataset):
    """DIODE indoor/outdoor laser depth (1024x768), train/val, with the published validity masks.

    Layout: ``<root>/<train|val>/<indoors|outdoors>/scene_*/scan_*/<name>.png`` with, beside each image,
    ``<name>_depth.npy`` ((H,W,1) float32 metres) and ``<name>_depth_mask.npy`` ((H,W), 1 = valid sensor return).

    ``mask = (depth_mask > 0) & (depth > 0)``; depth is set to 0 outside the mask. A missing or unreadable
    ``.npy`` raises DataError from ``__getitem__``.

    Args:
        root: the folder holding ``train/`` and/or ``val/`` (the extracted archives).
        split: ``val`` or ``train``; ``test`` means ``val`` (DIODE has no public test depth, val is what papers
            report on).
        scene_type: ``indoors`` | ``outdoors`` | ``all``.

    Meta: ``name`` = file stem, ``category`` = indoors/outdoors, ``scene``, ``scan``, ``intrinsics`` = the DIODE
    camera (fx 886.81, fy 927.06, cx 512, cy 384).
    """

    dataset_name = "diode"

    def __init__(self, root, split: str = "val", transform: Callable | None = None, scene_type: str = "all"):
        if root is None:
            raise InputError("diode needs root= (the folder holding train/ and/or val/)")
        real_split = "val" if split == "test" else split
        if real_split not in ("train", "val"):
            raise InputError(f"unknown DIODE split {split!r}; choose val (= test) or train")
        if scene_type not in SCENE_TYPES + ("all",):
            raise InputError(f"scene_type must be indoors, outdoors or all, got {scene_type!r}")
        super().__init__(root, split, transform)
        self.scene_type = scene_type
        split_dir = self.root / real_split
        if not split_dir.is_dir():
            raise MissingFileError(f"{split_dir}: DIODE split folder not found")
        types = SCENE_TYPES if scene_type == "all" else (scene_type,)
        self.items: list[tuple[Path, str]] = []
        for t in types:
            tdir = split_dir / t
            if not tdir.is_dir():
                continue
            for img in sorted(tdir.glob("scene_*/scan_*/*.png"), key=lambda p: natural_key(str(p.relative_to(tdir)))):
                self.items.append((img, t))
        self.names = [p.stem for p, _ in self.items]

    def load_sample(self, index: int):
        img_path, category = self.items[index]
        depth_path = img_path.with_name(img_path.stem + "_depth.npy")
        mask_path = img_path.with_name(img_path.stem + "_depth_mask.npy")
        image = read_rgb(img_path)
        depth = read_depth(depth_path)
        if not mask_path.exists():
            raise DataError(mask_path, "file not found")
        try:
            valid = np.load(mask_path, allow_pickle=False)
        except Exception as e:
            raise DataError(mask_path, f"cannot read mask ({one_line(e)})") from None
        valid = np.squeeze(valid)
        if valid.ndim != 2:
            raise DataError(mask_path, f"mask must be 2-D, got shape {valid.shape}")
        meta = self.base_meta(self.names[index], category=category, scene=img_path.parent.parent.name,
                              scan=img_path.parent.name, intrinsics=dict(DIODE_INTRINSICS), rgb_path=str(img_path),
                              depth_path=str(depth_path), mask_path=str(mask_path))
        if valid.shape != depth.shape:
            raise DataError(mask_path, f"mask size {valid.shape[1]}x{valid.shape[0]} differs from depth size "
                                       f"{depth.shape[1]}x{depth.shape[0]}")
        return make_sample(image, depth, meta, valid=valid > 0, depth_path=depth_path)


__all__ = ["DIODE", "DIODE_INTRINSICS"]
