"""Depth metrics: pure, masked functions on tensors plus exact aggregation across batches.

Shapes and units
    ``pred`` and ``gt`` are depth in metres, either one image ``(H, W)`` or a batch ``(B, 1, H, W)``
    (any ``(B, ...)`` works: everything after the first dimension is one image). ``mask`` is an
    optional bool tensor of the same shape, ``True`` = pixel may be scored. A batch gives one value
    per image, shape ``(B,)``; a single ``(H, W)`` image gives a 0-d tensor. Nothing calls
    ``.item()``: results stay on the input's device so training validation, ``depthlab eval`` and the
    benchmarks share one implementation.

Which pixels count
    ``valid = mask & isfinite(gt) & (gt > 0)``: ground truth 0 means "no measurement" everywhere in
    depthlab. Every metric of an image uses the same valid pixels. The value held by a pixel outside
    ``valid`` (prediction or ground truth, even NaN) never changes any result.

Non-positive predictions
    Terms with a logarithm or a ratio (``rmse_log``, ``log10``, ``silog``, ``delta*``) use
    ``max(pred, EPS)`` with ``EPS = 1e-6`` m, so a prediction <= 0 is a very large (finite) error
    instead of a NaN, and it stays in the pixel count. Linear terms (``abs_rel``, ``sq_rel``,
    ``rmse``, ``mae``, ``mse``) use the prediction as it is. Non-finite predictions (NaN, inf) are
    not hidden: they propagate into the metrics; :func:`depthlab.evaluation.evaluate` reports such
    images as skipped instead of scoring them.

Definitions (means over the valid pixels of one image, ``p`` = prediction, ``g`` = ground truth,
``d = ln p - ln g``)

    abs_rel  = mean(|p - g| / g)            sq_rel = mean((p - g)^2 / g)
    rmse     = sqrt(mean((p - g)^2))        mse    = mean((p - g)^2)
    mae      = mean(|p - g|)                rmse_log = sqrt(mean(d^2))
    log10    = mean(|log10 p - log10 g|)
    silog    = 100 * sqrt(mean(d^2) - lam * mean(d)^2)       (lam = 1: BTS / KITTI benchmark)
    delta_k  = mean(max(p / g, g / p) < 1.25^k),  k = 1, 2, 3  (strict <, a fraction in [0, 1])

``silog`` follows the KITTI depth benchmark and BTS evaluation: natural log, ``lam = 1`` and a
factor 100; ``lam = 0.5`` gives the scale-invariant error of Eigen et al. (before the x100). The
difference inside the root is clamped at 0 so rounding never yields NaN. An image without valid
pixels gives NaN for every metric (0/0, undefined); :class:`MetricAccumulator` leaves such images
out and the evaluator skips them with a reason.

Aggregation (the smp pattern: one set of statistics, every metric a function of them)
    :func:`metric_sums` returns per-image sufficient statistics (sums over valid pixels and the
    count); :func:`metrics_from_sums` is the only place where metrics are computed, from sums, so the
    same code gives per-image values and pixel-pooled values (sums added over all images first).
    :class:`MetricAccumulator` (a ``torchmetrics.Metric``, used by ``depthlab eval`` and by training
    validation) keeps sums across batches and ranks, so batches of any size or valid count give
    exactly the result of one big batch. A third mode, ``per_image_mse`` (Leve thesis eq. 8.1), is
    per-image except that RMSE is the root of the mean per-image MSE (:func:`average_images`);
    :func:`normalized_errors` derives the [0, 1]-scale errors from ``mae`` and ``mse``.

Sums are computed in float64 (float32 on MPS, which has no float64).
"""
from __future__ import annotations

import math

import torch

EPS = 1e-6
"""Floor (metres) applied to predictions inside logarithms and ratios."""

METRIC_NAMES: tuple[str, ...] = (
    "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mae", "mse", "delta1", "delta2", "delta3",
)
"""The depth metrics (keys of :func:`compute_metrics`), in display order. Every list of metrics in depthlab
(validation logs, evaluation summaries, report and benchmark columns) is this one or a selection of it."""

