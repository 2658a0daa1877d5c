"""Small dataset trees in the real on-disk formats, for smoke runs and tests.

``write_fixture(kind, root, **kwargs)`` writes a tiny copy of a dataset *as it is downloaded*
(the NYU labelled ``.mat`` in MATLAB v7.3/HDF5, the DenseDepth ``nyu_data.zip``, the raw KITTI
tree with annotated 16-bit depth PNGs, DIODE's ``.png``/``_depth.npy``/``_depth_mask.npy``,
EndoSLAM's UnityCam folders, aerial GeoTIFF orthophotos + height rasters with a CRS) and returns
the path to pass as ``data.root``. The readers in :mod:`depthlab.data` read these trees exactly as
they read the real ones, so a study's smoke run exercises the real loading code.

The pictures are depthlab's synthetic scenes (:func:`depthlab.data.synthetic.render_scene`): RGB
and depth agree, so a few training steps on a fixture learn something. Every writer is
deterministic in ``seed``; the files are written through temp files and renamed (a killed write
leaves no half tree behind a finished one: :func:`write_fixture` writes a ``.complete`` marker
last and reuses a complete tree).

Experiment specs use them through their ``fixtures:`` key (see :mod:`depthlab.experiment`).
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from depthlab.errors import unknown_name

__all__ = ["write_fixture", "list_fixtures", "FIXTURES", "rendered_scenes", "aerial_scene"]

_MARKER = ".complete"   # the arguments the tree was written with, written last
_PATH = ".path"         # the path to pass as data.root, relative to the tree


def rendered_scenes(n: int, size, seed: int):
    """``n`` rendered synthetic scenes: (rgb uint8 HxWx3, depth float32 HxW metres, category).

    The pictures every fixture writer stores (the same ``n``, ``size``, ``seed`` give the same frames), so a
    test can compare what a reader returns with what was written."""
    from depthlab.data.synthetic import render_scene

    for k in range(n):
        r = render_scene(seed * 100_003 + k, size=tuple(size), supersample=1)
        rgb = np.clip(np.asarray(r["image"]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if rgb.shape[0] == 3:
            rgb = rgb.transpose(1, 2, 0)
        depth = np.asarray(r["depth"], dtype=np.float32).reshape(rgb.shape[:2])
        yield rgb, depth, r["meta"].get("category")


def _save_png(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG" if path.suffix.lower() == ".jpg" else "PNG", **kw)
    path.write_bytes(buf.getvalue())


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


# ------------------------------------------------------------------------------------------ NYU
def write_nyu_mat(root: Path, n: int = 8, size=(48, 64), seed: int = 0, n_test: int | None = None) -> Path:
    """``nyu_depth_v2_labeled.mat`` (HDF5, MATLAB column-major axes: images (N,3,W,H) uint8, depths
    and rawDepths (N,W,H) metres, sceneTypes as character refs) plus a v7.3 ``splits.mat`` with
    1-based ``trainNdxs``/``testNdxs`` (the last ``n_test`` frames, default a quarter, are test)."""
    import h5py

    frames = list(rendered_scenes(n, size, seed))
    images = np.stack([f[0] for f in frames])                                   # (N,H,W,3)
    depths = np.stack([f[1] for f in frames]).astype(np.float32)               # (N,H,W)
    raw = depths.copy()
    raw[:, :2, :3] = 0.0                                                        # Kinect holes
    path = root / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)
        f["depths"] = depths.transpose(0, 2, 1)
        f["rawDepths"] = raw.transpose(0, 2, 1)
        refs = f.create_dataset("sceneTypes", (1, n), dtype=h5py.ref_dtype)
        for k, fr in enumerate(frames):
            d = f.create_dataset(f"#refs#/s{k}", data=np.array([ord(c) for c in (fr[2] or "room")], np.uint16)[:, None])
            refs[0, k] = d.ref
    n_test = max(1, n // 4) if n_test is None else int(n_test)
    with h5py.File(root / "splits.mat", "w") as f:                              # v7.3: (1, k) doubles
        f["trainNdxs"] = np.arange(1, n - n_test + 1, dtype=np.float64)[None]
        f["testNdxs"] = np.arange(n - n_test + 1, n + 1, dtype=np.float64)[None]
    return path


def write_nyu_reduced(root: Path, n_train: int = 8, n_test: int = 4, size=(48, 64), seed: int = 0) -> Path:
    """DenseDepth's ``nyu_data.zip``: ``data/nyu2_train/<scene>/<k>.jpg`` + 8-bit ``<k>.png``
    (255 = 10 m), ``data/nyu2_test/<k>_colors.png`` + 16-bit ``<k>_depth.png`` (millimetres), and
    the two CSV lists. Returns the zip's path."""
    members: dict[str, bytes] = {}

    def png(arr, fmt="PNG", **kw) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **kw)
        return buf.getvalue()

    train_rows, test_rows = [], []
    for k, (rgb, depth, _) in enumerate(rendered_scenes(n_train, size, seed)):
        stem = f"data/nyu2_train/scene_{k // 4:04d}_out/{k}"
        members[stem + ".jpg"] = png(rgb, "JPEG", quality=95)
        members[stem + ".png"] = png(np.clip(depth / 10.0 * 255.0 + 0.5, 0, 255).astype(np.uint8))
        train_rows.append(f"{stem}.jpg,{stem}.png")
    for k, (rgb, depth, _) in enumerate(rendered_scenes(n_test, size, seed + 1)):
        stem = f"data/nyu2_test/{k:05d}"
        members[stem + "_colors.png"] = png(rgb)
        members[stem + "_depth.png"] = png(np.clip(depth * 1000.0 + 0.5, 0, 65535).astype(np.uint16))
        test_rows.append(f"{stem}_colors.png,{stem}_depth.png")
    members["data/nyu2_train.csv"] = ("\n".join(train_rows) + "\n").encode()
    members["data/nyu2_test.csv"] = ("\n".join(test_rows) + "\n").encode()
    path = root / "nyu_data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(members):
            zf.writestr(name, members[name])
    return path


