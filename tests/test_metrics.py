"""depthlab.metrics: hand-computed values, masks, zeros in GT, per-image vs pixel-pooled averaging."""
from __future__ import annotations

import math

import pytest
import torch

from depthlab import metrics as M

LN2 = math.log(2.0)
LN34 = math.log(0.75)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img_a():
    """One 2x3 image: 4 scored pixels, 1 masked-out pixel, 1 pixel with gt = 0 (no measurement).

    scored:   p = [2, 1, 4, 3], g = [1, 1, 2, 4]
    masked:   p = 100, g = 5 (mask False)
    gt zero:  p = 7,   g = 0
    """
    p = torch.tensor([[2.0, 1.0, 4.0], [3.0, 100.0, 7.0]]).view(1, 1, 2, 3)
    g = torch.tensor([[1.0, 1.0, 2.0], [4.0, 5.0, 0.0]]).view(1, 1, 2, 3)
    m = torch.tensor([[True, True, True], [True, False, True]]).view(1, 1, 2, 3)
    return p, g, m


# Worked by hand for image A (scored pixels only):
#   |p-g|      = 1, 0, 2, 1        -> mae = 4/4 = 1
#   |p-g|/g    = 1, 0, 1, 0.25     -> abs_rel = 2.25/4 = 0.5625
#   (p-g)^2    = 1, 0, 4, 1        -> mse = 6/4 = 1.5, rmse = sqrt(1.5)
#   (p-g)^2/g  = 1, 0, 2, 0.25     -> sq_rel = 3.25/4 = 0.8125
#   d=ln(p/g)  = ln2, 0, ln2, ln(3/4)
#   max(p/g, g/p) = 2, 1, 2, 4/3   -> delta1 (<1.25) = 1/4, delta2 (<1.5625) = 2/4, delta3 (<1.953125) = 2/4
A_EXPECTED = {
    "mae": 1.0,
    "abs_rel": 0.5625,
    "mse": 1.5,
    "rmse": math.sqrt(1.5),
    "sq_rel": 0.8125,
    "rmse_log": math.sqrt((2 * LN2 ** 2 + LN34 ** 2) / 4),
    "log10": (2 * LN2 + abs(LN34)) / math.log(10) / 4,
    "silog": 100 * math.sqrt((2 * LN2 ** 2 + LN34 ** 2) / 4 - ((2 * LN2 + LN34) / 4) ** 2),
    "delta1": 0.25,
    "delta2": 0.5,
    "delta3": 0.5,
}


def test_hand_computed_values_single_image():
    p, g, m = _img_a()
    out = M.compute_metrics(p, g, m)
    assert set(M.METRIC_NAMES) <= set(out)
    for k, v in A_EXPECTED.items():
        assert out[k].shape == (1,), k
        assert out[k][0].item() == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert out["n_pixels"][0].item() == 4


def test_metric_sums_by_hand():
    """The one set of statistics every metric derives from, summed over image A's 4 scored pixels by hand."""
    s = M.metric_sums(*_img_a())
    expected = {"n": 4, "abs_err": 1 + 0 + 2 + 1, "abs_rel": 1 + 0 + 1 + 0.25, "sq_err": 1 + 0 + 4 + 1,
                "sq_rel": 1 + 0 + 2 + 0.25, "log_sum": 2 * LN2 + LN34, "log_sq": 2 * LN2 ** 2 + LN34 ** 2,
                "log10_abs": (2 * LN2 - LN34) / math.log(10), "delta1": 1, "delta2": 2, "delta3": 2}
    assert set(s) == set(expected)
    for k, v in expected.items():
        assert s[k].shape == (1,) and s[k][0].item() == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_hw_input_gives_0d_and_same_values():
    p, g, m = _img_a()
    out = M.compute_metrics(p[0, 0], g[0, 0], m[0, 0])
    assert out["abs_rel"].ndim == 0
    assert out["abs_rel"].item() == pytest.approx(0.5625)
    assert M.metric_sums(p[0, 0], g[0, 0], m[0, 0])["n"].ndim == 0


def test_masked_and_zero_gt_pixels_change_nothing():
    p, g, m = _img_a()
    ref = M.compute_metrics(p, g, m)
    p2, g2 = p.clone(), g.clone()
    p2[0, 0, 1, 1] = float("nan")  # masked pixel: prediction NaN
    g2[0, 0, 1, 1] = -3.0  # masked pixel: nonsense ground truth
    p2[0, 0, 1, 2] = -50.0  # gt = 0 pixel: prediction negative
    out = M.compute_metrics(p2, g2, m)
    for k in M.METRIC_NAMES:
        assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-15), k
    # without a mask, the gt = 0 pixel is still excluded but the (5 m, 100 m) pixel now counts
    out_nomask = M.compute_metrics(p, g)
    assert out_nomask["n_pixels"].item() == 5
    assert out_nomask["mae"].item() == pytest.approx((4 + 95) / 5)


