"""Procedural indoor scenes rendered by analytic ray casting: RGB plus *exact* metric depth.

These scenes are depthlab's always-available data (unit and learning tests, the demo). They are
built to carry the monocular cues real networks learn from: perspective (a floor plane and walls
seen by a pitched, rolled pinhole camera), texture gradients (floor and wall textures defined in
metres in world space, so their image-space frequency grows with distance), occlusion (objects
in front of each other and of the walls), shading (Lambertian with a point light and ambient
term) with hard cast shadows, and relative size (objects of bounded physical sizes).

Scene model (world frame: metres, ``z`` up, right-handed)

* a room ``x in [0, width]``, ``y in [0, length]``, ``z in [0, height]`` (floor ``z = 0``);
  ``width, length ~ U(3, 8)``, ``height ~ U(2.4, 3.2)``; the camera and the light are inside it;
* boxes (rotated about the vertical axis), spheres and vertical capped cylinders standing on the
  floor, some boxes carrying a smaller object on top;
* one point light below the ceiling plus an ambient term; colours are gamma-encoded at the end;
* a pinhole camera: position inside the room at height ``U(1, 1.8)`` m, yaw anywhere, pitch
  ``U(-25, 10)`` degrees (negative = looking down), roll ``N(0, 2)`` degrees clipped to +-5,
  horizontal FOV ``U(50, 80)`` degrees, square pixels, principal point within 3 % of the centre.

Camera convention (OpenCV/NYU/KITTI): camera ``x`` right, ``y`` down, ``z`` forward; pixel
``(row i, col j)`` has its centre at image coordinates ``(u, v) = (j, i)`` (integer centres, the
convention of ``kornia.geometry.depth_to_3d``); intrinsics ``fx, fy, cx, cy`` in pixels.

Depth is the z-depth along the optical axis (not the Euclidean ray length), in metres, as in the
NYU and KITTI depth maps. Each primary ray is ``d = R @ ((u-cx)/fx, (v-cy)/fy, 1)``, so the ray
parameter ``t`` of the first hit *is* the z-depth; it is computed in float64 from closed-form
ray/plane, ray/slab (boxes, in the box frame), ray/sphere and ray/capped-cylinder intersections
and stored as float32. With ``supersample > 1`` only the colour is averaged over sub-pixel rays;
depth and labels always come from the pixel-centre rays.

Determinism: :func:`render_scene` draws everything (scene and optional sensor noise) from
``numpy.random.default_rng(seed)``; procedural textures are hash functions of world coordinates
and a per-scene texture seed, so a seed gives bit-identical arrays on any machine with the same
numpy.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from depthlab.errors import InputError

__all__ = [
    "RENDER_VERSION",
    "SPLITS",
    "Material",
    "Box",
    "Sphere",
    "Cylinder",
    "Room",
    "Camera",
    "Light",
    "Scene",
    "sample_scene",
    "render",
    "render_scene",
    "scene_seed",
    "SyntheticScenes",
    "SURFACE_NAMES",
    "FIRST_OBJECT_LABEL",
]

#: Bumped whenever a change alters rendered pixels (keys the optional on-disk cache).
RENDER_VERSION = 1

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Label values of the room surfaces in ``render(...)["labels"]``; object ``k`` has label ``6 + k``.
SURFACE_NAMES: tuple[str, ...] = ("floor", "ceiling", "wall_x0", "wall_x1", "wall_y0", "wall_y1")
FIRST_OBJECT_LABEL = len(SURFACE_NAMES)

FLOOR_STYLES = ("checker", "tiles", "planks")
WALL_STYLES = ("stripes", "plaster", "wainscot")
PATTERNS = ("plain", "stripes", "checker", "noise")

_T_EPS = 1e-7  # smallest accepted ray parameter (rays never start inside a surface by more)
_SHADOW_OFFSET = 1e-4  # metres; shadow rays start this far off the surface along its normal


# --------------------------------------------------------------------------------------------
# Procedural noise. Hand-written on purpose: textures must be pure functions of world coordinates
# (so a surface point has one colour whatever the view, which is what makes texture a depth cue),
# and neither numpy, torch nor kornia provide coordinate-hashed lattice noise.


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice coordinates -> pseudo-random float64 in [0, 1) (uint64 wrap-around hash)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B1)
        h ^= iy.astype(np.int64).view(np.uint64) * np.uint64(0x85EBCA77)
        h ^= np.uint64((seed * 0xC2B2AE3D) & 0xFFFFFFFFFFFF)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def _value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1) on a unit lattice (bilinear with smoothstep weights)."""
    iu = np.floor(u)
    iv = np.floor(v)
    fu = u - iu
    fv = v - iv
    fu = fu * fu * (3.0 - 2.0 * fu)
    fv = fv * fv * (3.0 - 2.0 * fv)
    iu = iu.astype(np.int64)
    iv = iv.astype(np.int64)
    a = _hash01(iu, iv, seed)
    b = _hash01(iu + 1, iv, seed)
    c = _hash01(iu, iv + 1, seed)
    d = _hash01(iu + 1, iv + 1, seed)
    top = a + (b - a) * fu
    bot = c + (d - c) * fu
    return top + (bot - top) * fv