# ------------------------------------------------------------------------------------------ KITTI
_KITTI_CALIB = ("P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 "
                "1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03\n")


def write_kitti(root: Path, n: int = 4, size=(64, 208), seed: int = 0, density: float = 0.3) -> Path:
    """Raw KITTI (``<date>/<drive>/image_02/data/<frame>.png``, ``calib_cam_to_cam.txt``) with the
    annotated depth PNGs (uint16, metres x 256, 0 = no LiDAR return; only the lower two thirds hold
    returns, like the velodyne's field of view) at ``<date>/<drive>/proj_depth/groundtruth/image_02``.
    The frames are the first ``n`` of the shipped Eigen test list, so ``split="test"`` reads them with
    no split file (the other listed frames have no ground truth and are skipped)."""
    from depthlab.data.base import read_list_file, split_file_path
    from depthlab.data.kitti import parse_split_line

    entries = [parse_split_line(ln) for ln in read_list_file(split_file_path("kitti_eigen_test.txt"))[:n]]
    rng = np.random.default_rng(seed)
    for e, (rgb, depth, _) in zip(entries, rendered_scenes(n, size, seed)):
        drive = root / e.date / e.drive
        _save_png(drive / e.cam / "data" / f"{e.frame}.png", rgb)
        keep = rng.random(depth.shape) < density
        keep[: depth.shape[0] // 3] = False
        gt = np.where(keep, np.clip(depth * 256.0 + 0.5, 0, 65535), 0).astype(np.uint16)
        _save_png(drive / "proj_depth" / "groundtruth" / e.cam / f"{e.frame}.png", gt)
        (root / e.date / "calib_cam_to_cam.txt").write_text(_KITTI_CALIB)
    return root


# ------------------------------------------------------------------------------------------ DIODE
def write_diode(root: Path, n: int = 4, size=(48, 64), seed: int = 0,
                scene_types=("indoors", "outdoors"), splits=("train", "val")) -> Path:
    """DIODE: ``<split>/<indoors|outdoors>/scene_<s>/scan_<c>/<stem>.png`` with ``<stem>_depth.npy``
    (H,W,1 float32 metres) and ``<stem>_depth_mask.npy`` (H,W float32 0/1). ``n`` frames per split
    and scene type."""
    for si, split in enumerate(splits):
        for ti, t in enumerate(scene_types):
            tag = "indoors" if t == "indoors" else "outdoor"
            for k, (rgb, depth, _) in enumerate(rendered_scenes(n, size, seed + 10 * si + ti)):
                scene, scan = f"scene_{100 * si + 10 * ti:05d}", f"scan_{k:05d}"
                stem = f"{100 * si + 10 * ti:05d}_{k:05d}_{tag}_000_000"
                d = root / split / t / scene / scan
                mask = (depth > 0).astype(np.float32)
                mask[:2, :2] = 0.0                                              # an invalid corner
                _save_png(d / f"{stem}.png", rgb)
                _save_npy(d / f"{stem}_depth.npy", (depth * mask)[..., None].astype(np.float32))
                _save_npy(d / f"{stem}_depth_mask.npy", mask)
    return root


# ------------------------------------------------------------------------------------------ EndoSLAM
def write_endoslam(root: Path, n: int = 10, size=(40, 40), seed: int = 0) -> Path:
    """EndoSLAM's Unity part: ``UnityCam/<Colon|Small Intestine|Stomach>/Frames/image_<k>.png`` and
    ``Pixelwise Depths/aov_image_<k>.png`` (RGBA, grey = depth / 1 m x 255, as the Unity AOV writes it),
    ``UnityCam/Calibration/cam.txt``; ``n`` frames per organ."""
    unity = root / "UnityCam"
    for oi, organ in enumerate(("Colon", "Small Intestine", "Stomach")):
        for k, (rgb, depth, _) in enumerate(rendered_scenes(n, size, seed + oi), start=1):
            _save_png(unity / organ / "Frames" / f"image_{k:04d}.png", rgb)
            rel = depth / max(float(depth.max()), 1e-6)                         # the organ spans 0..1 m
            g = np.clip(rel * 255.0 + 0.5, 0, 255).astype(np.uint8)
            _save_png(unity / organ / "Pixelwise Depths" / f"aov_image_{k:04d}.png",
                      np.dstack([g, g, g, np.full_like(g, 255)]))
    (unity / "Calibration").mkdir(parents=True, exist_ok=True)
    (unity / "Calibration" / "cam.txt").write_text("156.0418,0,178.5604,0,155.7529,181.8043,0,0,1")
    return root


# ------------------------------------------------------------------------------------------ aerial
#: per category of the aerial study: (buildings, trees, roads, building footprint as a fraction of the tile
#: side (min, max), building height in m (min, max), ground colour RGB)
AERIAL_MIX = {
    "residential": (5, 5, 1, (0.15, 0.3), (6.0, 11.0), (92, 128, 64)),
    "suburbs": (3, 9, 1, (0.12, 0.25), (5.0, 9.0), (88, 134, 60)),
    "campus": (3, 4, 2, (0.25, 0.45), (10.0, 22.0), (150, 146, 138)),
    "industrial": (2, 1, 2, (0.35, 0.6), (7.0, 14.0), (128, 124, 118)),
    "garden_centre": (3, 3, 1, (0.2, 0.35), (2.5, 4.5), (140, 132, 112)),
    "fields": (0, 2, 0, (0.1, 0.2), (3.0, 6.0), (150, 136, 84)),
}
ROOF_COLOURS = ((160, 70, 55), (120, 60, 50), (95, 95, 100), (170, 165, 160), (70, 80, 95))
SUN_SLOPE = 0.5  # shadow length in pixels per metre of height (sun in the north-west), capped at a quarter tile


def aerial_scene(seed: int, size, category: str = "residential"):
    """A synthetic orthophoto seen from straight above: ``(rgb uint8 HxWx3, height float32 HxW metres above
    ground)``. Ground (grass, paving or a ploughed field by ``category``, 0 m) with roads, gabled or flat roofs
    (box buildings, :data:`AERIAL_MIX` for the category's number, size and height) and trees (domes), each object
    casting a shadow to the south-east whose length grows with its height -- the cue a monocular model can learn
    heights from. Deterministic in ``seed``."""

    h, w = int(size[0]), int(size[1])
    n_build, n_tree, n_road, (f0, f1), (z0, z1), ground = AERIAL_MIX[category]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = ground
    if category == "fields":  # furrows
        rgb *= (1.0 + 0.08 * np.sin(xx * 2 * np.pi / max(3.0, w / 10)))[..., None]
    height = np.zeros((h, w), np.float32)
    side = min(h, w)
    for _ in range(n_road):
        width = max(1, int(side * rng.uniform(0.06, 0.1)))
        if rng.random() < 0.5:
            r = int(rng.integers(0, max(1, h - width)))
            rgb[r:r + width] = (105, 105, 108)
        else:
            c = int(rng.integers(0, max(1, w - width)))
            rgb[:, c:c + width] = (105, 105, 108)
    for _ in range(n_build):
        bh, bw = (max(2, int(side * rng.uniform(f0, f1))) for _ in range(2))
        r, c = int(rng.integers(0, max(1, h - bh))), int(rng.integers(0, max(1, w - bw)))
        z = float(rng.uniform(z0, z1))
        roof = np.asarray(ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))], np.float32)
        block = np.full((bh, bw), z, np.float32)
        shade = np.ones((bh, bw), np.float32)
        if category in ("residential", "suburbs") and min(bh, bw) >= 4:  # a gable: ridge along the long side
            across = np.abs(np.arange(bh) - (bh - 1) / 2)[:, None] / max(1.0, bh / 2) if bw >= bh else \
                np.abs(np.arange(bw) - (bw - 1) / 2)[None, :] / max(1.0, bw / 2)
            block = block + 2.5 * (1 - across)
            shade = np.where(np.arange(bh)[:, None] < bh / 2, 1.15, 0.85) * np.ones((1, bw)) if bw >= bh else \
                np.where(np.arange(bw)[None, :] < bw / 2, 1.15, 0.85) * np.ones((bh, 1))
        if category == "garden_centre":  # glasshouses: pale, striped
            roof = np.asarray((200, 215, 210), np.float32)
            shade = (1.0 + 0.1 * np.sin(np.arange(bw) * 1.5))[None, :] * np.ones((bh, 1))
        height[r:r + bh, c:c + bw] = np.maximum(height[r:r + bh, c:c + bw], block)
        rgb[r:r + bh, c:c + bw] = roof * shade[..., None]
    for _ in range(n_tree):
        rad = side * rng.uniform(0.05, 0.12)
        cy, cx, z = rng.uniform(0, h), rng.uniform(0, w), float(rng.uniform(4.0, 16.0))
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(rad, 1.0)
        crown = d < 1
        dome = np.where(crown, z * np.sqrt(np.clip(1 - d ** 2, 0, 1)) * 0.4 + z * 0.6, 0).astype(np.float32)
        above = crown & (dome > height)
        height = np.where(above, dome, height)
        green = np.asarray((48, 92, 40), np.float32) * (1.25 - 0.45 * d)[..., None]
        rgb = np.where(above[..., None], green, rgb)
    # shadows: a pixel is in shadow when something within the sun's line of sight towards the north-west rises
    # above the sight line (SUN_SLOPE pixels per metre)
    shadow = np.zeros((h, w), bool)
    reach = int(min(side / 4, np.ceil(float(height.max()) * SUN_SLOPE))) if height.max() > 0 else 0
    for k in range(1, reach + 1):
        caster = np.zeros_like(height)
        caster[k:, k:] = height[:-k, :-k]
        shadow |= caster - k / SUN_SLOPE > height + 0.5
    rgb = np.where(shadow[..., None], rgb * 0.55, rgb)
    rgb += rng.normal(0, 6, rgb.shape)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), height


