"""Losses: hand-computed values, masking, continuity, invariances, finite gradients, weighted sum."""
from __future__ import annotations

import math

import pytest
import torch

from depthlab import losses as L
from depthlab.errors import DepthlabError


def t2(rows, dtype=torch.float32):
    """Nested list (H x W) -> (1,1,H,W) tensor."""
    return torch.tensor(rows, dtype=dtype)[None, None]


# pred - target = [[-0.5, 0], [2, -1]]
PRED = [[1.0, 2.0], [3.0, 4.0]]
TARGET = [[1.5, 2.0], [1.0, 5.0]]
MASK = [[True, True], [False, True]]  # drops the residual 2


# ---------------------------------------------------------------------------------------------
# hand-computed values


def test_l1_l2_values():
    p, t, m = t2(PRED), t2(TARGET), t2(MASK, torch.bool)
    assert L.l1(p, t).item() == pytest.approx((0.5 + 0 + 2 + 1) / 4)
    assert L.l2(p, t).item() == pytest.approx((0.25 + 0 + 4 + 1) / 4)
    assert L.l1(p, t, m).item() == pytest.approx((0.5 + 0 + 1) / 3)
    assert L.l2(p, t, m).item() == pytest.approx((0.25 + 0 + 1) / 3)


def test_huber_values_torch_semantics():
    p, t = t2(PRED), t2(TARGET)
    # delta = 1: 0.5 r^2 below delta, delta (|r| - delta/2) above
    expected = (0.5 * 0.25 + 0 + 1 * (2 - 0.5) + 0.5) / 4
    assert L.huber(p, t, delta=1.0).item() == pytest.approx(expected)
    # delta = 0.25: every nonzero residual is in the linear branch
    d = 0.25
    expected = (d * (0.5 - d / 2) + 0 + d * (2 - d / 2) + d * (1 - d / 2)) / 4
    assert L.huber(p, t, delta=d).item() == pytest.approx(expected)


def test_berhu_values():
    p, t = t2(PRED), t2(TARGET)
    c = 0.2 * 2.0  # 0.2 * max |r|
    quad = lambda r: (r * r + c * c) / (2 * c)  # noqa: E731
    expected = (quad(0.5) + 0.0 + quad(2.0) + quad(1.0)) / 4
    assert L.berhu(p, t).item() == pytest.approx(expected)  # 1.790625
    # with the mask, max |r| over valid pixels is 1 -> c = 0.2
    c = 0.2
    expected = (quad(0.5) + 0.0 + quad(1.0)) / 3
    assert L.berhu(p, t, t2(MASK, torch.bool)).item() == pytest.approx(expected)
    # a residual below c takes the L1 branch: residuals (0.1, 1.0) -> c = 0.2
    assert L.berhu(t2([[1.1, 2.0]]), t2([[1.0, 1.0]])).item() == pytest.approx((0.1 + (1 + 0.04) / 0.4) / 2)


def test_silog_values():
    e = math.e
    p = t2([[2 * e, 2.0], [2.0, 2.0]])
    t = t2([[2.0, 2.0], [2.0, 2.0]])  # g = (1, 0, 0, 0): mean g = 1/4, mean g^2 = 1/4
    assert L.silog(p, t).item() == pytest.approx(10 * math.sqrt(0.25 - 0.85 * 0.25 ** 2), rel=1e-5)
    assert L.silog(p, t, lam=0.0, scale=1.0).item() == pytest.approx(0.5, rel=1e-5)
    assert L.silog(p, t, lam=1.0, scale=1.0).item() == pytest.approx(math.sqrt(0.25 - 0.0625), rel=1e-5)
    # a global scale factor is invisible at lam = 1
    assert L.silog(3 * t, t, lam=1.0).item() == pytest.approx(0.0, abs=1e-4)
    # target <= 0 means "missing" and is excluded even without a mask: g over 3 pixels = (1, 0, 0)
    t0 = t2([[2.0, 2.0], [2.0, 0.0]])
    assert L.silog(p, t0, scale=1.0).item() == pytest.approx(math.sqrt(1 / 3 - 0.85 / 9), rel=1e-5)


