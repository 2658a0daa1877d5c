"""Depth losses: pure functions, thin ``nn.Module`` wrappers and a weighted sum built from config.

Every loss has the signature ``f(pred, target, mask=None, image=None, **params) -> scalar tensor``:

* ``pred``, ``target``: float tensors ``(B,1,H,W)`` in the same unit (metres, inverse depth, or the
  affine-invariant unit of a relative model -- the losses never convert units);
* ``mask``: bool ``(B,1,H,W)``, ``True`` = valid ground truth; ``None`` = every pixel valid.
  Pixels where ``target`` is not finite are dropped as well;
* ``image``: float ``(B,3,H,W)`` RGB in [0,1]; only :func:`edge_aware_smoothness` reads it.

Masking rules, shared by every function:

* invalid pixels have no effect on the value nor on the gradient: both ``pred`` and ``target`` are
  replaced by constants there *before* any arithmetic, so even ``inf``/``NaN`` there is harmless,
  and ``pred.grad`` is exactly 0 at invalid pixels;
* a batch without a single valid pixel gives ``0`` (still attached to ``pred``'s graph, so
  ``backward()`` works and yields zero gradients), never ``NaN``;
* half-precision inputs are evaluated in float32.

``docs/losses.md`` gives every formula and the YAML syntax of :func:`build_loss`.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from depthlab.errors import DepthlabError, InputError, UnknownNameError, unknown_name

__all__ = [
    "l1", "l2", "huber", "berhu", "ssim_loss", "gradient_loss", "edge_loss", "edge_aware_smoothness", "silog",
    "eigen_silog", "ssi_trimmed_mae", "gradient_matching", "max_normalized_l1", "distillation_loss",
    "L1Loss", "L2Loss", "HuberLoss", "BerHuLoss", "SSIMLoss", "GradientLoss", "EdgeLoss", "EdgeAwareSmoothness",
    "SILogLoss", "EigenSILogLoss", "SSITrimmedMAE", "GradientMatchingLoss",
    "LOSSES", "list_losses", "get_loss", "loss_class", "WeightedSum", "build_loss", "UnknownLossError",
    "LossSpecError",
]

LOG_EPS = 1e-6
"""Predictions are clamped to at least this value before a logarithm (see :func:`silog`)."""


# ----------------------------------------------------------------------------------------------
# helpers


def _prepare(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, name: str):
    """Check shapes, build the bool validity mask, and neutralise invalid pixels.

    Returns ``(pred, target, valid)`` where invalid entries of ``pred`` and ``target`` are 0 and
    ``valid`` is bool with ``pred``'s shape. ``torch.where`` (not a multiplication) is used so that
    ``inf``/``NaN`` at invalid pixels can neither leak into the value nor into the gradient.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{name}: pred and target must be tensors")
    if pred.ndim != 4:
        raise ValueError(f"{name}: pred must be (B,1,H,W), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"{name}: target shape {tuple(target.shape)} != pred shape {tuple(pred.shape)}")
    if pred.dtype in (torch.float16, torch.bfloat16) or not pred.is_floating_point():
        pred = pred.float()
    target = target.to(pred.dtype)
    if mask is None:
        valid = torch.ones(pred.shape, dtype=torch.bool, device=pred.device)
    else:
        if mask.shape != pred.shape:
            raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != pred shape {tuple(pred.shape)}")
        valid = mask.to(device=pred.device, dtype=torch.bool)
    valid = valid & torch.isfinite(target)
    pred = torch.where(valid, pred, 0.0)
    target = torch.where(valid, target, 0.0)
    return pred, target, valid


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``valid``; 0 (with a graph) when nothing is valid."""
    return torch.where(valid, x, 0.0).sum() / valid.sum().clamp_min(1)


def _per_image_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,1,1,1) mean of ``x`` over the valid pixels of each image (0 for an empty image)."""
    n = valid.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
    return torch.where(valid, x, 0.0).sum(dim=(1, 2, 3), keepdim=True) / n


# Forward differences. kornia.filters.spatial_gradient is not used on purpose: its 3-tap/3x3
# (sobel or central 'diff') kernels with replicate padding make every output depend on up to
# six input pixels, so "a difference is valid only when both of its pixels are valid" cannot be
# stated exactly. A forward difference touches exactly two pixels, and its validity is the AND of
# their masks. kornia's own inverse_depth_smoothness_loss uses the same forward differences.
def _dx(x: torch.Tensor) -> torch.Tensor:
    return x[..., :, 1:] - x[..., :, :-1]


def _dy(x: torch.Tensor) -> torch.Tensor:
    return x[..., 1:, :] - x[..., :-1, :]


def _pair_valid_x(valid: torch.Tensor) -> torch.Tensor:
    return valid[..., :, 1:] & valid[..., :, :-1]


def _pair_valid_y(valid: torch.Tensor) -> torch.Tensor:
    return valid[..., 1:, :] & valid[..., :-1, :]


def _gradient_residuals(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """``(|dx pred - dx target|, valid x-pairs, |dy pred - dy target|, valid y-pairs)``."""
    gx = (_dx(pred) - _dx(target)).abs()
    gy = (_dy(pred) - _dy(target)).abs()
    return gx, _pair_valid_x(valid), gy, _pair_valid_y(valid)


def _align_median_mad(x: torch.Tensor, valid: torch.Tensor, eps: float) -> torch.Tensor:
    """Per image: ``(x - median) / mean|x - median|`` over the valid pixels; 0 at invalid pixels.

    ``torch.nanmedian`` returns the lower of the two middle values for an even count, which is an
    order statistic, so the alignment is exactly equivariant to ``s*x + t`` for ``s > 0``.
    The scale is clamped to ``eps`` so that a constant map does not divide by zero.
    """
    b = x.shape[0]
    flat = torch.where(valid, x, float("nan")).reshape(b, -1)
    med = flat.nanmedian(dim=1).values
    med = torch.where(valid.reshape(b, -1).any(dim=1), med, 0.0).view(b, 1, 1, 1)
    centred = x - med
    scale = _per_image_mean(centred.abs(), valid).clamp_min(eps)
    return torch.where(valid, centred / scale, 0.0)


# ----------------------------------------------------------------------------------------------
# pointwise losses


def l1(pred, target, mask=None, image=None) -> torch.Tensor:
    """Mean absolute error ``mean |pred - target|`` over valid pixels.

    Shapes ``(B,1,H,W)``; unit of the inputs; pixel-pooled over the whole batch.
    """
    pred, target, valid = _prepare(pred, target, mask, "l1")
    return _masked_mean(F.l1_loss(pred, target, reduction="none"), valid)


def l2(pred, target, mask=None, image=None) -> torch.Tensor:
    """Mean squared error ``mean (pred - target)^2`` over valid pixels (unit squared)."""
    pred, target, valid = _prepare(pred, target, mask, "l2")
    return _masked_mean(F.mse_loss(pred, target, reduction="none"), valid)


def huber(pred, target, mask=None, image=None, *, delta: float = 1.0) -> torch.Tensor:
    """Huber loss with torch's ``F.huber_loss`` semantics, averaged over valid pixels.

    With ``r = pred - target``: ``0.5 r^2`` if ``|r| < delta`` else ``delta (|r| - 0.5 delta)``.
    This equals ``delta * smooth_l1(beta=delta)``; both branches are ``0.5 delta^2`` at
    ``|r| = delta`` (continuous value and slope). ``delta`` is in the unit of the inputs.
    """
    if delta <= 0:
        raise InputError(f"huber: delta must be > 0, got {delta}")
    pred, target, valid = _prepare(pred, target, mask, "huber")
    return _masked_mean(F.huber_loss(pred, target, reduction="none", delta=float(delta)), valid)


def berhu(pred, target, mask=None, image=None, *, threshold: float = 0.2) -> torch.Tensor:
    """Reverse Huber (BerHu), averaged over valid pixels.

    ``c = threshold * max|r|`` over the valid pixels of the whole batch, **detached** (it is a
    data-dependent constant, as in Laina et al.); then ``|r|`` if ``|r| <= c`` else
    ``(r^2 + c^2) / (2c)``. Both branches equal ``c`` at ``|r| = c`` with slope 1.
    """
    pred, target, valid = _prepare(pred, target, mask, "berhu")
    r = pred - target
    a = r.abs()
    c = (threshold * torch.where(valid, a, 0.0).amax()).detach()
    # the quadratic branch is only selected where |r| > c >= 0, so c > 0 there; the clamp keeps the
    # unselected branch finite when every residual is 0 (torch.where evaluates both branches).
    quad = (r * r + c * c) / (2 * c.clamp_min(torch.finfo(a.dtype).tiny))
    return _masked_mean(torch.where(a <= c, a, quad), valid)


# ----------------------------------------------------------------------------------------------
# structural losses


def ssim_loss(pred, target, mask=None, image=None, *, window_size: int = 11,
              data_range: float | None = None, halve: bool = True) -> torch.Tensor:
    """``(1 - SSIM) / 2`` (``halve=True``) or ``1 - SSIM`` (``halve=False``) averaged over valid pixels.

    The SSIM map comes from ``kornia.metrics.ssim``.

    * ``halve``: ``True`` gives the DenseDepth/Monodepth form ``(1 - SSIM) / 2`` in [0, 1];
      ``False`` gives ``1 - SSIM`` (in [0, 2]), eqs. 3/8 of the DIODE loss study.

    * Window: Gaussian, sigma 1.5 (kornia's), ``window_size`` taps (11 as in DenseDepth; 7 for
      small maps), reflect padding; needs ``H, W > window_size // 2``.
    * ``data_range`` (the SSIM dynamic range ``L``, in the unit of the inputs; sets
      ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``): e.g. ``max_depth`` for metres, ``max/min depth``
      for DenseDepth's inverse encoding. ``None`` = the largest ``|target|`` over the valid pixels
      of the batch (costs a device sync; set it explicitly in configs).
    * Invalid neighbours: an SSIM window around a valid pixel also covers its neighbours. Before
      SSIM, invalid pixels of *both* maps are filled with the same constant (the mean of the valid
      target of that image, detached), so they carry no information from either map and receive no
      gradient; only valid centre pixels enter the mean. The cost is a mild bias towards agreement
      near holes (a filled pixel looks identical in both maps).
    """
    pred, target, valid = _prepare(pred, target, mask, "ssim_loss")
    h, w = pred.shape[-2:]
    if window_size < 3 or window_size % 2 == 0:
        raise InputError(f"ssim_loss: window_size must be odd and >= 3, got {window_size}")
    if window_size // 2 >= min(h, w):
        raise InputError(f"ssim_loss: window_size={window_size} needs H and W > {window_size // 2}, got {h}x{w}")
    fill = _per_image_mean(target, valid).detach()
    p = torch.where(valid, pred, fill)
    t = torch.where(valid, target, fill)
    if data_range is None:
        data_range = float(torch.where(valid, target.detach().abs(), 0.0).max()) or 1.0
    s = kornia.metrics.ssim(p, t, window_size, max_val=float(data_range))
    return _masked_mean((1.0 - s) / 2.0 if halve else 1.0 - s, valid)


def gradient_loss(pred, target, mask=None, image=None) -> torch.Tensor:
    """L1 between the image gradients of ``pred`` and ``target`` (DenseDepth, Leve).

    ``mean_x |dx(pred) - dx(target)| + mean_y |dy(pred) - dy(target)|`` with forward differences
    ``dx(d)[i,j] = d[i,j+1] - d[i,j]``; each mean runs over its own differences, and a difference
    counts only when both of its pixels are valid (a direction with none contributes 0).
    Unit of the inputs per pixel.
    """
    pred, target, valid = _prepare(pred, target, mask, "gradient_loss")
    gx, vx, gy, vy = _gradient_residuals(pred, target, valid)
    return _masked_mean(gx, vx) + _masked_mean(gy, vy)


def edge_loss(pred, target, mask=None, image=None) -> torch.Tensor:
    """Edge (gradient-difference) loss, eq. 9 of the DIODE loss study.

    ``(1/n) sum_i (|dx pred_i - dx target_i| + |dy pred_i - dy target_i|)`` with forward differences
    ``dx(d)[i,j] = d[i,j+1] - d[i,j]``; ``n`` = valid pixels of the batch (pixel-pooled). A pixel's
    difference is 0 where it has no valid forward neighbour (last column/row, or a neighbour
    without ground truth), so every pixel counts in ``n`` once and each difference once.
    Compared with :func:`gradient_loss` (each direction averaged over its own pairs, then summed),
    only the normaliser differs: ``n`` pixels instead of the pair counts. Unit of the inputs.
    A perfect prediction gives 0.
    """
    pred, target, valid = _prepare(pred, target, mask, "edge_loss")
    gx, vx, gy, vy = _gradient_residuals(pred, target, valid)
    total = torch.where(vx, gx, 0.0).sum() + torch.where(vy, gy, 0.0).sum()
    return total / valid.sum().clamp_min(1)


def edge_aware_smoothness(pred, target=None, mask=None, image=None, *, normalize: bool = False,
                          eps: float = 1e-7) -> torch.Tensor:
    """Edge-aware smoothness ``mean_x |dx d| exp(-|dx I|) + mean_y |dy d| exp(-|dy I|)``.

    ``|dx I|`` is the mean over the RGB channels of the absolute forward difference of ``image``
    (``(B,3,H,W)`` in [0,1]); ``target`` is not used (pass ``None`` or anything of pred's shape).
    ``normalize=True`` divides ``pred`` by its per-image mean over valid pixels (``+eps``, not
    detached, as in Monodepth2) so the term cannot be lowered by shrinking the prediction; the
    default ``False`` keeps the unit of the inputs (the scale is fixed by the supervised terms).
    A difference counts only where both pixels are valid. Without a mask this is exactly
    ``kornia.losses.inverse_depth_smoothness_loss`` (which has no mask argument).
    """
    if image is None:
        raise ValueError("edge_aware_smoothness: needs the RGB image (B,3,H,W)")
    # target is ignored: a zero stand-in keeps _prepare's checks without letting it touch validity
    pred, _, valid = _prepare(pred, torch.zeros_like(pred), mask, "edge_aware_smoothness")
    if image.ndim != 4 or image.shape[0] != pred.shape[0] or image.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"edge_aware_smoothness: image shape {tuple(image.shape)} does not match pred {tuple(pred.shape)}")
    image = image.to(pred.dtype)
    d = pred
    if normalize:
        d = d / (_per_image_mean(d, valid).abs() + eps)
    if mask is None:
        return kornia.losses.inverse_depth_smoothness_loss(d, image)
    # masked version of kornia's formula; the image is zeroed at invalid pixels first so that
    # non-finite values there cannot reach the gradient through exp().
    image = torch.where(valid.expand_as(image), image, 0.0)
    wx = torch.exp(-_dx(image).abs().mean(dim=1, keepdim=True))
    wy = torch.exp(-_dy(image).abs().mean(dim=1, keepdim=True))
    sx = _dx(d).abs() * wx
    sy = _dy(d).abs() * wy
    return _masked_mean(sx, _pair_valid_x(valid)) + _masked_mean(sy, _pair_valid_y(valid))


# ----------------------------------------------------------------------------------------------
# scale-invariant losses


def silog(pred, target, mask=None, image=None, *, lam: float = 0.85, scale: float = 10.0,
          eps: float = LOG_EPS) -> torch.Tensor:
    """Scale-invariant log loss in the BTS/AdaBins form.

    ``g = log(max(pred, eps)) - log(target)`` over valid pixels with ``target > 0`` (0 = missing);
    ``scale * sqrt(mean(g^2) - lam * mean(g)^2)``, means pooled over all valid pixels of the batch.
    ``lam = 0.85`` (``lam = 1`` is fully scale invariant, ``lam = 0`` is log-RMSE); ``scale = 10``
    is the BTS/AdaBins factor, ``scale = 1`` gives the plain form. Inputs must be depth-like and
    positive (metres or any positive unit; the unit cancels in ``g``).

    Finite gradients everywhere: predictions below ``eps`` are clamped (zero gradient there, so a
    network with a non-positive output activation can stall -- prefer softplus/ReLU+bias), and the
    square root is taken as ``sqrt(v + 1e-12) - sqrt(1e-12)`` so that a perfect prediction gives 0 with a
    finite (zero) gradient instead of ``inf``.
    """
    v = _log_variance(pred, target, mask, lam, eps, "silog")
    tiny = v.new_tensor(1e-12)
    return scale * (torch.sqrt(v + tiny) - torch.sqrt(tiny))  # exactly 0 when v == 0


def eigen_silog(pred, target, mask=None, image=None, *, lam: float = 0.5, eps: float = LOG_EPS) -> torch.Tensor:
    """Scale-invariant log loss without square root or factor (Eigen et al. 2014; eq. 5 of the DIODE study).

    ``mean(g^2) - lam * mean(g)^2`` with ``g = log(max(pred, eps)) - log(target)`` over the valid
    pixels with ``target > 0``, pooled over the batch; ``lam`` is the study's alpha (Eigen et al.
    train with 0.5, the default; ``lam = 1`` is fully scale invariant). This is the square of
    :func:`silog` with ``scale=1``; same masking and clamping. Unitless, >= 0, 0 for a perfect
    prediction.
    """
    return _log_variance(pred, target, mask, lam, eps, "eigen_silog")


def _log_variance(pred, target, mask, lam: float, eps: float, name: str) -> torch.Tensor:
    """``mean(g^2) - lam mean(g)^2`` (clamped at 0) of the log residual, shared by the two SILog forms."""
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"{name}: lam must be in [0, 1], got {lam}")
    pred, target, valid = _prepare(pred, target, mask, name)
    valid = valid & (target > 0)
    g = torch.where(valid, pred.clamp_min(eps).log() - target.clamp_min(eps).log(), 0.0)
    n = valid.sum().clamp_min(1)
    m1 = g.sum() / n
    m2 = (g * g).sum() / n
    return (m2 - lam * m1 * m1).clamp_min(0.0)


