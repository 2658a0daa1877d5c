"""Per-image alignment of affine-invariant predictions to ground truth.

All functions work per image on a batch ``(B, 1, H, W)`` (or any ``(B, ...)``) with a bool
``valid`` mask of the same shape, ``True`` = pixel used for the fit. Statistics come from valid
pixels only; the fitted transform is then applied to every pixel.

* **median** scaling (monodepth2 / Zhou et al.): ``s * pred`` with ``s = median(target) / median(pred)``.
  The median is the usual one (mean of the two middle values for an even count, like numpy).
* **least squares** scale and shift (MiDaS / Marigold / Depth Anything): ``s * pred + t`` with
  ``(s, t) = argmin sum_valid (s * pred + t - target)^2``, closed form
  ``s = cov(pred, target) / var(pred)``, ``t = mean(target) - s * mean(pred)``, computed in float64.
  A constant prediction (``var(pred) = 0``) gives ``s = 0, t = mean(target)``.

Spaces: in **depth** space the target is ``gt`` (metres); in **disparity** space it is ``1 / gt``
(1/m) and the aligned disparity is clipped to ``[1 / max_depth, 1 / min_depth]`` before it is
turned back into depth. Without a ``max_depth`` the disparity floor is ``1e-3`` 1/m (depth at most
1000 m), without a positive ``min_depth`` there is no ceiling beyond a tiny epsilon guard.

A prediction is brought into the fitting space first: depth-like kinds (``metric``, ``relative``,
``depth``) are inverted for disparity-space alignment; a ``disparity`` prediction is inverted for
depth-space alignment (``1 / max(x, 1e-6)``). The result is always depth in metres.
"""
from __future__ import annotations

import torch

from depthlab.metrics import accumulation_dtype  # float64 sums, float32 on MPS: one rule for metrics and alignment

ALIGNMENTS: tuple[str, ...] = ("none", "median", "lstsq")
SPACES: tuple[str, ...] = ("depth", "disparity")
DEPTH_KINDS = ("metric", "relative", "depth")
DISPARITY_KINDS = ("disparity",)
_EPS = 1e-6
_DEFAULT_MIN_DISPARITY = 1e-3


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _median(values: torch.Tensor) -> torch.Tensor:
    s = values.sort().values
    n = s.numel()
    return 0.5 * (s[(n - 1) // 2] + s[n // 2])


def median_scale(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s * pred, s)`` with ``s = median(target[valid]) / median(pred[valid])`` per image, ``s`` shape (B,).

    An image without valid pixels (or with a zero prediction median) keeps ``s = 1``.
    """
    p, t, v = _flat(pred), _flat(target), _flat(valid.bool())
    scales = []
    for i in range(p.shape[0]):
        if v[i].any():
            mp = _median(p[i][v[i]].to(accumulation_dtype(p)))
            mt = _median(t[i][v[i]].to(accumulation_dtype(p)))
            scales.append(torch.where(mp != 0, mt / mp, torch.ones_like(mp)))
        else:
            scales.append(torch.ones((), dtype=accumulation_dtype(p), device=p.device))
    s = torch.stack(scales)
    shape = (-1,) + (1,) * (pred.ndim - 1)
    return (pred.to(s.dtype) * s.view(shape)).to(pred.dtype), s


def lstsq_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s * pred + t, s, t)`` minimising ``sum_valid (s * pred + t - target)^2`` per image; s, t (B,).

    Closed form in float64 (float32 on MPS), vectorised over the batch. ``var(pred) = 0`` gives ``s = 0``,
    ``t = mean(target)``; no valid pixels gives ``s = 1, t = 0``.
    """
    dt = accumulation_dtype(pred)
    p, t, v = _flat(pred).to(dt), _flat(target).to(dt), _flat(valid.bool())
    zero = torch.zeros((), dtype=dt, device=p.device)
    p = torch.where(v, p, zero)
    t = torch.where(v, t, zero)
    n = v.sum(dim=1).to(dt)
    safe_n = n.clamp_min(1)
    mp = p.sum(1) / safe_n
    mt = t.sum(1) / safe_n
    dp = torch.where(v, p - mp[:, None], zero)
    dt = torch.where(v, t - mt[:, None], zero)
    var = (dp * dp).sum(1)
    cov = (dp * dt).sum(1)
    tiny = 1e-12 * (p * p).sum(1).clamp_min(1e-300)
    s = torch.where(var > tiny, cov / torch.where(var > tiny, var, torch.ones_like(var)), torch.zeros_like(var))
    sh = mt - s * mp
    s = torch.where(n > 0, s, torch.ones_like(s))
    sh = torch.where(n > 0, sh, torch.zeros_like(sh))
    shape = (-1,) + (1,) * (pred.ndim - 1)
    out = pred.to(dt) * s.view(shape) + sh.view(shape)
    return out.to(pred.dtype), s, sh


def _invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / x.clamp_min(_EPS)


def align(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, method: str = "none", space: str = "depth",
          pred_kind: str | None = None, min_depth: float = 0.0, max_depth: float | None = None) -> torch.Tensor:
    """Align ``pred`` to ``gt`` per image and return depth in metres, same shape as ``pred``.

    Args:
        pred: prediction ``(B, 1, H, W)`` (any ``(B, ...)``), in the unit its ``pred_kind`` says.
        gt: ground-truth depth, metres, same shape.
        valid: bool, same shape: pixels used to fit (crop, caps and ``gt > 0`` already applied).
        method: ``none`` | ``median`` | ``lstsq`` (scale and shift).
        space: ``depth`` (fit to gt) or ``disparity`` (fit to 1/gt, then invert back).
        pred_kind: ``metric``/``relative``/``depth`` (depth-like) or ``disparity``; ``None`` = the
            prediction is already in ``space``.
        min_depth, max_depth: disparity-space results are clipped to ``[1/max_depth, 1/min_depth]``.

    ``method="none"`` returns ``pred`` unchanged when it is depth-like and ``1 / pred`` for a
    disparity prediction.
    """
    if method not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {method!r}")
    if space not in SPACES:
        raise ValueError(f"alignment space must be one of {SPACES}, got {space!r}")
    if pred_kind is not None and pred_kind not in DEPTH_KINDS + DISPARITY_KINDS:
        raise ValueError(f"pred_kind must be one of {DEPTH_KINDS + DISPARITY_KINDS}, got {pred_kind!r}")
    if pred.shape != gt.shape or valid.shape != gt.shape:
        raise ValueError(f"shapes differ: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, valid {tuple(valid.shape)}")
    pred_is_disp = (pred_kind in DISPARITY_KINDS) if pred_kind is not None else (space == "disparity")
    if method == "none":
        return _invert(pred) if pred_is_disp else pred

    valid = valid.bool() & (gt > 0)
    if space == "depth":
        x = _invert(pred) if pred_is_disp else pred
        target = gt
    else:
        x = pred if pred_is_disp else _invert(pred)
        target = _invert(gt)
    if method == "median":
        aligned, _ = median_scale(x, target, valid)
    else:
        aligned, _, _ = lstsq_scale_shift(x, target, valid)
    if space == "depth":
        return aligned
    lo = 1.0 / max_depth if max_depth else _DEFAULT_MIN_DISPARITY
    hi = 1.0 / min_depth if min_depth and min_depth > 0 else None
    disp = aligned.clamp(min=lo, max=hi)
    return 1.0 / disp
