"""Raw outputs: back-projection, PLY and GeoTIFF round trips, and `predict` with the tiff/ply formats."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from depthlab.outputs import FORMATS, write_outputs
from depthlab.pointcloud import (as_intrinsics, default_intrinsics, depth_to_points, find_intrinsics,
                                 locate_intrinsics, read_ply,
                                 write_ply)
from depthlab.predictor import Prediction

pytestmark = [pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),  # affine `*` inside rasterio
              pytest.mark.filterwarnings("ignore:Dataset has no geotransform")]  # reading the plain TIFF back


# ------------------------------------------------------------------------------------------------ geometry
def test_depth_to_points_hand_computed():
    k = {"fx": 2.0, "fy": 4.0, "cx": 1.0, "cy": 1.0}
    d = np.zeros((3, 4), np.float32)
    d[1, 1] = 3.0  # at the principal point -> (0, 0, d)
    d[1, 3] = 3.0  # fx = 2 columns to the right -> (d, 0, d)
    d[2, 1] = 8.0  # one row down, fy = 4 -> y = 1/4 * 8 = 2
    d[0, 0] = np.nan  # invalid: skipped
    pts = depth_to_points(d, k)
    np.testing.assert_allclose(pts, [[0, 0, 3], [3, 0, 3], [0, 2, 8]], atol=1e-6)  # row-major order
    assert pts.dtype == np.float32
    # x right, y down: the top-left pixel has negative x and y
    d2 = np.full((3, 4), 2.0, np.float32)
    p00 = depth_to_points(d2, k)[0]
    np.testing.assert_allclose(p00, [(0 - 1) * 2 / 2, (0 - 1) * 2 / 4, 2.0])


def test_intrinsics_parsing_and_default_guess():
    assert as_intrinsics("500, 510, 320.5, 240") == {"fx": 500.0, "fy": 510.0, "cx": 320.5, "cy": 240.0}
    assert as_intrinsics([1, 2, 3, 4])["cy"] == 4.0
    with pytest.raises(ValueError, match="four numbers"):
        as_intrinsics("500,510,320")
    with pytest.raises(ValueError, match="positive fx"):
        as_intrinsics("0,1,2,3")
    g = default_intrinsics(480, 640)  # 60 deg horizontal FOV: fx = 320 / tan(30 deg)
    assert g["fx"] == pytest.approx(320 / math.tan(math.radians(30))) == pytest.approx(554.2563)
    assert g["fy"] == g["fx"] and g["cx"] == 319.5 and g["cy"] == 239.5


def test_find_intrinsics_from_csv_and_json_sidecar(tmp_path):
    (tmp_path / "rgb").mkdir()
    img = tmp_path / "rgb" / "frame1.png"
    img.write_bytes(b"")
    (tmp_path / "intrinsics.csv").write_text("name,fx,fy,cx,cy\nframe1,500,501,320,240\nother,,,,\n")
    assert find_intrinsics(img) == {"fx": 500.0, "fy": 501.0, "cx": 320.0, "cy": 240.0}
    assert locate_intrinsics(img)[1] == f"{tmp_path / 'intrinsics.csv'} row frame1"  # the source is named
    assert find_intrinsics(tmp_path / "rgb" / "other.png") is None  # blank row = unknown
    assert locate_intrinsics(tmp_path / "rgb" / "other.png") == (None, None)
    (tmp_path / "rgb" / "frame1.json").write_text(json.dumps({"intrinsics": {"fx": 1, "fy": 2, "cx": 3, "cy": 4}}))
    assert find_intrinsics(img) == {"fx": 1.0, "fy": 2.0, "cx": 3.0, "cy": 4.0}  # sidecar wins
    assert locate_intrinsics(img)[1] == "sidecar frame1.json"


# ------------------------------------------------------------------------------------------------ PLY
def test_ply_round_trip_header_and_values(tmp_path):
    pts = np.array([[0, 0, 1.5], [-1.25, 2.0, 3.0], [1e-3, -4, 10]], np.float32)
    cols = np.array([[255, 0, 0], [0, 128, 0], [1, 2, 3]], np.uint8)
    path = write_ply(tmp_path / "c.ply", pts, cols, comments=["hello"])
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode()
    assert header.splitlines()[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element vertex 3" in header and "property uchar blue" in header
    assert len(raw) - len(header) == 3 * (3 * 4 + 3)  # packed little-endian records, no padding
    assert np.frombuffer(raw[len(header): len(header) + 4], "<f4")[0] == 0.0
    assert np.frombuffer(raw[len(header) + 15 + 0: len(header) + 15 + 4], "<f4")[0] == -1.25
    got_pts, got_cols, h = read_ply(path)
    np.testing.assert_array_equal(got_pts, pts)
    np.testing.assert_array_equal(got_cols, cols)
    assert h["vertex_count"] == 3 and h["comments"] == ["hello"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no leftovers


def _pred(depth, kind="metric", source=None):
    return Prediction(depth=np.asarray(depth, np.float32), kind=kind, unit="m", model="t", source=source)


def test_write_outputs_ply_skips_invalid_pixels_and_colours_points(tmp_path):
    assert "ply" in FORMATS and "tiff" in FORMATS
    d = np.array([[2.0, 0.0], [np.nan, 4.0]], np.float32)
    rgb = torch.zeros(3, 2, 2)
    rgb[0, 0, 0] = 1.0  # top-left red
    rgb[2, 1, 1] = 1.0  # bottom-right blue
    files, entry = write_outputs(_pred(d), rgb, tmp_path, "x", ["ply"], intrinsics="1,1,0,0")
    pts, cols, _ = read_ply(tmp_path / "x.ply")
    np.testing.assert_allclose(pts, [[0, 0, 2], [4, 4, 4]])
    np.testing.assert_array_equal(cols, [[255, 0, 0], [0, 0, 255]])
    assert entry["ply_points"] == 2 and entry["ply_intrinsics"]["fx"] == 1.0 and files == [str(tmp_path / "x.ply")]


def test_ply_refuses_relative_without_scale_and_scales_when_given(tmp_path):
    d = np.array([[0.5, 1.0]], np.float32)
    with pytest.raises(ValueError, match="point clouds need metric depth; this model predicts relative") as e:
        write_outputs(_pred(d, "relative"), None, tmp_path, "r", ["ply"])
    assert "\n" not in str(e.value) and not (tmp_path / "r.ply").exists()
    write_outputs(_pred(d, "relative"), None, tmp_path, "r", ["ply"], intrinsics="1,1,0,0", ply_scale=4.0)
    np.testing.assert_allclose(read_ply(tmp_path / "r.ply")[0][:, 2], [2.0, 4.0])
    write_outputs(_pred(d, "disparity"), None, tmp_path, "s", ["ply"], intrinsics="1,1,0,0", ply_scale=4.0)
    np.testing.assert_allclose(read_ply(tmp_path / "s.ply")[0][:, 2], [8.0, 4.0])  # metres = scale / disparity


# ------------------------------------------------------------------------------------------------ GeoTIFF

@pytest.fixture()
def rio():
    return pytest.importorskip("rasterio")


def test_geotiff_round_trip_keeps_crs_transform_and_nodata(tmp_path, rio):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    src = tmp_path / "ortho.tif"
    transform = from_origin(500000.0, 5600000.0, 0.25, 0.25)
    rgb = np.random.default_rng(0).integers(0, 256, (3, 32, 64)).astype(np.uint8)
    with rio.open(src, "w", driver="GTiff", width=64, height=32, count=3, dtype="uint8",
                  crs=CRS.from_epsg(25832), transform=transform) as dst:
        dst.write(rgb)
    d = np.linspace(1, 9, 32 * 64, dtype=np.float32).reshape(32, 64)
    d[0, 0] = np.nan
    files, entry = write_outputs(_pred(d, source=str(src)), None, tmp_path, "ortho", ["tiff"])
    with rio.open(tmp_path / "ortho_depth.tif") as r:
        assert r.crs.to_epsg() == 25832 and r.transform == transform
        assert r.dtypes == ("float32",) and r.count == 1 and math.isnan(r.nodata)
        back = r.read(1)
    np.testing.assert_array_equal(back[1:], d[1:])
    assert math.isnan(back[0, 0])
    assert entry["tiff_crs"] == "EPSG:25832" and entry["tiff_transform"][2] == 500000.0
    # a plain PNG input gives a plain float TIFF (no CRS)
    write_outputs(_pred(d, source=str(tmp_path / "img.png")), None, tmp_path, "plain", ["tiff"])
    with rio.open(tmp_path / "plain_depth.tif") as r:
        assert r.crs is None
        np.testing.assert_array_equal(r.read(1)[1:], d[1:])


def test_predict_files_tiff_and_ply_on_georeferenced_and_nyu_inputs(tmp_path, rio, shared_data):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from PIL import Image

    from depthlab import predict_files  # (.npy == Predictor is covered by tests/test_predict_cli.py)

    inp = tmp_path / "in"
    inp.mkdir()
    nyu = shared_data / "nyu"
    shutil.copy(nyu / "rgb" / "fastdepth_sample.png", inp / "fastdepth_sample.png")
    shutil.copy(nyu / "rgb" / "metric3d_00000.png", inp / "metric3d_00000.png")
    (inp / "metric3d_00000.json").write_text(json.dumps(
        {"intrinsics": {"fx": 518.8579, "fy": 519.46961, "cx": 325.58245, "cy": 253.73617}}))
    rgb = np.asarray(Image.open(nyu / "rgb" / "fastdepth_sample.png").convert("RGB")).transpose(2, 0, 1)
    transform = from_origin(400000.0, 5700000.0, 0.2, 0.2)
    with rio.open(inp / "geo.tif", "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                  dtype="uint8", crs=CRS.from_epsg(25832), transform=transform) as dst:
        dst.write(rgb)
    out = tmp_path / "out"
    report = predict_files(inp, model="fastdepth", out_dir=out, formats=["npy", "tiff", "ply"])
    assert report.n_ok == 3 and not report.failures
    side = json.loads((out / "predictions.json").read_text())["files"]
    # GeoTIFF input: CRS and transform copied; values = the .npy
    with rio.open(out / "geo_depth.tif") as r:
        assert r.crs.to_epsg() == 25832 and r.transform == transform
        np.testing.assert_array_equal(r.read(1), np.load(out / "geo.npy"))
    # NYU frame with intrinsics: the PLY is the back-projection of the .npy with those intrinsics
    depth = np.load(out / "metric3d_00000.npy")
    pts, cols, header = read_ply(out / "metric3d_00000.ply")
    k = side["metric3d_00000"]["ply_intrinsics"]
    assert k["fx"] == 518.8579 and header["vertex_count"] == int((depth > 0).sum()) == len(pts)
    np.testing.assert_allclose(pts, depth_to_points(depth, k), rtol=1e-6)
    v, u = 100, 200
    idx = int((depth > 0)[:v].sum() + (depth[v, :u] > 0).sum())
    np.testing.assert_allclose(pts[idx], [(u - k["cx"]) * depth[v, u] / k["fx"], (v - k["cy"]) * depth[v, u] / k["fy"],
                                          depth[v, u]], rtol=1e-5)
    img = np.asarray(Image.open(inp / "metric3d_00000.png").convert("RGB"))
    np.testing.assert_array_equal(cols[idx], img[v, u])
    # no intrinsics known -> the documented 60 degree guess, recorded
    assert side["fastdepth_sample"]["ply_intrinsics_source"].startswith("default 60 deg")
    assert side["fastdepth_sample"]["ply_intrinsics"]["fx"] == pytest.approx(112 / math.tan(math.radians(30)))


def test_predict_cli_accepts_new_formats(tmp_path, shared_data):
    from typer.testing import CliRunner

    from depthlab.cli import app

    inp = shared_data / "nyu" / "rgb" / "fastdepth_sample.png"
    res = CliRunner().invoke(app, ["predict", str(inp), "--model", "fastdepth", "--out", str(tmp_path),
                                   "--formats", "tiff,ply"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fastdepth_sample_depth.tif").is_file() and (tmp_path / "fastdepth_sample.ply").is_file()
    res = CliRunner().invoke(app, ["predict", str(inp), "--model", "fastdepth", "--out", str(tmp_path),
                                   "--formats", "las"])
    assert res.exit_code != 0 and "las" in res.output and "ply" in res.output


def test_predict_reads_16bit_4band_orthophotos(tmp_path, rio, shared_data):
    """The aerial study's inputs (uint16 RGBA GeoTIFF) predict like their 8-bit RGB version: PIL cannot decode
    them, rasterio reads them with the same [0,1] scaling."""
    from PIL import Image
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from depthlab import predict_files

    rgb8 = np.asarray(Image.open(shared_data / "nyu" / "rgb" / "fastdepth_sample.png").convert("RGB"))
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(rgb8).save(inp / "ortho8.png")
    rgba16 = np.concatenate([rgb8.transpose(2, 0, 1).astype(np.uint16) * 257,
                             np.full((1, *rgb8.shape[:2]), 65535, np.uint16)])
    with rio.open(inp / "ortho16.tif", "w", driver="GTiff", width=rgb8.shape[1], height=rgb8.shape[0], count=4,
                  dtype="uint16", crs=CRS.from_epsg(25832), transform=from_origin(0.0, 0.0, 0.2, 0.2)) as dst:
        dst.write(rgba16)
    report = predict_files(inp, model="fastdepth", out_dir=tmp_path / "out", formats=["npy"])
    assert report.n_ok == 2 and not report.failures
    np.testing.assert_allclose(np.load(tmp_path / "out" / "ortho16.npy"), np.load(tmp_path / "out" / "ortho8.npy"),
                               atol=1e-5)


def test_ply_header_stays_ascii_with_a_non_ascii_intrinsics_source(tmp_path):
    folder = tmp_path / "Küche"
    folder.mkdir()
    (folder / "intrinsics.csv").write_text("name,fx,fy,cx,cy\nf,2,2,1,1\n")
    d = np.full((3, 3), 2.0, np.float32)
    write_outputs(_pred(d, "metric", source=str(folder / "f.png")), None, tmp_path, "f", ["ply"])
    raw = (tmp_path / "f.ply").read_bytes()
    header = raw[: raw.index(b"end_header")].decode("ascii")
    assert "K\\xfcche" in header and len(read_ply(tmp_path / "f.ply")[0]) == 9