def _fbm(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 2) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1)."""
    total = np.zeros_like(u)
    amp, norm, freq = 1.0, 0.0, 1.0
    for o in range(octaves):
        total += amp * _value_noise(u * freq, v * freq, seed + 101 * o)
        norm += amp
        amp *= 0.5
        freq *= 2.03
    return total / norm


def _mix(c1, c2, w: np.ndarray) -> np.ndarray:
    """Per-point blend of two RGB colours: ``(1-w) c1 + w c2`` -> (N, 3)."""
    c1 = np.asarray(c1, dtype=np.float64)
    c2 = np.asarray(c2, dtype=np.float64)
    return c1[None, :] + (c2 - c1)[None, :] * w[:, None]


def _random_color(rng: np.random.Generator, sat=(0.2, 0.75), val=(0.35, 0.95)) -> tuple[float, float, float]:
    h = float(rng.uniform(0.0, 1.0))
    s = float(rng.uniform(*sat))
    v = float(rng.uniform(*val))
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


# --------------------------------------------------------------------------------------------
# Scene description (plain data; JSON-able through ``Scene.to_dict``)


@dataclass
class Material:
    """Albedo pattern of an object, in the object's own frame (metres).

    ``pattern``: ``plain`` (base colour with faint noise), ``stripes`` (horizontal bands of period
    ``scale``), ``checker`` (3-D checker of cell ``scale``) or ``noise`` (value noise of feature
    size ``scale``); ``color2`` is the second colour of the pattern.
    """

    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.2, 0.2, 0.2)
    pattern: str = "plain"
    scale: float = 0.2
    seed: int = 0

    def albedo(self, q: np.ndarray) -> np.ndarray:
        """Object-frame points (N, 3) in metres -> albedo (N, 3) in [0, 1]."""
        s = self.scale
        if self.pattern == "stripes":
            w = (np.floor(q[:, 2] / s) % 2).astype(np.float64)
        elif self.pattern == "checker":
            w = (np.floor(q / s).sum(axis=1) % 2).astype(np.float64)
        elif self.pattern == "noise":
            w = _fbm(q[:, 0] / s + 0.61 * q[:, 2] / s, q[:, 1] / s - 0.37 * q[:, 2] / s, self.seed)
        else:
            w = 0.15 * _value_noise(q[:, 0] * 7.0 + q[:, 2] * 3.1, q[:, 1] * 7.0 - q[:, 2] * 2.3, self.seed)
        return _mix(self.color, self.color2, w)


@dataclass
class Box:
    """Box of half extents ``half`` (x, y, z in its own frame) centred at ``center``, rotated by
    ``yaw`` radians about the vertical axis."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    material: Material
    kind: str = field(default="box", init=False)

    def _frame(self):
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        # columns: the box's local x and y axes in world coordinates; local z = world z
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def to_local(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) @ self._frame()

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Slab test in the box frame. ``o`` (3,) or (N,3), ``d`` (N,3) -> t (N,), inf = miss."""
        rot = self._frame()
        ol = np.broadcast_to((o - np.asarray(self.center)) @ rot, d.shape)
        dl = d @ rot
        tnear = np.full(len(d), -np.inf)
        tfar = np.full(len(d), np.inf)
        # one slab at a time on 1-D columns (much faster than reductions over a (N,3) axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            for ax, h in enumerate(self.half):
                inv = 1.0 / dl[:, ax]
                t1 = (-h - ol[:, ax]) * inv
                t2 = (h - ol[:, ax]) * inv
                # fmin/fmax ignore the NaN of a ray lying exactly in a slab plane (0 * inf)
                tnear = np.fmax(tnear, np.fmin(t1, t2))
                tfar = np.fmin(tfar, np.fmax(t1, t2))
        t = np.where(tnear > _T_EPS, tnear, tfar)
        return np.where((tfar >= tnear) & (t > _T_EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        q = self.to_local(p) / np.asarray(self.half)
        axis = np.abs(q).argmax(axis=1)
        n_local = np.zeros_like(q)
        rows = np.arange(len(q))
        n_local[rows, axis] = np.sign(q[rows, axis])
        return n_local @ self._frame().T

    def top(self) -> float:
        return self.center[2] + self.half[2]

    def footprint_radius(self) -> float:
        return math.hypot(self.half[0], self.half[1])


@dataclass
class Sphere:
    center: tuple[float, float, float]
    radius: float
    material: Material
    kind: str = field(default="sphere", init=False)

    def to_local(self, p: np.ndarray) -> np.ndarray:
        return p - np.asarray(self.center)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - np.asarray(self.center)
        a = np.einsum("ij,ij->i", d, d)
        b = d @ oc if oc.ndim == 1 else np.einsum("ij,ij->i", d, oc)
        c = (oc * oc).sum(axis=-1) - self.radius**2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0 = (-b - sq) / a
        t1 = (-b + sq) / a
        t = np.where(t0 > _T_EPS, t0, np.where(t1 > _T_EPS, t1, np.inf))
        return np.where(disc >= 0.0, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return (p - np.asarray(self.center)) / self.radius

    def top(self) -> float:
        return self.center[2] + self.radius

    def footprint_radius(self) -> float:
        return self.radius


@dataclass
class Cylinder:
    """Vertical capped cylinder: axis through ``base`` (x, y, z0), radius ``radius``, height
    ``height`` (z from z0 to z0 + height)."""

    base: tuple[float, float, float]
    radius: float
    height: float
    material: Material
    kind: str = field(default="cylinder", init=False)

    def to_local(self, p: np.ndarray) -> np.ndarray:
        return p - np.asarray(self.base)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        bx, by, z0 = self.base
        z1 = z0 + self.height
        r2 = self.radius**2
        o = np.broadcast_to(o, d.shape)
        ox, oy, oz = o[:, 0] - bx, o[:, 1] - by, o[:, 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - r2
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = np.sqrt(np.maximum(disc, 0.0))
            best = np.full(len(d), np.inf)
            for ts in ((-b - sq) / a, (-b + sq) / a):
                z = oz + ts * dz
                ok = (disc >= 0.0) & (a > 0.0) & (ts > _T_EPS) & (z >= z0) & (z <= z1)
                best = np.where(ok & (ts < best), ts, best)
            for zc in (z0, z1):
                tc = (zc - oz) / dz
                px = ox + tc * dx
                py = oy + tc * dy
                ok = (tc > _T_EPS) & (px * px + py * py <= r2)
                best = np.where(ok & (tc < best), tc, best)
        return best

    def normal(self, p: np.ndarray) -> np.ndarray:
        bx, by, z0 = self.base
        rx, ry = p[:, 0] - bx, p[:, 1] - by
        rho = np.sqrt(rx * rx + ry * ry)
        d_side = np.abs(rho - self.radius)
        d_top = np.abs(p[:, 2] - (z0 + self.height))
        d_bot = np.abs(p[:, 2] - z0)
        n = np.zeros_like(p)
        side = (d_side <= d_top) & (d_side <= d_bot)
        safe = np.maximum(rho, 1e-12)
        n[:, 0] = np.where(side, rx / safe, 0.0)
        n[:, 1] = np.where(side, ry / safe, 0.0)
        n[:, 2] = np.where(side, 0.0, np.where(d_top <= d_bot, 1.0, -1.0))
        return n

    def top(self) -> float:
        return self.base[2] + self.height

    def footprint_radius(self) -> float:
        return self.radius


SceneObject = Box | Sphere | Cylinder


@dataclass
class Room:
    """Axis-aligned room ``[0,width] x [0,length] x [0,height]`` (metres) and its textures.

    ``floor_style``: ``checker`` | ``tiles`` | ``planks`` | ``plain``; ``wall_style``: ``stripes``
    | ``plaster`` | ``wainscot`` | ``plain``. ``scale`` is the tile / plank / stripe size in metres.
    """

    width: float
    length: float
    height: float
    floor_style: str = "plain"
    wall_style: str = "plain"
    floor_colors: tuple = ((0.6, 0.6, 0.6), (0.3, 0.3, 0.3))
    wall_colors: tuple = ((0.75, 0.75, 0.75), (0.5, 0.5, 0.5))
    ceiling_color: tuple = (0.9, 0.9, 0.9)
    floor_scale: float = 0.5
    wall_scale: float = 0.3
    plank_axis: int = 0
    texture_seed: int = 0

    @property
    def size(self) -> np.ndarray:
        return np.array([self.width, self.length, self.height])

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit point of rays starting inside the room -> (t (N,), surface label (N,) int)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t_lo = (0.0 - o) / d
            t_hi = (self.size - o) / d
        t_exit = np.where(d > 0, t_hi, np.where(d < 0, t_lo, np.inf))
        axis = t_exit.argmin(axis=1)
        rows = np.arange(len(d))
        t = t_exit[rows, axis]
        positive = d[rows, axis] > 0
        # axis 2 -> floor(0)/ceiling(1); axis 0 -> walls 2/3; axis 1 -> walls 4/5
        first = np.array([2, 4, 0])[axis]
        return t, first + positive.astype(np.int64)

    @staticmethod
    def normals(labels: np.ndarray) -> np.ndarray:
        table = np.array(
            [[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64
        )
        return table[labels]

    def albedo(self, label: int, p: np.ndarray) -> np.ndarray:
        """Albedo (N,3) of room surface ``label`` at world points ``p`` (N,3)."""
        seed = self.texture_seed
        if label == 0:
            return self._floor_albedo(p[:, 0], p[:, 1])
        if label == 1:
            return _mix(self.ceiling_color, (0.0, 0.0, 0.0), 0.08 * _value_noise(p[:, 0] * 3, p[:, 1] * 3, seed + 7))
        # walls: horizontal coordinate along the wall (offset per wall so joints do not line up)
        s = (p[:, 1] if label in (2, 3) else p[:, 0]) + 0.37 * label
        return self._wall_albedo(s, p[:, 2])

    def _floor_albedo(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c1, c2 = self.floor_colors
        sc, seed = self.floor_scale, self.texture_seed
        if self.floor_style == "checker":
            w = ((np.floor(x / sc) + np.floor(y / sc)) % 2).astype(np.float64)
            out = _mix(c1, c2, w)
        elif self.floor_style == "tiles":
            ix, iy = np.floor(x / sc), np.floor(y / sc)
            tone = _hash01(ix.astype(np.int64), iy.astype(np.int64), seed)
            out = _mix(c1, c2, 0.35 * tone)
            gu, gv = x / sc - ix, y / sc - iy
            grout = (np.minimum(gu, 1 - gu) < 0.03) | (np.minimum(gv, 1 - gv) < 0.03)
            out[grout] *= 0.45
        elif self.floor_style == "planks":
            u, v = (x, y) if self.plank_axis == 0 else (y, x)
            board_w, board_l = sc * 0.35, sc * 3.0
            row = np.floor(v / board_w)
            shift = _hash01(row.astype(np.int64), np.zeros_like(row, dtype=np.int64), seed) * board_l
            col = np.floor((u + shift) / board_l)
            tone = _hash01(row.astype(np.int64), col.astype(np.int64), seed + 3)
            grain = _value_noise(u * 1.5, v * 40.0, seed + 5)
            out = _mix(c1, c2, 0.6 * tone + 0.4 * grain)
            fv = v / board_w - row
            fu = (u + shift) / board_l - col
            joint = (np.minimum(fv, 1 - fv) < 0.05) | (np.minimum(fu, 1 - fu) < 0.008)
            out[joint] *= 0.5
        else:
            out = _mix(c1, c1, np.zeros_like(x))
        if self.floor_style != "plain":
            out *= (0.9 + 0.2 * _value_noise(x * 0.8, y * 0.8, seed + 11))[:, None]
        return out

    def _wall_albedo(self, s: np.ndarray, z: np.ndarray) -> np.ndarray:
        c1, c2 = self.wall_colors
        sc, seed = self.wall_scale, self.texture_seed
        if self.wall_style == "stripes":
            out = _mix(c1, c2, ((s / sc) % 1.0 < 0.5).astype(np.float64))
        elif self.wall_style == "plaster":
            out = _mix(c1, c2, 0.6 * _fbm(s / sc, z / sc, seed + 13, octaves=3))
        elif self.wall_style == "wainscot":
            lower = z < 0.9
            out = _mix(c1, c2, lower.astype(np.float64))
            panel_edge = lower & (((s / sc) % 1.0) < 0.06)
            rail = np.abs(z - 0.9) < 0.025
            out[panel_edge | rail] *= 0.6
        else:
            return _mix(c1, c1, np.zeros_like(s))
        out[z < 0.08] = np.asarray(c2) * 0.5  # skirting board
        return out


@dataclass
class Camera:
    """Pinhole camera: world ``position`` (m), ``yaw`` about world z (0 = looking along +x),
    ``pitch`` (positive = up), ``roll`` about the optical axis, all in radians; horizontal field of
    view ``hfov_deg``; principal point offset from the image centre as fractions of (W, H)."""

    position: tuple[float, float, float]
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    hfov_deg: float = 60.0
    principal_offset: tuple[float, float] = (0.0, 0.0)

    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation (3,3); columns = camera x (right), y (down), z (forward)."""
        cy_, sy_ = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        forward = np.array([cp * cy_, cp * sy_, sp])
        right = np.array([sy_, -cy_, 0.0])
        down = np.cross(forward, right)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        right, down = cr * right + sr * down, -sr * right + cr * down
        return np.stack([right, down, forward], axis=1)

    def intrinsics(self, size: tuple[int, int]) -> dict[str, float]:
        """Pixel intrinsics for an image of ``size = (H, W)`` (integer pixel centres)."""
        h, w = size
        fx = (w / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)
        return {
            "fx": float(fx),
            "fy": float(fx),
            "cx": float((w - 1) / 2.0 + self.principal_offset[0] * w),
            "cy": float((h - 1) / 2.0 + self.principal_offset[1] * h),
        }


