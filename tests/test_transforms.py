"""Paired transforms: exact geometry on all keys, no invented depths, photometric ops on the
image only, target encoding round trip, config building and reproducibility."""
from __future__ import annotations

import math

import pytest
import torch

from depthlab.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    EncodeTarget,
    Normalize,
    RandomChannelSwap,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotation,
    RandomVerticalFlip,
    Resize,
    build_transforms,
)
from depthlab.types import decode_target


def coord_sample(h: int = 24, w: int = 32, holes: bool = True) -> dict:
    """image = (col/(w-1), row/(h-1), 0.5); depth = 1 + row*w + col (unique, exact in float32);
    a few missing pixels (depth 0, mask False)."""
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    image = torch.stack([cols / (w - 1), rows / (h - 1), torch.full((h, w), 0.5)])
    depth = (1 + rows * w + cols)[None].clone()
    mask = torch.ones(1, h, w, dtype=torch.bool)
    if holes:
        mask[0, 5:8, 10:14] = False
        mask[0, ::7, ::5] = False
        depth[~mask] = 0
    meta = {"name": "coords", "dataset": "test", "intrinsics": {"fx": 30.0, "fy": 30.0, "cx": 15.5, "cy": 11.5}}
    return {"image": image, "depth": depth, "mask": mask, "meta": meta}