HIGHER_IS_BETTER: frozenset[str] = frozenset({"delta1", "delta2", "delta3"})
"""The metrics for which larger is better (accuracies); every other metric, including
:func:`normalized_errors`, is an error (lower is better)."""

SUM_KEYS: tuple[str, ...] = (
    "n", "abs_err", "abs_rel", "sq_err", "sq_rel", "log_sum", "log_sq", "log10_abs", "delta1", "delta2", "delta3",
)
_LN10 = math.log(10.0)


# ----------------------------------------------------------------------------- preparation
def accumulation_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype sums over pixels use: float64, float32 on MPS (which has no float64)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def _prepare(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None):
    """-> (p, g, valid, single) with p, g float (B, N), valid bool (B, N); invalid pixels hold 1."""
    if not isinstance(pred, torch.Tensor) or not isinstance(gt, torch.Tensor):
        raise TypeError("pred and gt must be torch tensors")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} differs from gt shape {tuple(gt.shape)}")
    if pred.ndim < 2:
        raise ValueError(f"expected (H, W) or (B, 1, H, W) tensors, got shape {tuple(pred.shape)}")
    if mask is None:
        mask = torch.ones_like(gt, dtype=torch.bool)
    elif mask.shape != gt.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from gt shape {tuple(gt.shape)}")
    dtype = accumulation_dtype(gt)
    g = gt.to(dtype)
    p = pred.to(dtype)
    valid = mask.bool() & torch.isfinite(g) & (g > 0)
    one = torch.ones((), dtype=dtype, device=g.device)
    g = torch.where(valid, g, one)
    p = torch.where(valid, p, one)
    single = pred.ndim == 2
    if single:
        p, g, valid = p[None], g[None], valid[None]
    b = p.shape[0]
    return p.reshape(b, -1), g.reshape(b, -1), valid.reshape(b, -1), single


def _msum(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)


def _finish(x: torch.Tensor, single: bool) -> torch.Tensor:
    return x[0] if single else x


def _log_diff(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(EPS)) - torch.log(g)


