"""Real-format fixture trees (depthlab.data.fixtures) read back through the real dataset readers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from depthlab.data import create_dataset
from depthlab.data.fixtures import list_fixtures, rendered_scenes, write_fixture
from depthlab.errors import UnknownNameError
from depthlab.experiment import ExperimentError, with_fixtures


def _rendered(n, size, seed):
    return list(rendered_scenes(n, size, seed))


def test_nyu_mat_fixture_is_the_labelled_file_with_its_splits(tmp_path):
    path = write_fixture("nyu_mat", tmp_path / "nyu", n=4, size=(12, 16))
    assert path.name == "nyu_depth_v2_labeled.mat"
    frames = _rendered(4, (12, 16), 0)
    ds = create_dataset("nyu_mat", root=path, split="all")
    s = ds[2]
    assert torch.equal(s["depth"][0], torch.from_numpy(frames[2][1]))                 # metres, axes untransposed
    assert torch.equal((s["image"] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(frames[2][0]))
    test = create_dataset("nyu_mat", root=path, split="test", splits_mat=path.parent / "splits.mat")
    assert test.names == ["0004"]                                                       # the last quarter


def test_nyu_reduced_fixture_units(tmp_path):
    path = write_fixture("nyu_reduced", tmp_path / "r", n_train=2, n_test=1, size=(12, 16))
    assert path.name == "nyu_data.zip"
    train = create_dataset("nyu_reduced", root=path, split="train")
    test = create_dataset("nyu_reduced", root=path, split="test")
    assert len(train) == 2 and len(test) == 1
    d_train = _rendered(2, (12, 16), 0)[1][1]
    d_test = _rendered(1, (12, 16), 1)[0][1]
    assert np.abs(train[1]["depth"][0].numpy() - d_train).max() <= 10 / 255 / 2 + 1e-6   # 8-bit, 255 = 10 m
    assert np.abs(test[0]["depth"][0].numpy() - d_test).max() <= 0.0005 + 1e-6            # millimetres


def test_kitti_fixture_reads_through_the_shipped_eigen_list(tmp_path):
    root = write_fixture("kitti", tmp_path / "k", n=2, size=(16, 48))
    ds = create_dataset("kitti", root=root, split="test")
    assert len(ds) == 2
    s = ds[0]
    depth = _rendered(2, (16, 48), 0)[0][1]
    m = s["mask"][0].numpy()
    assert m.any() and not m[: 16 // 3].any()                                           # returns only below the top third
    assert np.abs(s["depth"][0].numpy()[m] - depth[m]).max() <= 1 / 256 / 2 + 1e-6     # metres x 256
    assert s["meta"]["intrinsics"]["fx"] == pytest.approx(721.5377)


def test_diode_endoslam_aerial_fixtures_read(tmp_path):
    diode = create_dataset("diode", root=write_fixture("diode", tmp_path / "d", n=1, size=(8, 8)), split="val")
    assert [diode[i]["meta"]["category"] for i in range(2)] == ["indoors", "outdoors"]
    assert not bool(diode[0]["mask"][0, 0, 0]) and bool(diode[0]["mask"][0, 4, 4])
    endo = create_dataset("endoslam", root=write_fixture("endoslam", tmp_path / "e", n=10, size=(8, 8)), split="test")
    assert len(endo) == 3 and float(endo[0]["depth"].max()) == pytest.approx(1.0)
    pytest.importorskip("rasterio")
    aerial = create_dataset("aerial", root=write_fixture("aerial", tmp_path / "a", n=3, size=(8, 8), splits=(1, 1, 1)),
                            split="train")
    s = aerial[0]
    assert s["meta"]["crs"].endswith("25832") and not bool(s["mask"][0, 0, 0]) and s["meta"]["category"]


def test_aerial_fixture_is_seen_from_above_with_heights_of_its_category(tmp_path):
    """Bare ground at 0 m, objects above it; fields mostly ground, towns with buildings; shadows darken ground."""
    from depthlab.data.fixtures import AERIAL_MIX, aerial_scene

    for cat, (n_build, *_rest) in AERIAL_MIX.items():
        rgb, h = aerial_scene(3, (64, 64), cat)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and h.dtype == np.float32
        assert h.min() == 0 and 2.0 < h.max() < 30.0, cat
        ground = np.mean(h == 0)
        assert (ground > 0.85) if cat == "fields" else (0.3 < ground < 0.85), (cat, ground)
    np.testing.assert_array_equal(aerial_scene(3, (64, 64), "suburbs")[0], aerial_scene(3, (64, 64), "suburbs")[0])
    rgb, h = aerial_scene(0, (64, 64), "industrial")  # shadows: ground 3 px south-east of a roof is darker
    r, c = np.argwhere((h[:-3, :-3] > 0) & (h[1:-2, 1:-2] == 0) & (h[3:, 3:] == 0))[0] + 3
    assert rgb[r, c].astype(float).sum() < 0.8 * np.median(rgb[h == 0].astype(float).sum(-1))
    pytest.importorskip("rasterio")
    root = write_fixture("aerial", tmp_path / "a", n=6, size=(32, 32), splits=(2, 2, 2))
    cats = dict(line.split(",") for line in (root / "categories.csv").read_text().split()[1:])
    assert sorted(set(cats.values())) == sorted(AERIAL_MIX)


def test_write_fixture_reuses_a_complete_tree_and_rewrites_on_new_arguments(tmp_path):
    p1 = write_fixture("diode", tmp_path / "d", n=1, size=(8, 8), splits=("val",))
    stamp = (tmp_path / "d" / ".complete").stat().st_mtime_ns
    assert write_fixture("diode", tmp_path / "d", n=1, size=(8, 8), splits=("val",)) == p1
    assert (tmp_path / "d" / ".complete").stat().st_mtime_ns == stamp                  # not rewritten
    write_fixture("diode", tmp_path / "d", n=2, size=(8, 8), splits=("val",))
    assert len(create_dataset("diode", root=p1, split="val")) == 4
    assert not (tmp_path / "d.tmp").exists()
    with pytest.raises(UnknownNameError, match=r"unknown fixture kind 'nyu'; did you mean: nyu_mat\? \(known: aerial, "):
        write_fixture("nyu", tmp_path / "x")
    assert set(list_fixtures()) == {"nyu_mat", "nyu_reduced", "kitti", "diode", "endoslam", "aerial", "aerial_portal"}


def test_experiment_spec_fixture_references_become_paths(tmp_path):
    spec = {"name": "x", "fixtures": {"d": {"kind": "diode", "n": 1, "size": [8, 8], "splits": ["val"]}},
            "overrides": ["data.root=fixture:d"],
            "evaluation": {"datasets": [{"name": "e", "dataset": "diode", "root": "fixture:d"}]}}
    out = with_fixtures(spec, tmp_path / "fixtures")
    root = str((tmp_path / "fixtures" / "d").resolve())
    assert out.overrides == [f"data.root={root}"] and out.evaluation.datasets[0].root == root
    assert out.fixtures == spec["fixtures"]
    with pytest.raises(ExperimentError, match="names fixture 'nope'"):
        with_fixtures({"overrides": ["data.root=fixture:nope"]}, tmp_path / "f2")
