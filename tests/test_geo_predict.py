"""Sliding-window raster prediction (depthlab.geo_predict): seams, COG output, GSD, resuming, CLI, Ray."""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from depthlab.geo import window_starts
from depthlab.geo_predict import (RasterOptions, TileGrid, blend_weights, build_predictor, heap_trimmer, predict_raster,
                                   predict_rasters)
from depthlab.models.registry import WeightsInfo

rasterio = pytest.importorskip("rasterio")
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # affine `*` inside rasterio


class MeanConv(nn.Module):
    """Translation-equivariant toy: a 3x3 mean over the three bands, zero padding (a 1-pixel border effect)."""

    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, gain / 27)

    def forward(self, x):
        return {"depth": self.conv(x)}


def toy(gsd=None, model=None):
    m = model or MeanConv()
    m.depth_info = WeightsInfo(output_kind="metric", multiple_of=1, mean=(0, 0, 0), std=(1, 1, 1), gsd=gsd)
    return m


def write_rgb(path, arr, gsd=0.1, nodata=None):
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs="EPSG:25832", nodata=nodata,
                       transform=Affine(gsd, 0, 350000, 0, -gsd, 5600000)) as d:
        d.write(arr)
    return path


def gradient(h, w):
    """A constant-gradient uint16 image (3 equal bands)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(100 * xx + 50 * yy).astype(np.uint16)] * 3)


def read(path):
    with rasterio.open(path) as r:
        return r.read(1)


def test_window_starts_and_grid_by_hand():
    assert window_starts(300, 64, 48) == [0, 48, 96, 144, 192, 236]  # last shifted back to end at 300
    assert window_starts(240, 64, 48) == [0, 48, 96, 144, 176]
    assert window_starts(50, 64, 48) == [0]
    g = TileGrid.plan(50, 300, (64, 64), 0.25)
    assert (g.tile_h, g.tile_w, g.overlap_h, g.overlap_w) == (50, 64, 12, 16) and g.rows == (0,) and g.n_tiles == 6


def test_blend_weights_zero_at_inner_borders_one_at_raster_edges():
    w = blend_weights(12, 12, 4, 4)
    assert w[0].max() == 0 and w[:, 0].max() == 0 and w[-1].max() == 0 and w[:, -1].max() == 0
    np.testing.assert_allclose(w[4:8, 4:8], 1.0)
    np.testing.assert_allclose(w[:, 1], np.sin(np.pi / 8) ** 2 * w[:, 5], rtol=1e-6)  # sin^2(pi/2 * 1/4)
    np.testing.assert_allclose(w[:, 2], 0.5 * w[:, 5], rtol=1e-6)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    top_left = blend_weights(8, 8, 4, 4, (True, False, True, False))
    assert top_left[0, 0] == 1 and top_left[-1, -1] == 0
    np.testing.assert_array_equal(blend_weights(8, 8, 1, 1), 1.0)  # overlap < 2 px: plain averaging


def test_heap_trimmer_is_glibc_malloc_trim_on_linux():
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's; elsewhere the trimmer is a no-op")
    trim = heap_trimmer()
    assert trim.func.__name__ == "malloc_trim" and trim.args == (0,)  # the real one, not the no-op
    assert trim() in (0, 1)  # glibc: 1 when it released memory, 0 when there was none
    assert heap_trimmer() is trim  # looked up once


def test_the_heap_is_trimmed_after_every_batch(tmp_path, monkeypatch):
    import depthlab.geo_predict as gp

    calls = []
    monkeypatch.setattr(gp, "heap_trimmer", lambda: lambda: calls.append(1))
    src = write_rgb(tmp_path / "t.tif", np.full((3, 100, 130), 90, np.uint8))
    summary = predict_raster(build_predictor(toy(), batch_size=2), src, tmp_path / "out.tif", RasterOptions(tile=64))
    assert summary["tiles"] == 6 and len(calls) == 4  # 2 tile rows of 3 tiles: batches of 2 and 1 per row


@pytest.mark.parametrize("width", [64 + 48 * 4, 64 + 48 * 5, 64 + 48 * 6, 64 + 48 * 7])  # 5..8 tiles a row
def test_network_sees_the_batch_size_and_1_whatever_the_width(tmp_path, width):
    """ONNX Runtime keeps one session and memory arena per input shape: a width-dependent remainder batch made
    peak memory grow with the raster's width (#13), so remainders run through the batch-1 session."""
    pytest.importorskip("onnxruntime")
    src = write_rgb(tmp_path / "w.tif", gradient(100, width))
    p = build_predictor(toy(), batch_size=4, backend="onnx")
    predict_raster(p, src, tmp_path / "o.tif", RasterOptions(tile=64, overlap=0.25))
    sizes = {shape[0] for shape in p.network.onnx_backend.reports}
    cols = len(window_starts(width, 64, 48))
    assert sizes == ({4} if cols % 4 == 0 else {4, 1})