def write_aerial(root: Path, n: int = 6, size=(64, 64), seed: int = 0, epsg: int = 25832,
                 pixel: float = 0.1, categories=None, splits=(4, 1, 1)) -> Path:
    """Aerial tiles: ``rgb/<name>.tif`` (uint8 RGB orthophoto) and ``height/<name>.tif`` (float32 heights
    above ground in metres, nodata -9999, one corner without LiDAR returns) on the same grid in
    EPSG:``epsg`` at ``pixel`` metres, ``categories.csv`` (the aerial dataset's categories in turn,
    or ``categories``) and ``splits/{train,val,test}.txt`` with ``splits`` tiles each. Each tile is an
    :func:`aerial_scene` of its category (bare ground is 0 m)."""
    import rasterio
    from rasterio.transform import from_origin

    from depthlab.data.aerial import CATEGORIES

    cats = list(categories or CATEGORIES)
    names, rows = [], ["name,category"]
    for k in range(n):
        name, cat = f"tile_{k:03d}", cats[k % len(cats)]
        rgb, height = aerial_scene(seed * 100_003 + k, size, cat if cat in AERIAL_MIX else "residential")
        height[:2, :2] = -9999.0
        tf = from_origin(350000.0 + 1000.0 * k, 5650000.0, pixel, pixel)
        for sub, bands, dtype, nodata in (("rgb", rgb.transpose(2, 0, 1), "uint8", None),
                                          ("height", height[None], "float32", -9999.0)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            with rasterio.open(root / sub / f"{name}.tif", "w", driver="GTiff", width=size[1], height=size[0],
                               count=bands.shape[0], dtype=dtype, crs=f"EPSG:{epsg}", transform=tf,
                               nodata=nodata) as dst:
                dst.write(bands)
        names.append(name)
        rows.append(f"{name},{cat}")
    (root / "categories.csv").write_text("\n".join(rows) + "\n")
    (root / "splits").mkdir(exist_ok=True)
    start = 0
    for split, count in zip(("train", "val", "test"), splits):
        (root / "splits" / f"{split}.txt").write_text("".join(f"{s}\n" for s in names[start:start + count]))
        start += count
    return root


# ------------------------------------------------------------------------------------------ aerial portal
#: the portal fixture's scene, in EPSG:25832 metres: two 48 m x 48 m orthophoto tiles side by side
PORTAL_ORIGIN = (350000.0, 5650000.0)  # south-west corner of tile ``dop_a``; ``dop_b`` lies east of it
#: (x0, y0, x1, y1 relative to PORTAL_ORIGIN, height above ground in m): two buildings and a pit (a DSM below
#: the DTM, e.g. a fresh excavation, which ``prepare`` clips to 0)
PORTAL_OBJECTS = ((10.0, 10.0, 30.0, 30.0, 12.0), (60.0, 20.0, 80.0, 40.0, 8.0), (36.0, 4.0, 42.0, 10.0, -2.0))
PORTAL_DSM_EAST = 92.0  # the DSM GeoTIFF ends here (relative x): the last 4 m of ``dop_b`` have no DSM


def portal_terrain(x, y):
    """The fixture's ground height (m) at EPSG:25832 ``x, y``: a plane rising east and north."""
    return 60.0 + 0.02 * (np.asarray(x) - PORTAL_ORIGIN[0]) + 0.01 * (np.asarray(y) - PORTAL_ORIGIN[1])


def portal_objects(x, y):
    """Height above ground (m) of the fixture's objects at EPSG:25832 ``x, y`` (0 on open ground)."""
    dx, dy = np.asarray(x) - PORTAL_ORIGIN[0], np.asarray(y) - PORTAL_ORIGIN[1]
    h = np.zeros(np.broadcast(dx, dy).shape)
    for x0, y0, x1, y1, z in PORTAL_OBJECTS:
        h = np.where((dx >= x0) & (dx < x1) & (dy >= y0) & (dy < y1), z, h)
    return h


def _portal_grid(crs, res: float, margin: float = 6.0):
    """Cell-centre coordinates (in ``crs``) of a ``res`` grid covering the scene, and the same points in
    EPSG:25832."""
    from rasterio.warp import transform, transform_bounds

    x0, y0 = PORTAL_ORIGIN
    left, bottom, right, top = transform_bounds("EPSG:25832", crs, x0 - margin, y0 - margin, x0 + 96 + margin,
                                                y0 + 48 + margin)
    xs = np.arange(np.floor(left / res) * res, right, res) + res / 2
    ys = np.arange(np.ceil(top / res) * res, bottom, -res) - res / 2
    gx, gy = np.meshgrid(xs, ys)
    ux, uy = transform(crs, "EPSG:25832", gx.ravel(), gy.ravel())
    return gx, gy, np.asarray(ux).reshape(gx.shape), np.asarray(uy).reshape(gx.shape)


def _portal_orthos(root: Path, pixel: float) -> None:
    """``ortho/dop_a.tif`` (RGB uint8) and ``ortho/dop_b.tif`` (RGBI uint16, nodata 0 in its top-left 4 m)."""
    import rasterio
    from rasterio.transform import from_origin

    n = int(round(48 / pixel))
    rng = np.random.default_rng(0)
    for k, (name, dtype, scale) in enumerate((("dop_a", "uint8", 1), ("dop_b", "uint16", 257))):
        left = PORTAL_ORIGIN[0] + 48.0 * k
        tf = from_origin(left, PORTAL_ORIGIN[1] + 48.0, pixel, pixel)
        cx = left + (np.arange(n) + 0.5) * pixel
        cy = PORTAL_ORIGIN[1] + 48.0 - (np.arange(n) + 0.5) * pixel
        h = portal_objects(*np.meshgrid(cx, cy))
        rgb = np.stack([np.where(h > 9, 180, np.where(h > 0, 140, np.where(h < 0, 120, 70))),
                        np.where(h > 0, 70, np.where(h < 0, 90, 120)),
                        np.where(h > 0, 60 + 3 * h, 50)]).astype(np.float64) + rng.normal(0, 8, (3, n, n))
        bands = np.clip(np.concatenate([rgb, rgb[1:2] + 40]) if k else rgb, 1, 255) * scale
        if k:
            bands[:, : int(4 / pixel), : int(4 / pixel)] = 0  # no image here: nodata
        (root / "ortho").mkdir(parents=True, exist_ok=True)
        with rasterio.open(root / "ortho" / f"{name}.tif", "w", driver="GTiff", width=n, height=n,
                           count=bands.shape[0], dtype=dtype, crs="EPSG:25832", transform=tf,
                           nodata=0 if k else None) as dst:
            dst.write(bands.astype(dtype))


def _portal_laz(path: Path, crs: str, spacing: float = 0.5) -> None:
    """A classified point cloud in ``crs``: ground (2) everywhere but under buildings, building roofs (6),
    a 6 m tree (5) over ground near the east edge, one high-noise point (18) 100 m above building 1."""
    import laspy
    from laspy.vlrs.known import WktCoordinateSystemVlr
    from rasterio.crs import CRS
    from rasterio.warp import transform

    x0, y0 = PORTAL_ORIGIN
    gx, gy = np.meshgrid(np.arange(x0 - 4, x0 + 100, spacing) + 0.1, np.arange(y0 - 4, y0 + 52, spacing) + 0.1)
    x, y = gx.ravel(), gy.ravel()
    ground, h = portal_terrain(x, y), np.maximum(portal_objects(x, y), 0.0)
    tree = np.hypot(x - (x0 + 86.0), y - (y0 + 10.0)) < 3.0
    xs = np.concatenate([x[h == 0], x[h > 0], x[tree], [x0 + 20.0]])
    ys = np.concatenate([y[h == 0], y[h > 0], y[tree], [y0 + 20.0]])
    zs = np.concatenate([ground[h == 0], (ground + h)[h > 0], ground[tree] + 6.0, [portal_terrain(x0 + 20, y0 + 20) + 100]])
    cls = np.concatenate([np.full((h == 0).sum(), 2), np.full((h > 0).sum(), 6), np.full(tree.sum(), 5), [18]])
    px, py = transform("EPSG:25832", crs, xs, ys)
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets, header.scales = [np.floor(min(px)), np.floor(min(py)), 0.0], [0.001, 0.001, 0.001]
    header.vlrs.append(WktCoordinateSystemVlr(CRS.from_user_input(crs).to_wkt()))
    header.global_encoding.wkt = True
    las = laspy.LasData(header)
    las.x, las.y, las.z, las.classification = np.asarray(px), np.asarray(py), zs, cls.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    las.write(path)


def write_aerial_portal(root: Path, pixel: float = 0.5, dsm_crs: str = "EPSG:25833", dtm_crs: str = "EPSG:4647",
                        laz_crs: str = "EPSG:25833") -> Path:
    """What a survey portal hands out for a 96 m x 48 m scene (:data:`PORTAL_ORIGIN`), as input to
    ``depthlab aerial prepare``: ``ortho/dop_{a,b}.tif`` (EPSG:25832, ``pixel`` m), ``dsm/dom1.tif`` (1 m
    GeoTIFF in ``dsm_crs``, nodata -9999, ends at :data:`PORTAL_DSM_EAST`), ``dtm/dgm1.xyz`` (1 m ``x y z``
    grid in ``dtm_crs``, no CRS inside), ``lidar/points.laz`` (classified points in ``laz_crs``),
    ``areas.geojson`` (category polygons, EPSG:4326) and ``tiles.csv`` (per-tile categories).
    The DSM is :func:`portal_terrain` + :func:`portal_objects`, the DTM :func:`portal_terrain`: nDSM by hand."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform

    _portal_orthos(root, pixel)
    gx, gy, ux, uy = _portal_grid(dsm_crs, 1.0)
    dsm = (portal_terrain(ux, uy) + portal_objects(ux, uy)).astype(np.float32)
    dsm[ux > PORTAL_ORIGIN[0] + PORTAL_DSM_EAST] = -9999.0
    (root / "dsm").mkdir(parents=True, exist_ok=True)
    with rasterio.open(root / "dsm" / "dom1.tif", "w", driver="GTiff", width=dsm.shape[1], height=dsm.shape[0],
                       count=1, dtype="float32", crs=dsm_crs, nodata=-9999.0,
                       transform=from_origin(gx[0, 0] - 0.5, gy[0, 0] + 0.5, 1.0, 1.0)) as dst:
        dst.write(dsm[None])
    gx, gy, ux, uy = _portal_grid(dtm_crs, 1.0)
    lines = [f"{a:.2f} {b:.2f} {c:.3f}" for a, b, c in zip(gx.ravel(), gy.ravel(), portal_terrain(ux, uy).ravel())]
    (root / "dtm").mkdir(parents=True, exist_ok=True)
    (root / "dtm" / "dgm1.xyz").write_text("\n".join(lines) + "\n")
    _portal_laz(root / "lidar" / "points.laz", laz_crs)
    x0, y0 = PORTAL_ORIGIN
    areas = [("residential", (x0 - 2, y0 - 2, x0 + 48, y0 + 50)), ("industrial", (x0 + 48, y0 - 2, x0 + 98, y0 + 50))]
    feats = []
    for label, (a, b, c, d) in areas:
        lon, lat = transform("EPSG:25832", "EPSG:4326", [a, c, c, a, a], [b, b, d, d, b])
        feats.append({"type": "Feature", "properties": {"category": label},
                      "geometry": {"type": "Polygon", "coordinates": [[[float(u), float(v)] for u, v in zip(lon, lat)]]}})
    (root / "areas.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    (root / "tiles.csv").write_text("name,category\ndop_a,industrial\ndop_b,residential\n")
    return root


FIXTURES: dict[str, Callable[..., Path]] = {
    "nyu_mat": write_nyu_mat,
    "nyu_reduced": write_nyu_reduced,
    "kitti": write_kitti,
    "diode": write_diode,
    "endoslam": write_endoslam,
    "aerial": write_aerial,
    "aerial_portal": write_aerial_portal,
}


def list_fixtures() -> list[str]:
    return sorted(FIXTURES)


def write_fixture(kind: str, root, **kwargs) -> Path:
    """Write fixture ``kind`` into the folder ``root`` (created) and return the path for ``data.root``.

    A tree written before with the same kind and arguments (its ``.complete`` marker matches) is reused;
    anything else in ``root`` is replaced. The tree is built in a sibling temp folder and renamed."""
    if kind not in FIXTURES:
        raise unknown_name("fixture kind", kind, sorted(FIXTURES))
    root = Path(root)
    stamp = json.dumps({"kind": kind, **kwargs}, sort_keys=True, default=str)
    marker = root / _MARKER
    if marker.is_file() and (root / _PATH).is_file() and marker.read_text() == stamp:
        return (root / (root / _PATH).read_text()).resolve()
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    path = FIXTURES[kind](tmp, **kwargs)
    (tmp / _PATH).write_text(Path(path).resolve().relative_to(tmp.resolve()).as_posix())
    (tmp / _MARKER).write_text(stamp)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return (root / (root / _PATH).read_text()).resolve()
