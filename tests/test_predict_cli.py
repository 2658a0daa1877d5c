"""`depthlab predict` end to end on the bundled NYU images plus a corrupt file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from depthlab.cli import app

from bundled import SAMPLES

NYU_RGB = SAMPLES / "nyu" / "rgb"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    for p in sorted(NYU_RGB.glob("*.png")):
        shutil.copy(p, src / p.name)
    good = sorted(p.stem for p in src.glob("*.png"))
    (src / "corrupt.png").write_bytes((NYU_RGB / "fastdepth_sample.png").read_bytes()[:300])  # truncated PNG
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(app, ["predict", str(src), "--model", "fastdepth", "--out", str(out),
                                      "--formats", "npy,png16,color,side", "--batch-size", "2"])
    return src, out, good, result


def test_exit_status_and_one_line_failure(run):
    src, out, good, result = run
    assert len(good) == 5
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if "corrupt.png" in line]
    assert len(failed) == 1 and failed[0].startswith("failed") and "cannot decode" in failed[0]
    assert "5 written" in result.output and "1 failed" in result.output


def test_all_outputs_written_and_equal_the_predictor(run):
    from depthlab import Predictor

    src, out, good, _ = run
    predictor = Predictor("fastdepth")
    for stem in good:
        for suffix in (".npy", "_depth16.png", "_color.png", "_side.png"):
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
        depth = np.load(out / f"{stem}.npy")
        expected = predictor(src / f"{stem}.png").depth
        assert depth.dtype == np.float32 and depth.shape == expected.shape
        np.testing.assert_allclose(depth, expected, atol=1e-5)
        png16 = np.asarray(Image.open(out / f"{stem}_depth16.png"))
        assert png16.dtype == np.uint16 and png16.shape == depth.shape
        assert np.abs(png16 * 0.001 - depth).max() <= 0.0005 + 1e-6
        color = np.asarray(Image.open(out / f"{stem}_color.png"))  # the image over its colour bar
        h, w = depth.shape
        assert color.shape[1:] == (w, 3) and color.shape[0] > h and color.dtype == np.uint8
        side = np.asarray(Image.open(out / f"{stem}_side.png"))
        assert side.shape == (color.shape[0], 2 * w, 3)
        np.testing.assert_array_equal(side[:h, :w], np.asarray(Image.open(src / f"{stem}.png")))
        np.testing.assert_array_equal(side[:, w:], color)  # the bar sits under the colour half
        assert (side[h:, :w] == 255).all()
    assert not list(out.glob("corrupt*")) and not list(out.glob(".*tmp"))


def test_color_near_is_warm(run):
    """Metric depth with the default Spectral_r: the nearest pixels are red, the farthest blue."""
    _, out, good, _ = run
    depth = np.load(out / f"{good[0]}.npy")
    color = np.asarray(Image.open(out / f"{good[0]}_color.png")).astype(int)[: depth.shape[0]]
    near, far = depth <= np.percentile(depth, 1), depth >= np.percentile(depth, 99)
    assert color[near][:, 0].mean() > color[near][:, 2].mean() + 50
    assert color[far][:, 2].mean() > color[far][:, 0].mean() + 50


def test_sidecar_lists_units_and_failures(run):
    src, out, good, _ = run
    side = json.loads((out / "predictions.json").read_text())
    assert side["model"] == "fastdepth" and side["output_kind"] == "metric" and side["unit"] == "m"
    assert sorted(side["files"]) == good
    for stem, entry in side["files"].items():
        assert entry["png16_scale"] == 0.001 and entry["png16_unit"] == "mm"
        assert Path(entry["input"]).name == f"{stem}.png"
        assert f"{stem}.npy" in entry["outputs"]
    assert list(side["failures"]) == [str(src / "corrupt.png")]


def test_unknown_model_and_format_fail_cleanly(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    r = CliRunner().invoke(app, ["predict", str(img), "--model", "fastdeph", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "did you mean: fastdepth" in r.output
    r = CliRunner().invoke(app, ["predict", str(img), "--model", "fastdepth", "--formats", "npy,jpg",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "jpg" in r.output
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "none*.png"), "--model", "fastdepth",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no images found" in r.output


def test_relative_outputs_are_min_max_normalised(tmp_path):
    """A relative-depth model: 16-bit PNG holds 1..65535 over the image's range, sidecar has min/max."""
    from tiny_models import ramp_model, write_ramp_png

    from depthlab.predictor import predict_files

    model = ramp_model("relative")
    write_ramp_png(tmp_path / "ramp.png")
    rep = predict_files([tmp_path / "ramp.png"], model=model, out_dir=tmp_path / "o", formats=["npy", "png16"])
    assert rep.n_ok == 1 and not rep.failures
    d = np.load(tmp_path / "o" / "ramp.npy")
    v = np.asarray(Image.open(tmp_path / "o" / "ramp_depth16.png")).astype(np.int64)
    assert v.min() == 1 and v.max() == 65535
    entry = json.loads((tmp_path / "o" / "predictions.json").read_text())["files"]["ramp"]
    back = entry["png16_min"] + (v - 1) / 65534 * (entry["png16_max"] - entry["png16_min"])
    np.testing.assert_allclose(back, d, atol=1e-4)
    assert entry["png16_min"] == pytest.approx(1.0) and entry["png16_max"] == pytest.approx(4.0)


