"""Evaluation protocols as data: crop, depth range, resizing, alignment, flip averaging, averaging.

A :class:`Protocol` is a frozen dataclass; presets reproduce the published evaluation settings and
are printed next to every number depthlab reports (``describe()``, ``to_dict()``). See
``docs/protocols.md`` for the full story.

Valid pixels (the BTS / monodepth / Marigold convention, both bounds **exclusive**)::

    valid = sample_mask & crop & isfinite(gt) & (gt > min_depth) & (gt < max_depth)

(``max_depth=None``: no upper bound; ``min_depth=0`` therefore means ``gt > 0``). With
``clip_pred`` the (aligned) prediction is clipped to ``[min_depth, max_depth]`` (inclusive).

Crops are fixed rectangles on the ground-truth grid, rows ``top:bottom`` and columns
``left:right`` (0-based, end exclusive):

* ``nyu_eigen``: rows 45:471, cols 41:601 -- defined on 480x640 only, other sizes raise
  :class:`CropError` (the evaluator records the image as skipped with that reason).
* ``alhashim``: rows 20:460, cols 24:616 (x 24..616, y 20..460) -- the DenseDepth crop used by
  Leve; 480x640 only.
* ``garg``: rows ``int(0.40810811 H) : int(0.99189189 H)``, cols ``int(0.03594771 W) : int(0.96405229 W)``
  (monodepth / BTS KITTI evaluation; truncation like their ``int``/``astype(int32)``); any size.
* ``eigen``: rows ``int(0.3324324 H) : int(0.91351351 H)``, same columns as ``garg``; any size.
* ``kb``: the 352x1216 KITTI benchmark window, rows ``H-352 : H``, cols ``(W-1216)//2 : (W-1216)//2 + 1216``;
  needs H >= 352 and W >= 1216.
* ``none``: every pixel.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from depthlab.errors import DepthlabError, InputError, UnknownNameError, unknown_name
from depthlab.evaluation.align import ALIGNMENTS, SPACES
from depthlab.metrics import AVERAGING_MODES

RESIZE_MODES: tuple[str, ...] = ("bilinear", "nearest", "bicubic", "area")
AVERAGING: tuple[str, ...] = AVERAGING_MODES  # the averaging modes of depthlab.metrics, one list
FLIP_AXES: tuple[str, ...] = ("horizontal", "vertical")
FLIP_COMBINE: tuple[str, ...] = ("prediction", "metrics")


class CropError(DepthlabError, ValueError):
    """A crop that is not defined for the ground-truth size it was given."""


class UnknownProtocolError(UnknownNameError):
    """Unknown protocol name; the message lists close matches."""


# ----------------------------------------------------------------------------- crops
def _fixed_480x640(name: str, top: int, bottom: int, left: int, right: int):
    def bounds(h: int, w: int) -> tuple[int, int, int, int]:
        if (h, w) != (480, 640):
            raise CropError(f"crop {name!r} (rows {top}:{bottom}, cols {left}:{right}) is defined on 480x640 "
                            f"ground truth, got {h}x{w}; use crop='none', or evaluate on ground truth of that size (depthlab never resizes it)")
        return top, bottom, left, right

    bounds.__doc__ = f"rows {top}:{bottom}, cols {left}:{right} on 480x640 (0-based, end exclusive)"
    return bounds


def _garg_bounds(h: int, w: int) -> tuple[int, int, int, int]:
    """rows int(0.40810811 H):int(0.99189189 H), cols int(0.03594771 W):int(0.96405229 W)"""
    return int(0.40810811 * h), int(0.99189189 * h), int(0.03594771 * w), int(0.96405229 * w)


def _eigen_bounds(h: int, w: int) -> tuple[int, int, int, int]:
    """rows int(0.3324324 H):int(0.91351351 H), cols int(0.03594771 W):int(0.96405229 W)"""
    return int(0.3324324 * h), int(0.91351351 * h), int(0.03594771 * w), int(0.96405229 * w)


def _kb_bounds(h: int, w: int) -> tuple[int, int, int, int]:
    """rows H-352:H, cols (W-1216)//2 : (W-1216)//2+1216 (KITTI benchmark 352x1216 window)"""
    if h < 352 or w < 1216:
        raise CropError(f"crop 'kb' needs ground truth of at least 352x1216, got {h}x{w}")
    top, left = h - 352, (w - 1216) // 2
    return top, top + 352, left, left + 1216


def _none_bounds(h: int, w: int) -> tuple[int, int, int, int]:
    """every pixel"""
    return 0, h, 0, w


