"""Procedural scenes: determinism, exact geometry (hand-derived and back-projected), shading,
shadows, dataset contract and split disjointness."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kornia.geometry.depth import depth_to_3d_v2
from torch.utils.data import DataLoader

from depthlab.data.synthetic import (
    FIRST_OBJECT_LABEL,
    RENDER_VERSION,
    Box,
    Camera,
    Cylinder,
    Light,
    Material,
    Room,
    Scene,
    Sphere,
    SyntheticScenes,
    render,
    render_scene,
    sample_scene,
    scene_seed,
)

PLAIN_GREY = Material(color=(0.5, 0.5, 0.5))


def _empty_room_scene(camera: Camera, light: Light | None = None, objects=()) -> Scene:
    room = Room(width=6.0, length=5.0, height=3.0)  # plain textures
    light = light or Light(position=(3.0, 2.5, 2.8))
    return Scene(room=room, camera=camera, light=light, objects=list(objects))


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_arrays_different_seed_differs():
    a = render_scene(3, size=(24, 32))
    b = render_scene(3, size=(24, 32))
    c = render_scene(4, size=(24, 32))
    for key in ("image", "depth", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["meta"] == b["meta"]
    assert not np.array_equal(a["depth"], c["depth"])
    assert not np.array_equal(a["image"], c["image"])


def test_shapes_dtypes_ranges():
    r = render_scene(11, size=(20, 36))
    assert r["image"].shape == (20, 36, 3) and r["image"].dtype == np.float32
    assert r["depth"].shape == (20, 36) and r["depth"].dtype == np.float32
    assert 0.0 <= r["image"].min() and r["image"].max() <= 1.0
    # the room is closed: every pixel hits something inside an 8 x 8 x 3.2 m box
    assert np.isfinite(r["depth"]).all() and r["depth"].min() > 0 and r["depth"].max() < math.hypot(8, 8, 3.2)
    k = r["meta"]["intrinsics"]
    assert set(k) == {"fx", "fy", "cx", "cy"} and k["fx"] == k["fy"]
    # hfov in [50, 80] degrees: fx = (W/2) / tan(hfov/2)
    hfov = 2 * math.degrees(math.atan(18 / k["fx"]))
    assert 50 <= hfov <= 80
    assert abs(k["cx"] - 17.5) <= 0.03 * 36 + 1e-9 and abs(k["cy"] - 9.5) <= 0.03 * 20 + 1e-9
    cam = r["meta"]["camera"]
    assert 1.0 <= cam["position"][2] <= 1.8 and -25 <= cam["pitch_deg"] <= 10 and abs(cam["roll_deg"]) <= 5
    assert r["meta"]["category"] in ("sparse", "medium", "cluttered")


def test_random_scenes_have_objects_in_view_and_texture():
    n_obj_pixels = 0
    for seed in range(8):
        r = render_scene(seed, size=(32, 32), noise_std=0.0)
        n_obj_pixels += int((r["labels"] >= FIRST_OBJECT_LABEL).sum())
        floor = r["labels"] == 0
        if floor.sum() > 20:  # textured floors are not uniform
            assert r["image"][floor].std() > 0.01
    assert n_obj_pixels > 0.1 * 8 * 32 * 32


# ----------------------------------------------------------------------------- exact geometry


def test_level_camera_floor_and_fronto_parallel_wall_depths():
    h = 1.5
    cam = Camera(position=(1.0, 2.5, h), yaw=0.0, pitch=0.0, roll=0.0, hfov_deg=60.0)
    r = render(_empty_room_scene(cam), size=(31, 41))
    k = r["meta"]["intrinsics"]
    assert k["cx"] == 20.0 and k["cy"] == 15.0 and k["fx"] == pytest.approx(20.5 / math.tan(math.radians(30)))
    rows = np.arange(31, dtype=np.float64)[:, None].repeat(41, axis=1)
    rows[rows == k["cy"]] = np.nan  # the horizon row never sees the floor
    floor = r["labels"] == 0
    assert floor[-1].all()  # bottom row sees the floor
    # similar triangles: a floor point seen at row v has z = h * fy / (v - cy)
    np.testing.assert_allclose(r["depth"][floor], (h * k["fy"] / (rows - k["cy"]))[floor], rtol=1e-6)
    # the wall x = 6 is parallel to the image plane: z-depth is the constant 5 m (not the ray length)
    wall = r["labels"] == 3
    assert wall[15, 20]
    np.testing.assert_allclose(r["depth"][wall], 5.0, rtol=1e-6)


def test_pitched_rolled_camera_floor_depth_matches_plane_intersection():
    h, pitch, roll = 1.2, math.radians(-20.0), math.radians(4.0)
    cam = Camera(position=(3.0, 2.5, h), yaw=math.radians(30), pitch=pitch, roll=roll, hfov_deg=70.0, principal_offset=(0.02, -0.01))
    size = (40, 50)
    r = render(_empty_room_scene(cam), size=size)
    k = r["meta"]["intrinsics"]
    v, u = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    xn, yn = (u - k["cx"]) / k["fx"], (v - k["cy"]) / k["fy"]
    # camera axes: forward f = (cos p cos y, cos p sin y, sin p); before roll right has no z and
    # down_z = -cos p; roll mixes right'/down' = (c r + s d, -s r + c d). Vertical component of
    # the ray (xn, yn, 1): -cos p (xn sin roll + yn cos roll) + sin p; the floor is z = 0.
    dz = -math.cos(pitch) * (xn * math.sin(roll) + yn * math.cos(roll)) + math.sin(pitch)
    floor = r["labels"] == 0
    assert floor.sum() > 0.3 * floor.size
    np.testing.assert_allclose(r["depth"][floor], (h / -dz)[floor], rtol=1e-6)


def test_sphere_occludes_wall_depth_is_distance_minus_radius():
    cam = Camera(position=(1.0, 2.5, 1.2), hfov_deg=60.0)
    ball = Sphere(center=(4.0, 2.5, 1.2), radius=0.5, material=PLAIN_GREY)
    empty = render(_empty_room_scene(cam), size=(33, 33))
    with_ball = render(_empty_room_scene(cam, objects=[ball]), size=(33, 33))
    assert empty["meta"]["intrinsics"]["cx"] == 16.0 and empty["meta"]["intrinsics"]["cy"] == 16.0
    assert empty["depth"][16, 16] == pytest.approx(5.0, rel=1e-6)  # the wall behind
    assert with_ball["labels"][16, 16] == FIRST_OBJECT_LABEL
    assert with_ball["depth"][16, 16] == pytest.approx(3.0 - 0.5, rel=1e-6)
    # everywhere the ball is not, the depth is unchanged; where it is, it is nearer
    ball_px = with_ball["labels"] == FIRST_OBJECT_LABEL
    np.testing.assert_array_equal(with_ball["depth"][~ball_px], empty["depth"][~ball_px])
    assert (with_ball["depth"][ball_px] < empty["depth"][ball_px]).all()
    # apparent radius: a sphere of radius r at distance D subtends asin(r/D) -> about fx*tan(asin(1/6)) px
    fx = empty["meta"]["intrinsics"]["fx"]
    half_width = fx * math.tan(math.asin(0.5 / 3.0))
    assert abs(ball_px[16].sum() - 2 * half_width) <= 2


def _world_points(r) -> np.ndarray:
    """Back-project the depth map with kornia and move the points into the world frame."""
    k = r["meta"]["intrinsics"]
    K = torch.tensor([[[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1]]], dtype=torch.float64)
    cam_pts = depth_to_3d_v2(torch.from_numpy(r["depth"].astype(np.float64))[None], K)[0].numpy()
    R = np.asarray(r["meta"]["camera"]["rotation"])
    return cam_pts @ R.T + np.asarray(r["meta"]["camera"]["position"])


@pytest.mark.parametrize("seed", [0, 5, 17, 42])
def test_backprojected_depth_lies_on_the_labelled_surface(seed):
    r = render_scene(seed, size=(48, 64))
    p = _world_points(r)
    lab = r["labels"]
    room = r["meta"]["room"]
    tol = 2e-5 * max(room["width"], room["length"])  # float32 depth storage
    plane = {0: (2, 0.0), 1: (2, room["height"]), 2: (0, 0.0), 3: (0, room["width"]), 4: (1, 0.0), 5: (1, room["length"])}
    for label, (axis, value) in plane.items():
        np.testing.assert_allclose(p[lab == label][:, axis], value, atol=tol)
    scene = sample_scene(seed)
    assert len(scene.objects) == len(r["meta"]["objects"])
    for k, ob in enumerate(scene.objects):
        q = p[lab == FIRST_OBJECT_LABEL + k]
        if len(q) == 0:
            continue
        if isinstance(ob, Sphere):
            np.testing.assert_allclose(np.linalg.norm(q - np.asarray(ob.center), axis=1), ob.radius, atol=tol)
        elif isinstance(ob, Box):
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            d = q - np.asarray(ob.center)
            local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
            np.testing.assert_allclose(np.abs(local / np.asarray(ob.half)).max(axis=1), 1.0, atol=tol / min(ob.half))
        else:
            rho = np.hypot(q[:, 0] - ob.base[0], q[:, 1] - ob.base[1])
            on_side = np.abs(rho - ob.radius) < tol
            on_cap = np.abs(q[:, 2] - (ob.base[2] + ob.height)) < tol
            assert (on_side | on_cap).all()


def test_supersampling_keeps_centre_depth_exact():
    a = render_scene(7, size=(24, 24), supersample=1, noise_std=0.0)
    b = render_scene(7, size=(24, 24), supersample=2, noise_std=0.0)
    np.testing.assert_array_equal(a["depth"], b["depth"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not np.array_equal(a["image"], b["image"])
    assert np.abs(a["image"] - b["image"]).mean() < 0.1


def test_box_slab_and_cylinder_caps_hand_values():
    o = np.array([0.0, 0.0, 0.5])
    d = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    box = Box(center=(3.0, 0.0, 0.5), half=(0.5, 0.5, 0.5), yaw=math.radians(45), material=PLAIN_GREY)
    t = box.intersect(o, d)
    assert t[0] == pytest.approx(3.0 - 0.5 * math.sqrt(2))  # 45-degree box: its edge faces us
    assert t[1] == np.inf and t[2] == np.inf
    cyl = Cylinder(base=(0.0, 0.0, 0.0), radius=0.5, height=1.0, material=PLAIN_GREY)
    down = np.array([[0.0, 0.0, -1.0], [0.2, 0.0, -1.0], [0.3, 0.0, -1.0]])
    # top cap at t = 2 (x = 0.4 <= r); the third ray passes the rim at x = 0.6 and misses the side too
    np.testing.assert_array_equal(cyl.intersect(np.array([0.0, 0.0, 3.0]), down), [2.0, 2.0, np.inf])
    side = cyl.intersect(np.array([-3.0, 0.0, 0.5]), np.array([[1.0, 0.0, 0.0]]))
    assert side[0] == pytest.approx(2.5)


# ----------------------------------------------------------------------------- shading


def test_lit_side_of_a_sphere_is_brighter_and_dark_side_is_ambient_only():
    cam = Camera(position=(1.0, 2.5, 1.2), hfov_deg=60.0)
    ball = Sphere(center=(3.5, 2.5, 1.2), radius=0.6, material=PLAIN_GREY)
    # camera right is world -y, so a light at large y is on the image's left
    light = Light(position=(3.5, 4.7, 1.2), ambient=0.1)
    r = render(_empty_room_scene(cam, light, [ball]), size=(41, 41), return_aux=True)
    on = r["labels"] == FIRST_OBJECT_LABEL
    img = r["image"][..., 0]
    left = img[:, :20][on[:, :20]].mean()
    right = img[:, 21:][on[:, 21:]].mean()
    assert left > 1.3 * right
    # Lambert: points facing away from the light get (albedo * ambient * (0.8 + 0.2 n_z)) ** (1/2.2)
    n = r["normals"].astype(np.float64)
    p = _world_points(r)
    facing = (n * (np.asarray(light.position) - p)).sum(-1) > 0
    dark = on & ~facing
    assert dark.sum() > 20 and (on & facing).sum() > 20
    albedo = r["albedo"][..., 0][dark]  # the "plain" pattern modulates the grey slightly
    np.testing.assert_allclose(img[dark], (albedo * 0.1 * (0.8 + 0.2 * n[dark][:, 2])) ** (1 / 2.2), rtol=1e-5)
    assert img[on & facing].max() > img[dark].max() + 0.2


def test_hard_shadow_matches_segment_sphere_test_and_is_ambient_only():
    cam = Camera(position=(1.0, 2.5, 1.6), pitch=math.radians(-35), hfov_deg=70.0)
    ball = Sphere(center=(3.3, 2.5, 0.9), radius=0.35, material=PLAIN_GREY)
    light = Light(position=(3.6, 2.2, 2.9), intensity=1.5, ambient=0.2)
    scene = _empty_room_scene(cam, light, [ball])
    r = render(scene, size=(64, 64), return_aux=True)
    floor = r["labels"] == 0
    p = _world_points(r)
    # independent shadow test: distance from the ball centre to the segment floor-point -> light
    lp = np.asarray(light.position)
    seg = lp - p
    s = np.clip(((np.asarray(ball.center) - p) * seg).sum(-1) / (seg * seg).sum(-1), 0, 1)
    dist = np.linalg.norm(p + s[..., None] * seg - np.asarray(ball.center), axis=-1)
    clear_cut = np.abs(dist - ball.radius) > 1e-3
    expected = dist < ball.radius
    shadow = r["shadow"]
    assert (floor & expected).sum() > 10
    np.testing.assert_array_equal(shadow[floor & clear_cut], expected[floor & clear_cut])
    # a shadowed up-facing floor point gets ambient only: (albedo * ambient * (0.8 + 0.2)) ** (1/2.2)
    np.testing.assert_allclose(r["image"][floor & shadow], (0.6 * 0.2) ** (1 / 2.2), rtol=1e-5)
    assert r["image"][floor & ~shadow].min() > (0.6 * 0.2) ** (1 / 2.2) + 0.01


# ----------------------------------------------------------------------------- dataset


def test_dataset_sample_contract_and_cache():
    ds = SyntheticScenes(split="val", n=3, size=(24, 32))
    s = ds[1]
    assert s["image"].shape == (3, 24, 32) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, 24, 32) and s["depth"].dtype == torch.float32
    assert s["mask"].shape == (1, 24, 32) and s["mask"].dtype == torch.bool
    assert torch.equal(s["mask"], s["depth"] > 0)
    m = s["meta"]
    assert m["name"] == "synthetic_val_000001" and m["dataset"] == "synthetic" and m["split"] == "val"
    assert m["seed"] == scene_seed(0, "val", 1) and set(m["intrinsics"]) == {"fx", "fy", "cx", "cy"}
    r = render_scene(m["seed"], size=(24, 32))
    np.testing.assert_array_equal(s["image"].numpy().transpose(1, 2, 0), r["image"])
    ref_depth = np.where(r["depth"] > 10.0, 0.0, r["depth"])
    np.testing.assert_array_equal(s["depth"][0].numpy(), ref_depth)
    assert 1 in ds._memory
    s["depth"].zero_()  # the cache hands out copies
    assert torch.equal(ds[1]["depth"] > 0, ds[1]["mask"]) and ds[1]["depth"].max() > 0
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 24, 32) and len(batch["meta"]["name"]) == 3


def test_max_depth_marks_far_pixels_missing():
    far = SyntheticScenes(split="test", n=1, size=(24, 32), max_depth=None)[0]
    near = SyntheticScenes(split="test", n=1, size=(24, 32), max_depth=2.0)[0]
    cut = far["depth"] > 2.0
    assert cut.any() and (~cut).any()
    assert (near["depth"][cut] == 0).all() and not near["mask"][cut].any()
    assert torch.equal(near["depth"][~cut], far["depth"][~cut]) and near["mask"][~cut].all()


def test_splits_and_base_seeds_never_share_a_scene():
    seeds = {
        (base, split): {SyntheticScenes(split=split, n=500, seed=base).scene_seed(i) for i in range(500)}
        for base in (0, 1)
        for split in ("train", "val", "test")
    }
    keys = list(seeds)
    for i, a in enumerate(keys):
        assert len(seeds[a]) == 500
        for b in keys[i + 1 :]:
            assert not seeds[a] & seeds[b], (a, b)
    tr = SyntheticScenes(split="train", n=1, size=(16, 16))[0]
    va = SyntheticScenes(split="val", n=1, size=(16, 16))[0]
    assert not torch.equal(tr["depth"], va["depth"])
    assert scene_seed(0, "val", 5) == (1 << 32) + 5 and scene_seed(2, "test", 0) == 8 << 32
    with pytest.raises(ValueError):
        SyntheticScenes(split="training")
    with pytest.raises(IndexError):
        scene_seed(0, "train", 1 << 32)


def test_disk_cache_round_trip(tmp_path, monkeypatch):
    import depthlab.data.synthetic as synthetic

    a = SyntheticScenes(root=tmp_path, split="train", n=2, size=(16, 20), cache=False)
    first = a[1]
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and files[0].parent.name == f"synthetic_v{RENDER_VERSION}_16x20"
    b = SyntheticScenes(root=tmp_path, split="train", n=2, size=(16, 20))

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again: the disk cache was not read")

    monkeypatch.setattr(synthetic, "render_scene", no_render)
    second = b[1]
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["depth"], second["depth"])
    assert first["meta"] == second["meta"]
