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

Aggregation
    :func:`metric_sums` returns per-image sufficient statistics (sums over valid pixels and the
    count). :func:`metrics_from_sums` turns sums into metrics, so the same code gives per-image
    values and pixel-pooled values (sums added over all images first). :class:`MetricAccumulator`
    keeps those sums across batches, so batches of any size or valid count give exactly the result
    of one big batch. A third mode, ``per_image_mse`` (Leve thesis eq. 8.1), is per-image except
    that RMSE is the root of the mean per-image MSE (:func:`average_images`).

Sums are accumulated in float64 (float32 on MPS, which has no float64).
"""
from __future__ import annotations

import math

import torch

EPS = 1e-6
"""Floor (metres) applied to predictions inside logarithms and ratios."""

METRIC_NAMES: tuple[str, ...] = (
    "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "mae", "mse", "delta1", "delta2", "delta3",
)
"""Metric keys returned by :func:`compute_metrics`, in display order."""

LOWER_IS_BETTER: dict[str, bool] = {name: not name.startswith("delta") for name in METRIC_NAMES}

SUM_KEYS: tuple[str, ...] = (
    "n", "abs_err", "abs_rel", "sq_err", "sq_rel", "log_sum", "log_sq", "log10_abs", "delta1", "delta2", "delta3",
)
"""Keys of :func:`metric_sums`: the valid count ``n`` and sums over valid pixels of
``|p-g|``, ``|p-g|/g``, ``(p-g)^2``, ``(p-g)^2/g``, ``d``, ``d^2``, ``|d|/ln 10`` and the three
delta indicators."""

_LN10 = math.log(10.0)


# ----------------------------------------------------------------------------- preparation
def _acc_dtype(t: torch.Tensor) -> torch.dtype:
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
    dtype = _acc_dtype(gt)
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


def _mean_of(term, pred, gt, mask):
    p, g, v, single = _prepare(pred, gt, mask)
    return _finish(_msum(term(p, g), v) / v.sum(dim=1), single)


# ----------------------------------------------------------------------------- single metrics
def abs_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute relative error ``mean(|p - g| / g)`` over valid pixels. (B,) or 0-d."""
    return _mean_of(lambda p, g: (p - g).abs() / g, pred, gt, mask)


