"""The default backend (auto): ONNX Runtime when the export verifies, else eager PyTorch (channels_last), recorded."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from depthlab.backends import Network, resolve_backend  # noqa: E402
from depthlab.export import onnx as dl_onnx  # noqa: E402
from depthlab.models.registry import WeightsInfo  # noqa: E402
from depthlab.predictor import Predictor, predict_files  # noqa: E402

RTOL = 1e-4


class TinyNet(nn.Module):
    """Two convolutions -> positive depth: exports in well under a second."""

    def __init__(self, view_in_forward: bool = False):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1)
        self.view_in_forward = view_in_forward
        self.depth_info = WeightsInfo(output_kind="metric", multiple_of=8)
        self.model_name = "tiny_net"

    def forward(self, x):
        h = torch.relu(self.a(x))
        if self.view_in_forward:  # a reshape that needs contiguous memory: fails in channels_last
            h = h.view(h.shape[0], -1).view(h.shape)
        return {"depth": nn.functional.softplus(self.b(h))}


def tiny(seed: int = 0, **kw) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kw).eval()


def image(h: int = 40, w: int = 56) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(1))


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def fail_export(*args, **kwargs):
    raise dl_onnx.OnnxExportError("boom: unsupported operator")


def test_auto_runs_onnx_runtime_when_the_export_verifies(tmp_path):
    model = tiny()
    ref = Predictor(model, backend="eager")(image())
    auto = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    assert auto.backend == "auto" and auto.backend_used is None  # decided on first use
    got = auto(image())
    assert auto.backend_used == "onnx" and len(list(tmp_path.glob("*.onnx"))) == 1
    assert got.depth.shape == (40, 56) and rel(got.depth, ref.depth) < RTOL
    assert Predictor(model, backend="eager").network.backend is None  # nothing ran yet
    again = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    again(image())
    assert again.network.onnx_backend.from_cache  # second Predictor: the cached file, no export


def test_eager_is_forced_and_torch_is_its_old_name(tmp_path):
    p = Predictor(tiny(), backend="eager", onnx_cache_dir=tmp_path)
    p(image())
    assert p.backend_used == "eager" and not list(tmp_path.iterdir())
    assert resolve_backend("torch") == "eager" and resolve_backend(" ONNX ") == "onnx"


def test_default_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("DEPTHLAB_BACKEND", raising=False)
    assert resolve_backend(None) == "auto" and Predictor(tiny()).backend == "auto"
    monkeypatch.setenv("DEPTHLAB_BACKEND", "onnx")
    assert Predictor(tiny()).backend == "onnx"
    assert Predictor(tiny(), backend="eager").backend == "eager"  # an explicit argument wins
    monkeypatch.setenv("DEPTHLAB_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match=r"\$DEPTHLAB_BACKEND must be one of auto, eager, onnx, got 'tensorrt'"):
        Predictor(tiny())


def test_auto_falls_back_to_channels_last_eager_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(dl_onnx, "export_onnx", fail_export)
    model = tiny()
    ref = Predictor(tiny(), backend="eager")(image()).depth
    p = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    with pytest.warns(UserWarning, match=r"tiny_net: ONNX Runtime backend unavailable \(.*boom: unsupported"):
        first = p(image()).depth
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once: no second warning, no second export attempt
        second = p(image()).depth
    assert p.backend_used == "eager-channels_last" and "boom" in p.network.fallback_reason
    assert model.a.weight.is_contiguous(memory_format=torch.channels_last)
    assert rel(first, ref) < RTOL and rel(second, ref) < RTOL
    with warnings.catch_warnings():  # another Predictor on the same module (an experiment's eval, then speed)
        warnings.simplefilter("error")
        again = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
        again(image())
    assert again.backend_used == "eager-channels_last" and "boom" in again.network.fallback_reason
    with pytest.raises(dl_onnx.OnnxExportError, match="boom"):  # asked for explicitly: an error, not a fallback
        Predictor(tiny(), backend="onnx", onnx_cache_dir=tmp_path)(image())


def test_fallback_stays_contiguous_when_channels_last_breaks_the_forward(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(dl_onnx, "export_onnx", fail_export)
    model = tiny(view_in_forward=True)
    p = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    with pytest.warns(UserWarning) as caught, caplog.at_level("INFO", logger="depthlab.backends"):
        got = p(image()).depth
    # the ONNX fallback is warned (the user may want the fast path); the memory-format choice only logged
    assert [str(w.message).split(":")[1].strip()[:20] for w in caught] == ["ONNX Runtime backend"]
    assert "channels_last differs from the contiguous forward" in caplog.text
    assert p.backend_used == "eager" and model.a.weight.is_contiguous()
    assert rel(got, Predictor(tiny(view_in_forward=True), backend="eager")(image()).depth) < RTOL


def test_models_that_cannot_export_stay_eager_without_a_warning(tmp_path):
    model = tiny()
    model.onnx_exportable = False  # as Marigold declares
    p = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p(image())
    assert p.backend_used == "eager-channels_last" and "cannot be exported" in p.network.fallback_reason
    bf16 = Predictor(tiny(), backend="auto", autocast_bf16=True, onnx_cache_dir=tmp_path)
    assert "bf16" in bf16.network.fallback_reason and not list(tmp_path.iterdir())


def test_a_slow_model_is_not_run_twice_to_try_channels_last(tmp_path, monkeypatch, caplog):
    """The check costs a second forward: a model slower than CHANNELS_LAST_CHECK_MAX_S (Marigold) skips it."""
    import logging

    from depthlab import backends

    model, calls = tiny(), []
    model.onnx_exportable = False
    model.register_forward_hook(lambda *a: calls.append(1))
    monkeypatch.setattr(backends, "CHANNELS_LAST_CHECK_MAX_S", 0.0)  # every forward counts as slow
    p = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="depthlab.backends"):
        got = p(image()).depth
    assert len(calls) == 1 and p.backend_used == "eager" and model.a.weight.is_contiguous()
    assert "channels_last not tried" in caplog.text
    assert rel(got, Predictor(tiny(), backend="eager")(image()).depth) < RTOL


def test_changed_weights_are_exported_again(tmp_path):
    model = tiny()
    p = Predictor(model, backend="auto", onnx_cache_dir=tmp_path)
    before = p(image()).depth
    with torch.no_grad():
        model.b.bias.add_(1.0)  # e.g. training continued on the same module
    after = p(image()).depth
    assert p.backend_used == "onnx" and len(list(tmp_path.glob("*.onnx"))) == 2
    assert rel(after, Predictor(model, backend="eager")(image()).depth) < RTOL and rel(after, before) > 0.1


def test_predict_files_and_evaluate_record_the_backend(tmp_path, monkeypatch):
    from PIL import Image

    from depthlab.evaluation.runner import evaluate

    monkeypatch.setenv("DEPTHLAB_CACHE", str(tmp_path / "cache"))
    Image.fromarray((image().permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    for backend, used in (("auto", "onnx"), ("eager", "eager")):
        predict_files([tmp_path / "a.png"], model=tiny(), out_dir=tmp_path / backend, formats=["npy"], backend=backend)
        assert json.loads((tmp_path / backend / "predictions.json").read_text())["backend"] == used
    assert rel(np.load(tmp_path / "auto" / "a.npy"), np.load(tmp_path / "eager" / "a.npy")) < RTOL

    sample = {"image": image(), "depth": torch.full((1, 40, 56), 2.0), "mask": torch.ones(1, 40, 56, dtype=torch.bool),
              "meta": {"name": "s0", "dataset": "list"}}
    res = evaluate(dataset=[sample], model=tiny(), backend="auto")
    assert res["model"]["backend"] == "onnx"
    assert evaluate(dataset=[sample], model=tiny(), backend="eager")["model"]["backend"] == "eager"


def test_measure_latency_reports_the_backend_and_exports_before_timing(tmp_path, monkeypatch):
    from depthlab.evaluation.speed import measure_latency

    monkeypatch.setenv("DEPTHLAB_CACHE", str(tmp_path))
    sp = measure_latency(tiny(), (32, 48), repeats=2, warmup=0, backend="auto")
    assert sp["latency_backend"] == "onnx" and sp["latency_size"] == [32, 48]
    assert measure_latency(tiny(), (32, 48), repeats=2, backend="eager")["latency_backend"] == "eager"


def test_network_on_another_device_never_uses_onnx_runtime():
    net = Network(tiny(), "auto", device="meta")
    assert net.prepare((1, 3, 8, 8)) == "eager" and "device meta" in net.fallback_reason
    with pytest.raises(ValueError, match="backend='onnx' runs on the CPU"):
        Network(tiny(), "onnx", device="meta")


def test_cli_backend_option(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "a.png")
    ok = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "--model", "fastdepth", "--out",
                                  str(tmp_path / "o"), "--formats", "npy", "--backend", "eager"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "o" / "predictions.json").read_text())["backend"] == "eager"
    bad = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "--model", "fastdepth", "--out",
                                   str(tmp_path / "o2"), "--backend", "tensorrt"])
    assert bad.exit_code == 2 and "backend must be one of auto, eager, onnx, got 'tensorrt'" in bad.output


def test_auto_exports_weights_made_under_inference_mode(tmp_path):
    """Inference tensors have no version counter: the weights' fingerprint must not need one (the experiment's
    speed step builds its models under inference_mode and had silently fallen back to eager)."""
    with torch.inference_mode():
        model = tiny()
    net = Network(model, "auto", onnx_cache_dir=tmp_path)
    with torch.inference_mode():
        net(torch.rand(1, 3, 16, 16))
    assert net.backend == "onnx" and net.fallback_reason is None


def test_a_smaller_batch_runs_frame_by_frame_through_one_session(tmp_path):
    """The end of a folder or of a row of raster tiles: remainders of every size share the batch-1 session."""
    model = tiny()
    net = Network(model, "auto", onnx_cache_dir=tmp_path)
    x = torch.rand(4, 3, 16, 16)
    with torch.inference_mode():
        net(x)
        got = net(x[:3])["depth"]
        net(x[:2])
        ref = model(x[:3])["depth"]
    assert sorted(s[0] for s in net.onnx_backend.reports) == [1, 4] and net.backend == "onnx"
    assert got.shape == (3, 1, 16, 16) and rel(got, ref) < RTOL
    net(torch.rand(2, 3, 8, 8))  # another image size has no larger session: its own shape, not split
    assert (2, 3, 8, 8) in net.onnx_backend.reports