def ssi_trimmed_mae(pred, target, mask=None, image=None, *, trim: float = 0.2,
                    eps: float = 1e-6) -> torch.Tensor:
    """MiDaS scale-and-shift-invariant trimmed MAE.

    Per image, both maps are aligned independently by ``(d - median(d)) / mean|d - median(d)|``
    over the valid pixels (:func:`_align_median_mad`); the residuals ``|a_pred - a_target|`` are
    sorted and the largest ``floor(trim * M)`` are discarded (``M`` = valid pixels of the image);
    the image loss is ``sum(kept) / (2 M)`` (the paper's normalisation). The batch value is the
    mean over images that have valid pixels. Unitless; invariant to ``pred -> s*pred + t``, s > 0.
    """
    if not 0.0 <= trim < 1.0:
        raise InputError(f"ssi_trimmed_mae: trim must be in [0, 1), got {trim}")
    pred, target, valid = _prepare(pred, target, mask, "ssi_trimmed_mae")
    b = pred.shape[0]
    res = (_align_median_mad(pred, valid, eps) - _align_median_mad(target, valid, eps)).abs()
    res = torch.where(valid, res, float("inf")).reshape(b, -1)
    sorted_res = res.sort(dim=1).values
    m = valid.reshape(b, -1).sum(dim=1)
    # integer arithmetic for floor(trim * M), to stay exact at round percentages
    discard = (m * round(trim * 10000)) // 10000
    keep = torch.arange(sorted_res.shape[1], device=pred.device)[None, :] < (m - discard)[:, None]
    per_image = torch.where(keep, sorted_res, 0.0).sum(dim=1) / (2 * m.clamp_min(1))
    has = m > 0
    return torch.where(has, per_image, 0.0).sum() / has.sum().clamp_min(1)


