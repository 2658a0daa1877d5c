"""Dataset readers: fixture files written by code in each real on-disk format, read back value for value.

Every fixture holds an asymmetric pattern (values depend on row AND column differently) so that a transposed
or flipped read fails, and hand-chosen raw values whose metric decoding is known exactly.
"""
from __future__ import annotations

import csv
import pickle
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from depthlab.data import create_dataset, describe_datasets, list_datasets
from depthlab.data.base import SPLITS_DIR, read_index_file, unit_to_scale
from depthlab.data.diode import DIODE
from depthlab.data.endoslam import EndoSLAM
from depthlab.data.folder import FolderDataset
from depthlab.data.kitti import KITTIEigen, parse_split_line, read_calib_cam_to_cam
from depthlab.data.nyu import NYUReduced, NYUv2Labeled, detect_nyu_layout, read_splits_mat
from depthlab.errors import DataError


# ------------------------------------------------------------------------------------------------ helpers
def rgb_pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (H,W,3) whose value differs along rows, columns and channels (no symmetry)."""
    r = np.arange(h)[:, None, None]
    c = np.arange(w)[None, :, None]
    ch = np.arange(3)[None, None, :]
    return ((seed * 37 + r * 29 + c * 7 + ch * 71) % 256).astype(np.uint8)


def save_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_png16(path: Path, arr: np.ndarray) -> Path:
    return save_png(path, np.asarray(arr, dtype=np.uint16))


def assert_image_equals(t: torch.Tensor, hwc_uint8: np.ndarray):
    assert t.dtype == torch.float32 and t.shape == (3, *hwc_uint8.shape[:2])
    expected = torch.from_numpy(hwc_uint8.astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(t, expected)


def assert_one_line_error(exc: DataError, path_fragment: str, problem_fragment: str):
    msg = str(exc)
    assert "\n" not in msg
    assert str(path_fragment) in msg, msg
    assert problem_fragment in msg, msg


def assert_sample_contract(s: dict, h: int, w: int):
    assert set(s) == {"image", "depth", "mask", "meta"}
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, h, w) and s["depth"].dtype == torch.float32
    assert s["mask"].shape == (1, h, w) and s["mask"].dtype == torch.bool
    assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
    assert torch.all(s["depth"][~s["mask"]] == 0)
    assert {"name", "dataset", "split"} <= set(s["meta"])


# ================================================================================================ NYU .mat
N_MAT, H_MAT, W_MAT = 4, 6, 8   # tiny frames: the reader does not hard-code 480x640


@pytest.fixture
def nyu_mat(tmp_path):
    """A MATLAB v7.3-style labelled file: images (N,3,W,H) uint8, depths/rawDepths (N,W,H), sceneTypes refs."""
    images = np.stack([rgb_pattern(H_MAT, W_MAT, seed=k) for k in range(N_MAT)])              # (N,H,W,3)
    r = np.arange(H_MAT)[:, None]
    c = np.arange(W_MAT)[None, :]
    depths = np.stack([1.0 + k + 0.1 * r + 0.01 * c for k in range(N_MAT)]).astype(np.float32)  # (N,H,W)
    raw = depths.copy()
    raw[:, 0, :3] = 0.0                                                                          # holes top-left
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f["images"] = images.transpose(0, 3, 2, 1)       # MATLAB column-major: (N, 3, W, H)
        f["depths"] = depths.transpose(0, 2, 1)          # (N, W, H)
        f["rawDepths"] = raw.transpose(0, 2, 1)
        scenes = ["kitchen", "bedroom", "office", "kitchen"]
        refs = f.create_dataset("sceneTypes", (1, N_MAT), dtype=h5py.ref_dtype)
        for k, s in enumerate(scenes):
            d = f.create_dataset(f"#refs#/s{k}", data=np.array([ord(ch) for ch in s], np.uint16)[:, None])
            refs[0, k] = d.ref
    return path, images, depths, raw


def test_nyu_mat_reads_matlab_transposed_axes(nyu_mat):
    path, images, depths, _ = nyu_mat
    ds = NYUv2Labeled(path, split="all")
    assert len(ds) == N_MAT and ds.names == ["0001", "0002", "0003", "0004"]
    s = ds[2]
    assert_sample_contract(s, H_MAT, W_MAT)
    assert_image_equals(s["image"], images[2])
    assert torch.equal(s["depth"][0], torch.from_numpy(depths[2]))          # metres as stored, not transposed
    assert float(s["depth"][0, 1, 2]) == pytest.approx(3.0 + 0.1 + 0.02)
    assert bool(s["mask"].all())
    m = s["meta"]
    assert (m["name"], m["index"], m["dataset"], m["split"], m["category"]) == ("0003", 3, "nyu_mat", "all", "office")
    assert m["intrinsics"] == pytest.approx({"fx": 518.857901, "fy": 519.469611, "cx": 325.582449, "cy": 253.736166})


def test_nyu_mat_raw_depths_holes_are_masked(nyu_mat):
    path, _, _, raw = nyu_mat
    s = NYUv2Labeled(path, split="all", depth_key="rawDepths")[0]
    assert torch.equal(s["depth"][0], torch.from_numpy(raw[0]))
    assert not bool(s["mask"][0, 0, :3].any()) and bool(s["mask"][0, 1:].all())


def test_nyu_mat_splits_from_user_files(nyu_mat, tmp_path):
    path, images, _, _ = nyu_mat
    v73 = tmp_path / "splits_v73.mat"
    with h5py.File(v73, "w") as f:                      # v7.3 stores column vectors as (1, k) doubles
        f["trainNdxs"] = np.array([[1.0, 3.0]])
        f["testNdxs"] = np.array([[2.0, 4.0]])
    files = [v73]
    try:                                                   # pre-v7.3 splits.mat (the official one) needs scipy
        from scipy.io import savemat
    except ImportError:
        savemat = None
    if savemat is not None:
        v5 = tmp_path / "splits_v5.mat"
        savemat(v5, {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2], [4]])})
        files.append(v5)
    for sp in files:
        assert read_splits_mat(sp, "test") == [2, 4] and read_splits_mat(sp, "train") == [1, 3]
        ds = NYUv2Labeled(path, split="test", splits_mat=sp)
        assert ds.names == ["0002", "0004"]
        assert_image_equals(ds[1]["image"], images[3])
    assert NYUv2Labeled(path, indices=[4, 1]).names == ["0004", "0001"]


def test_nyu_mat_shipped_split_constructs_and_bad_index_raises(nyu_mat):
    path, images, _, _ = nyu_mat
    ds = create_dataset("nyu", root=path, split="test")       # auto-detect: .mat -> labelled reader
    assert isinstance(ds, NYUv2Labeled) and len(ds) == 654
    assert ds.names[:3] == ["0001", "0002", "0009"]
    assert_image_equals(ds[1]["image"], images[1])             # index 2 exists in the 4-frame fixture
    with pytest.raises(DataError) as ei:
        ds[2]                                                  # index 9 does not
    assert_one_line_error(ei.value, str(path), "out of range")
    assert len(NYUv2Labeled(path, split="train")) == 795


def test_nyu_mat_handle_is_lazy_per_process(nyu_mat):
    path, images, _, _ = nyu_mat
    ds = NYUv2Labeled(path, split="all")
    assert not ds._h5.is_open
    ds[0]
    assert ds._h5.is_open
    clone = pickle.loads(pickle.dumps(ds))                     # what spawn-started DataLoader workers receive
    assert not clone._h5.is_open
    assert_image_equals(clone[3]["image"], images[3])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [2, 2]
    assert_image_equals(batches[1]["image"][1], images[3])


# ================================================================================================ shipped splits
def test_shipped_nyu_split_indices():
    test = read_index_file(SPLITS_DIR / "nyu_labeled_test.txt")
    train = read_index_file(SPLITS_DIR / "nyu_labeled_train.txt")
    assert len(test) == 654 and len(set(test)) == 654 and min(test) >= 1 and max(test) <= 1449
    assert len(train) == 795 and not set(train) & set(test)
    assert sorted(train + test) == list(range(1, 1450))
    assert test[:10] == [1, 2, 9, 14, 15, 16, 17, 18, 21, 28]
    assert (SPLITS_DIR / "README.md").is_file()


def test_shipped_kitti_eigen_test_list():
    lines = (SPLITS_DIR / "kitti_eigen_test.txt").read_text().splitlines()
    assert len(lines) == 697 and len(set(lines)) == 697
    entries = [parse_split_line(ln) for ln in lines]
    assert len({e.drive for e in entries}) == 28
    assert all(e.cam == "image_02" and len(e.frame) == 10 for e in entries)
    first = entries[0]
    assert (first.date, first.drive, first.frame) == ("2011_09_26", "2011_09_26_drive_0002_sync", "0000000069")


# ================================================================================================ NYU reduced zip
TRAIN_D8 = np.array([[0, 51, 102, 153], [204, 255, 25, 0], [10, 20, 30, 40]], np.uint8)       # 255 -> 10 m
TEST_D16 = np.array([[0, 1234, 2000, 65535], [500, 0, 7, 999], [1, 2, 3, 4]], np.uint16)   # millimetres


def _solid_blocks(h, w):
    """Large flat colour blocks: survive JPEG nearly exactly, still asymmetric."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (200, 30, 30)
    a[: h // 2, w // 2:] = (30, 200, 30)
    a[h // 2:, :] = (30, 30, 200)
    return a


@pytest.fixture
def reduced_tree(tmp_path):
    root = tmp_path / "nyu_extracted"
    train_rgb = rgb_pattern(3, 4, seed=5)
    test_rgb = rgb_pattern(3, 4, seed=9)
    d = root / "data"
    scene = d / "nyu2_train" / "living_room_0038_out"
    scene.mkdir(parents=True)
    Image.fromarray(np.kron(_solid_blocks(2, 2), np.ones((8, 8, 1), np.uint8))).save(scene / "37.jpg", quality=100)
    save_png(scene / "38.png", train_rgb)
    save_png(d / "nyu2_train/living_room_0038_out/37.png", np.kron(TRAIN_D8[:2, :2], np.ones((8, 8), np.uint8)))
    save_png(d / "nyu2_train/living_room_0038_out/38_depth.png", TRAIN_D8)
    save_png(d / "nyu2_test/00000_colors.png", test_rgb)
    save_png16(d / "nyu2_test/00000_depth.png", TEST_D16)
    (d / "nyu2_train.csv").write_text(
        "data/nyu2_train/living_room_0038_out/37.jpg,data/nyu2_train/living_room_0038_out/37.png\n"
        "data/nyu2_train/living_room_0038_out/38.png,data/nyu2_train/living_room_0038_out/38_depth.png\n")
    (d / "nyu2_test.csv").write_text("data/nyu2_test/00000_colors.png,data/nyu2_test/00000_depth.png\n"
                                     "data/nyu2_test/00001_colors.png,data/nyu2_test/00001_depth.png\n")  # 00001 absent
    zpath = tmp_path / "nyu_data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return root, zpath, train_rgb, test_rgb


def test_nyu_reduced_units_and_orientation_from_zip(reduced_tree):
    _, zpath, train_rgb, test_rgb = reduced_tree
    test = create_dataset("nyu", root=zpath, split="test")          # auto-detect -> reduced
    assert isinstance(test, NYUReduced) and test.names == ["00000", "00001"]
    s = test[0]
    assert_sample_contract(s, 3, 4)
    assert_image_equals(s["image"], test_rgb)
    assert torch.allclose(s["depth"][0], torch.from_numpy(TEST_D16.astype(np.float32) / 1000), atol=0, rtol=1e-6)
    assert float(s["depth"][0, 0, 1]) == pytest.approx(1.234) and float(s["depth"][0, 0, 3]) == pytest.approx(65.535)
    assert torch.equal(s["mask"][0], torch.from_numpy(TEST_D16 > 0))
    assert "::data/nyu2_test/00000_depth.png" in s["meta"]["depth_path"]

    train = NYUReduced(zpath, split="train")
    assert train.names == ["living_room_0038_out_37", "living_room_0038_out_38"]
    t = train[1]
    assert_image_equals(t["image"], train_rgb)
    assert torch.allclose(t["depth"][0], torch.from_numpy(TRAIN_D8.astype(np.float32) / 255 * 10), rtol=1e-6)
    assert float(t["depth"][0, 0, 1]) == pytest.approx(2.0) and float(t["depth"][0, 1, 1]) == pytest.approx(10.0)
    assert t["meta"]["category"] == "living_room"
    j = train[0]                                                      # the JPEG frame decodes (lossy: tolerance)
    assert j["image"].shape == (3, 16, 16)
    assert torch.allclose(j["image"][:, 2, 2], torch.tensor([200, 30, 30]) / 255.0, atol=4 / 255)


def test_nyu_reduced_extracted_folder_matches_zip(reduced_tree):
    root, zpath, _, _ = reduced_tree
    assert detect_nyu_layout(root) == "reduced" and detect_nyu_layout(zpath) == "reduced"
    a, b = NYUReduced(root, split="test")[0], NYUReduced(zpath, split="test")[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])


def test_nyu_reduced_member_missing_from_zip_is_item_error(reduced_tree):
    _, zpath, _, _ = reduced_tree
    ds = NYUReduced(zpath, split="test")                              # constructs despite the bad row
    ds[0]
    with pytest.raises(DataError) as ei:
        ds[1]
    assert_one_line_error(ei.value, f"{zpath}::data/nyu2_test/00001_colors.png", "not found in the archive")


# ================================================================================================ KITTI
KITTI_GT = np.array([[0, 2560, 300, 0, 65535, 1, 0], [256, 0, 0, 512, 0, 0, 1024],
                     [0, 0, 0, 0, 0, 0, 0], [7, 0, 0, 0, 0, 0, 25600], [0, 0, 1280, 0, 0, 0, 0]], np.uint16)
CALIB = """calib_time: 09-Jan-2012 13:57:47
P_rect_00: 7.215377e+02 0.000000e+00 6.095593e+02 0.000000e+00 0.000000e+00 7.215377e+02 1.728540e+02 0.000000e+00 0.000000e+00 0.000000e+00 1.000000e+00 0.000000e+00
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
P_rect_03: 7.215377e+02 0.000000e+00 6.095593e+02 -3.395242e+02 0.000000e+00 7.215377e+02 1.728540e+02 2.199936e+00 0.000000e+00 0.000000e+00 1.000000e+00 2.729905e-03
"""
DRIVE = "2011_09_26_drive_0001_sync"


@pytest.fixture
def kitti_tree(tmp_path):
    root, gt = tmp_path / "raw", tmp_path / "annotated"
    img_dir = root / "2011_09_26" / DRIVE / "image_02" / "data"
    rgbs = {f: rgb_pattern(5, 7, seed=f) for f in (5, 6, 7)}
    for f, a in rgbs.items():
        save_png(img_dir / f"{f:010d}.png", a)
    (root / "2011_09_26" / "calib_cam_to_cam.txt").write_text(CALIB)
    gt_rel = Path(DRIVE) / "proj_depth/groundtruth/image_02"
    save_png16(gt / "train" / gt_rel / "0000000005.png", KITTI_GT)          # benchmark train/ sub-folder
    save_png16(gt / "val" / gt_rel / "0000000007.png", KITTI_GT[::-1])      # val/ sub-folder; frame 6 has no GT
    # a second date without calibration, for the BTS focal fallback
    save_png(root / "2011_09_29" / "2011_09_29_drive_0004_sync/image_02/data/0000000001.png", rgbs[5])
    save_png16(gt / "2011_09_29_drive_0004_sync/proj_depth/groundtruth/image_02/0000000001.png", KITTI_GT)
    return root, gt, rgbs


def test_kitti_monodepth2_list_units_mask_and_calib(kitti_tree, tmp_path):
    root, gt, rgbs = kitti_tree
    lst = tmp_path / "mono.txt"
    lst.write_text(f"2011_09_26/{DRIVE} 5 l\n2011_09_26/{DRIVE} 6 l\n2011_09_26/{DRIVE} 0000000007 l\n")
    ds = create_dataset("kitti", root=root, gt_root=gt, split_file=lst)
    assert ds.names == [f"{DRIVE}_0000000005", f"{DRIVE}_0000000007"] and ds.n_without_gt == 1
    s = ds[0]
    assert_sample_contract(s, 5, 7)
    assert_image_equals(s["image"], rgbs[5])
    assert torch.equal(s["depth"][0], torch.from_numpy(KITTI_GT.astype(np.float32) / 256))
    assert float(s["depth"][0, 0, 1]) == 10.0 and float(s["depth"][0, 0, 2]) == pytest.approx(1.171875)
    assert int(s["mask"].sum()) == int((KITTI_GT > 0).sum()) == 10           # sparse GT stays sparse
    assert s["meta"]["intrinsics"] == pytest.approx({"fx": 721.5377, "fy": 721.5377, "cx": 609.5593, "cy": 172.854})
    assert s["meta"]["intrinsics_source"] == "calib_cam_to_cam.txt" and s["meta"]["category"] == "2011_09_26"
    assert torch.equal(ds[1]["depth"][0], torch.from_numpy(KITTI_GT[::-1].astype(np.float32) / 256))

    keep = KITTIEigen(root, gt_root=gt, split_file=lst, require_gt=False)
    assert len(keep) == 3
    nogt = keep[1]
    assert not bool(nogt["mask"].any()) and not nogt["meta"]["has_depth"]
    assert_image_equals(nogt["image"], rgbs[6])


def test_kitti_bts_list_none_focal_and_missing_gt(kitti_tree, tmp_path):
    root, gt, rgbs = kitti_tree
    g = f"{DRIVE}/proj_depth/groundtruth/image_02"
    lst = tmp_path / "bts.txt"
    lst.write_text(
        f"2011_09_26/{DRIVE}/image_02/data/0000000005.png train/{g}/0000000005.png 721.5377\n"
        f"2011_09_26/{DRIVE}/image_02/data/0000000006.png None 721.5377\n"
        f"{DRIVE}/image_02/data/0000000007.png {g}/0000000007.png 721.5377\n"            # no date prefix
        f"2011_09_26/{DRIVE}/image_02/data/0000000006.png {g}/0000000006.png 721.5377\n"  # GT named but absent
        "2011_09_29_drive_0004_sync/image_02/data/0000000001.png "
        "2011_09_29_drive_0004_sync/proj_depth/groundtruth/image_02/0000000001.png 707.0493\n")
    ds = KITTIEigen(root, gt_root=gt, split_file=lst)                  # require_gt drops only the None line
    assert len(ds) == 4 and ds.n_without_gt == 1
    assert torch.equal(ds[0]["depth"][0], torch.from_numpy(KITTI_GT.astype(np.float32) / 256))
    assert_image_equals(ds[1]["image"], rgbs[7])
    with pytest.raises(DataError) as ei:
        ds[2]
    assert_one_line_error(ei.value, f"{g}/0000000006.png", "missing")
    fb = ds[3]
    assert fb["meta"]["intrinsics"] == {"fx": 707.0493, "fy": 707.0493, "cx": 3.5, "cy": 2.5}
    assert "focal" in fb["meta"]["intrinsics_source"]
    assert len(KITTIEigen(root, gt_root=gt, split_file=lst, require_gt=False)) == 5


def test_kitti_shipped_test_split_without_data(tmp_path):
    (tmp_path / "raw").mkdir()
    ds = create_dataset("kitti", root=tmp_path / "raw", split="test", require_gt=False)
    assert len(ds) == 697
    with pytest.raises(DataError) as ei:
        ds[0]
    assert_one_line_error(ei.value, "2011_09_26_drive_0002_sync/image_02/data/0000000069", "file not found")
    with pytest.raises(FileNotFoundError, match="no ground truth found"):
        create_dataset("kitti", root=tmp_path / "raw", split="test")
    with pytest.raises(ValueError, match="split_file"):
        create_dataset("kitti", root=tmp_path / "raw", split="train")


def test_kitti_calib_parser(tmp_path):
    p = tmp_path / "calib_cam_to_cam.txt"
    p.write_text(CALIB)
    c = read_calib_cam_to_cam(p)
    assert c["image_03"] == pytest.approx({"fx": 721.5377, "fy": 721.5377, "cx": 609.5593, "cy": 172.854})


# ================================================================================================ DIODE
@pytest.fixture
def diode_tree(tmp_path):
    root = tmp_path / "diode"
    out = {}
    for t, scene, scan, stem in [("indoors", "scene_00019", "scan_00183", "00019_00183_indoors_000_010"),
                                 ("outdoors", "scene_00022", "scan_00193", "00022_00193_outdoor_000_000")]:
        d = root / "val" / t / scene / scan
        rgb = rgb_pattern(4, 6, seed=len(out))
        depth = (np.arange(24, dtype=np.float32).reshape(4, 6) * 0.5 + 0.25)[..., None]   # (H,W,1) metres
        mask = np.ones((4, 6), np.float32)
        mask[0, :2] = 0
        save_png(d / f"{stem}.png", rgb)
        np.save(d / f"{stem}_depth.npy", depth)
        np.save(d / f"{stem}_depth_mask.npy", mask)
        out[t] = (stem, rgb, depth[..., 0], mask)
    return root, out


def test_diode_depth_mask_and_categories(diode_tree):
    root, files = diode_tree
    ds = create_dataset("diode", root=root, split="test")              # test -> val
    assert len(ds) == 2 and [ds[i]["meta"]["category"] for i in range(2)] == ["indoors", "outdoors"]
    stem, rgb, depth, mask = files["indoors"]
    s = ds[0]
    assert_sample_contract(s, 4, 6)
    assert s["meta"]["name"] == stem and s["meta"]["scene"] == "scene_00019"
    assert_image_equals(s["image"], rgb)
    expected = np.where(mask > 0, depth, 0).astype(np.float32)
    assert torch.equal(s["depth"][0], torch.from_numpy(expected))
    assert float(s["depth"][0, 3, 5]) == pytest.approx(23 * 0.5 + 0.25)
    assert torch.equal(s["mask"][0], torch.from_numpy(mask > 0))
    out = DIODE(root, split="val", scene_type="outdoors")
    assert out.names == [files["outdoors"][0]]
    with pytest.raises(ValueError):
        DIODE(root, scene_type="underwater")


def test_diode_missing_mask_is_item_error(diode_tree):
    root, files = diode_tree
    stem = files["outdoors"][0]
    victim = next(root.rglob(f"{stem}_depth_mask.npy"))
    victim.unlink()
    ds = DIODE(root, split="val")
    ds[0]
    with pytest.raises(DataError) as ei:
        ds[1]
    assert_one_line_error(ei.value, str(victim), "file not found")


# ================================================================================================ EndoSLAM
@pytest.fixture
def endoslam_tree(tmp_path):
    root = tmp_path / "EndoSLAM"
    unity = root / "UnityCam"
    grey = {}
    for organ, frames_dir in [("Colon", "Frames"), ("Small Intestine", "Frames/Frames"), ("Stomach", "Frames")]:
        for n in range(1, 11):
            save_png(unity / organ / frames_dir / f"image_{n:04d}.png", rgb_pattern(5, 5, seed=n))
            g = ((np.arange(25).reshape(5, 5) * 10 + n) % 256).astype(np.uint8)
            g[0, 0] = 0
            rgba = np.dstack([g, g, g, np.full_like(g, 255)])                    # Unity AOV: RGBA, grey in R=G=B
            save_png(unity / organ / "Pixelwise Depths" / f"aov_image_{n:04d}.png", rgba)
            grey[(organ, n)] = g
    (unity / "Calibration").mkdir()
    (unity / "Calibration" / "cam.txt").write_text("156.0418,0,178.5604,0,155.7529,181.8043,0,0,1")
    return root, grey


def test_endoslam_layout_depth_scale_and_split(endoslam_tree):
    root, grey = endoslam_tree
    test = create_dataset("endoslam", root=root, split="test")
    assert test.names == ["colon_0010", "small_intestine_0010", "stomach_0010"]
    s = test[0]
    assert_sample_contract(s, 5, 5)
    assert_image_equals(s["image"], rgb_pattern(5, 5, seed=10))
    g = grey[("Colon", 10)]
    assert torch.allclose(s["depth"][0], torch.from_numpy(g.astype(np.float32) / 255), rtol=1e-6, atol=0)
    assert float(s["depth"][0, 0, 1]) == pytest.approx(20 / 255)
    assert torch.equal(s["mask"][0], torch.from_numpy(g > 0))
    assert s["meta"]["category"] == "colon" and s["meta"]["frame"] == 10
    assert s["meta"]["intrinsics"] == pytest.approx({"fx": 156.0418, "fy": 155.7529, "cx": 178.5604, "cy": 181.8043})

    half = EndoSLAM(root, split="test", organs=["small intestine"], max_depth=0.5)
    d = half[0]["depth"][0]
    assert torch.allclose(d, torch.from_numpy(grey[("Small Intestine", 10)].astype(np.float32) / 255 * 0.5), rtol=1e-6)

    splits = {sp: EndoSLAM(root, split=sp).names for sp in ("train", "val", "test")}
    assert [len(splits[sp]) for sp in ("train", "val", "test")] == [24, 3, 3]     # 8/1/1 of 10 frames per organ
    assert splits["train"][:2] == ["colon_0001", "colon_0002"] and "colon_0009" in splits["val"]
    assert len(set().union(*splits.values())) == 30 == len(EndoSLAM(root, split="all"))
    assert EndoSLAM(root, split="train").names == splits["train"]                  # deterministic


def test_endoslam_missing_depth_is_item_error(endoslam_tree):
    root, _ = endoslam_tree
    victim = root / "UnityCam/Stomach/Pixelwise Depths/aov_image_0010.png"
    victim.unlink()
    ds = EndoSLAM(root / "UnityCam", split="test", organs="stomach")
    assert ds.names == ["stomach_0010"]
    with pytest.raises(DataError) as ei:
        ds[0]
    assert_one_line_error(ei.value, str(victim), "file not found")


# ================================================================================================ folder
@pytest.fixture
def folder_tree(tmp_path):
    root = tmp_path / "mine"
    d16 = np.array([[0, 1000, 2500], [65535, 1, 42]], np.uint16)
    dnpy = np.array([[0.5, 0.0, np.nan], [1.25, 2.0, 3.0]], np.float32)
    dtif = np.array([[10.0, 0.0, 7.5], [-1.0, 0.125, 80.0]], np.float32)
    rgbs = {k: rgb_pattern(2, 3, seed=i) for i, k in enumerate("abcd")}
    for k, a in rgbs.items():
        save_png(root / "images" / f"{k}.png", a)
    save_png16(root / "depth" / "a.png", d16)
    np.save(root / "depth" / "b.npy", dnpy)
    tifffile.imwrite(root / "depth" / "c.tiff", dtif)
    (root / "intrinsics.csv").write_text("name,fx,fy,cx,cy,note\na,100,101,1.5,1.0,known\nb,,,,,unknown\n")
    return root, rgbs, d16, dnpy, dtif


def test_folder_png16_npy_tiff_and_no_depth(folder_tree):
    root, rgbs, d16, dnpy, dtif = folder_tree
    ds = create_dataset("folder", root=root, depth_scale=0.001)
    assert ds.names == ["a", "b", "c", "d"]
    a, b, c, d = (ds[i] for i in range(4))
    for s, k in zip((a, b, c, d), "abcd"):
        assert_sample_contract(s, 2, 3)
        assert_image_equals(s["image"], rgbs[k])
    assert torch.allclose(a["depth"][0], torch.from_numpy(d16.astype(np.float32) / 1000), rtol=1e-6)
    assert float(a["depth"][0, 1, 0]) == pytest.approx(65.535)
    assert a["meta"]["intrinsics"] == {"fx": 100.0, "fy": 101.0, "cx": 1.5, "cy": 1.0}
    assert "intrinsics" not in b["meta"]
    assert torch.equal(b["depth"][0], torch.tensor([[0.5, 0.0, 0.0], [1.25, 2.0, 3.0]]))    # NaN -> missing
    assert torch.equal(b["mask"][0], torch.tensor([[True, False, False], [True, True, True]]))
    assert torch.equal(c["depth"][0], torch.tensor([[10.0, 0.0, 7.5], [0.0, 0.125, 80.0]]))  # negative -> missing
    assert not d["meta"]["has_depth"] and not bool(d["mask"].any()) and float(d["depth"].abs().sum()) == 0
    assert a["meta"]["has_depth"] and a["meta"]["dataset"] == "folder"


def test_folder_png_needs_a_unit(folder_tree):
    root = folder_tree[0]
    with pytest.raises(ValueError, match="depth_scale"):
        FolderDataset(root)


def test_folder_index_csv_units_categories_and_missing_file(folder_tree):
    root, rgbs, d16, _, _ = folder_tree
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "rgb", "depth", "depth_unit", "category"])
        w.writerow(["a", "images/a.png", "depth/a.png", "m/256", "street"])
        w.writerow(["d", "images/d.png", "", "", "street"])
        w.writerow(["ghost", "images/ghost.png", "depth/ghost.png", "mm", "room"])
    ds = FolderDataset(root)
    assert ds.names == ["a", "d", "ghost"]
    s = ds[0]
    assert torch.allclose(s["depth"][0], torch.from_numpy(d16.astype(np.float32) / 256), rtol=1e-6)
    assert s["meta"]["category"] == "street" and s["meta"]["depth_scale"] == 1 / 256
    assert not ds[1]["meta"]["has_depth"]
    with pytest.raises(DataError) as ei:
        ds[2]
    assert_one_line_error(ei.value, str(root / "images/ghost.png"), "file not found")