@dataclass
class Light:
    """Point light at ``position`` (m) with ``intensity`` and quadratic fall-off length
    ``falloff`` (m): irradiance ``intensity * cos / (1 + (dist/falloff)^2)``; plus ``ambient``."""

    position: tuple[float, float, float]
    intensity: float = 1.0
    falloff: float = 3.0
    ambient: float = 0.2


@dataclass
class Scene:
    room: Room
    camera: Camera
    light: Light
    objects: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (what ``render`` puts under ``meta``)."""
        objs = []
        for ob in self.objects:
            d = asdict(ob)
            d["kind"] = ob.kind
            objs.append(d)
        cam = asdict(self.camera)
        cam.update(
            yaw_deg=math.degrees(self.camera.yaw),
            pitch_deg=math.degrees(self.camera.pitch),
            roll_deg=math.degrees(self.camera.roll),
            rotation=self.camera.rotation().tolist(),
        )
        return {"room": asdict(self.room), "camera": cam, "light": asdict(self.light), "objects": objs}


# --------------------------------------------------------------------------------------------
# Random scenes


def _random_material(rng: np.random.Generator) -> Material:
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    c1 = _random_color(rng)
    c2 = _random_color(rng, sat=(0.1, 0.8), val=(0.15, 0.9))
    return Material(
        color=c1, color2=c2, pattern=pattern, scale=float(rng.uniform(0.06, 0.25)), seed=int(rng.integers(1 << 30))
    )


def _free_run(room: Room, xy, direction) -> float:
    """Horizontal distance from ``xy`` to the walls along the unit ``direction``."""
    run = math.inf
    for p, dp, hi in ((xy[0], direction[0], room.width), (xy[1], direction[1], room.length)):
        if dp > 1e-12:
            run = min(run, (hi - p) / dp)
        elif dp < -1e-12:
            run = min(run, -p / dp)
    return run


def _place(rng, room: Room, radius: float, taken: list, cam_xy, view=None, tries: int = 20):
    """Random floor position for a footprint of ``radius`` clear of walls, objects and camera.

    ``view = (cam_xy, yaw, hfov)`` draws the position inside that horizontal view wedge instead
    of uniformly over the floor."""
    margin = radius + 0.05
    if room.width <= 2 * margin or room.length <= 2 * margin:
        return None
    for _ in range(tries):
        if view is None:
            x = float(rng.uniform(margin, room.width - margin))
            y = float(rng.uniform(margin, room.length - margin))
        else:
            (cx, cy), yaw, hfov = view
            a = yaw + float(rng.uniform(-0.45, 0.45)) * hfov
            dist = float(rng.uniform(0.8, 6.0))
            x, y = cx + dist * math.cos(a), cy + dist * math.sin(a)
            if not (margin <= x <= room.width - margin and margin <= y <= room.length - margin):
                continue
        if math.hypot(x - cam_xy[0], y - cam_xy[1]) < radius + 0.35:
            continue
        if all(math.hypot(x - tx, y - ty) >= radius + tr + 0.05 for tx, ty, tr in taken):
            return x, y
    return None


def sample_scene(seed: int | np.random.Generator) -> Scene:
    """Draw a random room, camera, light and 0-9 floor objects (+ some stacked) from ``seed``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    room = _sample_room(rng)
    camera, cam_xy = _sample_camera(rng, room)
    w, ln, h = room.width, room.length, room.height
    light = Light(
        position=(float(rng.uniform(0.4, w - 0.4)), float(rng.uniform(0.4, ln - 0.4)), h - float(rng.uniform(0.15, 0.4))),
        intensity=float(rng.uniform(1.0, 1.8)),
        falloff=float(rng.uniform(2.5, 4.5)),
        ambient=float(rng.uniform(0.12, 0.3)),
    )
    objects = _sample_objects(rng, room, camera, cam_xy, max_top=light.position[2] - 0.25)
    return Scene(room=room, camera=camera, light=light, objects=objects)


