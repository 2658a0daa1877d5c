"""The Leve thesis' formulas and protocol settings against hand-computed values (docs/studies/leve.md)."""
from __future__ import annotations

import math

import pytest
import torch

from depthlab.evaluation.protocols import CropError, crop_bounds, get_protocol
from depthlab.evaluation.runner import evaluate
from depthlab.metrics import MetricAccumulator, average_images


# ----------------------------------------------------------------------------- eq. 8.1
def _two_images():
    """Image A: 2 pixels, errors 1, 1 (MSE 1). Image B: 4 pixels, errors 3, 1, 1, 1 (MSE 12/4 = 3)."""
    gt_a, gt_b = torch.full((1, 1, 1, 2), 2.0), torch.full((1, 1, 2, 2), 5.0)
    pred_a = gt_a + 1.0
    pred_b = gt_b + torch.tensor([[[[3.0, 1.0], [1.0, 1.0]]]])
    return (pred_a, gt_a), (pred_b, gt_b)


@pytest.mark.parametrize("mode, rmse", [
    ("per_image_mse", math.sqrt((1.0 + 3.0) / 2)),          # eq. 8.1: sqrt(mean over images of per-image MSE)
    ("per_image", (1.0 + math.sqrt(3.0)) / 2),               # mean of per-image RMSEs
    ("pixel", math.sqrt((2 * 1.0 + 9 + 3 * 1.0) / 6)),       # pooled over the 6 pixels
])
def test_eq_8_1_rmse_against_hand_computed_values(mode, rmse):
    acc = MetricAccumulator(mode)
    for pred, gt in _two_images():
        acc.update(pred, gt)
    out = acc.compute()
    assert float(out["rmse"]) == pytest.approx(rmse, rel=1e-12)
    # eq. 8.2 (REL) is the per-image mean in both per-image modes: (1/2 + (3+1+1+1)/(4*5)) / 2
    if mode != "pixel":
        assert float(out["abs_rel"]) == pytest.approx((0.5 + 6.0 / 20.0) / 2, rel=1e-12)
        assert int(out["n_images"]) == 2


def test_average_images_replaces_only_rmse():
    means = {"rmse": 1.5, "mse": 4.0, "abs_rel": 0.25}
    assert average_images(means, "per_image") == means
    assert average_images(means, "per_image_mse") == {"rmse": 2.0, "mse": 4.0, "abs_rel": 0.25}
    with pytest.raises(ValueError, match="per_image_mse"):
        average_images(means, "pixel")


# ----------------------------------------------------------------------------- flip runs
def _row_model():
    """Depth = 1 + row / height: changes under a vertical flip, not under a horizontal one."""
    from depthlab.models.registry import WeightsInfo

    class Rows(torch.nn.Module):
        def forward(self, x):
            h = x.shape[-2]
            row = torch.arange(h, dtype=x.dtype)[:, None] / h
            return {"depth": (1.0 + row).expand(x.shape[0], 1, h, x.shape[-1])}

    m = Rows()
    m.depth_info = WeightsInfo(output_kind="metric", multiple_of=1)
    return m


def _sample(depth):
    depth = torch.as_tensor(depth, dtype=torch.float32)[None]
    return {"image": torch.full((3, *depth.shape[-2:]), 0.5), "depth": depth, "mask": depth > 0,
            "meta": {"name": "x"}}


def test_vertical_flip_runs_are_scored_as_the_thesis_says():
    h, w = 4, 3
    rows = 1.0 + torch.arange(h, dtype=torch.float64)[:, None].expand(h, w) / h      # what the model predicts
    flipped_back = rows.flip(0)                                                       # unflip(P(vflip(x)))
    ds = [_sample(rows)]
    base = "none:max_depth=10,flip_average=true,averaging=per_image_mse"
    # metrics: the flipped run is one more sample: RMSE = sqrt((MSE(rows) + MSE(flipped_back)) / 2)
    res = evaluate(ds, model=_row_model(), protocol=base + ",flip_axis=vertical,flip_combine=metrics")
    mse2 = float(((flipped_back - rows) ** 2).mean())
    assert res["summary"]["rmse"] == pytest.approx(math.sqrt((0.0 + mse2) / 2), rel=1e-6)
    assert res["summary"]["n_images"] == 2
    # prediction (DenseDepth): one averaged prediction, constant 1 + (h - 1) / (2h)
    res = evaluate(ds, model=_row_model(), protocol=base + ",flip_axis=vertical,flip_combine=prediction")
    mean = 1.0 + (h - 1) / (2 * h)
    assert res["summary"]["rmse"] == pytest.approx(float(((rows - mean) ** 2).mean().sqrt()), rel=1e-6)
    assert res["summary"]["n_images"] == 1
    # a horizontal flip leaves this model's prediction unchanged
    res = evaluate(ds, model=_row_model(), protocol=base + ",flip_axis=horizontal,flip_combine=metrics")
    assert res["summary"]["rmse"] == pytest.approx(0.0, abs=1e-7) and res["summary"]["n_images"] == 2


# ----------------------------------------------------------------------------- chapter 8 protocols
def test_leve_presets_follow_chapter_8():
    for name, crop, cap in (("leve_nyu", "alhashim", 10.0), ("leve_kitti", "eigen", 80.0),
                            ("leve_endoslam", "none", 1.0)):
        p = get_protocol(name)
        assert (p.crop, p.max_depth, p.flip_average, p.flip_axis, p.flip_combine, p.averaging) == \
            (crop, cap, True, "vertical", "metrics", "per_image_mse"), name
    assert crop_bounds("alhashim", 480, 640) == (20, 460, 24, 616)      # "(24 : 616) x (20 : 460)" (x, y)