def test_folder_without_depth_dir_is_inference_only(tmp_path):
    for k in range(3):
        save_png(tmp_path / "rgb" / f"{k}.png", rgb_pattern(4, 4, seed=k))
    ds = FolderDataset(tmp_path)
    assert len(ds) == 3 and all(not ds[i]["meta"]["has_depth"] for i in range(3))


def test_unit_spellings():
    assert unit_to_scale("mm") == 0.001 and unit_to_scale("m/256") == 1 / 256 and unit_to_scale("m") == 1.0
    assert unit_to_scale("cm") == 0.01 and unit_to_scale("0.0002") == 0.0002 and unit_to_scale("") is None
    with pytest.raises(ValueError):
        unit_to_scale("furlongs")


# ================================================================================================ bad input
def test_corrupt_png_and_size_mismatch_are_item_errors(tmp_path):
    good = rgb_pattern(4, 5)
    save_png(tmp_path / "images" / "good.png", good)
    save_png16(tmp_path / "depth" / "good.png", np.full((4, 5), 1000))
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    save_png16(tmp_path / "depth" / "broken.png", np.full((4, 5), 1000))
    save_png(tmp_path / "images" / "wrongsize.png", good)
    save_png16(tmp_path / "depth" / "wrongsize.png", np.full((5, 4), 1000))
    ds = FolderDataset(tmp_path, depth_scale=0.001)                    # constructs despite two bad items
    assert ds.names == ["broken", "good", "wrongsize"]
    with pytest.raises(DataError) as ei:
        ds[0]
    assert_one_line_error(ei.value, str(tmp_path / "images" / "broken.png"), "cannot decode")
    assert float(ds[1]["depth"].max()) == 1.0
    with pytest.raises(DataError) as ei:
        ds[2]
    assert_one_line_error(ei.value, str(tmp_path / "depth" / "wrongsize.png"), "differs from image size 5x4")


