"""Paired transforms: callables that take a whole Sample dict and return a new one.

Keys (all optional except what a transform needs):

* ``image``  float (3,H,W) -- resampled bilinearly (antialiased when shrinking);
* ``depth``, ``target`` float (1,H,W), 0 = missing -- resampled without inventing values across
  holes (nearest, or the masked averaging of :class:`Resize`);
* ``teacher`` float (1,H,W) -- a distillation teacher's map (``depthlab.training.distill``): gets
  exactly the geometry of ``depth`` (same resampling, crops, flips, rotations);
* ``mask``   bool (1,H,W), True = valid -- resampled with nearest; pixels that come from outside
  the input (rotation) are False;
* ``meta``   dict -- copied, never mutated in place; ``meta["intrinsics"]`` (fx, fy, cx, cy in
  pixels, integer pixel centres) is updated by Resize, crops and flips.

Geometry is applied identically to every spatial key. Random transforms draw from torch's global
RNG (so ``torch.manual_seed``, DataLoader worker seeding and Lightning's ``seed_everything`` make
them reproducible) or from the ``generator`` given to them. Pixel operations are
``torchvision.transforms.v2.functional`` kernels.

:func:`build_transforms` turns a config (a list of ``{Name: kwargs}``) into a :class:`Compose`.
"""
from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence

import torch
import torchvision.transforms.v2.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # Normalize's defaults: timm's ImageNet statistics
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD
from torchvision.transforms.v2.functional import InterpolationMode

from depthlab.errors import unknown_name
from depthlab.types import TARGET_ENCODINGS, encode_target

__all__ = [
    "Transform",
    "Compose",
    "Resize",
    "RandomCrop",
    "CenterCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "RandomRotation",
    "ColorJitter",
    "RandomChannelSwap",
    "Normalize",
    "EncodeTarget",
    "TRANSFORMS",
    "build_transforms",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


_DENSE_KEYS = ("depth", "target", "teacher")  # metric-like maps where 0 = missing
_MASK_KEYS = ("mask",)


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * _rand(generator)


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator))


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or (H, W), got {v}")
    return v


def _spatial_size(sample: dict) -> tuple[int, int]:
    for key in ("image", *_DENSE_KEYS, *_MASK_KEYS):
        if isinstance(sample.get(key), torch.Tensor):
            return tuple(sample[key].shape[-2:])
    raise KeyError("sample has no image, depth, target or mask tensor")


def _map_spatial(sample: dict, image_fn: Callable, dense_fn: Callable, mask_fn: Callable) -> dict:
    """New sample with ``image``, the dense maps and the masks mapped by their function."""
    out = dict(sample)
    if isinstance(out.get("image"), torch.Tensor):
        out["image"] = image_fn(out["image"])
    for key in _DENSE_KEYS:
        if isinstance(out.get(key), torch.Tensor):
            out[key] = dense_fn(out[key])
    for key in _MASK_KEYS:
        if isinstance(out.get(key), torch.Tensor):
            out[key] = mask_fn(out[key])
    return out


def _with_intrinsics(sample: dict, fn: Callable[[dict], dict]) -> dict:
    """Copy ``meta`` (never mutate the caller's) and update its intrinsics with ``fn`` if present."""
    meta = sample.get("meta")
    if isinstance(meta, dict):
        meta = dict(meta)
        k = meta.get("intrinsics")
        if isinstance(k, dict) and all(c in k for c in ("fx", "fy", "cx", "cy")):
            meta["intrinsics"] = {**k, **{c: float(v) for c, v in fn(dict(k)).items()}}
        sample["meta"] = meta
    return sample


class Transform:
    """Base class. ``random`` transforms are dropped (or replaced, see :meth:`for_eval`) when
    :func:`build_transforms` builds an evaluation pipeline."""

    random: bool = False

    def __call__(self, sample: dict) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def for_eval(self) -> Transform | None:
        """The transform to use at evaluation time (``None`` = skip)."""
        return None if self.random else self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "generator")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Iterable[Callable]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self):
        return iter(self.transforms)

    def __getitem__(self, i):
        return self.transforms[i]

    def for_eval(self) -> Compose:
        kept = []
        for t in self.transforms:
            e = t.for_eval() if isinstance(t, Transform) else t
            if e is not None:
                kept.append(e)
        return Compose(kept)

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if inner else "Compose([])"