def test_kitti_crop_of_the_text_does_not_fit_the_frame_so_the_eigen_crop_is_used():
    """The text's (45:1196) x (128:381) window: row 381 lies below a 376-row KITTI frame (6.2: 1241 x 376).
    The Eigen crop by fractions of the GT size keeps the columns (44:1196 vs 45:1196) on that frame."""
    h, w = 376, 1241
    assert 381 > h
    assert crop_bounds("eigen", h, w) == (124, 343, 44, 1196)
    assert crop_bounds("eigen", 375, 1242) == (124, 342, 44, 1197)   # the most common raw frame size
    with pytest.raises(CropError):
        crop_bounds("alhashim", h, w)


# ----------------------------------------------------------------------------- EndoSLAM 200 per organ
def test_endoslam_per_organ_takes_evenly_spaced_frames(tmp_path):
    from depthlab.data.endoslam import EndoSLAM
    from depthlab.data.fixtures import write_fixture

    root = write_fixture("endoslam", tmp_path / "endo", n=5, size=(8, 8))
    ds = EndoSLAM(root, split="all", per_organ=3)
    assert ds.names == [f"{o}_{k:04d}" for o in ("colon", "small_intestine", "stomach") for k in (1, 3, 5)]
    assert len(EndoSLAM(root, split="all", per_organ=200)) == 15          # fewer frames than asked: all of them
    with pytest.raises(ValueError, match="per_organ"):
        EndoSLAM(root, split="all", per_organ=0)


# ----------------------------------------------------------------------------- FPS (8.2)
def test_fps_protocol_times_a_random_480x640_input_repeatedly():
    from depthlab.evaluation.speed import measure_latency
    from depthlab.models.registry import WeightsInfo

    shapes = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)

        def forward(self, x):
            shapes.append(tuple(x.shape))
            return {"depth": self.conv(x)}

    m = Probe()
    m.depth_info = WeightsInfo(output_kind="metric", multiple_of=32)
    out = measure_latency(m, (480, 640), repeats=5, warmup=2, device="cpu")
    assert shapes == [(1, 3, 480, 640)] * 7
    assert (out["latency_size"], out["latency_device"], out["latency_repeats"]) == ([480, 640], "cpu", 5)
    assert out["fps"] == pytest.approx(1000.0 / out["latency_ms"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fps_protocol_on_cuda_uses_events():
    from depthlab.evaluation.speed import measure_latency
    from depthlab.models import create_model

    out = measure_latency(create_model("leve"), (480, 640), repeats=20, warmup=5, device="cuda")
    assert out["latency_device"].startswith("cuda") and out["latency_ms"] > 0


# ----------------------------------------------------------------------------- MobileNetV3 row (Table 9.1)
def test_mobilenetv3_row_is_timm_features_only_with_leves_decoder():
    from depthlab.models import create_model
    from depthlab.models.leve import LeveDecoder

    m = create_model("leve_mobilenetv3", decoder_channels=[8, 8, 8, 8, 8]).eval()
    assert m.encoder.model.__class__.__module__.startswith("timm")
    assert isinstance(m.decoder, LeveDecoder) and len(m.decoder.blocks) == 5
    assert m(torch.rand(1, 3, 64, 64))["depth"].shape == (1, 1, 64, 64)


# ----------------------------------------------------------------------------- validation RMSE (7.1 + eq. 8.1)
def test_validation_rmse_follows_the_protocol_averaging(monkeypatch):
    """The checkpoint monitor val/rmse is eq. 8.1 under a Leve protocol: sqrt(mean per-image MSE)."""
    from types import SimpleNamespace

    from depthlab.config import load_config
    from depthlab.models.registry import WeightsInfo
    from depthlab.training import DepthTask

    class Fixed(torch.nn.Module):
        def __init__(self, out):
            super().__init__()
            self.w, self.out = torch.nn.Parameter(torch.zeros(())), out
            self.depth_info = WeightsInfo(target_encoding="depth", max_depth=10.0)

        def forward(self, x):
            return {"depth": self.out + 0 * self.w}

    gt = torch.full((2, 1, 2, 2), 0.5)
    pred = gt.clone()
    pred[0] += 0.1                                     # image 0: MSE 0.01
    pred[1, 0, 0, :] += 0.2                            # image 1: two pixels off by 0.2, MSE 0.08 / 4 = 0.02
    logged = {}
    for protocol, rmse in (("leve_endoslam:flip_average=false", math.sqrt((0.01 + 0.02) / 2)),
                           ("endoslam", (0.1 + math.sqrt(0.02)) / 2)):
        cfg = load_config({"model": {"name": "unet"}, "data": {"target_encoding": "depth", "max_depth": 10.0},
                           "train": {"protocol": protocol}})
        task = DepthTask(cfg, model=Fixed(pred))
        task._trainer = SimpleNamespace(world_size=1, sanity_checking=False, current_epoch=0, global_step=0)
        monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.__setitem__(name, value))
        task.on_validation_epoch_start()
        with torch.no_grad():
            task.validation_step({"image": torch.rand(2, 3, 2, 2), "depth": gt, "mask": gt > 0, "meta": [{}, {}]}, 0)
        task.on_validation_epoch_end()
        assert logged["val/rmse"] == pytest.approx(rmse, rel=1e-6), protocol
