"""The web app (FastAPI TestClient) serving FastDepth with its bundled real weights."""
from __future__ import annotations

import base64
import io
import re

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


@pytest.mark.parametrize("content, fname, params, status, message", [
    (None, "truncated.png", {}, 400, r"^truncated\.png: cannot decode image \("),
    (b"", "empty.png", {}, 400, r"^empty\.png: empty upload$"),
    (b"not an image at all", "notes.txt", {}, 400, r"^notes\.txt: cannot decode image \(not a recognised image format\)$"),
    (b"x", "a.png", {"format": "las"}, 400, r"^unknown format 'las'; choose json, npy, png16$"),
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
