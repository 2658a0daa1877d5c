"""``MetricAccumulator``: :mod:`depthlab.metrics`' sums accumulated over batches and DDP ranks as a
``torchmetrics.Metric``. Import it as ``depthlab.metrics.MetricAccumulator``; it lives in its own module only
so that importing :mod:`depthlab.metrics` does not import torchmetrics."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from depthlab.metrics import (AVERAGING_MODES, METRIC_NAMES, SUM_KEYS, average_images, check_mode, metric_sums,
                              metrics_from_sums)


class MetricAccumulator(Metric):
    """Accumulates metrics over batches (and across DDP ranks) without mean-of-means mistakes.

    A ``torchmetrics.Metric`` whose state is sums with ``dist_reduce_fx="sum"``: the pooled
    :func:`metric_sums` of the scored images, the sum over images of each per-image metric, and the
    counts of scored and empty images. Splitting the same images into batches of any size, or across
    ranks, gives the result of one big batch; ``compute`` syncs the ranks (torchmetrics does it).

    ``mode="per_image"`` (the papers' convention): every image with at least one valid pixel counts
    once; the result is the mean over images of each per-image metric (RMSE = mean of per-image
    RMSEs). ``mode="pixel"``: the metrics of the pooled sums (RMSE = ``sqrt(sum sq_err / sum n)``),
    so an image weighs in proportion to its valid pixel count. ``mode="per_image_mse"`` (Leve thesis,
    eq. 8.1): as ``per_image``, except ``rmse = sqrt(mean over images of each image's MSE)`` (see
    :func:`average_images`). Images without valid pixels are left out (counted in :attr:`n_empty`).

    Example::

        acc = MetricAccumulator("per_image")
        for pred, gt, mask in batches:
            acc.update(pred, gt, mask)   # or acc.update(sums=metric_sums(pred, gt, mask))
        summary = acc.compute()          # {"abs_rel": tensor(), ..., "n_images": tensor(), "n_pixels": tensor()}
    """

    MODES = AVERAGING_MODES
    full_state_update = False
    is_differentiable = False

    def __init__(self, mode: str = "per_image", lam: float = 1.0, **kwargs):
        super().__init__(compute_with_cache=False, **kwargs)  # compute(mode) may be asked twice
        self.mode = check_mode(mode)
        self.lam = lam
        self.add_state("pooled", torch.zeros(len(SUM_KEYS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("image_sum", torch.zeros(len(METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("empty", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor | None = None, gt: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, *, sums: dict[str, torch.Tensor] | None = None) -> None:
        """Add a batch (shapes as in :func:`compute_metrics`), or per-image ``sums`` of :func:`metric_sums`."""
        if sums is None:
            sums = metric_sums(pred, gt, mask)
        sums = {k: v.detach().reshape(-1).to(self.pooled.dtype) for k, v in sums.items()}
        per_image = metrics_from_sums(sums, lam=self.lam)
        has = sums["n"] > 0
        self.pooled += torch.stack([torch.where(has, sums[k], 0).sum() for k in SUM_KEYS])
        self.image_sum += torch.stack([torch.where(has, per_image[k], 0).sum() for k in METRIC_NAMES])
        self.images += has.sum()
        self.empty += (~has).sum()

    @property
    def n_images(self) -> int:
        """Images with at least one valid pixel seen so far (on this rank)."""
        return int(self.images)

    @property
    def n_empty(self) -> int:
        """Images seen without any valid pixel (left out of the averages), on this rank."""
        return int(self.empty)

    def compute(self, mode: str | None = None) -> dict[str, torch.Tensor]:
        """0-d tensors: every metric of :data:`METRIC_NAMES` plus ``n_images`` and ``n_pixels``.

        ``mode`` overrides the accumulator's mode for this call (both are always available).
        NaN metrics when no image had valid pixels.
        """
        mode = check_mode(mode or self.mode)
        if mode == "pixel":
            out = metrics_from_sums(dict(zip(SUM_KEYS, self.pooled)), lam=self.lam)
        else:
            out = average_images(dict(zip(METRIC_NAMES, self.image_sum / self.images)), mode)
        out["n_images"] = self.images
        out["n_pixels"] = self.pooled[0].round().long()
        return out


__all__ = ["MetricAccumulator"]