def test_non_finite_gt_is_invalid():
    p = torch.tensor([[2.0, 3.0]])
    g = torch.tensor([[1.0, float("inf")]])
    out = M.compute_metrics(p, g)  # |2 - 1| / 1 on the one finite pixel
    assert out["abs_rel"].item() == pytest.approx(1.0) and out["n_pixels"].item() == 1


def test_non_positive_predictions_are_floored_not_nan():
    p = torch.tensor([[-1.0, 0.0]])
    g = torch.tensor([[1.0, 1.0]])
    out = M.compute_metrics(p, g)
    # linear terms use the raw value: |-1-1|/1 = 2, |0-1|/1 = 1 -> 1.5
    assert out["abs_rel"].item() == pytest.approx(1.5)
    # log terms use max(p, 1e-6): d = ln(1e-6) for both pixels
    assert out["rmse_log"].item() == pytest.approx(-math.log(M.EPS))
    assert out["log10"].item() == pytest.approx(6.0)
    assert out["delta3"].item() == 0.0
    assert all(torch.isfinite(out[k]).all() for k in M.METRIC_NAMES)


def test_silog_is_scale_invariant_and_lam():
    g = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    p = 3.0 * g
    out = M.compute_metrics(p, g)
    assert out["silog"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["rmse_log"].item() == pytest.approx(math.log(3.0))
    # lam = 0 -> 100 * rmse_log ; lam = 0.5 -> 100 * sqrt(ln3^2 - 0.5 ln3^2)
    assert M.compute_metrics(p, g, lam=0.0)["silog"].item() == pytest.approx(100 * math.log(3.0))
    assert M.compute_metrics(p, g, lam=0.5)["silog"].item() == pytest.approx(100 * math.log(3.0) * math.sqrt(0.5))


def test_empty_image_gives_nan_and_shape_errors():
    p = torch.ones(1, 1, 2, 2)
    g = torch.zeros(1, 1, 2, 2)
    out = M.compute_metrics(p, g)
    assert all(torch.isnan(out[k]).all() for k in M.METRIC_NAMES) and out["n_pixels"].item() == 0
    with pytest.raises(ValueError, match="differs"):
        M.compute_metrics(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3))
    with pytest.raises(ValueError, match="mask shape"):
        M.compute_metrics(p, p, torch.ones(1, 1, 3, 2, dtype=torch.bool))


def test_gradients_finite_with_masked_nan():
    p, g, m = _img_a()
    p = p.clone()
    p[0, 0, 1, 1] = float("nan")
    p.requires_grad_(True)
    out = M.compute_metrics(p, g, m)
    loss = sum(out[k].sum() for k in ("abs_rel", "rmse", "rmse_log", "silog", "sq_rel", "mae"))
    loss.backward()
    assert torch.isfinite(p.grad).all()
    assert p.grad[0, 0, 1, 1] == 0


def _two_images():
    """Image A (above) and image B: one scored pixel p = 3, g = 1 (other pixels masked)."""
    pa, ga, ma = _img_a()
    pb = torch.full((1, 1, 2, 3), 9.0)
    gb = torch.full((1, 1, 2, 3), 2.0)
    mb = torch.zeros((1, 1, 2, 3), dtype=torch.bool)
    pb[0, 0, 0, 0], gb[0, 0, 0, 0], mb[0, 0, 0, 0] = 3.0, 1.0, True
    return torch.cat([pa, pb]), torch.cat([ga, gb]), torch.cat([ma, mb])


def test_per_image_vs_pixel_pooled_differ_as_computed_by_hand():
    p, g, m = _two_images()
    # Image B: |3-1|/1 = 2, (3-1)^2 = 4, delta1 = 0.
    # per image:  abs_rel = (0.5625 + 2) / 2 = 1.28125 ; rmse = (sqrt(1.5) + 2) / 2 ; delta1 = (0.25 + 0) / 2
    # pixel pool: abs_rel = (2.25 + 2) / 5 = 0.85      ; rmse = sqrt((6 + 4) / 5) = sqrt(2) ; delta1 = 1/5
    acc_i = M.MetricAccumulator("per_image")
    acc_p = M.MetricAccumulator("pixel")
    acc_i.update(p, g, m)
    acc_p.update(p, g, m)
    ri, rp = acc_i.compute(), acc_p.compute()
    assert ri["abs_rel"].item() == pytest.approx(1.28125)
    assert rp["abs_rel"].item() == pytest.approx(0.85)
    assert ri["rmse"].item() == pytest.approx((math.sqrt(1.5) + 2) / 2)
    assert rp["rmse"].item() == pytest.approx(math.sqrt(2.0))
    assert ri["delta1"].item() == pytest.approx(0.125)
    assert rp["delta1"].item() == pytest.approx(0.2)
    assert ri["n_images"].item() == rp["n_images"].item() == 2
    assert ri["n_pixels"].item() == rp["n_pixels"].item() == 5
    # compute(mode=...) switches without re-accumulating
    assert acc_i.compute("pixel")["abs_rel"].item() == pytest.approx(0.85)


