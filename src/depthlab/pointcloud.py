"""Metric depth maps to coloured 3-D point clouds (camera frame) and binary PLY files.

Camera frame (OpenCV convention): origin at the optical centre, ``x`` right, ``y`` down, ``z`` forward, in
metres. Pixel ``(u, v)`` = (column, row) with integer pixel centres, so a pixel at the principal point
``(cx, cy)`` with depth ``d`` maps to ``(0, 0, d)`` and the pixel ``fx`` columns to its right to ``(d, 0, d)``:
``X = (u - cx) d / fx``, ``Y = (v - cy) d / fy``, ``Z = d`` (``d`` is the z-depth, not the ray length).

Intrinsics are ``{"fx", "fy", "cx", "cy"}`` in pixels at the depth map's resolution. When none are known,
:func:`default_intrinsics` guesses a pinhole camera with a 60 degree horizontal field of view, square pixels
and the principal point at the image centre -- a guess: the cloud's shape is then only indicative.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from depthlab.errors import DataError, InputError

DEFAULT_HFOV_DEG = 60.0
_KEYS = ("fx", "fy", "cx", "cy")


# --------------------------------------------------------------------------------------------------- intrinsics
def as_intrinsics(value: Mapping[str, float] | Sequence[float] | str) -> dict[str, float]:
    """``{"fx",...}`` mapping, a 4-sequence or the string ``"fx,fy,cx,cy"`` -> ``{"fx","fy","cx","cy"}`` floats.

    Raises ValueError (one line) for a wrong count, non-numbers or non-positive focal lengths.
    """
    if isinstance(value, str):
        parts = [p for p in value.replace(" ", "").split(",") if p]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"intrinsics must be four numbers fx,fy,cx,cy (pixels), got {value!r}") from None
    elif isinstance(value, Mapping):
        missing = [k for k in _KEYS if k not in value]
        if missing:
            raise InputError(f"intrinsics lack {', '.join(missing)} (need fx, fy, cx, cy in pixels)")
        nums = [float(value[k]) for k in _KEYS]
    else:
        nums = [float(v) for v in value]
    if len(nums) != 4:
        raise InputError(f"intrinsics must be four numbers fx,fy,cx,cy (pixels), got {len(nums)}")
    out = dict(zip(_KEYS, nums))
    if not all(math.isfinite(v) for v in nums) or out["fx"] <= 0 or out["fy"] <= 0:
        raise InputError(f"intrinsics need finite values and positive fx, fy, got {out}")
    return out


def default_intrinsics(height: int, width: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> dict[str, float]:
    """A pinhole guess: horizontal FOV ``hfov_deg`` (60), ``fy = fx``, principal point at the image centre.

    ``fx = (width / 2) / tan(hfov / 2)``; ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2`` (pixel centres
    at integer coordinates).
    """
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return {"fx": fx, "fy": fx, "cx": (width - 1) / 2.0, "cy": (height - 1) / 2.0}


def _intrinsics_table(csv_path: Path) -> dict:
    """``intrinsics.csv`` parsed once per file version (a folder of N images reads it once, not N times)."""
    try:
        stamp = csv_path.stat().st_mtime_ns
    except OSError:
        return {}
    return _read_intrinsics_cached(str(csv_path), stamp)


@functools.lru_cache(maxsize=64)
def _read_intrinsics_cached(path: str, stamp: int) -> dict:
    from depthlab.data.base import read_intrinsics_csv

    return read_intrinsics_csv(Path(path))


def find_intrinsics(image_path) -> dict[str, float] | None:
    """Intrinsics shipped beside an image, or ``None``.

    Looked up in order: ``<image>.json`` / ``<stem>.json`` with an ``intrinsics`` object (or fx/fy/cx/cy at the
    top level); then ``intrinsics.csv`` (``name,fx,fy,cx,cy``; the layout of depthlab folder datasets) in the
    image's folder or its parent, row ``name`` = the image's stem. Rows with blank fields count as unknown.
    """
    return locate_intrinsics(image_path)[0]


def locate_intrinsics(image_path) -> tuple[dict[str, float] | None, str | None]:
    """(:func:`find_intrinsics`'s result, where it came from: ``"sidecar <file>"`` or
    ``"<folder>/intrinsics.csv row <stem>"``; None when nothing was found)."""
    p = Path(image_path)
    for side in (p.with_name(p.name + ".json"), p.with_suffix(".json")):
        if side.is_file() and side != p:
            try:
                obj = json.loads(side.read_text())
                return as_intrinsics(obj.get("intrinsics", obj)), f"sidecar {side.name}"
            except (ValueError, AttributeError, TypeError) as e:
                raise DataError(side, f"bad intrinsics sidecar ({e})") from None
    for folder in (p.parent, p.parent.parent):
        table = _intrinsics_table(folder / "intrinsics.csv")
        if p.stem in table:
            return as_intrinsics(table[p.stem]), f"{folder / 'intrinsics.csv'} row {p.stem}"
    return None, None


# --------------------------------------------------------------------------------------------------- geometry
def valid_depth_mask(depth: np.ndarray) -> np.ndarray:
    """``(H,W)`` bool: finite and > 0 (depthlab's 0 = missing)."""
    d = np.asarray(depth)
    return np.isfinite(d) & (d > 0)


def depth_to_points(depth: np.ndarray, intrinsics: Mapping[str, float] | Sequence[float] | str) -> np.ndarray:
    """Back-project a metric z-depth map ``(H,W)`` (metres) to camera-frame points ``(N,3)`` float32.

    One point per valid pixel (finite, > 0), in row-major pixel order (the order of
    ``rgb[valid_depth_mask(depth)]``). ``X = (u - cx) d / fx``, ``Y = (v - cy) d / fy``, ``Z = d``; x right,
    y down, z forward. Uses :func:`kornia.geometry.depth.depth_to_3d_v2`.
    """
    import torch
    from kornia.geometry.depth import depth_to_3d_v2

    k = as_intrinsics(intrinsics)
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth_to_points expects an (H,W) depth map, got shape {d.shape}")
    valid = valid_depth_mask(d)
    K = torch.tensor([[k["fx"], 0.0, k["cx"]], [0.0, k["fy"], k["cy"]], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)[None]
    xyz = depth_to_3d_v2(torch.from_numpy(np.where(valid, d, 0.0)).double()[None], K)[0]  # (H,W,3)
    return xyz.numpy()[valid].astype(np.float32)


# --------------------------------------------------------------------------------------------------- PLY
# PLY is a tiny, fixed header plus a packed record array; numpy's structured dtypes write it directly, so no
# extra dependency (plyfile/open3d) is pulled in for the one layout we emit.
_PLY_TYPES = {"float": "<f4", "uchar": "u1"}


def _vertex_dtype(with_color: bool) -> np.dtype:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if with_color:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    return np.dtype(fields)


def write_ply(path, points: np.ndarray, colors: np.ndarray | None = None, comments: Sequence[str] = ()) -> Path:
    """Write ``points (N,3)`` (float32) and optional ``colors (N,3)`` (uint8, or float in [0,1]) as a binary
    little-endian PLY (vertices only), atomically. Returns the path."""
    from depthlab.io import atomic_write, to_uint8

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rec = np.empty(len(pts), dtype=_vertex_dtype(colors is not None))
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        c = to_uint8(colors).reshape(-1, 3)
        if len(c) != len(pts):
            raise ValueError(f"{len(c)} colours for {len(pts)} points")
        rec["red"], rec["green"], rec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    lines = ["ply", "format binary_little_endian 1.0"]
    # the PLY header is ASCII: a non-ASCII comment (a folder name, say) is written escaped (\\xfc ...)
    lines += [f"comment {str(c).encode('ascii', 'backslashreplace').decode('ascii')}" for c in comments]
    lines += [f"element vertex {len(pts)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        lines += ["property uchar red", "property uchar green", "property uchar blue"]
    lines.append("end_header")
    with atomic_write(path) as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        f.write(rec.tobytes())
    return Path(path)


def read_ply(path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Read a binary little-endian vertex-only PLY as written by :func:`write_ply`.

    Returns ``(points (N,3) float32, colors (N,3) uint8 or None, header)`` with ``header`` =
    ``{"format", "vertex_count", "properties", "comments"}``. Raises DataError on anything else.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise DataError(path, "not a PLY file (no 'ply' magic line)")
        header: dict[str, Any] = {"comments": [], "properties": []}
        while True:
            line = f.readline()
            if not line:
                raise DataError(path, "PLY header has no end_header")
            tok = line.decode("ascii", "replace").strip().split()
            if not tok:
                continue
            if tok[0] == "end_header":
                break
            if tok[0] == "format":
                header["format"] = tok[1]
            elif tok[0] == "comment":
                header["comments"].append(" ".join(tok[1:]))
            elif tok[0] == "element":
                if tok[1] != "vertex":
                    raise DataError(path, f"unsupported PLY element {tok[1]!r} (vertex-only files)")
                header["vertex_count"] = int(tok[2])
            elif tok[0] == "property":
                if tok[1] not in _PLY_TYPES:
                    raise DataError(path, f"unsupported PLY property type {tok[1]!r}")
                header["properties"].append((tok[2], tok[1]))
        if header.get("format") != "binary_little_endian":
            raise DataError(path, f"unsupported PLY format {header.get('format')!r}")
        dtype = np.dtype([(name, _PLY_TYPES[t]) for name, t in header["properties"]])
        n = int(header.get("vertex_count", 0))
        rec = np.frombuffer(f.read(), dtype=dtype, count=n)
    pts = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    names = set(dtype.names)
    cols = np.stack([rec["red"], rec["green"], rec["blue"]], axis=1) if {"red", "green", "blue"} <= names else None
    return pts, cols, header


# --------------------------------------------------------------------------------------------------- predictions
def metric_depth_for_cloud(depth: np.ndarray, kind: str, scale: float | None = None) -> np.ndarray:
    """A prediction in its declared unit -> metric z-depth for back-projection.

    ``metric``: unchanged (times ``scale`` if given). ``relative``: ``scale * value`` (metres per unit);
    ``disparity``: ``scale / value``. Without ``scale``, relative and disparity predictions raise ValueError:
    an affine-invariant map has no metric shape to back-project.
    """
    d = np.asarray(depth, dtype=np.float32)
    if kind == "metric":
        return d * np.float32(scale) if scale is not None else d
    if scale is None:
        raise InputError(f"point clouds need metric depth; this model predicts {kind} values "
                         "(pass a scale -- ply_scale / --ply-scale: metres per unit for relative, metres x "
                         "disparity for disparity)")
    if kind == "relative":
        return d * np.float32(scale)
    if kind == "disparity":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, np.float32(scale) / d, 0.0).astype(np.float32)
    raise ValueError(f"unknown output kind {kind!r}")


def prediction_to_ply(path, depth: np.ndarray, rgb: np.ndarray | None, intrinsics=None, kind: str = "metric",
                      scale: float | None = None, intrinsics_source: str = "given") -> tuple[Path, dict[str, Any]]:
    """Write a prediction as a coloured PLY; returns ``(path, sidecar entry)``.

    ``rgb``: ``(H,W,3)`` (uint8 or float [0,1]) at the depth's size, or None. ``intrinsics`` None ->
    :func:`default_intrinsics` (recorded as a guess in the entry). Invalid pixels are skipped.
    """
    d = metric_depth_for_cloud(depth, kind, scale)
    h, w = d.shape
    guessed = intrinsics is None
    k = default_intrinsics(h, w) if guessed else as_intrinsics(intrinsics)
    pts = depth_to_points(d, k)
    cols = None
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[:2] != (h, w):
            raise InputError(f"colour image {rgb.shape[1]}x{rgb.shape[0]} differs from depth {w}x{h}")
        cols = rgb[valid_depth_mask(d)]
    src = f"default {DEFAULT_HFOV_DEG:g} deg horizontal FOV guess" if guessed else intrinsics_source
    comments = ["depthlab point cloud; camera frame x right, y down, z forward; metres",
                f"intrinsics fx={k['fx']:.6g} fy={k['fy']:.6g} cx={k['cx']:.6g} cy={k['cy']:.6g} ({src})"]
    out = write_ply(path, pts, cols, comments)
    entry = {"ply_points": int(len(pts)), "ply_intrinsics": k, "ply_intrinsics_source": src,
             "ply_frame": "camera: x right, y down, z forward; metres"}
    if scale is not None:
        entry["ply_scale"] = float(scale)
    return out, entry


__all__ = ["as_intrinsics", "default_intrinsics", "find_intrinsics", "locate_intrinsics",
           "valid_depth_mask", "depth_to_points", "write_ply", "read_ply", "metric_depth_for_cloud", "prediction_to_ply", "DEFAULT_HFOV_DEG"]