def _sample_room(rng: np.random.Generator) -> Room:
    """Size (3-8 m x 3-8 m x 2.4-3.2 m), floor and wall textures and colours of a random room."""
    w, ln, h = (float(v) for v in (rng.uniform(3, 8), rng.uniform(3, 8), rng.uniform(2.4, 3.2)))
    fc1 = _random_color(rng, sat=(0.05, 0.6), val=(0.3, 0.9))
    fc2 = _random_color(rng, sat=(0.05, 0.6), val=(0.1, 0.7))
    wc1 = _random_color(rng, sat=(0.0, 0.4), val=(0.55, 0.95))
    wc2 = _random_color(rng, sat=(0.05, 0.6), val=(0.25, 0.85))
    return Room(
        width=w,
        length=ln,
        height=h,
        floor_style=FLOOR_STYLES[int(rng.integers(len(FLOOR_STYLES)))],
        wall_style=WALL_STYLES[int(rng.integers(len(WALL_STYLES)))],
        floor_colors=(fc1, fc2),
        wall_colors=(wc1, wc2),
        ceiling_color=_random_color(rng, sat=(0.0, 0.1), val=(0.8, 0.97)),
        floor_scale=float(rng.uniform(0.3, 0.8)),
        wall_scale=float(rng.uniform(0.15, 0.6)),
        plank_axis=int(rng.integers(2)),
        texture_seed=int(rng.integers(1 << 30)),
    )


