"""ONNX export verified against PyTorch, and the cached ONNX Runtime backend."""
from __future__ import annotations

import json

import pytest
import torch

import depthlab

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from depthlab.export import onnx as dl_onnx  # noqa: E402

RTOL = 1e-4


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def tiny_dav2():
    pytest.importorskip("transformers")
    from tiny_models import TINY_DAV2

    torch.manual_seed(0)
    return depthlab.create_model("depth_anything_v2_vits", config_overrides=TINY_DAV2).eval()


def test_backend_matches_pytorch_and_second_construction_hits_the_cache(tiny_dav2, tmp_path, monkeypatch):
    shape = (1, 3, 70, 98)
    backend = dl_onnx.OnnxBackend(tiny_dav2, shape, cache_dir=tmp_path)
    assert not backend.from_cache and backend.path.exists()
    meta = json.loads(backend.path.with_suffix(".json").read_text())
    assert meta["model_name"] == "depth_anything_v2_vits" and meta["input_shape"] == list(shape)
    assert meta["rel_diff"] <= RTOL and backend.max_abs_diff == meta["max_abs_diff"]
    assert backend.depth_info == tiny_dav2.depth_info

    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_dav2(x)["depth"]
    out = backend(x)
    assert set(out) == {"depth"} and out["depth"].shape == ref.shape == (1, 1, 70, 98)
    assert rel_diff(out["depth"], ref) < RTOL

    # second construction: same weights and shape -> the cached file, no export
    def no_export(*a, **k):
        raise AssertionError("exported again despite a cached file")

    monkeypatch.setattr(dl_onnx, "export_onnx", no_export)
    again = dl_onnx.OnnxBackend(tiny_dav2, shape, cache_dir=tmp_path)
    assert again.from_cache and again.path == backend.path
    assert torch.equal(again(x)["depth"], out["depth"])
    # other weights -> another cache entry
    changed = depthlab.create_model("depth_anything_v2_vits", config_overrides=tiny_dav2.model_args["config_overrides"])
    assert dl_onnx.weights_hash(changed) != dl_onnx.weights_hash(tiny_dav2)
    with pytest.raises(AssertionError, match="exported again"):
        dl_onnx.OnnxBackend(changed, shape, cache_dir=tmp_path)


def test_backend_as_runner_of_the_adapter_pipeline(tiny_dav2, tmp_path):
    """Preprocess -> ONNX Runtime -> bicubic back: same result as the eager adapter."""
    images = torch.rand(1, 3, 60, 80, generator=torch.Generator().manual_seed(2))
    net_shape = (1, 3, *tiny_dav2.input_size_for(60, 80))
    from depthlab.predictor import Predictor

    got = Predictor(tiny_dav2, backend="onnx", onnx_cache_dir=tmp_path).predict_tensor(images)
    assert rel_diff(got, Predictor(tiny_dav2).predict_tensor(images)) < RTOL
    backend = dl_onnx.OnnxBackend(tiny_dav2, net_shape, cache_dir=tmp_path, strict_shape=True)
    with pytest.raises(ValueError, match="exported for input"):
        backend(torch.randn(1, 3, 70, 70))


def test_fastdepth_dynamic_export_and_lazy_shapes(tmp_path):
    torch.manual_seed(0)
    model = depthlab.create_model("fastdepth").eval()
    report = dl_onnx.export_onnx(model, tmp_path / "fd.onnx", (1, 3, 64, 96), dynamic=True)
    assert report.rel_diff <= RTOL and len(report.verified_shapes) == 2  # a second shape checked too
    assert (tmp_path / "fd.onnx").exists()

    backend = dl_onnx.OnnxBackend(model, (1, 3, 64, 64), cache_dir=tmp_path / "cache")
    x = torch.rand(2, 3, 96, 128)  # not the exported shape: exported (and cached) on first use
    with torch.no_grad():
        ref = model(x)["depth"]
    assert rel_diff(backend(x)["depth"], ref) < RTOL
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2