def _ratio(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    pc = p.clamp_min(EPS)
    return torch.maximum(pc / g, g / pc)


# ----------------------------------------------------------------------------- sums and aggregation
def metric_sums(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image sufficient statistics, each ``(B,)`` (0-d for an ``(H, W)`` input): the valid count ``n``
    and sums over the valid pixels of ``|p-g|`` (``abs_err``), ``|p-g|/g`` (``abs_rel``), ``(p-g)^2``
    (``sq_err``), ``(p-g)^2/g`` (``sq_rel``), ``d`` (``log_sum``), ``d^2`` (``log_sq``), ``|d|/ln 10``
    (``log10_abs``) and the three delta indicators (``delta1..3``).
    """
    p, g, v, single = _prepare(pred, gt, mask)
    err = p - g
    d = _log_diff(p, g)
    r = _ratio(p, g)
    sums = {
        "n": v.sum(dim=1).to(p.dtype),
        "abs_err": _msum(err.abs(), v),
        "abs_rel": _msum(err.abs() / g, v),
        "sq_err": _msum(err * err, v),
        "sq_rel": _msum(err * err / g, v),
        "log_sum": _msum(d, v),
        "log_sq": _msum(d * d, v),
        "log10_abs": _msum(d.abs() / _LN10, v),
    }
    for k in (1, 2, 3):
        sums[f"delta{k}"] = _msum((r < 1.25 ** k).to(p.dtype), v)
    return {k: _finish(t, single) for k, t in sums.items()}


def metrics_from_sums(sums: dict[str, torch.Tensor], lam: float = 1.0) -> dict[str, torch.Tensor]:
    """Metrics (:data:`METRIC_NAMES`) from sums of :func:`metric_sums`, element-wise on any shape.

    Give it per-image sums for per-image metrics, or sums added over images for pixel-pooled
    metrics (e.g. pooled RMSE = ``sqrt(sum sq_err / sum n)``). ``n = 0`` gives NaN.
    """
    n = sums["n"]
    m_log = sums["log_sum"] / n
    m_log2 = sums["log_sq"] / n
    out = {
        "abs_rel": sums["abs_rel"] / n,
        "sq_rel": sums["sq_rel"] / n,
        "rmse": (sums["sq_err"] / n).sqrt(),
        "rmse_log": m_log2.sqrt(),
        "log10": sums["log10_abs"] / n,
        "silog": 100.0 * (m_log2 - lam * m_log * m_log).clamp_min(0).sqrt(),
        "mae": sums["abs_err"] / n,
        "mse": sums["sq_err"] / n,
        "delta1": sums["delta1"] / n,
        "delta2": sums["delta2"] / n,
        "delta3": sums["delta3"] / n,
    }
    return out


def compute_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
                    lam: float = 1.0) -> dict[str, torch.Tensor]:
    """All metrics of :data:`METRIC_NAMES` per image, plus ``n_pixels`` (valid count).

    Args:
        pred: predicted depth, metres, ``(B, 1, H, W)`` or ``(H, W)``.
        gt: ground-truth depth, metres, same shape; ``<= 0`` or non-finite = no measurement.
        mask: optional bool, same shape, ``True`` = may be scored (crop, depth caps ...).
        lam: ``silog`` variance weight (1 = KITTI/BTS).

    Returns:
        ``{name: tensor (B,)}`` (0-d tensors for an ``(H, W)`` input), float64 except on MPS.
    """
    sums = metric_sums(pred, gt, mask)
    out = metrics_from_sums(sums, lam=lam)
    out["n_pixels"] = sums["n"]
    return out


NORMALIZED_NAMES: tuple[str, ...] = ("l1_norm", "mse_norm")
"""Keys of :func:`normalized_errors` (errors: lower is better)."""


def normalized_errors(metrics: dict, max_depth: float) -> dict:
    """L1 and MSE on depth normalised to [0, 1] by ``d / max_depth``, from metre-scale ``mae`` and ``mse``.

    Both are linear in the scale: ``mean|p/D - g/D| = mae / D`` and ``mean((p/D - g/D)^2) = mse / D^2``
    (``D = max_depth``, metres), so they are derived from the metric sums, never computed twice. They are
    the numbers of a study that trains and reports on ``target_encoding: normalized`` (the NYU six-model
    study's "L1 error" and "MSE on test data"). Works on tensors, floats or ``None`` (kept ``None``).
    """
    d = float(max_depth)
    if not d > 0:
        raise ValueError(f"max_depth must be > 0, got {max_depth}")
    mae_, mse_ = metrics.get("mae"), metrics.get("mse")
    return dict(zip(NORMALIZED_NAMES, (None if mae_ is None else mae_ / d, None if mse_ is None else mse_ / (d * d))))


def average_images(means: dict, mode: str) -> dict:
    """Finish the means over images of per-image metrics (``{name: mean}``, needs ``rmse`` and ``mse``)
    for an averaging ``mode``: ``per_image`` returns them as they are; ``per_image_mse`` (Leve thesis,
    eq. 8.1) replaces ``rmse`` by ``sqrt(mean over images of per-image MSE)``. Works on tensors or floats."""
    if mode == "per_image":
        return means
    if mode != "per_image_mse":
        raise ValueError(f"average_images: mode must be per_image or per_image_mse, got {mode!r}")
    mse = means["mse"]
    return {**means, "rmse": mse.sqrt() if isinstance(mse, torch.Tensor) else math.sqrt(mse)}


AVERAGING_MODES = ("per_image", "pixel", "per_image_mse")
"""How :class:`MetricAccumulator` averages images (the protocols' ``averaging``)."""


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`AVERAGING_MODES`, else a ValueError naming them."""
    if mode not in AVERAGING_MODES:
        raise ValueError(f"mode must be one of {AVERAGING_MODES}, got {mode!r}")
    return mode


def __getattr__(name: str):
    # MetricAccumulator is a torchmetrics.Metric, and importing torchmetrics costs ~3 s (scipy, torchvision):
    # it is loaded on first use, so commands that only need the pure functions (``depthlab models``,
    # ``depthlab protocols``) do not pay for it.
    if name == "MetricAccumulator":
        from depthlab.metric_accumulator import MetricAccumulator

        return MetricAccumulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