def test_gradient_loss_values_2x2():
    p = t2([[1.0, 2.0], [4.0, 8.0]])
    t = torch.ones_like(p)
    # dx: rows give 1 and 4 -> mean 2.5 ; dy: columns give 3 and 6 -> mean 4.5
    assert L.gradient_loss(p, t).item() == pytest.approx(7.0)
    # pixel (1,1) invalid: only the row-0 x pair (1) and the column-0 y pair (3) remain
    m = t2([[True, True], [True, False]], torch.bool)
    assert L.gradient_loss(p, t, m).item() == pytest.approx(4.0)


def test_gradient_loss_values_3x3_hole():
    p = t2([[0.0, 1.0, 2.0]] * 3)
    t = t2([[0.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 0.0]])
    # unmasked: x pairs |1-0| x4, |1-100|, |1+100| -> 204/6 ; y pairs |0-100| x2, 0 x4 -> 200/6
    assert L.gradient_loss(p, t).item() == pytest.approx(404 / 6, rel=1e-6)
    # centre invalid: the four pairs touching it vanish; remaining x pairs are |1| x4, y pairs 0
    m = torch.ones_like(p, dtype=torch.bool)
    m[..., 1, 1] = False
    assert L.gradient_loss(p, t, m).item() == pytest.approx(1.0)


def _edge_image():
    # x-differences (row 0) of 0.1/0.3/0.5 per channel -> channel mean 0.3; same for y (column 1)
    return torch.stack([t2([[0.0, v], [0.0, 0.0]])[0, 0] for v in (0.1, 0.3, 0.5)])[None]


def test_edge_aware_smoothness_values():
    p = t2([[1.0, 2.0], [4.0, 8.0]])
    img = _edge_image()
    w = math.exp(-0.3)
    # x: row0 |1| * w, row1 |4| * 1 ; y: col0 |3| * 1, col1 |6| * w
    expected = (1 * w + 4) / 2 + (3 + 6 * w) / 2
    assert L.edge_aware_smoothness(p, None, image=img).item() == pytest.approx(expected, rel=1e-6)
    # mean-normalised depth divides every difference by mean(pred) = 15/4
    assert L.edge_aware_smoothness(p, None, image=img, normalize=True).item() == pytest.approx(expected / 3.75, rel=1e-5)
    # (1,1) invalid: x keeps row 0 only, y keeps column 0 only
    m = t2([[True, True], [True, False]], torch.bool)
    assert L.edge_aware_smoothness(p, None, m, img).item() == pytest.approx(1 * w + 3, rel=1e-6)
    with pytest.raises(ValueError, match="image"):
        L.edge_aware_smoothness(p, p)


def test_edge_masked_path_matches_kornia_path():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 1, 6, 7, generator=g)
    img = torch.rand(2, 3, 6, 7, generator=g)
    full = torch.ones_like(p, dtype=torch.bool)
    a = L.edge_aware_smoothness(p, None, None, img)  # kornia's function
    b = L.edge_aware_smoothness(p, None, full, img)  # our masked version
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# continuity at the thresholds


def test_huber_continuous_at_delta():
    delta, eps = 0.7, 1e-4
    t = torch.zeros(1, 1, 1, 1)
    lo = L.huber(torch.full_like(t, delta - eps), t, delta=delta).item()
    hi = L.huber(torch.full_like(t, delta + eps), t, delta=delta).item()
    assert abs(hi - lo) < 3 * eps * delta
    assert lo == pytest.approx(0.5 * delta ** 2, abs=1e-3)