def test_gradient_has_no_seam_and_equals_the_whole_raster_prediction(tmp_path):
    arr = gradient(288, 320)
    src = write_rgb(tmp_path / "in" / "g.tif", arr)
    p = build_predictor(toy(), batch_size=4)
    whole = p.predict_tensor(torch.from_numpy(arr.astype(np.float32) / 65535)[None])[0, 0].numpy()
    predict_raster(p, src, tmp_path / "blend.tif", RasterOptions(tile=64, overlap=0.25))
    predict_raster(p, src, tmp_path / "naive.tif", RasterOptions(tile=64, overlap=0.0))
    blend, naive = read(tmp_path / "blend.tif"), read(tmp_path / "naive.tif")
    step = 100 / 65535 * 1.0  # the gradient's step along x (mean of 3 equal bands = the band)
    # no step anywhere inside: the second difference of a linear ramp is 0 (raster edge rows/cols excluded)
    inner = blend[1:-1, 1:-1]
    assert np.abs(np.diff(inner, 2, axis=1)).max() < 1e-3 * step
    assert np.abs(np.diff(inner, 2, axis=0)).max() < 1e-3 * step
    np.testing.assert_allclose(blend, whole, rtol=0, atol=1e-6)
    # without overlap the zero padding at every tile border shows as a step
    assert np.abs(np.diff(naive[1:-1, 1:-1], 2, axis=1)).max() > 10 * step


def test_output_is_a_cog_with_source_grid_nodata_unit_and_tags(tmp_path):
    arr = np.full((3, 600, 700), 200, np.uint8)
    arr[:, :50, :60] = 0  # nodata corner
    src = write_rgb(tmp_path / "o.tif", arr, nodata=0)
    p = build_predictor(toy(), batch_size=8)
    predict_raster(p, src, tmp_path / "out.tif", RasterOptions(tile=128))
    with rasterio.open(tmp_path / "out.tif") as r, rasterio.open(src) as s:
        assert r.crs == s.crs and r.transform == s.transform and (r.width, r.height) == (700, 600)
        assert r.dtypes[0] == "float32" and np.isnan(r.nodata) and r.units == ("m",)
        assert r.descriptions == ("depth (m)",) and r.tags()["model"] == "MeanConv"
        # the tags of every depthlab GeoTIFF (--formats tiff writes the same), on the file and on band 1
        assert {k: r.tags(1)[k] for k in ("kind", "unit", "model")} == {"kind": "metric", "unit": "m",
                                                                         "model": "MeanConv"}
        assert r.tags()["software"].startswith("depthlab ") and r.tags()["tile"] == "128x128"
        assert r.profile["tiled"] and r.profile["compress"] == "deflate" and r.overviews(1) == [2]
        d = r.read(1)
    assert np.isnan(d[:50, :60]).all() and np.isfinite(d[50:, 60:]).all()
    np.testing.assert_allclose(d[100:-1, 100:-1], 200 / 255, rtol=1e-6)  # 3x3 mean of a constant
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    valid, errors, _ = cogeo.cog_validate(str(tmp_path / "out.tif"))
    assert valid, errors


def test_cog_bytes_do_not_depend_on_the_compression_threads(tmp_path, monkeypatch):
    import depthlab.geo_predict as gp

    src = write_rgb(tmp_path / "g.tif", gradient(700, 900))
    p = build_predictor(toy(), batch_size=4)
    outs = []
    for n in (1, 3):
        monkeypatch.setattr(gp, "_threads", lambda n=n: n)
        outs.append(predict_raster(p, src, tmp_path / f"t{n}.tif", RasterOptions(tile=128))["output"])
    assert Path(outs[0]).read_bytes() == Path(outs[1]).read_bytes()


def test_gsd_resampled_to_the_model_with_a_warning_unless_told_otherwise(tmp_path):
    src = write_rgb(tmp_path / "fine.tif", np.full((3, 200, 240), 100, np.uint8), gsd=0.1)
    p = build_predictor(toy(gsd=0.2), batch_size=8)
    with pytest.warns(UserWarning, match=r"0\.1 m resampled to the model's 0\.2 m"):
        r = predict_raster(p, src, tmp_path / "a.tif", RasterOptions(tile=64))
    assert r["resampled"] and r["tiles"] == 6  # 100 x 120 px at 0.2 m: rows at 0, 36; cols at 0, 48, 56
    with rasterio.open(tmp_path / "a.tif") as o:
        assert (o.width, o.height) == (240, 200) and o.transform.a == pytest.approx(0.1)
        assert o.tags()["resampled"] == "True" and o.tags()["model_gsd"] == "0.2"
        np.testing.assert_allclose(o.read(1)[20:-20, 20:-20], 100 / 255, rtol=1e-5)
    with pytest.warns(UserWarning, match="resample=False"):
        r = predict_raster(p, src, tmp_path / "b.tif", RasterOptions(tile=64, resample=False))
    assert not r["resampled"] and r["tiles"] == 20