def test_export_raises_above_tolerance_and_leaves_no_file(tmp_path):
    model = depthlab.create_model("fastdepth").eval()
    target = tmp_path / "never.onnx"
    with pytest.raises(dl_onnx.OnnxExportError, match="max abs diff"):
        dl_onnx.export_onnx(model, target, (1, 3, 64, 64), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Predictor(backend="onnx")


def test_predictor_onnx_backend_matches_torch_and_reuses_the_cache(tiny_dav2, tmp_path, monkeypatch):
    import numpy as np

    from depthlab.predictor import Predictor

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    ref = Predictor(tiny_dav2, backend="eager")(img)
    net = Predictor(tiny_dav2, backend="eager").network_size(60, 80)
    onnx_pred = Predictor(tiny_dav2, backend="onnx", onnx_cache_dir=tmp_path, onnx_input_shape=(1, 3, *net))
    assert onnx_pred.network.onnx_backend is not None and not onnx_pred.network.onnx_backend.from_cache  # exported + verified at build
    files = sorted(tmp_path.glob("*.onnx"))
    assert len(files) == 1 and f"1x3x{net[0]}x{net[1]}" in files[0].name
    got = onnx_pred(img)
    assert got.kind == ref.kind and got.depth.shape == (60, 80)
    assert rel_diff(torch.from_numpy(got.depth), torch.from_numpy(ref.depth)) < RTOL

    def no_export(*a, **k):
        raise AssertionError("exported again despite a cached file")

    monkeypatch.setattr(dl_onnx, "export_onnx", no_export)
    lazy = Predictor(tiny_dav2, backend="onnx", onnx_cache_dir=tmp_path)  # built on first use, from the cache
    assert lazy.network.onnx_backend is None
    again = lazy(img)
    assert lazy.network.onnx_backend.from_cache
    assert np.array_equal(again.depth, got.depth)


def test_predictor_onnx_backend_errors(tmp_path):
    from depthlab.predictor import Predictor

    model = depthlab.create_model("fastdepth")
    with pytest.raises(ValueError, match="backend must be one of auto, eager, onnx"):
        Predictor(model, backend="tensorrt")
    with pytest.raises(ValueError, match="onnx_input_shape needs backend='onnx' or 'auto'"):
        Predictor(model, backend="eager", onnx_input_shape=(1, 3, 64, 64))
    pytest.importorskip("diffusers")
    from tiny_models import TEST_KWARGS

    marigold = depthlab.create_model("marigold_depth", **TEST_KWARGS["marigold_depth"])
    from depthlab.export.onnx import OnnxExportError, export_onnx

    with pytest.raises(OnnxExportError, match="marigold_depth cannot be exported to ONNX"):
        Predictor(marigold, backend="onnx").predict_tensor(torch.rand(1, 3, 32, 32))
    with pytest.raises(OnnxExportError, match="marigold_depth cannot be exported to ONNX"):  # nothing written
        export_onnx(marigold, tmp_path / "m.onnx", (1, 3, 32, 32))
    assert not (tmp_path / "m.onnx").exists()


class Unexportable(torch.nn.Module):
    """cummax has no ONNX symbolic at opset 17: both exporters fail (TorchScript dumps the IR graph on failure)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return {"depth": torch.cummax(self.conv(x), dim=-1)[0]}


def test_a_failing_export_prints_nothing_and_the_error_says_why(tmp_path, capfd):
    """Without quiet_exporter the two exporters print about 20 lines here (the IR graph, conversion steps)."""
    with pytest.raises(dl_onnx.OnnxExportError, match="cummax"):
        dl_onnx.export_onnx(Unexportable().eval(), tmp_path / "u.onnx", (1, 3, 16, 16))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "") and not (tmp_path / "u.onnx").exists()


def test_quiet_exporter_nests_and_passes_errors_through(capfd):
    with pytest.raises(RuntimeError, match="inner"):
        with dl_onnx.quiet_exporter():
            with dl_onnx.quiet_exporter():  # re-entrant in one thread (the export lock is an RLock)
                print("hidden")
                raise RuntimeError("inner")
    print("shown")
    out = capfd.readouterr().out
    assert "shown" in out and "hidden" not in out


def test_quiet_exporter_silences_both_descriptors_and_loggers_then_restores_them(capfd, caplog):
    import logging
    import os

    level = logging.getLogger("onnxscript").level
    with caplog.at_level(logging.WARNING), dl_onnx.quiet_exporter():
        os.write(2, b"C++ log line\n")
        os.write(1, b"C stdout line\n")
        print("python print")
        logging.getLogger("onnxscript.version_converter").warning("conversion failed")
    print("after")
    os.write(2, b"err after\n")
    assert capfd.readouterr() == ("after\n", "err after\n")
    assert "conversion failed" not in caplog.text and logging.getLogger("onnxscript").level == level


def test_cache_keeps_under_its_cap_evicting_the_least_recently_used(tmp_path, monkeypatch):
    """Exports are keyed by weights: without a cap, training runs and random-weight models fill the disk."""
    import os
    import time

    class Conv(torch.nn.Module):
        def __init__(self, seed):
            super().__init__()
            torch.manual_seed(seed)
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return {"depth": self.conv(x)}

    first = dl_onnx.OnnxBackend(Conv(0), (1, 3, 16, 16), cache_dir=tmp_path)
    second = dl_onnx.OnnxBackend(Conv(1), (1, 3, 16, 16), cache_dir=tmp_path)
    size = first.path.stat().st_size + first.path.with_suffix(".json").stat().st_size
    assert first.path.exists() and second.path.exists()  # default cap: 4 GB
    now = time.time()
    os.utime(first.path, (now - 100, now - 100))
    os.utime(second.path, (now - 200, now - 200))  # second is the older...
    assert dl_onnx.OnnxBackend(Conv(1), (1, 3, 16, 16), cache_dir=tmp_path).from_cache  # ...until used again
    monkeypatch.setenv("DEPTHLAB_ONNX_CACHE_MB", str(2.5 * size / 2**20))  # room for two exports and a half
    third = dl_onnx.OnnxBackend(Conv(2), (1, 3, 16, 16), cache_dir=tmp_path)  # a new export: evicts one
    assert not first.path.exists() and not first.path.with_suffix(".json").exists()
    assert second.path.exists() and third.path.exists()
    assert dl_onnx.evict_cache(tmp_path, limit=0) == []  # 0 = no cap
    monkeypatch.setenv("DEPTHLAB_ONNX_CACHE_MB", "lots")
    with pytest.raises(ValueError, match=r"\$DEPTHLAB_ONNX_CACHE_MB must be a number of megabytes, got 'lots'"):
        dl_onnx.cache_limit_bytes()