def test_berhu_continuous_at_c():
    # residuals (x, 5): c = 0.2 * 5 = 1 while x stays below 5; the first pixel crosses c at x = 1
    eps = 1e-4
    t = torch.zeros(1, 1, 1, 2)

    def at(x):
        return L.berhu(t2([[x, 5.0]]), t).item()

    assert abs(at(1 + eps) - at(1 - eps)) < 3 * eps
    assert at(1.0) == pytest.approx((1.0 + (25 + 1) / 2) / 2)


# ---------------------------------------------------------------------------------------------
# masking, empty batches, finite gradients


def _inputs(seed=0, b=2, h=12, w=12):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(b, 1, h, w, generator=g) * 4 + 0.5
    target = torch.rand(b, 1, h, w, generator=g) * 4 + 0.5
    image = torch.rand(b, 3, h, w, generator=g)
    mask = torch.rand(b, 1, h, w, generator=g) > 0.3
    return pred, target, mask, image


@pytest.mark.parametrize("name", L.list_losses())
def test_masked_pixels_have_no_effect(name):
    fn = L.get_loss(name)
    pred, target, mask, image = _inputs()
    inv = ~mask
    wild = torch.tensor([1e6, -1e6, float("inf"), float("nan"), 0.0]).repeat(pred.numel())[: pred.numel()].view_as(pred)

    p1 = pred.clone().requires_grad_()
    v1 = fn(p1, target, mask, image)
    v1.backward()

    p2 = torch.where(inv, wild, pred).requires_grad_()
    t2_ = torch.where(inv, wild.flip(-1), target)
    img2 = torch.where(inv.expand_as(image), wild.expand_as(image), image)
    v2 = fn(p2, t2_, mask, img2)
    v2.backward()

    assert torch.isfinite(v1) and v1.item() > 0
    assert v2.item() == pytest.approx(v1.item(), rel=1e-5)
    assert torch.isfinite(p2.grad).all()
    assert (p2.grad[inv] == 0).all() and (p1.grad[inv] == 0).all()
    torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", L.list_losses())
def test_all_masked_batch_is_zero_with_graph(name):
    pred, target, _, image = _inputs()
    pred.requires_grad_()
    v = L.get_loss(name)(pred, target, torch.zeros_like(pred, dtype=torch.bool), image)
    assert v.item() == 0.0 and v.requires_grad
    v.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize("name", L.list_losses())
def test_gradients_finite_on_degenerate_inputs(name):
    fn = L.get_loss(name)
    _, target, mask, image = _inputs()
    for pred in (torch.zeros_like(target), target.clone(), torch.full_like(target, -1.0)):
        pred.requires_grad_()
        v = fn(pred, target, mask, image)
        v.backward()
        assert torch.isfinite(v), (name, v)
        assert torch.isfinite(pred.grad).all(), name


def test_log_loss_of_perfect_prediction_is_zero():
    _, target, mask, _ = _inputs()
    pred = target.clone().requires_grad_()
    v = L.silog(pred, target, mask)
    v.backward()
    assert v.item() == 0.0 and torch.isfinite(pred.grad).all()