def sq_rel(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Squared relative error ``mean((p - g)^2 / g)`` (metres) over valid pixels."""
    return _mean_of(lambda p, g: (p - g) ** 2 / g, pred, gt, mask)


def mse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error ``mean((p - g)^2)`` (m^2) over valid pixels."""
    return _mean_of(lambda p, g: (p - g) ** 2, pred, gt, mask)


def rmse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Root mean squared error ``sqrt(mean((p - g)^2))`` (metres) per image."""
    return mse(pred, gt, mask).sqrt()


def mae(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error ``mean(|p - g|)`` (metres) over valid pixels."""
    return _mean_of(lambda p, g: (p - g).abs(), pred, gt, mask)


def rmse_log(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``sqrt(mean((ln p - ln g)^2))`` over valid pixels; predictions floored at :data:`EPS`."""
    return _mean_of(lambda p, g: _log_diff(p, g) ** 2, pred, gt, mask).sqrt()


def log10(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(|log10 p - log10 g|)`` over valid pixels; predictions floored at :data:`EPS`."""
    return _mean_of(lambda p, g: _log_diff(p, g).abs() / _LN10, pred, gt, mask)


def silog(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, lam: float = 1.0,
          scale: float = 100.0) -> torch.Tensor:
    """Scale-invariant log error ``scale * sqrt(mean(d^2) - lam * mean(d)^2)``, ``d = ln p - ln g``.

    Defaults (``lam=1``, ``scale=100``) are the KITTI benchmark / BTS convention. Predictions are
    floored at :data:`EPS`; the difference under the root is clamped at 0.
    """
    p, g, v, single = _prepare(pred, gt, mask)
    d = _log_diff(p, g)
    n = v.sum(dim=1)
    m1 = _msum(d, v) / n
    m2 = _msum(d * d, v) / n
    return _finish(scale * (m2 - lam * m1 * m1).clamp_min(0).sqrt(), single)


def delta(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, k: int = 1,
          base: float = 1.25) -> torch.Tensor:
    """Threshold accuracy: fraction of valid pixels with ``max(p/g, g/p) < base**k`` (strict)."""
    thr = base ** k
    return _mean_of(lambda p, g: (_ratio(p, g) < thr).to(p.dtype), pred, gt, mask)


def delta1(pred, gt, mask=None) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/g, g/p) < 1.25``."""
    return delta(pred, gt, mask, k=1)


def delta2(pred, gt, mask=None) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/g, g/p) < 1.25^2``."""
    return delta(pred, gt, mask, k=2)


def delta3(pred, gt, mask=None) -> torch.Tensor:
    """Fraction of valid pixels with ``max(p/g, g/p) < 1.25^3``."""
    return delta(pred, gt, mask, k=3)


# ----------------------------------------------------------------------------- sums and aggregation
def metric_sums(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image sufficient statistics (see :data:`SUM_KEYS`), each ``(B,)`` (0-d for an ``(H, W)`` input).

    ``n`` is the number of valid pixels; the rest are sums over those pixels.
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
"""Keys of :func:`normalized_errors`."""


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
    return {"l1_norm": None if mae_ is None else mae_ / d, "mse_norm": None if mse_ is None else mse_ / (d * d)}


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


class MetricAccumulator:
    """Accumulates metrics over batches without mean-of-means mistakes.

    ``mode="per_image"`` (the papers' convention): every image with at least one valid pixel
    counts once; the result is the mean over images of each per-image metric (so RMSE is the mean
    of per-image RMSEs). ``mode="pixel"``: the per-pixel sums of all images are pooled first and
    the metrics computed once from the pooled sums (RMSE = ``sqrt(sum sq_err / sum n)``), so an
    image weighs in proportion to its valid pixel count.

    Either way the state is sums (never means), so splitting the same images into batches of any
    size gives the same result as one big batch. Images without valid pixels are left out (they
    are counted in :attr:`n_empty`).

    Example::

        acc = MetricAccumulator("per_image")
        for pred, gt, mask in batches:
            acc.update(pred, gt, mask)    # returns the per-image metrics of this batch
        summary = acc.compute()          # {"abs_rel": tensor(), ..., "n_images": tensor(), "n_pixels": tensor()}
    ``mode="per_image_mse"`` (Leve thesis, eq. 8.1): as ``per_image``, except
    ``rmse = sqrt(mean over images of each image's MSE)`` instead of the mean of per-image RMSEs
    (see :func:`average_images`).

    """

    MODES = ("per_image", "pixel", "per_image_mse")

    def __init__(self, mode: str = "per_image", lam: float = 1.0):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.lam = lam
        self.reset()

    def reset(self) -> None:
        self._pooled: dict[str, torch.Tensor] | None = None  # sum over images of each sum
        self._metric_sum: dict[str, torch.Tensor] | None = None  # sum over images of each per-image metric
        self._n_images: torch.Tensor | None = None
        self._n_empty: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Add a batch (shapes as in :func:`compute_metrics`); returns its per-image metrics."""
        return self.update_sums(metric_sums(pred, gt, mask))

    def update_sums(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add per-image sums from :func:`metric_sums` (``(B,)`` or 0-d); returns per-image metrics."""
        sums = {k: v.detach().reshape(-1) for k, v in sums.items()}
        per_image = metrics_from_sums(sums, lam=self.lam)
        has = sums["n"] > 0
        zero = torch.zeros((), dtype=sums["n"].dtype, device=sums["n"].device)
        pooled = {k: torch.where(has, v, zero).sum() for k, v in sums.items()}
        msum = {k: torch.where(has, v, zero).sum() for k, v in per_image.items()}
        n_img = has.sum()
        n_empty = (~has).sum()
        if self._pooled is None:
            self._pooled, self._metric_sum, self._n_images, self._n_empty = pooled, msum, n_img, n_empty
        else:
            self._pooled = {k: self._pooled[k] + pooled[k] for k in pooled}
            self._metric_sum = {k: self._metric_sum[k] + msum[k] for k in msum}
            self._n_images = self._n_images + n_img
            self._n_empty = self._n_empty + n_empty
        per_image["n_pixels"] = sums["n"]
        return per_image

    @property
    def n_images(self) -> int:
        """Images with at least one valid pixel seen so far."""
        return 0 if self._n_images is None else int(self._n_images)

    @property
    def n_empty(self) -> int:
        """Images seen without any valid pixel (left out of the averages)."""
        return 0 if self._n_empty is None else int(self._n_empty)

    def compute(self, mode: str | None = None) -> dict[str, torch.Tensor]:
        """0-d tensors: every metric of :data:`METRIC_NAMES` plus ``n_images`` and ``n_pixels``.

        ``mode`` overrides the accumulator's mode for this call (both are always available).
        NaN metrics when no image had valid pixels.
        """
        mode = mode or self.mode
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if self._pooled is None:
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            out = {k: nan.clone() for k in METRIC_NAMES}
            out["n_images"] = torch.tensor(0)
            out["n_pixels"] = torch.tensor(0)
            return out
        if mode == "pixel":
            out = metrics_from_sums(self._pooled, lam=self.lam)
        else:
            out = average_images({k: v / self._n_images for k, v in self._metric_sum.items()}, mode)
        out["n_images"] = self._n_images
        out["n_pixels"] = self._pooled["n"].round().long()
        return out