CROPS: dict[str, Callable[[int, int], tuple[int, int, int, int]]] = {
    "none": _none_bounds,
    "nyu_eigen": _fixed_480x640("nyu_eigen", 45, 471, 41, 601),
    "alhashim": _fixed_480x640("alhashim", 20, 460, 24, 616),
    "garg": _garg_bounds,
    "eigen": _eigen_bounds,
    "kb": _kb_bounds,
}
"""Crop name -> ``bounds(H, W) -> (top, bottom, left, right)`` (0-based, end exclusive)."""

CROP_DESCRIPTIONS: dict[str, str] = {
    "none": "every pixel",
    "nyu_eigen": "rows 45:471, cols 41:601 of 480x640",
    "alhashim": "rows 20:460, cols 24:616 of 480x640",
    "garg": "rows int(0.40810811 H):int(0.99189189 H), cols int(0.03594771 W):int(0.96405229 W)",
    "eigen": "rows int(0.3324324 H):int(0.91351351 H), cols int(0.03594771 W):int(0.96405229 W)",
    "kb": "rows H-352:H, cols (W-1216)//2:(W-1216)//2+1216 (the 352x1216 KITTI benchmark window)",
}
"""One-line description of each crop (0-based, end exclusive), used by :meth:`Protocol.describe`."""