def gradient_matching(pred, target, mask=None, image=None, *, scales: int = 4,
                      eps: float = 1e-6) -> torch.Tensor:
    """MiDaS multi-scale gradient matching on the aligned residual.

    ``R = a_pred - a_target`` with the median/mean-absolute-deviation alignment of
    :func:`ssi_trimmed_mae`. For each scale ``k = 0..scales-1``, ``R`` and the mask are subsampled
    with stride ``2^k`` and the term is ``(sum |dx R_k| + sum |dy R_k|) / M_k`` over the valid
    forward differences of the batch (``M_k`` = valid pixels at that scale); the terms are summed
    over scales. Unitless; invariant to ``pred -> s*pred + t``, s > 0. MiDaS weights it 0.5
    against :func:`ssi_trimmed_mae`.
    """
    if scales < 1:
        raise InputError(f"gradient_matching: scales must be >= 1, got {scales}")
    pred, target, valid = _prepare(pred, target, mask, "gradient_matching")
    r = _align_median_mad(pred, valid, eps) - _align_median_mad(target, valid, eps)
    total = None
    for k in range(scales):
        step = 2 ** k
        rk = r[..., ::step, ::step]
        vk = valid[..., ::step, ::step]
        gx = torch.where(_pair_valid_x(vk), _dx(rk).abs(), 0.0).sum()
        gy = torch.where(_pair_valid_y(vk), _dy(rk).abs(), 0.0).sum()
        term = (gx + gy) / vk.sum().clamp_min(1)
        total = term if total is None else total + term
    return total