# --------------------------------------------------------------------------------------------
# Geometry


class Resize(Transform):
    """Resize every spatial key to a size derived from the input size ``(h, w)``.

    * ``size=(H, W)``: exactly ``(H, W)``; with ``keep_aspect=True`` one scale factor is used,
      the smallest that makes the result at least ``(H, W)`` in both sides (follow with a crop to
      get exactly ``(H, W)``);
    * ``short_side=S``: the shorter side becomes ``S``, aspect kept (exclusive with ``size``);
    * ``multiple_of=m``: each output side is then rounded to a multiple of ``m`` (nearest
      multiple; rounded *up* with ``keep_aspect`` so the lower bound holds); with neither
      ``size`` nor ``short_side`` it only rounds the input size (what networks with a patch or
      stride constraint need).

    The image is resized bilinearly with antialiasing. Depth (``depth``/``target``) and ``mask``:

    * ``depth_mode="nearest"`` (default): nearest-exact sampling. Every output depth is a depth of
      the input, so nothing is invented across holes *or* across occlusion edges (averaging a
      foreground and a background pixel creates a 3-D point floating between them);
    * ``depth_mode="masked"``: antialiased bilinear averaging of the valid pixels only; an output
      pixel is valid only if every input pixel with non-zero filter weight was valid (smoother
      when shrinking dense ground truth, at the price of eroding the valid area by the filter
      footprint and averaging across occlusion edges).

    ``meta["intrinsics"]`` is scaled: ``fx *= W'/w``, ``cx' = (cx + 0.5) W'/w - 0.5`` (and y).
    """

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        multiple_of: int | None = None,
        keep_aspect: bool = False,
        short_side: int | None = None,
        depth_mode: str = "nearest",
    ):
        if size is not None and short_side is not None:
            raise ValueError("Resize: give size or short_side, not both")
        if size is None and short_side is None and multiple_of is None:
            raise ValueError("Resize: give size, short_side or multiple_of")
        if keep_aspect and size is None:
            raise ValueError("Resize: keep_aspect needs size")
        if depth_mode not in ("nearest", "masked"):
            raise ValueError(f"Resize: depth_mode must be 'nearest' or 'masked', got {depth_mode!r}")
        if multiple_of is not None and multiple_of < 1:
            raise ValueError("Resize: multiple_of must be >= 1")
        self.size = _pair(size, "size") if size is not None else None
        self.multiple_of = multiple_of
        self.keep_aspect = keep_aspect
        self.short_side = short_side
        self.depth_mode = depth_mode

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The ``(H', W')`` an input of ``(h, w)`` is resized to."""
        round_up = False
        if self.short_side is not None:
            s = self.short_side / min(h, w)
            oh, ow = max(1, round(h * s)), max(1, round(w * s))
        elif self.size is not None and self.keep_aspect:
            s = max(self.size[0] / h, self.size[1] / w)
            # the 1e-9 keeps an exact product (e.g. 240 * 2.0) from being rounded up by float error
            oh, ow = max(self.size[0], math.ceil(h * s - 1e-9)), max(self.size[1], math.ceil(w * s - 1e-9))
            round_up = True
        elif self.size is not None:
            oh, ow = self.size
        else:
            oh, ow = h, w
        m = self.multiple_of
        if m:
            if round_up:
                oh, ow = math.ceil(oh / m) * m, math.ceil(ow / m) * m
            else:
                oh, ow = max(m, round(oh / m) * m), max(m, round(ow / m) * m)
        return int(oh), int(ow)

    def __call__(self, sample: dict) -> dict:
        h, w = _spatial_size(sample)
        oh, ow = self.output_size(h, w)
        if (oh, ow) == (h, w):
            return _with_intrinsics(dict(sample), lambda k: k)
        out = dict(sample)
        if isinstance(out.get("image"), torch.Tensor):
            out["image"] = F.resize(out["image"], [oh, ow], InterpolationMode.BILINEAR, antialias=True)
        if self.depth_mode == "nearest":
            for key in _DENSE_KEYS:
                if isinstance(out.get(key), torch.Tensor):
                    out[key] = F.resize(out[key], [oh, ow], InterpolationMode.NEAREST_EXACT)
            for key in _MASK_KEYS:
                if isinstance(out.get(key), torch.Tensor):
                    m = F.resize(out[key].to(torch.uint8), [oh, ow], InterpolationMode.NEAREST_EXACT)
                    out[key] = m.bool()
        else:
            self._masked(out, oh, ow)
        sx, sy = ow / w, oh / h
        return _with_intrinsics(
            out,
            lambda k: {"fx": k["fx"] * sx, "fy": k["fy"] * sy, "cx": (k["cx"] + 0.5) * sx - 0.5, "cy": (k["cy"] + 0.5) * sy - 0.5},
        )

    @staticmethod
    def _masked(out: dict, oh: int, ow: int) -> None:
        def lin(x: torch.Tensor) -> torch.Tensor:
            return F.resize(x, [oh, ow], InterpolationMode.BILINEAR, antialias=True)

        mask = out.get("mask")
        if isinstance(mask, torch.Tensor):
            valid = mask.bool()
        elif isinstance(out.get("depth"), torch.Tensor):
            valid = out["depth"] > 0
        else:
            return
        # The filter weights are non-negative, so an output is exactly 0 in the resized "invalid"
        # indicator iff no invalid input pixel contributed to it.
        clean = lin((~valid).float()) == 0
        weight = lin(valid.float())
        for key in _DENSE_KEYS:
            x = out.get(key)
            if isinstance(x, torch.Tensor):
                v = lin(torch.where(valid, x, torch.zeros_like(x)).float()) / weight.clamp_min(1e-12)
                out[key] = torch.where(clean, v, torch.zeros_like(v)).to(x.dtype)
        if isinstance(mask, torch.Tensor):
            out["mask"] = clean


def _crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    def fn(x):
        return F.crop(x, top, left, height, width)

    out = _map_spatial(sample, fn, fn, fn)
    return _with_intrinsics(out, lambda k: {"cx": k["cx"] - left, "cy": k["cy"] - top})


def _check_crop(name: str, h: int, w: int, size: tuple[int, int]) -> None:
    if size[0] > h or size[1] > w:
        raise ValueError(f"{name}: crop {size[0]}x{size[1]} larger than the sample {h}x{w}; resize first")


class RandomCrop(Transform):
    """Crop ``size = (H, W)`` at a uniformly random offset (``top`` in [0, h-H], ``left`` in
    [0, w-W]). The offsets of the last call are kept in ``last_offset``. At evaluation time it
    becomes :class:`CenterCrop`."""

    random = True

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | None = None):
        self.size = _pair(size, "size")
        self.generator = generator
        self.last_offset: tuple[int, int] | None = None

    def __call__(self, sample: dict) -> dict:
        h, w = _spatial_size(sample)
        _check_crop("RandomCrop", h, w, self.size)
        top = _randint(h - self.size[0] + 1, self.generator)
        left = _randint(w - self.size[1] + 1, self.generator)
        self.last_offset = (top, left)
        return _crop(sample, top, left, *self.size)

    def for_eval(self) -> Transform:
        return CenterCrop(self.size)


class CenterCrop(Transform):
    """Crop ``size = (H, W)`` at ``top = (h - H) // 2``, ``left = (w - W) // 2``."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair(size, "size")

    def __call__(self, sample: dict) -> dict:
        h, w = _spatial_size(sample)
        _check_crop("CenterCrop", h, w, self.size)
        return _crop(sample, (h - self.size[0]) // 2, (w - self.size[1]) // 2, *self.size)


class _RandomFlip(Transform):
    """Mirror all spatial keys along one axis with probability ``p`` and move the principal point with them."""

    random = True
    flip = staticmethod(F.horizontal_flip)
    axis = 1                 # the image axis that is mirrored: 1 = columns (cx), 0 = rows (cy)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = float(p)
        self.generator = generator

    def __call__(self, sample: dict) -> dict:
        if _rand(self.generator) >= self.p:
            return sample
        n = _spatial_size(sample)[self.axis]
        key = "cx" if self.axis == 1 else "cy"
        out = _map_spatial(sample, self.flip, self.flip, self.flip)
        return _with_intrinsics(out, lambda k: {key: n - 1 - k[key]})


class RandomHorizontalFlip(_RandomFlip):
    """Mirror all spatial keys left-right with probability ``p``; ``cx -> w - 1 - cx``."""


class RandomVerticalFlip(_RandomFlip):
    """Mirror all spatial keys top-bottom with probability ``p``; ``cy -> h - 1 - cy``."""

    flip = staticmethod(F.vertical_flip)
    axis = 0


class RandomRotation(Transform):
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]`` (or ``degrees=(lo, hi)``),
    counter-clockwise for positive angles, about the image centre ``((w-1)/2, (h-1)/2)``; the
    output keeps the input size.

    Image: bilinear; depth/target: nearest (every output depth is 0 or an input depth); mask:
    nearest, and pixels rotated in from outside the input are 0 in depth and False in mask.
    ``meta["intrinsics"]`` is left unchanged (a small in-plane rotation about the centre is close
    to a camera roll, which does not change K). The last angle is kept in ``last_angle``.
    """

    random = True

    def __init__(self, degrees: float | Sequence[float] = 5.0, generator: torch.Generator | None = None):
        if isinstance(degrees, (int, float)):
            degrees = (-abs(float(degrees)), abs(float(degrees)))
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.generator = generator
        self.last_angle: float | None = None

    def __call__(self, sample: dict) -> dict:
        angle = _uniform(*self.degrees, self.generator)
        self.last_angle = angle

        def image_fn(x):
            return F.rotate(x, angle, InterpolationMode.BILINEAR)

        def dense_fn(x):
            return F.rotate(x, angle, InterpolationMode.NEAREST)

        def mask_fn(x):
            return F.rotate(x.to(torch.uint8), angle, InterpolationMode.NEAREST).bool()

        out = _map_spatial(sample, image_fn, dense_fn, mask_fn)
        return _with_intrinsics(out, lambda k: k)


# --------------------------------------------------------------------------------------------
# Photometric (image only)


def _range(v, name: str, center: float = 1.0) -> tuple[float, float] | None:
    if v is None:
        return None
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0")
        return (max(0.0, center - v), center + v)
    lo, hi = float(v[0]), float(v[1])
    if not 0 <= lo <= hi:
        raise ValueError(f"{name} range must satisfy 0 <= lo <= hi, got {v}")
    return (lo, hi)


class ColorJitter(Transform):
    """Random brightness, contrast and saturation factors (applied in that order) on ``image``.

    Each argument is ``(lo, hi)`` (factor drawn uniformly) or a float ``f`` meaning
    ``(max(0, 1-f), 1+f)``, or ``None`` to skip. The image must be in [0, 1] (apply before
    :class:`Normalize`); the result is clamped to [0, 1]. Depth and mask are untouched.
    """

    random = True

    def __init__(
        self,
        brightness=(0.8, 1.2),
        contrast=None,
        saturation=None,
        generator: torch.Generator | None = None,
    ):
        self.brightness = _range(brightness, "brightness")
        self.contrast = _range(contrast, "contrast")
        self.saturation = _range(saturation, "saturation")
        self.generator = generator
        self.last_factors: dict[str, float] = {}

    def __call__(self, sample: dict) -> dict:
        img = sample["image"]
        factors = {}
        for name, rng, fn in (
            ("brightness", self.brightness, F.adjust_brightness),
            ("contrast", self.contrast, F.adjust_contrast),
            ("saturation", self.saturation, F.adjust_saturation),
        ):
            if rng is not None:
                f = _uniform(*rng, self.generator)
                factors[name] = f
                img = fn(img, f)
        self.last_factors = factors
        return {**sample, "image": img.clamp(0.0, 1.0)}


_NON_IDENTITY_PERMS = [list(p) for p in itertools.permutations(range(3)) if p != (0, 1, 2)]


class RandomChannelSwap(Transform):
    """With probability ``p``, reorder the RGB channels of ``image`` by one of the 5
    non-identity permutations (uniformly; so ``p`` is the probability that the colours change).
    The permutation of the last call is in ``last_permutation`` (``None`` if not applied)."""

    random = True

    def __init__(self, p: float = 0.25, generator: torch.Generator | None = None):
        self.p = float(p)
        self.generator = generator
        self.last_permutation: list[int] | None = None

    def __call__(self, sample: dict) -> dict:
        if _rand(self.generator) >= self.p:
            self.last_permutation = None
            return sample
        perm = _NON_IDENTITY_PERMS[_randint(len(_NON_IDENTITY_PERMS), self.generator)]
        self.last_permutation = perm
        return {**sample, "image": F.permute_channels(sample["image"], perm)}


class Normalize(Transform):
    """``image = (image - mean) / std`` per channel (defaults: ImageNet statistics)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(self, sample: dict) -> dict:
        return {**sample, "image": F.normalize(sample["image"], self.mean, self.std)}