def _sample_camera(rng: np.random.Generator, room: Room) -> tuple[Camera, tuple[float, float]]:
    """(camera, its floor position): yaw is uniform; the position is re-drawn (a few times) until the camera
    sees at least 2 m of room ahead horizontally, so few views are a wall filling the frame."""
    yaw = float(rng.uniform(-math.pi, math.pi))
    fwd = (math.cos(yaw), math.sin(yaw))
    for _ in range(10):
        cam_xy = (float(rng.uniform(0.3, room.width - 0.3)), float(rng.uniform(0.3, room.length - 0.3)))
        if _free_run(room, cam_xy, fwd) >= 2.0:
            break
    camera = Camera(
        position=(cam_xy[0], cam_xy[1], float(rng.uniform(1.0, 1.8))),
        yaw=yaw,
        pitch=math.radians(float(rng.uniform(-25.0, 10.0))),
        roll=math.radians(float(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0))),
        hfov_deg=float(rng.uniform(50.0, 80.0)),
        principal_offset=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
    )
    return camera, cam_xy


def _sample_objects(rng: np.random.Generator, room: Room, camera: Camera, cam_xy: tuple[float, float],
                    max_top: float) -> list:
    """0-9 boxes, spheres and cylinders on the floor, mostly in the camera's view, some with a smaller object
    on top (whose top stays below ``max_top``)."""
    objects: list = []
    taken: list = []
    for _ in range(int(rng.integers(0, 10))):
        kind = ("box", "sphere", "cylinder")[int(rng.choice(3, p=[0.45, 0.3, 0.25]))]
        mat = _random_material(rng)
        if kind == "box":
            hx, hy, hz = (float(v) for v in rng.uniform([0.15, 0.15, 0.15], [0.6, 0.6, 0.6]))
            ob: SceneObject = Box(center=(0.0, 0.0, hz), half=(hx, hy, hz), yaw=float(rng.uniform(0, math.pi)), material=mat)
        elif kind == "sphere":
            r = float(rng.uniform(0.12, 0.5))
            ob = Sphere(center=(0.0, 0.0, r), radius=r, material=mat)
        else:
            r, ht = float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.3, 1.5))
            ob = Cylinder(base=(0.0, 0.0, 0.0), radius=r, height=ht, material=mat)
        # most objects are dropped inside the camera's horizontal field of view, the rest anywhere
        view = (cam_xy, camera.yaw, math.radians(camera.hfov_deg)) if rng.uniform() < 0.7 else None
        pos = _place(rng, room, ob.footprint_radius(), taken, cam_xy, view)
        if pos is None:
            continue
        x, y = pos
        if isinstance(ob, Box):
            ob.center = (x, y, ob.center[2])
        elif isinstance(ob, Sphere):
            ob.center = (x, y, ob.center[2])
        else:
            ob.base = (x, y, 0.0)
        objects.append(ob)
        taken.append((x, y, ob.footprint_radius()))
        # sometimes something smaller sits on a box (occlusion and support cues)
        if isinstance(ob, Box) and rng.uniform() < 0.3:
            top = _stacked(rng, ob, x, y)
            if top.top() <= max_top:
                objects.append(top)
    return objects