# ================================================================================================ real samples
def _index_rows(folder: Path):
    with open(folder / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("which,reader", [("nyu", "folder"), ("nyu", "nyu"), ("kitti", "folder")])
def test_real_shared_samples_match_their_index(shared_data, which, reader):
    folder = shared_data / which
    rows = _index_rows(folder)
    ds = create_dataset(reader, root=folder)
    assert ds.names == [r["name"] for r in rows]
    for i, row in enumerate(rows):
        s = ds[i]
        assert_sample_contract(s, int(row["height"]), int(row["width"]))
        valid = s["depth"][s["mask"]]
        assert float(valid.min()) == pytest.approx(float(row["min_m"]), abs=5e-4 + 1e-6)
        assert float(valid.max()) == pytest.approx(float(row["max_m"]), abs=5e-4 + 1e-6)
        assert float(s["mask"].float().mean()) == pytest.approx(float(row["valid_fraction"]), abs=5e-5 + 1e-7)
        assert s["meta"]["rgb_path"].endswith(row["rgb"]) and s["meta"]["depth_path"].endswith(row["depth"])
    if which == "kitti":
        assert ds[0]["meta"]["intrinsics"]["fx"] == pytest.approx(707.0493)
    else:
        assert "intrinsics" not in ds[len(ds) - 1]["meta"]                                # fastdepth_sample: unknown
        assert ds[0]["meta"]["dataset"] == ("nyu" if reader == "nyu" else "folder")


# ================================================================================================ registry
def test_registry_names_descriptions_and_close_matches():
    names = list_datasets()
    for n in ("nyu", "nyu_mat", "nyu_reduced", "kitti", "diode", "endoslam", "folder", "synthetic"):
        assert n in names
    assert list_datasets("nyu*") == ["nyu", "nyu_mat", "nyu_reduced"]
    desc = describe_datasets()
    assert desc["kitti"].startswith("KITTI") and desc["nyu_mat"].startswith("NYU-Depth V2 labelled")
    with pytest.raises(KeyError, match=r"did you mean: kitti\?"):
        create_dataset("kiti", root=".")
    with pytest.raises(KeyError, match=r"\(known: aerial, diode,"):
        create_dataset("imagenet")


def test_transform_receives_the_whole_sample(folder_tree):
    root = folder_tree[0]
    seen = []

    def tf(sample):
        seen.append(sorted(sample))
        sample["meta"]["touched"] = True
        sample["depth"] = sample["depth"] * 2
        return sample

    plain = FolderDataset(root, depth_scale=0.001)[0]
    s = create_dataset("folder", root=root, transform=tf, depth_scale=0.001)[0]
    assert seen == [["depth", "image", "mask", "meta"]] and s["meta"]["touched"]
    assert torch.equal(s["depth"], plain["depth"] * 2)



def test_process_local_handle_opens_once_per_process_and_is_not_pickled(monkeypatch, tmp_path):
    import functools
    import os
    import zipfile

    from depthlab.data.base import ProcessLocal

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("x.txt", "hi")
    handle = ProcessLocal(functools.partial(zipfile.ZipFile, tmp_path / "a.zip"))
    assert not handle.is_open
    first = handle.get()
    assert handle.get() is first and first.read("x.txt") == b"hi"       # once per process
    clone = pickle.loads(pickle.dumps(handle))                           # a spawn-started worker's copy
    assert not clone.is_open and clone.get().read("x.txt") == b"hi"
    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)                   # a fork-started worker: another process
    assert not handle.is_open and handle.get() is not first