# ----------------------------------------------------------------------------------------------
# knowledge distillation (Leve)


def _per_image_max(x: torch.Tensor, valid: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,1,1,1) maximum of ``x`` over the valid pixels of each image, clamped to at least ``eps``."""
    m = torch.where(valid, x, float("-inf")).amax(dim=(1, 2, 3), keepdim=True)
    return m.clamp_min(eps)  # -inf (no valid pixel) and non-positive maxima become eps


def max_normalized_l1(pred, teacher, mask=None, image=None, *, eps: float = 1e-6) -> torch.Tensor:
    """``mean |pred / max(pred) - teacher / max(teacher)|`` over valid pixels.

    The maxima are taken per image over the valid pixels (and clamped to at least ``eps``), so the
    term ignores the scale of either map: a teacher known only up to scale (relative disparity)
    distils its shape into a metric student. Shapes ``(B,1,H,W)``; unitless; the gradient flows
    through ``pred`` and its maximum, never into ``teacher`` (pass it detached).
    """
    pred, teacher, valid = _prepare(pred, teacher, mask, "max_normalized_l1")
    a = pred / _per_image_max(pred, valid, eps)
    b = teacher / _per_image_max(teacher, valid, eps)
    return _masked_mean((a - b).abs(), valid)


def distillation_loss(pred, target, teacher, mask=None, image=None, *, epsilon: float,
                      student_loss: Callable[..., torch.Tensor] = l1, return_terms: bool = False):
    """Leve's distillation loss ``(1 - eps) * L_student(pred, target) + eps * L1(pred/max(pred), teacher/max(teacher))``.

    ``pred``, ``target``: ``(B,1,H,W)`` in the student's target encoding; ``teacher``: the
    teacher's prediction converted to that encoding (see ``depthlab.training.distill``), detached;
    ``mask``: valid ground truth (both terms use it; the maxima too). ``student_loss`` is any loss
    with the common signature (e.g. a :class:`WeightedSum` built from the config); ``epsilon`` in
    [0, 1] (thesis: 0.10, 0.25, 0.50). ``epsilon == 0`` returns exactly ``student_loss(...)``.
    ``return_terms=True`` returns ``(total, {"student": ..., "kd": ...})`` (detached terms).
    """
    if not 0.0 <= float(epsilon) <= 1.0:
        raise InputError(f"distillation_loss: epsilon must be in [0, 1], got {epsilon}")
    student = student_loss(pred, target, mask, image)
    if float(epsilon) == 0.0:
        total, kd = student, None
    else:
        kd = max_normalized_l1(pred, teacher.detach(), mask)
        total = (1.0 - float(epsilon)) * student + float(epsilon) * kd
    if not return_terms:
        return total
    terms = {"student": student.detach()}
    if kd is not None:
        terms["kd"] = kd.detach()
    return total, terms


# ----------------------------------------------------------------------------------------------
# nn.Module wrappers: one explicit class per function (kornia style). ``function`` names the pure
# function the module calls (used by get_loss); the constructor takes that function's keyword
# parameters, stored as attributes and shown by repr.


class _Params:
    """``extra_repr`` from the constructor parameters that a subclass lists in ``_params``."""

    _params: tuple[str, ...] = ()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._params)


class L1Loss(_Params, nn.Module):
    """Module form of :func:`l1` (mean absolute error over valid pixels)."""

    function = staticmethod(l1)

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return l1(pred, target, mask, image)


class L2Loss(_Params, nn.Module):
    """Module form of :func:`l2` (mean squared error over valid pixels)."""

    function = staticmethod(l2)

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return l2(pred, target, mask, image)


class HuberLoss(_Params, nn.Module):
    """Module form of :func:`huber` (torch ``F.huber_loss`` semantics, threshold ``delta``)."""

    function = staticmethod(huber)
    _params = ("delta",)

    def __init__(self, delta: float = 1.0):
        super().__init__()
        self.delta = delta

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return huber(pred, target, mask, image, delta=self.delta)


class BerHuLoss(_Params, nn.Module):
    """Module form of :func:`berhu` (reverse Huber, ``c = threshold * max|r|``)."""

    function = staticmethod(berhu)
    _params = ("threshold",)

    def __init__(self, threshold: float = 0.2):
        super().__init__()
        self.threshold = threshold

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return berhu(pred, target, mask, image, threshold=self.threshold)


class SSIMLoss(_Params, nn.Module):
    """Module form of :func:`ssim_loss` (``(1 - SSIM)/2``, or ``1 - SSIM`` with ``halve=False``)."""

    function = staticmethod(ssim_loss)
    _params = ("window_size", "data_range", "halve")

    def __init__(self, window_size: int = 11, data_range: float | None = None, halve: bool = True):
        super().__init__()
        self.window_size, self.data_range, self.halve = window_size, data_range, halve

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return ssim_loss(pred, target, mask, image, window_size=self.window_size, data_range=self.data_range,
                         halve=self.halve)


class GradientLoss(_Params, nn.Module):
    """Module form of :func:`gradient_loss` (DenseDepth gradient term, per-direction means)."""

    function = staticmethod(gradient_loss)

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return gradient_loss(pred, target, mask, image)


class EdgeLoss(_Params, nn.Module):
    """Module form of :func:`edge_loss` (eq. 9 of the DIODE study: gradient difference per pixel)."""

    function = staticmethod(edge_loss)

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return edge_loss(pred, target, mask, image)


class EdgeAwareSmoothness(_Params, nn.Module):
    """Module form of :func:`edge_aware_smoothness` (needs ``image``; ignores ``target``)."""

    function = staticmethod(edge_aware_smoothness)
    _params = ("normalize", "eps")

    def __init__(self, normalize: bool = False, eps: float = 1e-7):
        super().__init__()
        self.normalize, self.eps = normalize, eps

    def forward(self, pred, target=None, mask=None, image=None) -> torch.Tensor:
        return edge_aware_smoothness(pred, target, mask, image, normalize=self.normalize, eps=self.eps)


class SILogLoss(_Params, nn.Module):
    """Module form of :func:`silog` (BTS/AdaBins: ``scale * sqrt(...)``)."""

    function = staticmethod(silog)
    _params = ("lam", "scale", "eps")

    def __init__(self, lam: float = 0.85, scale: float = 10.0, eps: float = LOG_EPS):
        super().__init__()
        self.lam, self.scale, self.eps = lam, scale, eps

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return silog(pred, target, mask, image, lam=self.lam, scale=self.scale, eps=self.eps)


class EigenSILogLoss(_Params, nn.Module):
    """Module form of :func:`eigen_silog` (Eigen et al. / DIODE study eq. 5: no root, no factor)."""

    function = staticmethod(eigen_silog)
    _params = ("lam", "eps")

    def __init__(self, lam: float = 0.5, eps: float = LOG_EPS):
        super().__init__()
        self.lam, self.eps = lam, eps

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return eigen_silog(pred, target, mask, image, lam=self.lam, eps=self.eps)


class SSITrimmedMAE(_Params, nn.Module):
    """Module form of :func:`ssi_trimmed_mae` (MiDaS)."""

    function = staticmethod(ssi_trimmed_mae)
    _params = ("trim", "eps")

    def __init__(self, trim: float = 0.2, eps: float = 1e-6):
        super().__init__()
        self.trim, self.eps = trim, eps

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return ssi_trimmed_mae(pred, target, mask, image, trim=self.trim, eps=self.eps)


class GradientMatchingLoss(_Params, nn.Module):
    """Module form of :func:`gradient_matching` (MiDaS multi-scale)."""

    function = staticmethod(gradient_matching)
    _params = ("scales", "eps")

    def __init__(self, scales: int = 4, eps: float = 1e-6):
        super().__init__()
        self.scales, self.eps = scales, eps

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return gradient_matching(pred, target, mask, image, scales=self.scales, eps=self.eps)


# name used in configs -> module class (a plain dict; no decorator registry, one name per loss)
LOSSES: dict[str, type[nn.Module]] = {
    "l1": L1Loss,
    "l2": L2Loss,
    "huber": HuberLoss,
    "berhu": BerHuLoss,
    "ssim": SSIMLoss,
    "gradient": GradientLoss,
    "edge": EdgeLoss,
    "smoothness": EdgeAwareSmoothness,
    "silog": SILogLoss,
    "eigen_silog": EigenSILogLoss,
    "ssi_trimmed": SSITrimmedMAE,
    "gradient_matching": GradientMatchingLoss,
}


class LossSpecError(DepthlabError, TypeError):
    """A loss spec of the wrong type, a weight that is not a number or a parameter its loss does not take
    (a ``TypeError``; ``str()`` names the term)."""


class UnknownLossError(UnknownNameError):
    """Unknown loss name: a :class:`~depthlab.errors.UnknownNameError` (a ``DepthlabError``, ``KeyError`` and
    ``ValueError``) whose ``str()`` is the one-line message."""


def list_losses() -> list[str]:
    """Loss names usable in configs."""
    return sorted(LOSSES)


def loss_class(name: str) -> type[nn.Module]:
    """The module class of a config name; :class:`UnknownLossError` (with close matches) otherwise."""
    key = str(name).strip().lower()
    if key not in LOSSES:
        raise unknown_name("loss", name, sorted(LOSSES), error=UnknownLossError)
    return LOSSES[key]


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The pure function behind a config name, e.g. ``get_loss("edge") is edge_loss``."""
    return loss_class(name).function


