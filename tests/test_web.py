"""The web app (FastAPI TestClient) serving FastDepth with its bundled real weights."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")  # fastapi.testclient needs it ([web] extra)
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def client():
    from depthlab.web import create_app

    return TestClient(create_app(model="fastdepth"))


@pytest.fixture(scope="module")
def sample(shared_data):
    return shared_data / "nyu" / "rgb" / "fastdepth_sample.png"


@pytest.fixture(scope="module")
def reference(sample):
    from depthlab import Predictor

    return Predictor("fastdepth")(sample).depth


def _post(client, path, name="img.png", **params):
    with open(path, "rb") as f:
        return client.post("/api/predict", params=params, files={"file": (name, f, "image/png")})


def test_npy_format_equals_the_predictor(client, sample, reference):
    r = _post(client, sample, format="npy")
    assert r.status_code == 200 and r.headers["x-depth-kind"] == "metric"
    assert 'filename="img.npy"' in r.headers["content-disposition"]
    depth = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert depth.dtype == np.float32 and depth.shape == (224, 224)
    np.testing.assert_array_equal(depth, reference)


def test_json_has_stats_and_decodable_pngs(client, sample, reference):
    r = _post(client, sample, colormap="magma")
    assert r.status_code == 200
    j = r.json()
    assert j["model"] == "fastdepth" and j["kind"] == "metric" and j["unit"] == "m" and j["shape"] == [224, 224]
    assert j["min"] == pytest.approx(float(reference.min())) and j["max"] == pytest.approx(float(reference.max()))
    assert j["colormap"] == "magma" and j["png16"]["png16_scale"] == 0.001
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(j["rgb_png"]))))
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(sample).convert("RGB")))
    col = Image.open(io.BytesIO(base64.b64decode(j["depth_png"])))
    assert col.size == (224, 224) and col.mode == "RGB"


def test_png16_format_is_millimetres(client, sample, reference):
    r = _post(client, sample, format="png16")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    v = np.asarray(Image.open(io.BytesIO(r.content)))
    assert v.dtype == np.uint16
    np.testing.assert_allclose(v * 0.001, reference, atol=0.0005 + 1e-6)
    assert r.headers["x-png16-scale"] == "0.001"
    text = Image.open(io.BytesIO(r.content)).text  # the download describes itself, as predict's png16 does
    assert (text["kind"], text["unit"], text["scale"], text["invalid"]) == ("metric", "m", "0.001", "0")


@pytest.mark.parametrize("content, fname, params, status, message", [
    (None, "truncated.png", {}, 400, r"^truncated\.png: cannot decode image \("),
    (b"", "empty.png", {}, 400, r"^empty\.png: empty upload$"),
    (b"not an image at all", "notes.txt", {}, 400, r"^notes\.txt: cannot decode image \(not a recognised image format\)$"),
    (b"x", "a.png", {"format": "las"}, 400, r"^unknown format 'las'; choose json, npy, png16, ply$"),
    (b"x", "a.png", {"colormap": "nope"}, 400, r"^unknown matplotlib colormap 'nope'"),
])
def test_bad_uploads_give_400_with_one_line(client, sample, content, fname, params, status, message):
    data = sample.read_bytes()[:400] if content is None else content
    r = client.post("/api/predict", params=params, files={"file": (fname, data, "image/png")})
    assert r.status_code == status
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and re.search(message, detail), detail


def test_missing_file_and_size_limit(sample):
    from depthlab.web.app import DepthService, create_app

    r = TestClient(create_app(service=DepthService.build("fastdepth"), max_upload_mb=0.001)).post("/api/predict")
    assert r.status_code == 400 and "multipart field 'file'" in r.json()["detail"]
    small = TestClient(create_app(service=DepthService.build("fastdepth"), max_upload_mb=0.001))
    r = _post(small, sample, name="big.png")
    assert r.status_code == 413 and r.json()["detail"] == "big.png: upload larger than 0.001 MB"


def test_page_models_and_health(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "api/predict" in page and "format" in page and "<select id=\"cmap\">" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: no external assets
    m = client.get("/api/models").json()
    assert m["current"]["name"] == "fastdepth" and m["current"]["kind"] == "metric"
    assert "fastdepth" in m["available"] and "Spectral_r" in m["colormaps"]
    assert client.get("/healthz").json()["status"] == "ok"


def test_serve_command_calls_uvicorn(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from depthlab.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, host, port, log_level: seen.update(app=a, host=host, port=port))
    res = CliRunner().invoke(app, ["serve", "--model", "fastdepth", "--port", "8123"])
    assert res.exit_code == 0, res.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert TestClient(seen["app"]).get("/healthz").json()["model"] == "fastdepth"
    res = CliRunner().invoke(app, ["serve", "--model", "no_such_model"])
    assert res.exit_code == 2 and "unknown" in res.output.lower()


def test_exif_rotated_photo_is_shown_as_it_is_predicted(client, sample):
    """A phone photo with EXIF orientation 6: the RGB preview and the depth map have the same (rotated) shape."""
    img = Image.open(sample).convert("RGB").crop((0, 0, 224, 160))  # 224 wide, 160 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    r = client.post("/api/predict", files={"file": ("phone.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    j = r.json()
    rgb = Image.open(io.BytesIO(base64.b64decode(j["rgb_png"])))
    depth = Image.open(io.BytesIO(base64.b64decode(j["depth_png"])))
    assert j["shape"] == [224, 160] and rgb.size == depth.size == (160, 224)


def test_colormap_change_recolours_without_rerunning_the_model(sample, reference):
    from depthlab.web.app import DepthService, create_app

    svc = DepthService.build("fastdepth")
    svc.cache_size = 1
    c = TestClient(create_app(service=svc))
    first, second = _post(c, sample, colormap="magma").json(), _post(c, sample, colormap="gray").json()
    assert svc.model_runs == 1 and (first["cached"], second["cached"]) == (False, True)
    assert first["depth_png"] != second["depth_png"] and first["png16"] == second["png16"]
    gray = np.asarray(Image.open(io.BytesIO(base64.b64decode(second["depth_png"]))))
    assert (gray[..., 0] == gray[..., 1]).all()  # really re-coloured, with the new map
    # another image evicts the only entry: the first one then runs again
    other = Image.open(sample).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    other.save(buf, format="PNG")
    r = c.post("/api/predict", files={"file": ("flip.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and r.json()["cached"] is False
    assert _post(c, sample, format="npy").status_code == 200 and svc.model_runs == 3
    # a byte budget smaller than one map: nothing is kept, every request runs the model
    tight = DepthService(svc.predictor, cache_mb=0.1)
    c = TestClient(create_app(service=tight))  # FastDepth's 224x224 float32 map is 0.19 MB
    assert not _post(c, sample, colormap="magma").json()["cached"] and not _post(c, sample).json()["cached"]
    assert tight.model_runs == 2


# ------------------------------------------------------------------ what the page shows (bundled samples only)
BUNDLED = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"


def _post_bytes(client, data, name="img.png", **params):
    return client.post("/api/predict", params=params, files={"file": (name, data, "image/png")})


@pytest.fixture(scope="module")
def bundled():
    """(PNG bytes of the bundled 224x224 FastDepth sample, its depth from the Predictor)."""
    from depthlab import Predictor

    path = BUNDLED / "rgb" / "fastdepth_sample.png"
    return path.read_bytes(), Predictor("fastdepth")(path).depth


def test_json_colour_scale_matches_the_colourised_depth(client, bundled):
    data, ref = bundled
    j = _post_bytes(client, data, colormap="viridis").json()
    cs = j["color_scale"]
    lo, hi = np.percentile(ref, (2, 98))  # every FastDepth pixel is valid (> 0)
    assert (cs["kind"], cs["unit"], cs["colormap"], cs["percentiles"]) == ("metric", "m", "viridis", [2, 98])
    assert cs["vmin"] == pytest.approx(lo, rel=1e-6) and cs["vmax"] == pytest.approx(hi, rel=1e-6)
    bar = np.asarray(Image.open(io.BytesIO(base64.b64decode(cs["bar_png"]))))
    color = np.asarray(Image.open(io.BytesIO(base64.b64decode(j["depth_png"]))))
    assert bar.shape == (1, 256, 3)
    # pixels clipped to the scale's ends have the bar's end colours (near = warm: reversed viridis, vmin = yellow)
    assert (color[ref <= lo] == bar[0, 0]).all() and (color[ref >= hi] == bar[0, -1]).all()
    assert bar[0, 0, 0] > 200 and bar[0, -1, 0] < 100
    grid = np.frombuffer(base64.b64decode(j["readout"]["f32"]), dtype="<f4")
    assert j["readout"] == {**j["readout"], "stride": 1, "height": 224, "width": 224}
    np.testing.assert_array_equal(grid.reshape(224, 224), ref)
    assert j["warnings"] == []


def test_readout_grid_strides_large_maps_and_marks_invalid_pixels():
    from depthlab.web.views import readout_grid

    d = np.arange(1300 * 700, dtype=np.float32).reshape(700, 1300)
    valid = np.ones_like(d, dtype=bool)
    valid[0, 0] = False
    g = readout_grid(d, valid)
    assert (g["stride"], g["height"], g["width"]) == (3, 234, 434)  # ceil(1300 / 640) = 3
    vals = np.frombuffer(base64.b64decode(g["f32"]), dtype="<f4").reshape(234, 434)
    assert np.isnan(vals[0, 0]) and vals[1, 2] == d[3, 6] and vals[-1, -1] == d[699, 1299]


def test_colour_scale_without_valid_pixels_has_no_limits():
    from depthlab.web.views import color_scale

    cs = color_scale(np.zeros((4, 4), np.float32), np.zeros((4, 4), bool), "metric", "m", "magma")
    assert (cs["vmin"], cs["vmax"], cs["bar_png"]) == (None, None, None)


def test_ply_format_is_the_cli_point_cloud_and_subsamples_exactly(client, bundled, tmp_path):
    from depthlab.pointcloud import default_intrinsics, depth_to_points, read_ply

    data, ref = bundled
    r = _post_bytes(client, data, name="room.png", format="ply")
    assert r.status_code == 200 and 'filename="room.ply"' in r.headers["content-disposition"]
    (tmp_path / "full.ply").write_bytes(r.content)
    pts, cols, header = read_ply(tmp_path / "full.ply")
    np.testing.assert_array_equal(pts, depth_to_points(ref, default_intrinsics(224, 224)))
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(cols, rgb.reshape(-1, 3))
    assert any("60 deg horizontal FOV guess" in c for c in header["comments"])
    # every 2nd pixel (max side 112): exactly the full cloud's points at those pixels
    (tmp_path / "sub.ply").write_bytes(_post_bytes(client, data, format="ply", max_side=112).content)
    sub, sub_cols, _ = read_ply(tmp_path / "sub.ply")
    np.testing.assert_allclose(sub, pts.reshape(224, 224, 3)[::2, ::2].reshape(-1, 3), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sub_cols, rgb[::2, ::2].reshape(-1, 3))


def test_ply_of_relative_depth_needs_a_scale():
    from types import SimpleNamespace

    from depthlab.web.views import cloud_ply

    pred = SimpleNamespace(depth=np.ones((4, 6), np.float32), kind="relative")
    with pytest.raises(ValueError, match="point clouds need metric depth"):
        cloud_ply(pred, np.zeros((4, 6, 3), np.uint8))
    ply = cloud_ply(pred, np.zeros((4, 6, 3), np.uint8), scale=2.0)
    assert b"element vertex 24\n" in ply


@pytest.mark.parametrize("params, message", [
    ({"format": "ply", "max_side": 0}, "max_side: Input should be greater than or equal to 1"),
    ({"format": "ply", "ply_scale": -1}, "ply_scale: Input should be greater than 0"),
    ({"max_side": "big"}, "max_side: Input should be a valid integer"),
])
def test_bad_query_values_give_400_with_one_line(client, params, message):
    r = _post_bytes(client, b"x", **params)
    assert r.status_code == 400 and r.json()["detail"].startswith(message), r.text


def test_single_channel_16_bit_upload_is_flagged_as_a_depth_map(client, tmp_path):
    from depthlab.pointcloud import read_ply

    data = (BUNDLED / "depth" / "fastdepth_sample.png").read_bytes()
    r = _post_bytes(client, data, name="d.png")
    assert r.status_code == 200
    assert r.json()["warnings"] == ["d.png: single-channel 16-bit image -- this looks like a depth map, not a "
                                    "photo; the prediction treats it as a grey photo"]
    (tmp_path / "d.ply").write_bytes(_post_bytes(client, data, format="ply").content)
    _, cols, _ = read_ply(tmp_path / "d.ply")  # grey colours from the 16-bit values (float [0, 1] -> uint8)
    grey = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    expected = (grey / 65535 * 255 + 0.5).astype(np.uint8).reshape(-1)
    assert (cols[:, 0] == cols[:, 2]).all() and np.abs(cols[:, 0].astype(int) - expected).max() <= 1


def test_samples_static_files_and_no_cdn_docs(client):
    names = client.get("/api/samples").json()["samples"]
    assert names == sorted(p.name for p in (BUNDLED / "rgb").glob("*.png")) and "metric3d_00000.png" in names
    r = client.get("/api/samples/metric3d_00000.png")
    assert r.status_code == 200 and r.content == (BUNDLED / "rgb" / "metric3d_00000.png").read_bytes()
    assert client.get("/api/samples/nope.png").status_code == 404
    assert client.get("/api/samples/..%2Findex.csv").status_code == 404
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "depthlab"
    viewer = client.get("/static/viewer.js")
    assert viewer.status_code == 200 and "javascript" in viewer.headers["content-type"]
    assert 'from "./three.subset.min.js"' in viewer.text and "./static/viewer.js" in client.get("/").text
    three = client.get("/static/three.subset.min.js")
    assert three.status_code == 200 and 'Ba="187"' in three.text[:400] and len(three.content) < 600_000
    assert "MIT License" in client.get("/static/LICENSE.three").text
    for text in (viewer.text, three.text, client.get("/").text):
        assert not re.search(r"""(import|src=|href=)\s*["'](https?:)?//""", text)  # no CDN anywhere