def source_of(depth: torch.Tensor, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of the input pixel each coordinate-encoded depth came from."""
    idx = depth.round().long() - 1
    return idx // w, idx % w


def assert_image_follows_depth(out: dict, h: int, w: int, tol_px: float, valid: torch.Tensor | None = None):
    """Where depth is valid, the image's coordinate channels point at the same input pixel."""
    valid = out["mask"][0] if valid is None else valid
    r, c = source_of(out["depth"][0][valid], w)
    assert (out["image"][0][valid] * (w - 1) - c).abs().max() <= tol_px
    assert (out["image"][1][valid] * (h - 1) - r).abs().max() <= tol_px


# ----------------------------------------------------------------------------- flip / crops


def test_flip_reverses_columns_of_every_key_and_mirrors_cx():
    s = coord_sample()
    s["target"] = s["depth"] * 2
    out = RandomHorizontalFlip(p=1.0)(s)
    for key in ("image", "depth", "mask", "target"):
        assert torch.equal(out[key], s[key].flip(-1)), key
    assert out["meta"]["intrinsics"]["cx"] == 31 - 15.5
    assert s["meta"]["intrinsics"]["cx"] == 15.5  # the input's meta is not mutated
    assert_image_follows_depth(out, 24, 32, 1e-4)
    assert RandomHorizontalFlip(p=0.0)(s) is s


def test_vertical_flip_reverses_rows_of_every_key_and_mirrors_cy():
    s = coord_sample()
    s["target"] = s["depth"] * 2
    out = RandomVerticalFlip(p=1.0)(s)
    for key in ("image", "depth", "mask", "target"):
        assert torch.equal(out[key], s[key].flip(-2)), key
    assert out["meta"]["intrinsics"]["cy"] == 23 - 11.5 and out["meta"]["intrinsics"]["cx"] == 15.5
    assert s["meta"]["intrinsics"]["cy"] == 11.5  # the input's meta is not mutated
    assert_image_follows_depth(out, 24, 32, 1e-4)
    assert RandomVerticalFlip(p=0.0)(s) is s
    assert type(build_transforms(["random_vertical_flip"])[0]) is RandomVerticalFlip


def test_random_crop_offsets_are_consistent_on_all_keys():
    s = coord_sample()
    crop = RandomCrop((10, 12), generator=torch.Generator().manual_seed(3))
    seen = set()
    for _ in range(20):
        out = crop(s)
        top, left = crop.last_offset
        assert 0 <= top <= 14 and 0 <= left <= 20
        seen.add((top, left))
        for key in ("image", "depth", "mask"):
            assert torch.equal(out[key], s[key][..., top : top + 10, left : left + 12])
        k = out["meta"]["intrinsics"]
        assert (k["cx"], k["cy"]) == (15.5 - left, 11.5 - top)
        assert_image_follows_depth(out, 24, 32, 1e-4)
    assert len(seen) > 5
    with pytest.raises(ValueError, match="larger than the sample"):
        RandomCrop((30, 10))(s)


def test_center_crop_offsets():
    s = coord_sample(23, 32)
    out = CenterCrop((10, 15))(s)
    top, left = (23 - 10) // 2, (32 - 15) // 2
    assert torch.equal(out["depth"], s["depth"][..., top : top + 10, left : left + 15])
    assert out["depth"][0, 0, 0] == 1 + top * 32 + left
    assert out["meta"]["intrinsics"]["cx"] == 15.5 - left


def test_crop_intrinsics_keep_backprojection_of_rendered_scene():
    from kornia.geometry.depth import depth_to_3d_v2

    from depthlab.data.synthetic import SyntheticScenes

    s = SyntheticScenes(split="test", n=1, size=(32, 40), max_depth=None)[0]
    crop = RandomCrop((20, 24), generator=torch.Generator().manual_seed(0))
    out = crop(s)
    top, left = crop.last_offset

    def points(sample):
        k = sample["meta"]["intrinsics"]
        K = torch.tensor([[[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1]]], dtype=torch.float64)
        return depth_to_3d_v2(sample["depth"].double(), K)[0]

    # the updated principal point makes every cropped pixel back-project to the same 3-D point
    torch.testing.assert_close(points(out), points(s)[top : top + 20, left : left + 24], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- rotation


def test_rotation_90_is_exact_rot90_on_square_input():
    s = coord_sample(16, 16)
    out = RandomRotation(degrees=(90, 90))(s)
    for key in ("image", "depth", "mask"):
        assert torch.equal(out[key], torch.rot90(s[key], 1, dims=(-2, -1))), key
    # counter-clockwise: the top-right input pixel ends up top-left
    assert out["depth"][0, 0, 0] == s["depth"][0, 0, 15]


@pytest.mark.parametrize("angle", [-5.0, 3.3, 17.0])
def test_rotation_keeps_depth_values_and_invalidates_outside(angle):
    h, w = 25, 31
    s = coord_sample(h, w)
    rot = RandomRotation(degrees=(angle, angle))
    out = rot(s)
    assert rot.last_angle == pytest.approx(angle)
    present = set(s["depth"].unique().tolist())
    assert set(out["depth"].unique().tolist()) <= present  # nothing interpolated
    assert torch.equal(out["mask"], out["depth"] > 0)  # holes stay holes, outside is invalid
    # geometry: output pixel (i, j) takes the input pixel at the inverse rotation about the centre
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    xo, yo = j - (w - 1) / 2, i - (h - 1) / 2
    a = math.radians(angle)
    xs = xo * math.cos(a) - yo * math.sin(a) + (w - 1) / 2
    ys = xo * math.sin(a) + yo * math.cos(a) + (h - 1) / 2
    inside = (xs > -0.49) & (xs < w - 0.51) & (ys > -0.49) & (ys < h - 0.51)
    outside = (xs < -0.51) | (xs > w - 0.49) | (ys < -0.51) | (ys > h - 0.49)
    assert not out["mask"][0][outside].any()
    valid = out["mask"][0]
    r, c = source_of(out["depth"][0][valid], w)
    assert (c - xs[valid]).abs().max() <= 0.5 + 1e-6 and (r - ys[valid]).abs().max() <= 0.5 + 1e-6
    # every inside pixel whose nearest source is valid is valid
    src_valid = s["mask"][0][ys.round().clamp(0, h - 1).long(), xs.round().clamp(0, w - 1).long()]
    assert valid[inside & src_valid].all()
    # the bilinear image agrees with the nearest depth to within a pixel away from the border
    interior = valid & (xs > 1) & (xs < w - 2) & (ys > 1) & (ys < h - 2)
    assert_image_follows_depth(out, h, w, 1.0, interior)


# ----------------------------------------------------------------------------- resize


def test_resize_output_sizes():
    assert Resize((60, 80)).output_size(100, 200) == (60, 80)
    assert Resize((60, 60), keep_aspect=True).output_size(100, 200) == (60, 120)  # at least 60x60
    assert Resize((60, 60), keep_aspect=True, multiple_of=32).output_size(100, 200) == (64, 128)
    assert Resize(short_side=50).output_size(100, 200) == (50, 100)
    assert Resize(multiple_of=32).output_size(100, 150) == (96, 160)
    assert Resize(multiple_of=14).output_size(5, 6) == (14, 14)
    with pytest.raises(ValueError):
        Resize()
    with pytest.raises(ValueError):
        Resize((10, 10), short_side=5)


def test_resize_nearest_never_invents_depths():
    s = coord_sample(24, 32)
    for size in [(12, 16), (7, 9), (48, 64), (30, 20)]:
        out = Resize(size)(s)
        assert out["image"].shape == (3, *size) and out["depth"].shape == (1, *size) and out["mask"].shape == (1, *size)
        assert set(out["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())
        assert torch.equal(out["mask"], out["depth"] > 0)
        # nearest-exact: output (i, j) samples input (floor((i+.5)*h/H), floor((j+.5)*w/W))
        ii = ((torch.arange(size[0]) + 0.5) * 24 / size[0]).floor().long()
        jj = ((torch.arange(size[1]) + 0.5) * 32 / size[1]).floor().long()
        assert torch.equal(out["depth"][0], s["depth"][0][ii][:, jj])
        assert_image_follows_depth(out, 24, 32, 1.0)


def test_resize_constant_depth_with_holes_gives_only_the_value_or_a_hole():
    depth = torch.full((1, 20, 20), 5.0)
    mask = torch.ones(1, 20, 20, dtype=torch.bool)
    mask[0, 3:6, 4:9] = False
    mask[0, 15, 15] = False
    depth[~mask] = 0
    s = {"image": torch.rand(3, 20, 20), "depth": depth, "mask": mask, "meta": {}}
    for mode in ("nearest", "masked"):
        out = Resize((10, 10), depth_mode=mode)(s)
        values = out["depth"][out["mask"]]
        torch.testing.assert_close(values, torch.full_like(values, 5.0))
        assert (out["depth"][~out["mask"]] == 0).all()
        assert out["mask"].sum() > 50
    out = Resize((10, 10), depth_mode="masked")(s)
    # masked: any 2x2 input block holding a hole makes its output pixel invalid
    block_has_hole = (~mask[0]).reshape(10, 2, 10, 2).any(dim=3).any(dim=1)
    assert not out["mask"][0][block_has_hole].any()


def test_resize_masked_averages_a_ramp_exactly_and_keeps_image_linear():
    cols = torch.arange(32, dtype=torch.float32)[None, None, :].expand(1, 16, 32)
    s = {"image": (cols / 31).expand(3, 16, 32).clone(), "depth": 1 + cols.clone(), "mask": torch.ones(1, 16, 32, dtype=torch.bool), "meta": {}}
    out = Resize((8, 16), depth_mode="masked")(s)
    j = torch.arange(16, dtype=torch.float32)
    # a symmetric filter keeps a linear ramp: output j sits at input 2j + 0.5 (interior columns)
    torch.testing.assert_close(out["depth"][0, :, 1:-1], (1 + 2 * j + 0.5)[1:-1].expand(8, 14), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["image"][0, :, 1:-1], ((2 * j + 0.5) / 31)[1:-1].expand(8, 14), atol=1e-5, rtol=0)
    assert out["mask"].all()


def test_resize_scales_intrinsics():
    s = coord_sample(24, 32)
    k = Resize((12, 16))(s)["meta"]["intrinsics"]
    # the image centre (15.5, 11.5) stays the centre (7.5, 5.5)
    assert k == {"fx": 15.0, "fy": 15.0, "cx": 7.5, "cy": 5.5}
    same = Resize(multiple_of=8)(s)
    assert torch.equal(same["depth"], s["depth"]) and same["meta"]["intrinsics"] == s["meta"]["intrinsics"]


# ----------------------------------------------------------------------------- photometric


def test_color_jitter_touches_only_the_image_and_stays_in_range():
    s = coord_sample()
    jit = ColorJitter(brightness=(0.5, 1.5), contrast=(0.5, 1.5), saturation=(0.0, 2.0), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        out = jit(s)
        assert out["depth"] is s["depth"] and out["mask"] is s["mask"]
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert not torch.equal(out["image"], s["image"])
        assert set(jit.last_factors) == {"brightness", "contrast", "saturation"}
    # a fixed brightness factor multiplies and clamps
    out = ColorJitter(brightness=(1.5, 1.5))(s)
    torch.testing.assert_close(out["image"], (s["image"] * 1.5).clamp(0, 1))


def test_channel_swap_is_a_non_identity_permutation():
    s = coord_sample()
    swap = RandomChannelSwap(p=1.0, generator=torch.Generator().manual_seed(0))
    perms = set()
    for _ in range(40):
        out = swap(s)
        perm = swap.last_permutation
        assert sorted(perm) == [0, 1, 2] and perm != [0, 1, 2]
        assert torch.equal(out["image"], s["image"][perm])
        assert out["depth"] is s["depth"]
        perms.add(tuple(perm))
    assert len(perms) == 5
    assert RandomChannelSwap(p=0.0)(s) is s


def test_normalize_hand_values():
    s = {"image": torch.full((3, 2, 2), 0.5), "meta": {}}
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))(s)
    assert torch.equal(out["image"][:, 0, 0], torch.tensor([0.0, 1.0, 0.25]))


@pytest.mark.parametrize("encoding", ["depth", "inverse", "normalized"])
def test_encode_target_round_trip(encoding):
    s = coord_sample()
    s["depth"] = s["depth"] / 100  # 0.01 .. 7.68 m
    s["mask"][0, 0, 0] = False  # a depth present but marked invalid
    out = EncodeTarget(encoding, max_depth=10.0)(s)
    assert torch.equal(out["depth"], s["depth"])
    m = out["mask"]
    assert (out["target"][~m] == 0).all()
    torch.testing.assert_close(decode_target(out["target"], encoding, 10.0)[m], s["depth"][m], rtol=1e-6, atol=0)
    if encoding == "inverse":
        assert out["target"][0, 1, 1] == pytest.approx(10.0 / s["depth"][0, 1, 1].item())
    with pytest.raises(ValueError):
        EncodeTarget("log")


# ----------------------------------------------------------------------------- composition, config


def test_pipeline_geometry_stays_aligned_and_is_reproducible():
    pipe = Compose([Resize((36, 48)), RandomCrop((30, 40)), RandomHorizontalFlip(0.5), RandomRotation(4), EncodeTarget("inverse")])
    s = coord_sample(24, 32)
    torch.manual_seed(123)
    a = pipe(s)
    torch.manual_seed(123)
    b = pipe(s)
    for key in ("image", "depth", "mask", "target"):
        assert torch.equal(a[key], b[key])
    assert a["image"].shape == (3, 30, 40)
    assert torch.equal(a["target"] > 0, a["mask"])
    # image vs depth: Resize bilinear/nearest (<= 1 px) and rotation bilinear/nearest (<= 1 px)
    h, w = 30, 40
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    interior = a["mask"][0] & (ii > 1) & (ii < h - 2) & (jj > 1) & (jj < w - 2)
    r, c = source_of(a["depth"][0][interior], 32)
    assert (a["image"][0][interior] * 31 - c).abs().max() <= 2.0
    assert (a["image"][1][interior] * 23 - r).abs().max() <= 2.0


def test_build_transforms_from_config():
    cfg = [
        {"Resize": {"size": [240, 320]}},
        {"random_crop": {"size": [224, 304]}},
        {"RandomHorizontalFlip": None},
        {"ColorJitter": {"brightness": [0.8, 1.2]}},
        "Normalize",
    ]
    train = build_transforms(cfg, train=True)
    assert [type(t).__name__ for t in train] == ["Resize", "RandomCrop", "RandomHorizontalFlip", "ColorJitter", "Normalize"]
    assert train[0].size == (240, 320) and train[1].size == (224, 304)
    ev = build_transforms(cfg, train=False)
    assert [type(t).__name__ for t in ev] == ["Resize", "CenterCrop", "Normalize"]
    assert ev[1].size == (224, 304)
    split = build_transforms({"train": cfg, "eval": [{"Resize": {"size": 64}}]}, train=False)
    assert [type(t).__name__ for t in split] == ["Resize"] and split[0].size == (64, 64)
    mapping = build_transforms({"Resize": {"multiple_of": 32}, "EncodeTarget": {"encoding": "inverse"}}, train=True)
    assert [type(t).__name__ for t in mapping] == ["Resize", "EncodeTarget"]
    out = build_transforms(cfg, train=False)(coord_sample(300, 400, holes=False))
    assert out["image"].shape == (3, 224, 304)
    with pytest.raises(ValueError, match="RandomCrop"):
        build_transforms(["RandomCrops"], train=True)
    with pytest.raises(ValueError, match="Resize"):
        build_transforms([{"Resize": {"sise": 3}}], train=True)
    assert len(build_transforms(None, train=True)) == 0