def _stacked(rng: np.random.Generator, box, x: float, y: float):
    """A sphere or a flat box resting on ``box`` (centred at ``x, y``), smaller than its footprint."""
    small = min(box.half[0], box.half[1])
    mat2 = _random_material(rng)
    if rng.uniform() < 0.5:
        r = float(rng.uniform(0.4, 0.9)) * small
        return Sphere(center=(x, y, box.top() + r), radius=r, material=mat2)
    s = float(rng.uniform(0.4, 0.9)) * small
    hz = float(rng.uniform(0.08, 0.3))
    return Box(center=(x, y, box.top() + hz), half=(s, s, hz), yaw=float(rng.uniform(0, math.pi)), material=mat2)


# --------------------------------------------------------------------------------------------
# Rendering


def _pixel_rays(camera: Camera, size: tuple[int, int], offset=(0.0, 0.0)) -> np.ndarray:
    """World ray directions (H*W, 3), scaled so that ``t`` along them is the camera z-depth."""
    h, w = size
    k = camera.intrinsics(size)
    x = (np.arange(w, dtype=np.float64) + offset[0] - k["cx"]) / k["fx"]
    y = (np.arange(h, dtype=np.float64) + offset[1] - k["cy"]) / k["fy"]
    xx, yy = np.meshgrid(x, y)
    rays_cam = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], axis=1)
    return rays_cam @ camera.rotation().T