def test_half_precision_is_evaluated_in_float32():
    pred, target, mask, _ = _inputs()
    v = L.l1(pred.half(), target.half(), mask)
    assert v.dtype == torch.float32


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="mask shape"):
        L.l1(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# scale-and-shift invariance (MiDaS) and SSIM


@pytest.mark.parametrize("fn", [L.ssi_trimmed_mae, L.gradient_matching])
@pytest.mark.parametrize("s,t", [(3.7, 1.3), (0.25, -2.0), (10.0, 50.0)])
def test_ssi_losses_are_scale_and_shift_invariant(fn, s, t):
    pred, target, mask, _ = _inputs(seed=1, h=16, w=16)
    base = fn(pred, target, mask).item()
    assert base > 0.05
    assert fn(s * pred + t, target, mask).item() == pytest.approx(base, abs=1e-5)
    # and zero when the prediction is an affine copy of the target
    assert fn(s * target + t, target, mask).item() == pytest.approx(0.0, abs=1e-5)


def test_ssi_trimmed_mae_hand_value():
    # one image, 5 valid pixels. target = (0,1,2,3,4): median 2, MAD 6/5 -> aligned (-2,-1,0,1,2)/1.2
    # pred = (0,1,2,3,14): median 2, MAD 16/5 -> aligned (-2,-1,0,1,12)/3.2
    tgt = t2([[0.0, 1.0, 2.0, 3.0, 4.0]])
    prd = t2([[0.0, 1.0, 2.0, 3.0, 14.0]])
    a_t = [v / 1.2 for v in (-2, -1, 0, 1, 2)]
    a_p = [v / 3.2 for v in (-2, -1, 0, 1, 12)]
    res = sorted(abs(x - y) for x, y in zip(a_p, a_t))
    expected = sum(res[:4]) / (2 * 5)  # floor(0.2 * 5) = 1 residual discarded
    assert L.ssi_trimmed_mae(prd, tgt).item() == pytest.approx(expected, rel=1e-5)
    expected_no_trim = sum(res) / 10
    assert L.ssi_trimmed_mae(prd, tgt, trim=0.0).item() == pytest.approx(expected_no_trim, rel=1e-5)


def _smooth_map(h=16, w=16):
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (0.3 + 0.4 * x + 0.2 * torch.sin(6 * y))[None, None]


def test_ssim_loss_identical_is_zero_and_grows_with_noise():
    t = _smooth_map()
    assert L.ssim_loss(t, t, data_range=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert L.ssim_loss(t, t, window_size=7, data_range=1.0).item() == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(t.shape, generator=g)
    vals = [L.ssim_loss(t + s * noise, t, data_range=1.0).item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a < b for a, b in zip(vals, vals[1:])), vals
    assert 0 < vals[0] < 0.05 and vals[-1] < 1.0


def test_ssim_loss_window_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match="window_size=11"):
        L.ssim_loss(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4))


# ---------------------------------------------------------------------------------------------
# modules and the weighted sum


def test_module_wrappers_match_functions():
    pred, target, mask, image = _inputs()
    assert L.HuberLoss(delta=0.3)(pred, target, mask).item() == L.huber(pred, target, mask, delta=0.3).item()
    assert L.SILogLoss(lam=0.5)(pred, target, mask).item() == L.silog(pred, target, mask, lam=0.5).item()
    assert L.EdgeAwareSmoothness()(pred, None, mask, image).item() == L.edge_aware_smoothness(pred, None, mask, image).item()
    with pytest.raises(TypeError, match="delt"):
        L.HuberLoss(delt=0.3)


def test_weighted_sum_equals_manual_sum():
    pred, target, mask, image = _inputs()
    spec = {"silog": 1.0, "ssim": 0.5, "smoothness": 0.1, "edge": 0.2, "l1": 0.1}
    loss = L.build_loss(spec, params={"ssim": {"window_size": 7, "data_range": 5.0}})
    total = loss(pred, target, mask, image)
    manual = (L.silog(pred, target, mask)
              + 0.5 * L.ssim_loss(pred, target, mask, window_size=7, data_range=5.0)
              + 0.1 * L.edge_aware_smoothness(pred, target, mask, image)
              + 0.2 * L.edge_loss(pred, target, mask)
              + 0.1 * L.l1(pred, target, mask))
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)
    assert list(loss.last_terms) == ["silog", "ssim", "smoothness", "edge", "l1"]
    assert loss.last_terms["l1"].item() == pytest.approx(L.l1(pred, target, mask).item())
    assert not any(v.requires_grad for v in loss.last_terms.values())
    assert loss.needs_image


