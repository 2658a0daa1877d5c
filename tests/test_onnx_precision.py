"""ONNX export in fp16 and int8 (ONNX Runtime dynamic / static quantisation calibrated on real frames)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import depthlab

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from depthlab.export import onnx as dl_onnx  # noqa: E402
from depthlab.models.weights import ASSETS_DIR  # noqa: E402

SHAPE = (1, 3, 64, 64)
NYU_FRAMES = sorted(p.name for p in (ASSETS_DIR / "samples" / "nyu" / "rgb").glob("*.png"))


@pytest.fixture(scope="module")
def fastdepth():
    torch.manual_seed(0)
    return depthlab.create_model("fastdepth", pretrained=False).eval()


@pytest.fixture(scope="module")
def exports(fastdepth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("precisions")
    reports = {p: dl_onnx.export_onnx(fastdepth, folder / f"{p}.onnx", SHAPE, precision=p) for p in dl_onnx.PRECISIONS}
    return folder, reports


def graph(path):
    g = onnx.load(str(path)).graph
    return g, Counter(n.op_type for n in g.node), Counter(i.data_type for i in g.initializer)


def test_each_precision_is_what_it_says_and_verified(exports):
    folder, reports = exports
    f32 = onnx.TensorProto.FLOAT
    sizes = {p: (folder / f"{p}.onnx").stat().st_size for p in reports}
    for p, r in reports.items():
        g, _, _ = graph(folder / f"{p}.onnx")
        # callers feed and read float32 whatever the precision inside
        assert g.input[0].type.tensor_type.elem_type == f32 and g.output[0].type.tensor_type.elem_type == f32
        assert r.precision == p and r.tolerance == dl_onnx.TOLERANCES[p] and r.check == dl_onnx.CHECKS[p]
        stat = r.rel_diff if r.check == "max" else r.mean_rel_diff
        assert 0 <= stat <= r.tolerance
        assert r.calibration_frames == ([] if p == "fp32" else NYU_FRAMES)  # checked on the bundled real frames
    _, _, fp16_init = graph(folder / "fp16.onnx")
    assert set(fp16_init) == {onnx.TensorProto.FLOAT16}
    _, static_ops, _ = graph(folder / "int8-static.onnx")
    assert static_ops["QuantizeLinear"] > 0 and static_ops["DequantizeLinear"] > 0
    _, dyn_ops, dyn_init = graph(folder / "int8-dynamic.onnx")
    assert dyn_ops["DynamicQuantizeLinear"] > 0 and onnx.TensorProto.UINT8 in dyn_init
    assert sizes["fp16"] < 0.55 * sizes["fp32"] and sizes["int8-dynamic"] < 0.35 * sizes["fp32"]
    assert sizes["int8-static"] < 0.35 * sizes["fp32"]
    # random weights are not fp16-exact: the fp16 file really rounds (FastDepth's bundled weights are)
    assert reports["fp16"].rel_diff > 1e-6 and reports["int8-static"].rel_diff > reports["fp16"].rel_diff


def test_static_quantisation_follows_the_calibration_frames(fastdepth, exports, tmp_path):
    """Activation ranges come from the calibration images: other frames, other scales."""
    folder, _ = exports
    r = dl_onnx.export_onnx(fastdepth, tmp_path / "kitti.onnx", SHAPE, precision="int8-static",
                            calibration=ASSETS_DIR / "samples" / "kitti" / "rgb")
    assert r.calibration_frames == sorted(p.name for p in (ASSETS_DIR / "samples" / "kitti" / "rgb").glob("*.png"))

    def input_scale(path):
        g = onnx.load(str(path)).graph
        q = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
        init = {i.name: i for i in g.initializer}
        return float(onnx.numpy_helper.to_array(init[q.input[1]]))

    # the scale of the input's quantiser is (max - min) / 255 of the normalised calibration pixels
    names, batches = dl_onnx.calibration_inputs(fastdepth.depth_info, SHAPE)
    lo, hi = min(0.0, min(float(b.min()) for b in batches)), max(float(b.max()) for b in batches)
    assert input_scale(folder / "int8-static.onnx") == pytest.approx((hi - lo) / 255, rel=1e-3)
    assert input_scale(tmp_path / "kitti.onnx") != input_scale(folder / "int8-static.onnx")


def test_calibration_inputs_are_the_predictors_network_inputs(fastdepth):
    """Resized like the Predictor (bilinear, antialiased) and normalised: the same array the Predictor feeds."""
    import torch.nn.functional as F

    from depthlab.io import read_rgb

    names, batches = dl_onnx.calibration_inputs(fastdepth.depth_info, (2, 3, 32, 48))
    assert names == NYU_FRAMES and all(b.shape == (2, 3, 32, 48) for b in batches)
    img = read_rgb(ASSETS_DIR / "samples" / "nyu" / "rgb" / names[1])[None]
    ref = F.interpolate(img, size=(32, 48), mode="bilinear", align_corners=False, antialias=True)  # mean 0, std 1
    assert torch.equal(batches[1][:1], ref) and torch.equal(batches[1][0], batches[1][1])


def test_precision_errors(fastdepth, tmp_path):
    from depthlab.errors import DataError

    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8-dynamic, int8-static, got 'int4'"):
        dl_onnx.export_onnx(fastdepth, tmp_path / "a.onnx", SHAPE, precision="int4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no calibration images"):
        dl_onnx.export_onnx(fastdepth, tmp_path / "b.onnx", SHAPE, precision="int8-static",
                            calibration=tmp_path / "empty")
    with pytest.raises(dl_onnx.OnnxExportError, match=r"mean relative .* mean > tolerance"):  # the int8 gate
        dl_onnx.export_onnx(fastdepth, tmp_path / "c.onnx", SHAPE, precision="int8-dynamic", tolerance=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # nothing half-written, no fp32 leftovers


def test_cli_export_int8_static_with_sidecar(tmp_path):
    from depthlab.cli import app

    out = tmp_path / "fd_int8.onnx"
    res = CliRunner().invoke(app, ["export", "--model", "fastdepth", "--out", str(out), "--height", "64", "--width",
                                   "64", "--precision", "int8-static"])
    assert res.exit_code == 0, res.output
    assert "int8-static" in res.output and f"{len(NYU_FRAMES)} calibration frames" in res.output
    side = json.loads((tmp_path / "fd_int8.onnx.json").read_text())
    assert side["precision"] == "int8-static" and side["check"] == "mean" and side["mean_rel_diff"] <= 0.15
    bad = CliRunner().invoke(app, ["export", "--model", "fastdepth", "--out", str(tmp_path / "x.onnx"),
                                   "--precision", "int4"])
    assert bad.exit_code == 2 and "precision must be one of" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()
    x = np.zeros((1, 3, 64, 64), np.float32)
    assert dl_onnx.ort_session(out).run(None, {"x": x})[0].shape == (1, 1, 64, 64)