def _first_hit(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, labels = scene.room.intersect(o, d)
    for k, ob in enumerate(scene.objects):
        tk = ob.intersect(o, d)
        closer = tk < t
        t = np.where(closer, tk, t)
        labels = np.where(closer, FIRST_OBJECT_LABEL + k, labels)
    return t, labels


def _shade(scene: Scene, o: np.ndarray, d: np.ndarray, t: np.ndarray, labels: np.ndarray, aux: dict | None = None):
    """Linear radiance (N,3) of the first hits."""
    p = o + t[:, None] * d
    n = np.empty_like(p)
    albedo = np.empty_like(p)
    room_hit = labels < FIRST_OBJECT_LABEL
    n[room_hit] = Room.normals(labels[room_hit])
    for lab in np.unique(labels):
        sel = labels == lab
        if lab < FIRST_OBJECT_LABEL:
            albedo[sel] = scene.room.albedo(int(lab), p[sel])
        else:
            ob = scene.objects[int(lab) - FIRST_OBJECT_LABEL]
            n[sel] = ob.normal(p[sel])
            albedo[sel] = ob.material.albedo(ob.to_local(p[sel]))
    light = scene.light
    to_light = np.asarray(light.position) - p
    dist = np.sqrt(np.einsum("ij,ij->i", to_light, to_light))
    cos = np.einsum("ij,ij->i", n, to_light) / dist
    lit = cos > 0.0
    # hard shadows: a segment surface->light blocked by any object (the room cannot block it:
    # the light is inside the convex room)
    idx = np.nonzero(lit)[0]
    so = p[idx] + _SHADOW_OFFSET * n[idx]
    sd = to_light[idx]
    blocked = np.zeros(len(idx), dtype=bool)
    for ob in scene.objects:
        blocked |= ob.intersect(so, sd) < 1.0
    visible = np.zeros(len(p), dtype=bool)
    visible[idx[~blocked]] = True
    direct = light.intensity * np.where(visible, cos, 0.0) / (1.0 + (dist / light.falloff) ** 2)
    ambient = light.ambient * (0.8 + 0.2 * n[:, 2])  # a little more ambient on up-facing surfaces
    if aux is not None:
        aux.update(normals=n, albedo=albedo, shadow=lit & ~visible)
    return albedo * (ambient + direct)[:, None]


def render(
    scene: Scene,
    size: tuple[int, int] = (128, 128),
    supersample: int = 1,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    return_aux: bool = False,
) -> dict[str, Any]:
    """Ray-cast ``scene`` at ``size = (H, W)``.

    Returns ``{"image": float32 (H,W,3) in [0,1] (gamma 2.2 encoded), "depth": float32 (H,W)
    z-depth in metres (every pixel hits a surface, so all > 0), "labels": int16 (H,W) (0-5 room
    surfaces, see SURFACE_NAMES, 6+k = scene.objects[k]), "meta": {...}}``; with ``return_aux``
    also ``normals`` (H,W,3) world unit normals, ``albedo`` (H,W,3) and ``shadow`` bool (H,W)
    (facing the light but occluded), all at pixel centres.

    ``supersample = s`` averages the colour over an ``s x s`` grid of sub-pixel rays; depth and
    labels stay those of the pixel centre. ``noise_std`` adds Gaussian sensor noise (drawn from
    ``rng``) before clipping.
    """
    h, w = int(size[0]), int(size[1])
    o = np.asarray(scene.camera.position, dtype=np.float64)
    d = _pixel_rays(scene.camera, (h, w))
    t, labels = _first_hit(scene, o, d)
    aux: dict | None = {} if return_aux else None
    if supersample <= 1:
        radiance = _shade(scene, o, d, t, labels, aux)
    else:
        if return_aux:
            _shade(scene, o, d, t, labels, aux)
        radiance = np.zeros((h * w, 3))
        offs = (np.arange(supersample) + 0.5) / supersample - 0.5
        for oy in offs:
            for ox in offs:
                ds = _pixel_rays(scene.camera, (h, w), (ox, oy))
                ts, ls = _first_hit(scene, o, ds)
                radiance += _shade(scene, o, ds, ts, ls)
        radiance /= supersample * supersample
    rgb = np.power(np.clip(radiance, 0.0, 1.0), 1.0 / 2.2)
    if noise_std > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        rgb = rgb + rng.normal(0.0, noise_std, size=rgb.shape)
    out = {
        "image": np.clip(rgb, 0.0, 1.0).astype(np.float32).reshape(h, w, 3),
        "depth": t.astype(np.float32).reshape(h, w),
        "labels": labels.astype(np.int16).reshape(h, w),
        "meta": {
            "size": [h, w],
            "intrinsics": scene.camera.intrinsics((h, w)),
            "depth_convention": "z-depth along the optical axis, metres",
            "render_version": RENDER_VERSION,
            **scene.to_dict(),
        },
    }
    if return_aux:
        out["normals"] = aux["normals"].astype(np.float32).reshape(h, w, 3)
        out["albedo"] = aux["albedo"].astype(np.float32).reshape(h, w, 3)
        out["shadow"] = aux["shadow"].reshape(h, w)
    return out


def render_scene(seed: int, size: tuple[int, int] = (128, 128), supersample: int = 1, noise_std: float = 0.01) -> dict[str, Any]:
    """Random scene number ``seed`` rendered at ``size = (H, W)``; see :func:`render` for the
    returned arrays. Everything comes from ``numpy.random.default_rng(seed)``; ``meta`` also holds
    ``seed`` and ``category``."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng)
    out = render(scene, size, supersample=supersample, noise_std=noise_std, rng=rng)
    out["meta"].update(seed=int(seed), category=_category(scene))
    return out


def _category(scene: Scene) -> str:
    n = len(scene.objects)
    return "sparse" if n <= 2 else ("medium" if n <= 5 else "cluttered")


def scene_seed(seed: int, split: str, index: int) -> int:
    """The scene seed of item ``index`` of ``split`` in the stream ``seed``:
    ``((seed * 3 + split_id) << 32) + index`` with split ids train 0, val 1, test 2.

    Injective in ``(seed, split, index)`` for ``0 <= index < 2**32``, so two splits, or two base
    seeds, never share a scene (it fits int64, hence the default collate, for seed < 7e8).
    """
    if split not in SPLITS:
        raise InputError(f"unknown synthetic split {split!r}; choose from {SPLITS}")
    if not 0 <= index < 1 << 32:
        raise IndexError(index)
    if seed < 0:
        raise InputError("seed must be >= 0")
    return ((int(seed) * len(SPLITS) + SPLITS.index(split)) << 32) + int(index)


class SyntheticScenes(Dataset):
    """Procedural indoor scenes as a map-style Dataset of depthlab Samples.

    Item ``i`` of ``split`` is ``render_scene(scene_seed(seed, split, i), size)``:

    * ``image`` float32 (3,H,W) in [0,1];
    * ``depth`` float32 (1,H,W) exact z-depth in metres, set to 0 where it exceeds ``max_depth``
      (like a depth sensor's range limit; ``max_depth=None`` keeps everything);
    * ``mask`` bool (1,H,W), True where ``depth > 0``;
    * ``meta``: ``name``, ``dataset="synthetic"``, ``split``, ``index``, ``seed`` (the scene
      seed), ``category`` (``sparse`` <= 2 objects, ``medium`` 3-5, ``cluttered`` >= 6),
      ``room_style`` (``floor/wall``), ``intrinsics`` {fx, fy, cx, cy}. The full scene
      description is ``sample_scene(meta["seed"]).to_dict()`` (kept out of ``meta`` so the
      default DataLoader collate works).

    ``cache=True`` keeps every rendered item in memory (per process: each DataLoader worker has
    its own). ``root``, if given, is an on-disk cache folder: arrays are stored as
    ``<root>/synthetic_v<RENDER_VERSION>_<H>x<W>/<scene seed>.npz`` (written atomically) and reused
    by later runs; ``root=None`` renders on the fly. ``transform`` is applied to the Sample.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transform: Callable | None = None,
        n: int = 1000,
        size: tuple[int, int] = (128, 128),
        seed: int = 0,
        max_depth: float | None = 10.0,
        cache: bool = True,
        supersample: int = 1,
        noise_std: float = 0.01,
    ):
        if split not in SPLITS:
            raise InputError(f"unknown synthetic split {split!r}; choose from {SPLITS}")
        if n < 0:
            raise InputError("n must be >= 0")
        self.root = Path(root) if root is not None else None
        self.split = split
        self.transform = transform
        self.n = int(n)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.max_depth = max_depth
        self.cache = cache
        self.supersample = supersample
        self.noise_std = noise_std
        self._memory: dict[int, tuple[torch.Tensor, torch.Tensor, dict]] = {}

    def __len__(self) -> int:
        return self.n

    def scene_seed(self, index: int) -> int:
        return scene_seed(self.seed, self.split, index)

    def _disk_path(self, sseed: int) -> Path | None:
        if self.root is None:
            return None
        h, w = self.size
        tag = f"synthetic_v{RENDER_VERSION}_{h}x{w}"
        if self.supersample != 1 or self.noise_std != 0.01:
            tag += f"_ss{self.supersample}_n{self.noise_std:g}"
        return self.root / tag / f"{sseed}.npz"

    def _render(self, index: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        sseed = self.scene_seed(index)
        path = self._disk_path(sseed)
        if path is not None and path.exists():
            with np.load(path) as z:
                image, depth = z["image"], z["depth"]
        else:
            r = render_scene(sseed, self.size, supersample=self.supersample, noise_std=self.noise_std)
            image, depth = r["image"], r["depth"]
            if path is not None:
                from depthlab.io import atomic_write

                with atomic_write(path) as f:
                    np.savez(f, image=image, depth=depth)
        scene = sample_scene(sseed)  # the description only (no rendering): ~1 ms
        meta = {
            "name": f"synthetic_{self.split}_{index:06d}",
            "dataset": "synthetic",
            "split": self.split,
            "index": index,
            "seed": sseed,
            "category": _category(scene),
            "room_style": f"{scene.room.floor_style}/{scene.room.wall_style}",
            "intrinsics": scene.camera.intrinsics(self.size),
        }
        img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        depth_t = torch.from_numpy(np.ascontiguousarray(depth))[None]
        return img_t, depth_t, meta

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} synthetic scenes")
        item = self._memory.get(index)
        if item is None:
            item = self._render(index)
            if self.cache:
                self._memory[index] = item
        image, depth, meta = item
        depth = depth.clone()
        if self.max_depth is not None:
            depth[depth > self.max_depth] = 0.0
        sample = {
            "image": image.clone(),
            "depth": depth,
            "mask": depth > 0,
            "meta": {**meta, "intrinsics": dict(meta["intrinsics"])},
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"SyntheticScenes(split={self.split!r}, n={self.n}, size={self.size}, seed={self.seed}, max_depth={self.max_depth})"