def test_build_loss_list_form_and_config_object():
    pred, target, mask, _ = _inputs()
    # Leve: 0.1 L1 + gradient + SSIM (on inverse depth, which is the data config's business)
    spec = [{"name": "l1", "weight": 0.1}, {"name": "gradient"},
            {"name": "ssim", "params": {"window_size": 7, "data_range": 5.0}}]
    total, terms = L.build_loss(spec).compute(pred, target, mask)
    manual = (0.1 * L.l1(pred, target, mask) + L.gradient_loss(pred, target, mask)
              + L.ssim_loss(pred, target, mask, window_size=7, data_range=5.0))
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)
    assert set(terms) == {"l1", "gradient", "ssim"}

    class Cfg:  # anything with .terms/.params, like config.LossConfig
        terms = {"huber": 2.0, "l2": 0.0}
        params = {"huber": {"delta": 0.5}}

    loss = L.build_loss(Cfg())
    assert loss.keys == ["huber"]  # weight 0 dropped
    assert loss(pred, target, mask).item() == pytest.approx(2 * L.huber(pred, target, mask, delta=0.5).item())
    # same loss twice under different keys
    two = L.build_loss([{"name": "huber", "key": "h1", "params": {"delta": 0.1}},
                        {"name": "huber", "key": "h2", "params": {"delta": 1.0}}])
    assert two.keys == ["h1", "h2"]


def test_build_loss_errors():
    with pytest.raises(KeyError) as e:
        L.build_loss({"silg": 1.0})
    assert "did you mean: silog" in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("unknown loss 'silg'") and "(known: berhu, edge," in str(e.value)
    assert isinstance(e.value, L.UnknownLossError) and isinstance(e.value, DepthlabError)
    assert isinstance(e.value, ValueError)  # errors.UnknownNameError: a KeyError and a ValueError
    with pytest.raises(TypeError, match="window") as e:
        L.build_loss({"ssim": 1.0}, params={"ssim": {"windw_size": 7}})
    assert isinstance(e.value, L.LossSpecError) and isinstance(e.value, DepthlabError)  # a user error, one line
    with pytest.raises(KeyError, match="hubr"):
        L.build_loss({"huber": 1.0}, params={"hubr": {"delta": 1.0}})
    with pytest.raises(TypeError, match="weight"):
        L.build_loss({"l1": "heavy"})
    with pytest.raises(ValueError, match="no loss terms") as e:
        L.build_loss({"l1": 0})
    assert isinstance(e.value, DepthlabError)


def test_loss_names_have_no_aliases_and_modules_are_explicit_classes():
    # one config name per loss: the old aliases are unknown names now, with a close-match hint
    for old in ("mae", "mse", "grad", "ssitrim"):
        with pytest.raises(KeyError):
            L.build_loss({old: 1.0})
    with pytest.raises(KeyError, match="did you mean: smoothness"):
        L.build_loss({"smoothnes": 1.0})
    for name in L.list_losses():
        cls = L.loss_class(name)
        assert cls.__module__ == "depthlab.losses" and cls.__name__ in L.__all__
        assert "forward" in vars(cls)  # written out, not generated
    assert L.get_loss("edge") is L.edge_loss and L.get_loss("smoothness") is L.edge_aware_smoothness
    assert repr(L.SSIMLoss(window_size=7, data_range=10.0, halve=False)) == \
        "SSIMLoss(window_size=7, data_range=10.0, halve=False)"


# ---------------------------------------------------------------------------------------------
# DIODE loss study (docs/studies/diode_unet.md): eqs. 5, 8, 9 and the combined loss (eq. 6)


