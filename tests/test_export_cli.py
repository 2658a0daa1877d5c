"""`depthlab export`: bundled FastDepth weights and a depthlab checkpoint to verified ONNX files."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from depthlab.cli import app  # noqa: E402


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_fastdepth_bundled_weights_matches_predictor_on_a_real_image(tmp_path, shared_data):
    from depthlab import Predictor
    from depthlab.io import read_rgb

    out = tmp_path / "fastdepth.onnx"
    res = CliRunner().invoke(app, ["export", "--model", "fastdepth", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = re.search(r"max abs diff ([0-9.e+-]+)", res.output)
    assert m and float(m.group(1)) < 1e-4 and "input 1x3x224x224" in res.output
    side = json.loads((tmp_path / "fastdepth.onnx.json").read_text())
    assert side["model_name"] == "fastdepth" and side["output_kind"] == "metric" and side["multiple_of"] == 32
    assert side["input_shape"] == [1, 3, 224, 224] and side["max_abs_diff"] == pytest.approx(float(m.group(1)), rel=1e-3)
    # the real NYU sample (224x224, FastDepth takes [0,1] RGB without normalisation): ONNX = Predictor, metres
    img = shared_data / "nyu" / "rgb" / "fastdepth_sample.png"
    x = read_rgb(img)[None].numpy()
    got = _session(out).run(None, {"x": x})[0][0, 0]
    ref = Predictor("fastdepth")(img).depth
    assert got.shape == ref.shape == (224, 224)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert 0.3 < float(np.median(ref)) < 10  # plausible indoor metres: the real weights were loaded


def test_export_checkpoint_dynamic_shapes(tmp_path):
    import depthlab
    from depthlab.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = depthlab.create_model("fastdepth", pretrained=False).eval()
    ckpt = save_checkpoint(net, tmp_path / "run.safetensors", config={"note": "test"}, metrics={"abs_rel": 0.5})
    out = tmp_path / "sub" / "run.onnx"
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--out", str(out), "--height", "64",
                                   "--width", "96", "--dynamic"])
    assert res.exit_code == 0, res.output
    assert "dynamic" in res.output and "on 2 input shape(s)" in res.output
    sess = _session(out)
    for shape in [(1, 3, 64, 96), (2, 3, 96, 128)]:  # another batch and size than exported
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = net(x)["depth"].numpy()
        got = sess.run(None, {"x": x.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    assert json.loads((tmp_path / "sub" / "run.onnx.json").read_text())["checkpoint"] == str(ckpt)


@pytest.mark.parametrize("args, message", [
    (["--out", "x.onnx"], "no model: pass --model NAME"),
    (["--model", "fastdepth", "--height", "100", "--out", "x.onnx"], "height 100 must be a positive multiple of 32"),
    (["--checkpoint", "missing.safetensors", "--out", "x.onnx"], "missing.safetensors: checkpoint not found"),
    (["--model", "fastdepht", "--out", "x.onnx"], "fastdepth"),  # unknown name -> close match suggested
])
def test_export_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["export", *args])
    assert res.exit_code == 2
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "x.onnx").exists()