def test_serve_input_size_and_upload_limit(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from depthlab.cli import app

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda a, host, port, log_level: seen.update(app=a))
    res = CliRunner().invoke(app, ["serve", "--input-size", "160", "--max-upload-mb", "0.001"])
    assert res.exit_code == 0, res.output
    assert seen["app"].state.service.predictor.input_size == 160
    r = _post_bytes(TestClient(seen["app"]), (BUNDLED / "rgb" / "fastdepth_sample.png").read_bytes(), name="b.png")
    assert r.status_code == 413 and r.json()["detail"] == "b.png: upload larger than 0.001 MB"
    res = CliRunner().invoke(app, ["serve", "--max-upload-mb", "0"])
    assert res.exit_code == 2 and "max_upload_mb must be > 0" in res.output
    res = CliRunner().invoke(app, ["serve", "--input-size", "0"])
    assert res.exit_code == 2 and "--input-size" in res.output


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("exc, status, detail", [
    # a user error the model raises (a DepthlabError): 400, one line naming the upload
    ("input", 400, "tiny.png: float images must be in [0,1]"),
    # a bug: 500 naming only the exception type; the exception itself goes on to the server (its log)
    ("bug", 500, "internal error (ZeroDivisionError); the traceback is in the server log"),
])
def test_user_errors_are_400_and_bugs_are_500(exc, status, detail):
    from depthlab.errors import InputError
    from depthlab.web.app import DepthService, create_app

    def predictor(image):
        if exc == "input":
            raise InputError("float images must be in [0,1]")
        return 1 / 0

    app = create_app(service=DepthService(predictor))
    r = TestClient(app, raise_server_exceptions=False).post(
        "/api/predict", files={"file": ("tiny.png", _tiny_png(), "image/png")})
    assert r.status_code == status and r.json()["detail"] == detail, r.text
    if exc == "bug":  # not swallowed: the server (here the test client) still gets the exception and its traceback
        with pytest.raises(ZeroDivisionError):
            TestClient(app).post("/api/predict", files={"file": ("tiny.png", _tiny_png(), "image/png")})