class FailOn(MeanConv):
    """Raises on its ``n``-th forward pass (an interrupted run)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise OSError("interrupted")
        return super().forward(x)


def test_a_run_into_the_input_folder_does_not_take_its_outputs_for_inputs(tmp_path):
    write_rgb(tmp_path / "a.tif", np.full((3, 100, 130), 90, np.uint8))
    first = predict_rasters(tmp_path, tmp_path, predictor=build_predictor(toy()), options=RasterOptions(tile=64))
    assert first.written == [str(tmp_path / "a.tif")] and (tmp_path / "a_depth.tif").is_file()
    again = predict_rasters(tmp_path, tmp_path, predictor=build_predictor(toy()), options=RasterOptions(tile=64))
    assert (again.written, again.skipped, again.failures) == ([], [str(tmp_path / "a.tif")], {})


def test_folder_run_is_resumable_and_never_leaves_a_half_written_raster(tmp_path):
    for i in range(3):
        write_rgb(tmp_path / "in" / f"r{i}.tif", np.full((3, 100, 130), 50 * (i + 1), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    stale, live = out / ".r1_depth.tif.k1lled00.tmp", out / ".r1_depth.tif.wr1t1ng0.tmp"  # as atomic_path names
    stale.write_bytes(b"left by a killed run")
    live.write_bytes(b"another process is writing this")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    # one tile per batch, 6 tiles per raster: the 9th pass is in the middle of r1
    rep = predict_rasters(tmp_path / "in", out, predictor=build_predictor(toy(model=FailOn(9)), batch_size=1),
                          options=RasterOptions(tile=64))
    assert rep.written == [str(tmp_path / "in" / "r0.tif"), str(tmp_path / "in" / "r2.tif")]
    assert list(rep.failures) == [str(tmp_path / "in" / "r1.tif")] and "interrupted" in rep.failures[str(tmp_path / "in" / "r1.tif")]
    # no partial output, no stale file; a live writer's temp file is left alone
    assert sorted(p.name for p in out.iterdir()) == [live.name, "r0_depth.tif", "r2_depth.tif"]
    live.unlink()
    before = (out / "r0_depth.tif").stat().st_mtime_ns
    rep = predict_rasters(tmp_path / "in", out, predictor=build_predictor(toy(), batch_size=4),
                          options=RasterOptions(tile=64), progress=True)
    assert rep.written == [str(tmp_path / "in" / "r1.tif")] and len(rep.skipped) == 2 and not rep.failures
    assert (out / "r0_depth.tif").stat().st_mtime_ns == before
    np.testing.assert_allclose(read(out / "r1_depth.tif")[2:-2, 2:-2], 100 / 255, rtol=1e-6)


@pytest.fixture
def toy_name():
    from depthlab.models import registry

    name = "_test_geo_meanconv"
    registry.register_model(WeightsInfo(output_kind="metric", multiple_of=1, mean=(0, 0, 0), std=(1, 1, 1)),
                            name=name)(lambda: MeanConv())
    yield name
    registry._REGISTRY.pop(name, None)


def test_cli_sends_georeferenced_geotiffs_to_the_tiled_path(tmp_path, toy_name):
    from PIL import Image
    from typer.testing import CliRunner

    from depthlab.cli import app

    write_rgb(tmp_path / "in" / "ortho.tif", np.full((3, 90, 110), 120, np.uint8))
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(tmp_path / "in" / "photo.png")
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "--model", toy_name, "--no-pretrained",
                                   "--out", str(tmp_path / "out"), "--formats", "npy", "--tile-size", "64"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ortho_depth.tif", "photo.npy",
                                                                     "predictions.json"]
    with rasterio.open(tmp_path / "out" / "ortho_depth.tif") as r:
        assert r.tags()["tile"] == "64x64" and r.crs.to_epsg() == 25832
        assert r.tags()["backend"] == "eager"  # the suite's default (tests/conftest.py)
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "--model", toy_name, "--no-pretrained", "--out",
                                   str(tmp_path / "out"), "--formats", "npy"])
    assert res.exit_code == 0 and "1 raster(s) skipped" in res.output
    if importlib.util.find_spec("onnxruntime"):  # --backend reaches the tiled path too, and the COG records it
        res = CliRunner().invoke(app, ["predict", str(tmp_path / "in" / "ortho.tif"), "--model", toy_name,
                                       "--no-pretrained", "--out", str(tmp_path / "onnx"), "--backend", "onnx"])
        assert res.exit_code == 0, res.output
        with rasterio.open(tmp_path / "onnx" / "ortho_depth.tif") as r:
            assert r.tags()["backend"] == "onnx"


@pytest.mark.slow
def test_ray_local_cluster_matches_serial_bit_for_bit_and_retries_a_killed_task(tmp_path):
    """6 rasters on ray.init(num_cpus=2); one worker is killed (SIGKILL) in the middle of a raster, Ray
    restarts it and retries the task: every output file is byte-identical to the serial run's."""
    ray = pytest.importorskip("ray")
    import sys

    from ray import cloudpickle

    from depthlab.geo_predict import predict_rasters_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module

    marker = tmp_path / "killed"

    class KillOnce(MeanConv):
        def __init__(self, kill: bool):
            super().__init__()
            self.calls, self.kill = 0, kill

        def forward(self, x):
            self.calls += 1
            if self.kill and self.calls == 3 and not marker.exists():
                marker.write_text("x")
                os.kill(os.getpid(), 9)
            return {"depth": super().forward(x)["depth"] ** 2}

    rng = np.random.default_rng(0)
    for i in range(6):
        write_rgb(tmp_path / "in" / f"r{i}.tif", rng.integers(0, 255, (3, 130, 150), dtype=np.uint8))
    serial = predict_rasters(tmp_path / "in", tmp_path / "serial", toy(model=KillOnce(False)), batch_size=2,
                             options=RasterOptions(tile=64))
    assert len(serial.written) == 6
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rep = predict_rasters_ray(tmp_path / "in", tmp_path / "ray", toy(model=KillOnce(True)), batch_size=2,
                                  options=RasterOptions(tile=64), workers=2)
    finally:
        ray.shutdown()
    assert marker.exists(), "no worker was killed"
    assert len(rep.written) == 6 and not rep.failures
    for i in range(6):
        a, b = tmp_path / "serial" / f"r{i}_depth.tif", tmp_path / "ray" / f"r{i}_depth.tif"
        assert a.read_bytes() != b"" and a.read_bytes() == b.read_bytes()
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]


