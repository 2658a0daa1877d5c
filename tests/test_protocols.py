"""Protocols as data: crops (hand-checked), bounds, presets, overrides, alignment maths."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from depthlab.evaluation.align import align, lstsq_scale_shift, median_scale
from depthlab.evaluation.runner import apply_protocol
from depthlab.evaluation.protocols import (CropError, Protocol, crop_bounds, crop_mask, get_protocol,
                                           list_protocols)
from depthlab.metrics import compute_metrics


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- crops
def test_nyu_eigen_crop_480x640():
    m = crop_mask("nyu_eigen", (480, 640))
    assert m.shape == (480, 640) and m.dtype == torch.bool
    assert int(m.sum()) == (471 - 45) * (601 - 41) == 238560
    # 0-based, end exclusive: first/last rows and columns inside, their neighbours outside
    assert m[45, 41] and m[470, 600]
    assert not m[44, 41] and not m[45, 40] and not m[471, 600] and not m[470, 601]


def test_nyu_eigen_crop_other_size_raises_clearly():
    with pytest.raises(CropError, match="480x640.*224x224"):
        crop_mask("nyu_eigen", (224, 224))


def test_alhashim_crop_480x640():
    # written as [(24:616) x (20:460)]: x (columns) 24..616, y (rows) 20..460
    m = crop_mask("alhashim", (1, 1, 480, 640))
    assert m.shape == (1, 1, 480, 640)
    assert int(m.sum()) == 440 * 592 == 260480
    assert m[0, 0, 20, 24] and m[0, 0, 459, 615] and not m[0, 0, 19, 24] and not m[0, 0, 20, 23]
    assert not m[0, 0, 460, 615] and not m[0, 0, 459, 616]
    with pytest.raises(CropError):
        crop_mask("alhashim", (375, 1242))


def test_kitti_garg_and_eigen_crops_375x1242():
    # garg:  0.40810811*375 = 153.04 -> 153, 0.99189189*375 = 371.96 -> 371,
    #        0.03594771*1242 = 44.65 -> 44,  0.96405229*1242 = 1197.35 -> 1197
    assert crop_bounds("garg", 375, 1242) == (153, 371, 44, 1197)
    assert int(crop_mask("garg", (375, 1242)).sum()) == 218 * 1153 == 251354
    # eigen: 0.3324324*375 = 124.66 -> 124, 0.91351351*375 = 342.57 -> 342, same columns
    assert crop_bounds("eigen", 375, 1242) == (124, 342, 44, 1197)
    me = crop_mask("eigen", (375, 1242))
    assert int(me.sum()) == (342 - 124) * (1197 - 44) == 251354
    assert me[124, 44] and not me[123, 44] and me[341, 1196] and not me[342, 1196] and not me[341, 1197]
    # another KITTI size (1241x376): 0.40810811*376 = 153.45, 0.99189189*376 = 372.95, 0.96405229*1241 = 1196.39
    assert crop_bounds("garg", 376, 1241) == (153, 372, 44, 1196)


def test_kitti_kb_crop():
    # 375x1242: top = 375 - 352 = 23, left = (1242 - 1216) // 2 = 13
    assert crop_bounds("kb", 375, 1242) == (23, 375, 13, 1229)
    m = crop_mask("kb", (375, 1242))
    assert int(m.sum()) == 352 * 1216 == 428032
    assert m[23, 13] and m[374, 1228] and not m[22, 13] and not m[23, 12] and not m[23, 1229]
    # 370x1224: top 18, left 4
    assert crop_bounds("kb", 370, 1224) == (18, 370, 4, 1220)
    with pytest.raises(CropError, match="352x1216"):
        crop_bounds("kb", 300, 1000)


def test_none_crop_and_unknown_crop():
    assert int(crop_mask("none", (3, 4)).sum()) == 12
    with pytest.raises(ValueError, match="unknown crop"):
        crop_mask("garg_crop", (3, 4))


@pytest.mark.parametrize("setting, value, choices", [
    ("crop", "gar", "('none', 'nyu_eigen', "), ("alignment", "mean", "('none', 'median', 'lstsq')"),
    ("averaging", "pooled", "('per_image', 'pixel', 'per_image_mse')"), ("flip_axis", "up", "('horizontal', 'vertical')"),
])
def test_a_bad_protocol_setting_is_a_user_error_naming_it(setting, value, choices):
    from depthlab.errors import InputError

    with pytest.raises(InputError) as e:  # a DepthlabError and a ValueError
        Protocol("x", **{setting: value})
    assert str(e.value).startswith(f"{setting} must be one of {choices}") and str(e.value).endswith(f"got {value!r}")


# ----------------------------------------------------------------------------- valid mask and clipping
def test_depth_bounds_are_exclusive_and_clip_inclusive():
    p = get_protocol("nyu_eigen", crop="none")
    gt = torch.tensor([[0.0, 1e-3, 0.5, 9.999, 10.0, 12.0, float("nan")]])
    assert p.valid_mask(gt).tolist() == [[False, False, True, True, False, False, False]]
    mask = torch.tensor([[True, True, False, True, True, True, True]])
    assert p.valid_mask(gt, mask).tolist() == [[False, False, False, True, False, False, False]]
    assert p.clip(torch.tensor([-1.0, 0.0, 5.0, 11.0])).tolist() == pytest.approx([1e-3, 1e-3, 5.0, 10.0])
    none = get_protocol("none")
    assert none.valid_mask(torch.tensor([0.0, 1e-9, 500.0])).tolist() == [False, True, True]
    assert none.clip(torch.tensor([-1.0, 500.0])).tolist() == [-1.0, 500.0]  # clip_pred=False


def test_nyu_eigen_valid_mask_combines_crop_and_caps():
    gt = torch.full((1, 1, 480, 640), 5.0)
    gt[..., 100, 100] = 11.0  # over the cap
    gt[..., 200, 200] = 0.0  # missing
    v = get_protocol("nyu_eigen").valid_mask(gt)
    assert int(v.sum()) == 238560 - 2


# ----------------------------------------------------------------------------- presets and data
def test_presets_exist_with_their_settings():
    names = list_protocols()
    for n in ("none", "nyu_eigen", "kitti_garg", "kitti_eigen", "kitti_kb", "diode", "endoslam", "leve_nyu",
              "depth_anything", "marigold"):
        assert n in names
    none = get_protocol("none")
    assert (none.crop, none.min_depth, none.max_depth, none.alignment, none.clip_pred) == ("none", 0.0, None, "none", False)
    nyu = get_protocol("nyu_eigen")
    assert (nyu.crop, nyu.min_depth, nyu.max_depth) == ("nyu_eigen", 1e-3, 10.0)
    assert (get_protocol("kitti_garg").crop, get_protocol("kitti_garg").max_depth) == ("garg", 80.0)
    assert (get_protocol("kitti_eigen").crop, get_protocol("kitti_eigen").max_depth) == ("eigen", 80.0)
    leve = get_protocol("leve_nyu")
    assert (leve.crop, leve.flip_average, leve.max_depth) == ("alhashim", True, 10.0)
    da, mg = get_protocol("depth_anything"), get_protocol("marigold")
    assert (da.alignment, da.alignment_space) == ("lstsq", "disparity")
    assert (mg.alignment, mg.alignment_space) == ("lstsq", "depth")
    assert (get_protocol("diode").min_depth, get_protocol("diode").max_depth) == (0.6, 350.0)
    assert get_protocol("endoslam").max_depth == 1.0
    for n in names:  # the Leve presets use the thesis' eq. 8.1 RMSE (tests/test_leve_study.py)
        expected = "per_image_mse" if n.startswith("leve_") else "per_image"
        assert get_protocol(n).averaging == expected and get_protocol(n).resize_pred == "bilinear"


def test_describe_and_to_dict_carry_every_setting():
    p = get_protocol("leve_nyu")
    d = p.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Protocol)}
    assert json.loads(json.dumps(d)) == d and Protocol(**d) == p
    line = p.describe()
    assert "\n" not in line
    for piece in ("crop=alhashim", "rows 20:460, cols 24:616", "0.001 < gt < 10 m", "bilinear", "alignment=none",
                  "flip_average=on", "clipped to [0.001, 10]", "averaging=per_image"):
        assert piece in line, piece
    da = get_protocol("depth_anything").describe()
    assert "lstsq" in da and "disparity space" in da and "no upper cap" in da
    assert "pred not clipped" in get_protocol("none").describe()


def test_frozen_unknown_names_and_validation():
    p = get_protocol("none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.crop = "garg"
    with pytest.raises(KeyError) as e:
        get_protocol("nyu_eigne")
    assert "did you mean: nyu_eigen," in str(e.value) and not str(e.value).startswith('"')
    with pytest.raises(ValueError, match="alignment"):
        get_protocol("none", alignment="ransac")
    with pytest.raises(ValueError, match="unknown protocol setting"):
        get_protocol("none", cropp="garg")
    with pytest.raises(ValueError, match="max_depth"):
        Protocol("x", min_depth=5.0, max_depth=1.0)


def test_overrides_rename_and_spec_strings():
    p = get_protocol("marigold", crop="nyu_eigen", max_depth=10)
    assert p.crop == "nyu_eigen" and p.max_depth == 10.0 and p.alignment == "lstsq"
    assert p.name == "marigold:crop=nyu_eigen,max_depth=10"
    assert get_protocol(p.name) == p  # the name is a spec that rebuilds it
    q = get_protocol("marigold:crop=nyu_eigen, max_depth=10")
    assert q == p
    r = get_protocol("nyu_eigen:averaging=pixel,flip_average=true,max_depth=none")
    assert (r.averaging, r.flip_average, r.max_depth) == ("pixel", True, None)
    assert get_protocol("nyu_eigen", max_depth=10.0).name == "nyu_eigen"  # no real change, same name
    assert get_protocol(p) is p
    with pytest.raises(ValueError, match="key=value"):
        get_protocol("none:garg")


# ----------------------------------------------------------------------------- alignment
def _gt(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.0 + 9.0 * torch.rand(1, 1, h, w, generator=g, dtype=torch.float64)


def _abs_rel(protocol, pred, gt, kind):
    final, valid = apply_protocol(pred, gt, protocol, pred_kind=kind)
    return compute_metrics(final, gt, valid)["abs_rel"].item()


def test_affine_depth_is_exact_in_depth_space_only():
    gt = _gt()
    pred = 0.3 * gt + 2.0  # relative depth = exact affine transform of GT
    depth_space = get_protocol("marigold")
    disp_space = get_protocol("depth_anything")
    assert _abs_rel(depth_space, pred, gt, "relative") < 1e-6
    worse = _abs_rel(disp_space, pred, gt, "relative")
    assert worse > 1e-2


def test_affine_disparity_is_exact_in_disparity_space_only():
    gt = _gt(seed=1)
    pred = 5.0 / gt + 0.1  # disparity = exact affine transform of 1/GT
    assert _abs_rel(get_protocol("depth_anything"), pred, gt, "disparity") < 1e-6
    worse = _abs_rel(get_protocol("marigold"), pred, gt, "disparity")
    assert worse > 1e-2


def test_lstsq_recovers_scale_shift_and_matches_torch_lstsq():
    gt = _gt(seed=2)
    pred = 0.3 * gt + 2.0
    valid = torch.ones_like(gt, dtype=torch.bool)
    _, s, t = lstsq_scale_shift(pred, gt, valid)
    assert s.item() == pytest.approx(1 / 0.3, rel=1e-9) and t.item() == pytest.approx(-2 / 0.3, rel=1e-9)
    # noisy case against torch.linalg.lstsq, with half the pixels masked out
    noisy = pred + 0.05 * torch.randn(pred.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    valid = torch.rand(gt.shape, generator=torch.Generator().manual_seed(4)) > 0.5
    _, s, t = lstsq_scale_shift(noisy, gt, valid)
    a = torch.stack([noisy[valid], torch.ones_like(noisy[valid])], dim=1)
    sol = torch.linalg.lstsq(a, gt[valid][:, None]).solution[:, 0]
    assert s.item() == pytest.approx(sol[0].item(), rel=1e-9) and t.item() == pytest.approx(sol[1].item(), rel=1e-9)
    # a constant prediction: s = 0, t = mean(target)
    out, s, t = lstsq_scale_shift(torch.full_like(gt, 4.0), gt, torch.ones_like(valid))
    assert s.item() == 0 and torch.allclose(out, gt.mean().expand_as(out))


def test_median_scaling_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    gt = torch.tensor([[2.0, 4.0, 6.0, 10.0, 1.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    out, s = median_scale(pred, gt, valid)
    # medians over the 4 valid pixels (even count: mean of the middle two): gt 5.0, pred 2.5 -> s = 2
    assert s.item() == pytest.approx(2.0)
    assert out[0].tolist() == pytest.approx([2.0, 4.0, 6.0, 8.0, 200.0])
    gt3 = 7.0 * torch.rand(1, 1, 5, 5) + 1
    assert _abs_rel(get_protocol("none", alignment="median"), gt3 / 3.0, gt3, "relative") < 1e-6


def test_disparity_alignment_clips_to_depth_range():
    gt = torch.tensor([[2.0, 4.0, 5.0, 0.0]])
    pred = torch.tensor([[0.5, 0.25, 0.2, -1.0]])  # exactly 1/gt on the valid pixels; last pixel extrapolates < 0
    valid = gt > 0
    depth = align(pred, gt, valid, method="lstsq", space="disparity", pred_kind="disparity", min_depth=1e-3, max_depth=10.0)
    assert depth[0, :3].tolist() == pytest.approx([2.0, 4.0, 5.0])
    assert depth[0, 3].item() == pytest.approx(10.0)  # disparity clipped to 1/max_depth
    # no alignment: a disparity prediction is only inverted
    assert align(pred[:, :3], gt[:, :3], valid[:, :3], pred_kind="disparity")[0].tolist() == pytest.approx([2.0, 4.0, 5.0])


def test_relative_prediction_without_alignment_is_refused():
    gt = _gt()
    with pytest.raises(ValueError, match="alignment=none"):
        apply_protocol(gt, gt, get_protocol("nyu_eigen", crop="none"), pred_kind="disparity")