def test_eigen_silog_eq5_hand_value():
    # pred/target ratios e, 1, 1, 1/e give the log residuals g = (1, 0, 0, -1) exactly
    e = math.e
    p = t2([[2 * e, 2.0], [3.0, 1.0 / e]])
    t = t2([[2.0, 2.0], [3.0, 1.0]])  # g = (1, 0, 0, -1): sum g = 0, sum g^2 = 2
    # eq. 5: (1/n) sum g^2 - (alpha/n^2) (sum g)^2 = 2/4 - alpha * 0 = 0.5 for any alpha
    assert L.eigen_silog(p, t, lam=0.5).item() == pytest.approx(0.5, rel=1e-5)
    p2 = t2([[2 * e, 2.0], [3.0, 1.0]])  # g = (1, 0, 0, 0): sum g = 1, sum g^2 = 1
    assert L.eigen_silog(p2, t, lam=0.5).item() == pytest.approx(1 / 4 - 0.5 / 16, rel=1e-5)
    assert L.eigen_silog(p2, t, lam=1.0).item() == pytest.approx(1 / 4 - 1 / 16, rel=1e-5)
    # no square root and no x10: the square of silog(scale=1) with the same lam
    assert L.eigen_silog(p2, t, lam=0.85).item() == pytest.approx(L.silog(p2, t, lam=0.85, scale=1.0).item() ** 2,
                                                                  rel=1e-5)
    # masked pixel (0,0) drops g = 1: the rest are 0
    m = t2([[False, True], [True, True]], torch.bool)
    assert L.eigen_silog(p2, t, m).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="lam"):
        L.eigen_silog(p2, t, lam=1.5)


def test_ssim_eq8_is_one_minus_ssim_not_halved():
    # constant 3x3 maps a and b, window 3: mu_x = a, mu_y = b and every sigma is 0, so eq. 2 gives
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every pixel (reflect padding keeps the maps constant)
    a, b, data_range = 2.0, 3.0, 10.0
    c1 = (0.01 * data_range) ** 2
    ssim = (2 * a * b + c1) / (a * a + b * b + c1)
    p, t = torch.full((1, 1, 3, 3), a), torch.full((1, 1, 3, 3), b)
    got = L.ssim_loss(p, t, window_size=3, data_range=data_range, halve=False).item()
    assert got == pytest.approx(1 - ssim, rel=1e-4)  # 1 - 12.01/13.01
    assert L.ssim_loss(p, t, window_size=3, data_range=data_range).item() == pytest.approx((1 - ssim) / 2, rel=1e-4)


def test_edge_eq9_hand_value_and_differs_from_gradient_loss_normaliser():
    p = t2([[1.0, 2.0], [4.0, 8.0]])
    t = torch.ones_like(p)
    # x differences: row 0 -> 1, row 1 -> 4 ; y differences: col 0 -> 3, col 1 -> 6 ; n = 4 pixels
    assert L.edge_loss(p, t).item() == pytest.approx((1 + 4 + 3 + 6) / 4)
    assert L.gradient_loss(p, t).item() == pytest.approx((1 + 4) / 2 + (3 + 6) / 2)
    # (1,1) invalid: pairs touching it vanish (x row 1, y col 1); n = 3 valid pixels
    m = t2([[True, True], [True, False]], torch.bool)
    assert L.edge_loss(p, t, m).item() == pytest.approx((1 + 3) / 3)
    # it compares with the target: a target with the same gradients gives 0 (eq. 4 smoothness would not)
    assert L.edge_loss(p, p + 5.0).item() == pytest.approx(0.0, abs=1e-7)


def test_diode_study_combined_loss_of_perfect_prediction_is_zero():
    from pathlib import Path

    from depthlab.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "diode_unet.yaml")
    loss = L.build_loss(cfg.loss)
    _, target, mask, image = _inputs(h=16, w=16)
    pred = target.clone().requires_grad_()
    total = loss(pred, target, mask, image)
    total.backward()
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(pred.grad).all()
    # and the study's eq. 6 with every term on: still 0 for a perfect prediction
    every = L.build_loss({"eigen_silog": 0.3, "ssim": 0.55, "edge": 0.45, "l1": 0.05},
                         params={"ssim": {"window_size": 7, "data_range": 10.0, "halve": False}})
    assert every(target.clone(), target, mask, image).item() == pytest.approx(0.0, abs=1e-6)