def test_mosaic_vrt_of_neighbouring_predictions_reads_back_both(tmp_path):
    from affine import Affine

    from depthlab.errors import DataError
    from depthlab.geo import write_geotiff, Georef
    from depthlab.geo_predict import write_mosaic_vrt
    from rasterio.crs import CRS

    crs = CRS.from_epsg(25832)
    a, b = np.full((4, 5), 1.0, np.float32), np.full((4, 3), 2.0, np.float32)
    b[0, 0] = np.nan
    write_geotiff(tmp_path / "a.tif", a, Georef(crs, Affine(0.5, 0, 100, 0, -0.5, 200), 5, 4))
    write_geotiff(tmp_path / "b.tif", b, Georef(crs, Affine(0.5, 0, 102.5, 0, -0.5, 201), 3, 4))  # right, 2 rows up
    write_mosaic_vrt([tmp_path / "a.tif", tmp_path / "b.tif"], tmp_path / "m.vrt")
    with rasterio.open(tmp_path / "m.vrt") as m:
        assert (m.width, m.height) == (8, 6) and m.transform == Affine(0.5, 0, 100, 0, -0.5, 201) and m.crs == crs
        d = m.read(1)
    np.testing.assert_array_equal(d[2:, :5], a)
    np.testing.assert_array_equal(d[:4, 5:], b)
    assert np.isnan(d[:2, :5]).all() and np.isnan(d[4:, 5:]).all()
    write_geotiff(tmp_path / "c.tif", b, Georef(crs, Affine(0.5, 0, 102.3, 0, -0.5, 201), 3, 4))  # off-grid
    with pytest.raises(DataError, match="c.tif: not on the grid of"):
        write_mosaic_vrt([tmp_path / "a.tif", tmp_path / "c.tif"], tmp_path / "bad.vrt")


def test_aerial_dataset_reports_its_gsd(tmp_path):
    from depthlab.data import create_dataset
    from depthlab.geo import Georef, write_geotiff
    from affine import Affine
    from rasterio.crs import CRS

    write_rgb(tmp_path / "rgb" / "t.tif", np.zeros((3, 32, 32), np.uint8), gsd=0.25)
    (tmp_path / "height").mkdir()
    write_geotiff(tmp_path / "height" / "t.tif", np.ones((32, 32), np.float32),
                  Georef(CRS.from_epsg(25832), Affine(0.25, 0, 350000, 0, -0.25, 5600000), 32, 32))
    assert create_dataset("aerial", root=tmp_path, split="train").gsd == pytest.approx(0.25)