class EncodeTarget(Transform):
    """Store the network target ``encode_target(depth, encoding, max_depth)`` under ``target``
    (float32 (1,H,W); 0 where ``mask`` is False or depth is missing). ``depth`` stays in metres.
    See :mod:`depthlab.types` for the encodings (``depth`` | ``inverse`` | ``normalized``)."""

    def __init__(self, encoding: str = "depth", max_depth: float = 10.0):
        if encoding not in TARGET_ENCODINGS:
            raise ValueError(f"unknown target encoding {encoding!r}; choose from {TARGET_ENCODINGS}")
        self.encoding = encoding
        self.max_depth = float(max_depth)

    def __call__(self, sample: dict) -> dict:
        depth = sample["depth"]
        target = encode_target(depth, self.encoding, self.max_depth)
        mask = sample.get("mask")
        if isinstance(mask, torch.Tensor):
            target = torch.where(mask, target, torch.zeros_like(target))
        return {**sample, "target": target}


# --------------------------------------------------------------------------------------------
# Config


TRANSFORMS: dict[str, type[Transform]] = {
    cls.__name__: cls
    for cls in (
        Resize,
        RandomCrop,
        CenterCrop,
        RandomHorizontalFlip,
        RandomVerticalFlip,
        RandomRotation,
        ColorJitter,
        RandomChannelSwap,
        Normalize,
        EncodeTarget,
    )
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_ALIASES = {**{n: n for n in TRANSFORMS}, **{_snake(n): n for n in TRANSFORMS}}


def _lookup(name: str) -> type[Transform]:
    if name in _ALIASES:
        return TRANSFORMS[_ALIASES[name]]
    raise unknown_name("transform", name, _ALIASES, listed=TRANSFORMS, cutoff=0.6)


def _entries(cfg) -> list[tuple[str, dict]]:
    if isinstance(cfg, dict):
        cfg = [{k: v} for k, v in cfg.items()]
    out = []
    for item in cfg:
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            (name, kwargs), = item.items()
            if kwargs is None:
                kwargs = {}
            if not isinstance(kwargs, dict):
                raise ValueError(f"transform {name!r}: arguments must be a mapping, got {kwargs!r}")
            out.append((name, dict(kwargs)))
        else:
            raise ValueError(f"a transform entry is a name or a one-key mapping {{name: kwargs}}, got {item!r}")
    return out


def build_transforms(cfg: dict | list | None, train: bool = True) -> Compose:
    """Build a :class:`Compose` from a config.

    ``cfg`` is a list whose entries are a transform name or ``{name: kwargs}`` (names are the
    class names or their snake_case, e.g. ``random_crop``), e.g. from YAML::

        - Resize: {size: [240, 320]}
        - RandomCrop: {size: [224, 304]}
        - RandomHorizontalFlip: {p: 0.5}
        - Normalize

    or a mapping ``{name: kwargs}`` (in order), or ``{"train": [...], "eval": [...]}`` picking a
    list by ``train`` (``eval`` falls back to ``val``, ``test``, then ``train``). With
    ``train=False`` every transform is replaced by its :meth:`Transform.for_eval` version: random
    augmentations are dropped and ``RandomCrop`` becomes ``CenterCrop`` of the same size.
    """
    if cfg is None:
        return Compose([])
    if isinstance(cfg, dict) and set(cfg) & {"train", "eval", "val", "test"}:
        keys = ("train",) if train else ("eval", "val", "test", "train")
        cfg = next((cfg[k] for k in keys if k in cfg), [])
        if cfg is None:
            cfg = []
    transforms = []
    for name, kwargs in _entries(cfg):
        cls = _lookup(name)
        try:
            t = cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"transform {name!r}: {e}") from None
        transforms.append(t)
    comp = Compose(transforms)
    return comp if train else comp.for_eval()