def test_colorize_contract():
    from depthlab.viz import colorize

    d = np.array([[1.0, 2.0], [3.0, np.nan]])
    c = colorize(d, cmap="gray", percentiles=None, invalid_color=(255, 0, 255))
    assert c.dtype == np.uint8 and c.shape == (2, 2, 3)
    assert c[0, 0].tolist() == [0, 0, 0] and c[1, 0].tolist() == [255, 255, 255]
    assert c[1, 1].tolist() == [255, 0, 255] and c[0, 1, 0] in (127, 128)
    masked = colorize(d, cmap="gray", percentiles=None, mask=np.array([[True, False], [True, True]]))
    assert masked[0, 1].tolist() == [0, 0, 0] and masked[1, 0].tolist() == [255, 255, 255]
    fixed = colorize(d, cmap="gray", vmin=0.0, vmax=4.0)
    assert abs(int(fixed[0, 0, 0]) - 64) <= 1 and abs(int(fixed[1, 0, 0]) - 191) <= 1  # 1/4 and 3/4 of the range
    assert colorize(d, cmap="gray", percentiles=None, reverse=True)[0, 0].tolist() == [255, 255, 255]
    robust = colorize(np.r_[np.linspace(0, 1, 99), 1000.0][None], cmap="gray")  # outlier does not wash out
    assert robust[0, 50, 0] > 100
    with pytest.raises(ValueError, match="did you mean: Spectral"):
        colorize(d, cmap="spectral")


def test_color_limits_are_colorize_ends():
    from depthlab.viz import color_limits

    d = np.array([[1.0, 2.0], [3.0, np.nan]])
    assert color_limits(d, percentiles=None) == (1.0, 3.0)
    assert color_limits(d, percentiles=(50, 100)) == (2.0, 3.0)  # of the finite values 1, 2, 3
    assert color_limits(d, percentiles=None, mask=np.array([[False, True], [True, True]])) == (2.0, 3.0)
    assert color_limits(d, vmin=0.5, percentiles=None) == (0.5, 3.0)
    assert color_limits(np.full((2, 2), np.nan)) is None
    assert color_limits(np.full((2, 2), np.nan), vmin=0, vmax=1) == (0.0, 1.0)


def test_cli_ply_with_given_intrinsics(tmp_path):
    """--intrinsics reaches the point cloud: the principal-point pixel back-projects to (0, 0, depth)."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from depthlab.cli import app
    from depthlab.pointcloud import read_ply

    rgb = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu" / "rgb" / "fastdepth_sample.png"
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["predict", str(rgb), "--model", "fastdepth", "--out", str(out), "--formats", "npy,ply",
                                 "--intrinsics", "200,200,112,112"])
    assert r.exit_code == 0, r.output
    entry = json.loads((out / "predictions.json").read_text())["files"]["fastdepth_sample"]
    assert entry["ply_intrinsics"] == {"fx": 200.0, "fy": 200.0, "cx": 112.0, "cy": 112.0}
    assert entry["ply_intrinsics_source"] == "given"
    depth = np.load(out / "fastdepth_sample.npy")
    cloud = read_ply(out / "fastdepth_sample.ply")
    pts = cloud[0]
    centre = pts[np.argmin(np.abs(pts[:, 0]) + np.abs(pts[:, 1]))]
    assert abs(centre[0]) < 1e-6 and abs(centre[1]) < 1e-6 and abs(centre[2] - depth[112, 112]) < 1e-5
    bad = CliRunner().invoke(app, ["predict", str(rgb), "--model", "fastdepth", "--out", str(out), "--formats", "ply",
                                   "--intrinsics", "1,2"])
    assert bad.exit_code == 2 and "fx,fy,cx,cy" in bad.output


def test_ply_for_a_disparity_model_fails_before_writing_anything(tmp_path):
    pytest.importorskip("transformers")
    import depthlab
    from tiny_models import TINY_DAV2
    from depthlab.predictor import predict_files

    img = tmp_path / "room.png"
    Image.fromarray(np.full((28, 42, 3), 128, np.uint8)).save(img)
    tiny = depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2)
    with pytest.raises(ValueError, match=r"predicts disparity values without a metric scale; pass ply_scale \(--ply-scale"):
        predict_files([img], model=tiny, out_dir=tmp_path / "out", formats="npy,png16,ply")
    assert not any((tmp_path / "out").iterdir())
    report = predict_files([img], model=tiny, out_dir=tmp_path / "ok", formats="npy,ply", ply_scale=2.0)
    assert report.n_ok == 1 and sorted(p.name for p in (tmp_path / "ok").iterdir()) == \
        ["predictions.json", "room.npy", "room.ply"]