def _check_params(label: str, cls: type[nn.Module], params: Mapping[str, Any]) -> None:
    sig = inspect.signature(cls.__init__)
    allowed = [p.name for p in sig.parameters.values() if p.name != "self"
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    bad = [k for k in params if k not in allowed]
    if bad:
        raise LossSpecError(f"{label}: unknown parameter(s) {', '.join(map(repr, bad))}; "
                        f"valid: {', '.join(allowed) if allowed else 'none'}")

def _canonical(name: str) -> str:
    """The LOSSES key of a config name (case and surrounding spaces ignored)."""
    loss_class(name)
    return str(name).strip().lower()


# ----------------------------------------------------------------------------------------------
# weighted sum


class WeightedSum(nn.Module):
    """``total = sum_k w_k * loss_k(pred, target, mask, image)``.

    ``forward`` returns the total (a scalar tensor) and stores the unweighted, detached value of
    every term in :attr:`last_terms` (``{key: tensor}``) for logging; :meth:`compute` returns both.
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]):
        super().__init__()
        if not terms:
            raise InputError("WeightedSum: no loss terms (every weight is 0 or the spec is empty)")
        self.keys = [k for k, _, _ in terms]
        if len(set(self.keys)) != len(self.keys):
            raise InputError(f"WeightedSum: duplicate term keys {self.keys}")
        self.weights = [float(w) for _, w, _ in terms]
        self.losses = nn.ModuleList([m for _, _, m in terms])
        self.last_terms: dict[str, torch.Tensor] = {}

    @property
    def needs_image(self) -> bool:
        return any(isinstance(m, EdgeAwareSmoothness) for m in self.losses)

    def compute(self, pred, target, mask=None, image=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = None
        values: dict[str, torch.Tensor] = {}
        for key, w, loss in zip(self.keys, self.weights, self.losses):
            v = loss(pred, target, mask, image)
            values[key] = v.detach()
            total = w * v if total is None else total + w * v
        self.last_terms = values
        return total, values

    def forward(self, pred, target, mask=None, image=None) -> torch.Tensor:
        return self.compute(pred, target, mask, image)[0]

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{k}" for k, w in zip(self.keys, self.weights))


def _as_weight(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise LossSpecError(f"{where}: weight must be a number, got {value!r}")
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise LossSpecError(f"{where}: weight must be a number, got {value!r}") from None
    if not math.isfinite(w):
        raise InputError(f"{where}: weight must be finite, got {value!r}")
    return w


def _unwrap_spec(spec: Any, params: Mapping[str, Mapping[str, Any]] | None) -> tuple[Any, dict]:
    """``(terms spec, params by name)`` of a ``LossConfig`` or a ``{"terms": ..., "params": ...}`` mapping
    (``params`` given to :func:`build_loss` win); any other spec is returned as it is."""
    if hasattr(spec, "terms") and not isinstance(spec, Mapping):
        return spec.terms, {**(getattr(spec, "params", None) or {}), **(params or {})}
    if isinstance(spec, Mapping) and "terms" in spec:
        extra = set(spec) - {"terms", "params"}
        if extra:
            raise InputError(f"loss spec: unexpected key(s) {sorted(extra)}; expected 'terms' and 'params'")
        return spec["terms"], {**(spec.get("params") or {}), **(params or {})}
    return spec, dict(params or {})


def _term_items(spec: Any) -> list[tuple[str, str, float, dict]]:
    """``[(key, canonical name, weight, params)]`` of a name, a mapping name -> weight or a list of terms."""
    if isinstance(spec, str):
        spec = {spec: 1.0}
    if isinstance(spec, Mapping):
        return [(str(name), _canonical(name), _as_weight(weight, f"loss {name!r}"), {}) for name, weight in spec.items()]
    if not isinstance(spec, Sequence):
        raise LossSpecError(f"loss spec must be a name, a mapping name->weight or a list of terms, got {type(spec).__name__}")
    items = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise InputError(f"loss term #{i}: expected a mapping with 'name', got {item!r}")
        extra = set(item) - {"name", "weight", "params", "key"}
        if extra:
            raise InputError(f"loss term #{i} ({item['name']!r}): unexpected key(s) {sorted(extra)}; "
                             "valid: name, weight, params, key")
        name = str(item["name"])
        items.append((str(item.get("key", name)), _canonical(name),
                      _as_weight(item.get("weight", 1.0), f"loss {name!r}"), dict(item.get("params") or {})))
    return items


def build_loss(spec: Any, params: Mapping[str, Mapping[str, Any]] | None = None) -> WeightedSum:
    """Build a :class:`WeightedSum` from a config spec.

    ``spec`` is one of:

    * a name: ``"silog"`` (weight 1);
    * a mapping name -> weight: ``{"silog": 1.0, "ssim": 0.5, "edge": 0.1, "l1": 0.1}``, with
      per-name keyword parameters in ``params``: ``{"ssim": {"window_size": 7}}``;
    * a list of ``{"name": ..., "weight": 1.0, "params": {...}, "key": optional log name}``
      (the same loss may appear twice with different parameters if the keys differ);
    * a ``LossConfig`` or a mapping with ``"terms"`` (and optional ``"params"``).

    Terms with weight 0 are skipped (a convenient way to switch off an inherited term). Unknown
    names raise :class:`UnknownLossError` (a ``DepthlabError``, ``KeyError`` and ``ValueError``) with close matches; unknown parameters
    raise :class:`LossSpecError` (a ``DepthlabError`` and ``TypeError``) naming the term, bad values an
    :class:`~depthlab.errors.InputError` (a ``ValueError``).
    """
    spec, params = _unwrap_spec(spec, params)
    # params given by name apply to every term of that loss (a typo among their names must not pass silently)
    by_canonical: dict[str, dict] = {}
    for pname, p in params.items():
        by_canonical.setdefault(_canonical(pname), {}).update(p or {})
    terms = []
    for key, canon, weight, p in _term_items(spec):
        if weight == 0.0:
            continue
        kw = {**by_canonical.get(canon, {}), **p}
        cls = LOSSES[canon]
        _check_params(f"loss {key!r}", cls, kw)
        terms.append((key, weight, cls(**kw)))
    return WeightedSum(terms)