def crop_bounds(name: str, height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of crop ``name`` on an ``height x width`` ground truth.

    Raises :class:`CropError` if the crop is not defined for that size, ``InputError`` (a ``ValueError``) for an
    unknown crop.
    """
    if name not in CROPS:
        raise InputError(f"unknown crop {name!r}; choose from {tuple(CROPS)}")
    return CROPS[name](int(height), int(width))


def crop_mask(name: str, shape, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool mask of ``shape`` (``(..., H, W)``; the crop acts on the last two dims), True inside the crop."""
    shape = tuple(shape)
    h, w = shape[-2], shape[-1]
    top, bottom, left, right = crop_bounds(name, h, w)
    m = torch.zeros((h, w), dtype=torch.bool, device=device)
    m[top:bottom, left:right] = True
    return m.expand(shape)


# ----------------------------------------------------------------------------- protocol
def _fmt(x: float | None) -> str:
    if x is None:
        return "inf"
    return f"{x:g}"


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (all settings that change a reported number).

    Attributes:
        name: preset name; an overridden preset is named by its spec ``preset:key=value,...``.
        crop: crop name, see :data:`CROPS`.
        min_depth, max_depth: metres; valid GT is ``min_depth < gt < max_depth`` (exclusive);
            ``max_depth=None`` = no upper bound.
        resize_pred: interpolation used to bring the prediction to ground-truth resolution
            (``bilinear`` | ``nearest`` | ``bicubic`` | ``area``; align_corners=False).
        alignment: ``none`` | ``median`` | ``lstsq`` (scale and shift), fitted per image on valid pixels.
        alignment_space: ``depth`` or ``disparity`` (fit to 1/gt, clip to [1/max, 1/min], invert).
        flip_average: also run the model on the flipped image (model evaluation only).
        flip_axis: ``horizontal`` (left-right, DenseDepth) or ``vertical`` (up-down, the Leve thesis' text).
        flip_combine: ``prediction`` (DenseDepth: score ``0.5 * (P(x) + unflip(P(flip(x))))``) or
            ``metrics`` (GuidedDecoding / Leve: the un-flipped second prediction is scored as one more
            sample, so the metrics average over both runs and ``n_images`` counts each image twice).
        averaging: ``per_image`` (mean over images of per-image metrics), ``pixel`` (pooled) or
            ``per_image_mse`` (per image, but RMSE = sqrt of the mean per-image MSE: Leve eq. 8.1).
        clip_pred: clip the final prediction to ``[min_depth, max_depth]``.
        notes: where the preset comes from.
    """

    name: str
    crop: str = "none"
    min_depth: float = 0.0
    max_depth: float | None = None
    resize_pred: str = "bilinear"
    alignment: str = "none"
    alignment_space: str = "depth"
    flip_average: bool = False
    flip_axis: str = "horizontal"
    flip_combine: str = "prediction"
    averaging: str = "per_image"
    clip_pred: bool = True
    notes: str = ""

    def __post_init__(self):
        for name, choices in (("crop", tuple(CROPS)), ("alignment", ALIGNMENTS), ("alignment_space", SPACES),
                              ("flip_axis", FLIP_AXES), ("flip_combine", FLIP_COMBINE), ("averaging", AVERAGING),
                              ("resize_pred", RESIZE_MODES)):
            if getattr(self, name) not in choices:
                raise InputError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not (self.min_depth >= 0 and math.isfinite(self.min_depth)):
            raise InputError(f"min_depth must be a finite number >= 0, got {self.min_depth!r}")
        if self.max_depth is not None and not self.max_depth > self.min_depth:
            raise InputError(f"max_depth ({self.max_depth}) must exceed min_depth ({self.min_depth})")

    # -- presentation
    def describe(self) -> str:
        """One line with every setting, e.g. for printing above a results table."""
        crop = f"crop={self.crop}" + (f" ({CROP_DESCRIPTIONS[self.crop]})" if self.crop != "none" else "")
        if self.max_depth is None:
            valid = f"valid: gt > {_fmt(self.min_depth)} m, no upper cap"
        else:
            valid = f"valid: {_fmt(self.min_depth)} < gt < {_fmt(self.max_depth)} m (exclusive)"
        if self.alignment == "none":
            align = "alignment=none"
        else:
            what = "median scaling" if self.alignment == "median" else "least-squares scale+shift"
            align = f"alignment={self.alignment} ({what} in {self.alignment_space} space, per image)"
        if not self.clip_pred:
            clip = "pred not clipped"
        elif self.max_depth is None:
            clip = f"pred clipped to >= {_fmt(self.min_depth)} m"
        else:
            clip = f"pred clipped to [{_fmt(self.min_depth)}, {_fmt(self.max_depth)}] m"
        return "; ".join([
            crop, valid, f"pred resized to GT ({self.resize_pred})", align,
            f"flip_average={f'on ({self.flip_axis} flip, {self.flip_combine} averaged)' if self.flip_average else 'off'}",
            clip, f"averaging={self.averaging}",
        ])

    def to_dict(self) -> dict[str, Any]:
        """All settings as a JSON-ready dict (``max_depth=None`` -> null)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Protocol":
        return _replace(self, changes)

    # -- application
    def valid_mask(self, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Bool mask, shape of ``gt`` (``(..., H, W)``): ``mask & crop & finite & min < gt < max``.

        Raises :class:`CropError` when the crop is not defined for the ground-truth size.
        """
        valid = torch.isfinite(gt) & (gt > self.min_depth)
        if self.max_depth is not None:
            valid &= gt < self.max_depth
        if mask is not None:
            valid &= mask.bool()
        if self.crop != "none":
            valid &= crop_mask(self.crop, gt.shape, device=gt.device)
        return valid

    def clip(self, pred: torch.Tensor) -> torch.Tensor:
        """Clip to ``[min_depth, max_depth]`` if ``clip_pred`` (no upper bound when ``max_depth`` is None)."""
        if not self.clip_pred:
            return pred
        return pred.clamp(min=self.min_depth, max=self.max_depth)


def _replace(base: Protocol, changes: dict[str, Any]) -> Protocol:
    fields = {f.name for f in dataclasses.fields(Protocol)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise InputError(f"unknown protocol setting(s) {unknown}; settings are {sorted(fields - {'notes'})}")
    changes = {k: _coerce(k, v) for k, v in changes.items()}
    real = {k: v for k, v in changes.items() if k not in ("name", "notes") and getattr(base, k) != v}
    if "name" not in changes and real:
        changes["name"] = base.name + ":" + ",".join(f"{k}={_fmt_value(v)}" for k, v in real.items())
    return dataclasses.replace(base, **changes)


def _fmt_value(v) -> str:
    return _fmt(v) if isinstance(v, float) or v is None else str(v)


def _coerce(key: str, value):
    """Parse strings (from ``name:key=value`` specs) into the field's type."""
    if not isinstance(value, str):
        if key in ("min_depth", "max_depth") and value is not None:
            return float(value)
        return value
    v = value.strip()
    if key in ("min_depth", "max_depth"):
        if v.lower() in ("none", "null", "inf", ""):
            if key == "min_depth":
                return 0.0
            return None
        return float(v)
    if key in ("flip_average", "clip_pred"):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{key} must be true/false, got {value!r}")
    return v


# ----------------------------------------------------------------------------- presets
_PRESETS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Add a preset (name must be new)."""
    if protocol.name in _PRESETS:
        raise ValueError(f"protocol {protocol.name!r} registered twice")
    _PRESETS[protocol.name] = protocol
    return protocol


def _leve_presets() -> tuple[Protocol, ...]:
    """The Leve thesis' chapter 8 protocols (docs/studies/leve.md): the model also runs on the vertically
    flipped image and both runs are scored (flip_combine=metrics, as GuidedDecoding's evaluation, which the
    thesis follows); RMSE by eq. 8.1 (averaging=per_image_mse)."""
    leve = {"flip_average": True, "flip_axis": "vertical", "flip_combine": "metrics", "averaging": "per_image_mse"}
    return (
        Protocol("leve_nyu", crop="alhashim", min_depth=1e-3, max_depth=10.0, **leve,
                 notes="Leve thesis ch. 8, NYU: pixels (24:616) x (20:460) = Alhashim crop, 10 m cap, vertical-flip "
                       "runs scored too, RMSE = sqrt(mean per-image MSE) (eq. 8.1)"),
        Protocol("leve_kitti", crop="eigen", min_depth=1e-3, max_depth=80.0, **leve,
                 notes="Leve thesis ch. 8, KITTI Eigen split: 80 m cap; the text's (45:1196) x (128:381) window does "
                       "not fit a 376-row frame, so the Eigen crop by fractions of the GT size (what GuidedDecoding's "
                       "evaluation applies to KITTI; cols 44:1196 on 1241 wide); eq. 8.1 RMSE, vertical-flip runs"),
        Protocol("leve_endoslam", crop="none", min_depth=0.0, max_depth=1.0, **leve,
                 notes="Leve thesis ch. 8, EndoSLAM 320x320: every pixel (0:320) x (0:320), 1 m cap chosen by the "
                       "thesis; eq. 8.1 RMSE, vertical-flip runs"),
    )


for _p in (
    Protocol("none", crop="none", min_depth=0.0, max_depth=None, clip_pred=False,
             notes="raw comparison: every pixel with gt > 0, no crop, no cap, no clipping, no alignment"),
    Protocol("nyu_eigen", crop="nyu_eigen", min_depth=1e-3, max_depth=10.0,
             notes="NYU-Depth V2 Eigen test split as in BTS/AdaBins/ZoeDepth: Eigen crop, 1e-3..10 m"),
    Protocol("kitti_garg", crop="garg", min_depth=1e-3, max_depth=80.0,
             notes="KITTI Eigen split, Garg crop, 80 m cap (monodepth2, BTS --garg_crop)"),
    Protocol("kitti_eigen", crop="eigen", min_depth=1e-3, max_depth=80.0,
             notes="KITTI Eigen split, Eigen crop, 80 m cap (BTS --eigen_crop)"),
    Protocol("kitti_kb", crop="kb", min_depth=1e-3, max_depth=80.0,
             notes="KITTI benchmark 352x1216 window, 80 m cap"),
    Protocol("diode", crop="none", min_depth=0.6, max_depth=350.0,
             notes="DIODE val (indoor+outdoor) depth range 0.6..350 m as in Marigold's DIODE evaluation "
                   "(which Depth Anything's affine-invariant numbers also follow); metric, no alignment -- "
                   "for affine-invariant models use alignment=lstsq (Marigold) or depth_anything settings"),
    Protocol("endoslam", crop="none", min_depth=0.0, max_depth=1.0,
             notes="EndoSLAM-style normalised depth: gt in (0, 1), predictions clipped to [0, 1]"),
    *_leve_presets(),
    Protocol("depth_anything", crop="none", min_depth=1e-3, max_depth=None, alignment="lstsq",
             alignment_space="disparity",
             notes="affine-invariant disparity (MiDaS / Depth Anything): per-image least-squares scale+shift "
                   "on 1/gt; add crop/max_depth of the dataset, e.g. depth_anything:crop=nyu_eigen,max_depth=10"),
    Protocol("marigold", crop="none", min_depth=1e-3, max_depth=None, alignment="lstsq", alignment_space="depth",
             notes="affine-invariant depth (Marigold): per-image least-squares scale+shift on depth; add the "
                   "dataset's crop/range, e.g. marigold:crop=nyu_eigen,max_depth=10"),
):
    register_protocol(_p)


def list_protocols() -> list[str]:
    """Names of the preset protocols, sorted."""
    return sorted(_PRESETS)


def get_protocol(name: str | Protocol, **overrides) -> Protocol:
    """A preset by name, optionally with settings overridden.

    ``name`` may also be a spec string ``"preset:key=value,key=value"`` (what ``depthlab eval
    --protocol`` accepts), e.g. ``"marigold:crop=nyu_eigen,max_depth=10"``, or a :class:`Protocol`.
    An overridden preset is renamed ``preset:key=value,...`` (a spec that rebuilds it) so printed
    numbers never carry a preset name whose settings they do not follow. No square brackets appear
    in names or descriptions (rich would read them as markup). Unknown names raise
    :class:`UnknownProtocolError` (a ``KeyError``) listing close matches.
    """
    if isinstance(name, Protocol):
        base = name
    else:
        spec = str(name).strip()
        preset, _, rest = spec.partition(":")
        preset = preset.strip()
        if preset not in _PRESETS:
            raise unknown_name("protocol", preset, list_protocols(), cutoff=0.4, error=UnknownProtocolError)
        base = _PRESETS[preset]
        if rest.strip():
            parsed = {}
            for item in rest.split(","):
                key, eq, value = item.partition("=")
                if not eq:
                    raise InputError(f"protocol override {item!r} is not key=value (in {spec!r})")
                parsed[key.strip()] = value.strip()
            base = _replace(base, parsed)
    return _replace(base, overrides) if overrides else base