def test_accumulator_is_batch_split_invariant():
    gen = torch.Generator().manual_seed(0)
    n, h, w = 6, 5, 7
    g = torch.rand(n, 1, h, w, generator=gen) * 9 + 1
    p = g * (0.7 + 0.6 * torch.rand(n, 1, h, w, generator=gen))
    m = torch.rand(n, 1, h, w, generator=gen) > torch.linspace(0.1, 0.9, n).view(n, 1, 1, 1)  # varying valid counts
    m[3] = False  # an image with no valid pixel: left out, counted as empty
    for mode in ("per_image", "pixel"):
        whole = M.MetricAccumulator(mode)
        whole.update(p, g, m)
        ref = whole.compute()
        for splits in ([2, 4], [1, 1, 3, 1], [5, 1]):
            acc = M.MetricAccumulator(mode)
            i = 0
            for s in splits:
                acc.update(p[i:i + s], g[i:i + s], m[i:i + s])
                i += s
            out = acc.compute()
            for k in M.METRIC_NAMES:
                assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-12), (mode, splits, k)
            assert out["n_images"].item() == 5 and acc.n_empty == 1
        # single (H, W) images one by one give the same result too
        acc = M.MetricAccumulator(mode)
        for i in range(n):
            acc.update(p[i, 0], g[i, 0], m[i, 0])
        assert acc.compute()["rmse"].item() == pytest.approx(ref["rmse"].item(), rel=1e-12)
    # per-image mode = plain mean of compute_metrics over the non-empty images
    per = M.compute_metrics(p, g, m)
    keep = torch.arange(n) != 3
    whole = M.MetricAccumulator("per_image")
    whole.update(p, g, m)
    assert whole.compute()["rmse"].item() == pytest.approx(per["rmse"][keep].mean().item(), rel=1e-12)


def test_metrics_from_sums_pooled_formula():
    p, g, m = _two_images()
    s = M.metric_sums(p, g, m)
    assert s["n"].tolist() == [4.0, 1.0]
    assert s["sq_err"].tolist() == [6.0, 4.0]
    pooled = M.metrics_from_sums({k: v.sum() for k, v in s.items()})
    assert pooled["rmse"].item() == pytest.approx(math.sqrt(10 / 5))


def test_accumulator_merges_like_ddp_ranks():
    """Two "ranks" each see part of the images; merging their states with the library's reduction
    (``dist_reduce_fx="sum"``, what a DDP sync applies) gives the one-process result, in every mode."""
    p, g, m = _two_images()
    for mode in M.MetricAccumulator.MODES:
        whole, rank0, rank1 = (M.MetricAccumulator(mode) for _ in range(3))
        whole.update(p, g, m)
        rank0.update(p[:1], g[:1], m[:1])
        rank1.update(sums=M.metric_sums(p[1:], g[1:], m[1:]))
        rank0.merge_state(rank1)
        ref, out = whole.compute(), rank0.compute()
        for k in (*M.METRIC_NAMES, "n_images", "n_pixels"):
            assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-15), (mode, k)
    assert out["rmse"].item() == pytest.approx(math.sqrt((1.5 + 4) / 2))  # per_image_mse, eq. 8.1 by hand


def test_accumulator_empty_and_bad_mode():
    acc = M.MetricAccumulator()
    acc.update(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))  # an image without valid pixels
    out = acc.compute()
    assert out["n_images"].item() == 0 and acc.n_empty == 1 and math.isnan(out["abs_rel"].item())
    assert math.isnan(acc.compute("pixel")["rmse"].item())
    with pytest.raises(ValueError, match="mode"):
        M.MetricAccumulator("mean")
    with pytest.raises(ValueError, match="mode"):
        acc.compute("mean")


def test_importing_the_metric_functions_does_not_import_torchmetrics():
    """torchmetrics costs ~3 s to import: ``depthlab.metrics`` loads it only when MetricAccumulator is used, so
    ``depthlab models`` / ``depthlab protocols`` start without it."""
    import subprocess
    import sys

    code = ("import sys, depthlab.metrics, depthlab.evaluation.protocols; a = 'torchmetrics' in sys.modules; "
            "from depthlab.metrics import MetricAccumulator; print(a, 'torchmetrics' in sys.modules, "
            "MetricAccumulator.MODES == depthlab.metrics.AVERAGING_MODES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]
