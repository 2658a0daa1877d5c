"""Depth Pro adapter against transformers' DepthProForDepthEstimation, processor and pipeline.

A tiny random Depth Pro (three 2-layer DINOv2s, 128 x 128 processing size) is saved in Hugging Face format to
a temporary folder: nothing is downloaded. Parity: max|a - b| / max|b| < 1e-4, as for the other adapters.
"""
from __future__ import annotations

import math

import pytest
import torch

import depthlab
from depthlab.models.registry import get_weights_info
from depthlab.predictor import Predictor

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from tiny_models import TINY_DEPTH_PRO, offline_hub_load, rel_diff, rgb_uint8  # noqa: E402
from depthlab.models.foundation.depth_pro import (  # noqa: E402
    DepthProModel,
    focal_from_fov,
    fov_from_focal,
    metric_depth,
)

RTOL = 1e-4


def load(folder, **kwargs):
    """The adapter with the folder's weights; ``config=folder`` builds the tiny architecture before loading
    (otherwise the full-size random Depth Pro, about 950M parameters, is built first and then replaced)."""
    return depthlab.create_model("depth_pro", config=folder, checkpoint_path=folder, **kwargs)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny Depth Pro with a plausible head: positive inverse depth (no ReLU zeros) and a FOV near 60 degrees."""
    torch.manual_seed(0)
    model = depthlab.create_model("depth_pro", config_overrides=TINY_DEPTH_PRO).eval()
    hf = model.hf
    with torch.no_grad():
        hf.head.layers[4].weight.abs_().mul_(0.01)  # the 1x1 conv before the final ReLU: >= 0.5 everywhere
        hf.head.layers[4].bias.fill_(0.5)
        fov_out = hf.fov_model.head.layers[-1]
        fov_out.weight.mul_(0.01)
        fov_out.bias.fill_(60.0)
    folder = tmp_path_factory.mktemp("depth_pro") / "hf"
    hf.save_pretrained(folder)
    transformers.DepthProImageProcessor(size={"height": 128, "width": 128}).save_pretrained(folder)
    return folder


def test_registered_metric_with_hub_id_licence_and_size():
    info = get_weights_info("depth_pro")
    assert info.output_kind == "metric" and info.hub_id == "apple/DepthPro-hf"
    assert info.input_size == (1536, 1536) and info.mean == info.std == (0.5, 0.5, 0.5)
    assert "apple-amlr" in info.license and "Apple Sample Code License" in info.license
    assert "Depth Pro" in info.paper


def test_focal_length_and_fov_conversions():
    # a 640 px wide image with fx = 320 px sees 90 degrees; NYU's fx 518.86 px -> about 63.33 degrees
    assert fov_from_focal(320.0, 640) == pytest.approx(90.0)
    assert fov_from_focal(518.8579, 640) == pytest.approx(63.33, abs=0.01)
    assert focal_from_fov(fov_from_focal(518.8579, 640), 640) == pytest.approx(518.8579)
    with pytest.raises(ValueError, match="positive pixels"):
        fov_from_focal(0.0, 640)
    # metric_depth by hand: canonical inverse 0.5 at 90 degrees (W/f = 2) -> inverse 1 -> 1 m; 0 -> 1e4 m
    canon = torch.tensor([[[[0.5, 0.0]]]])
    out = metric_depth(canon, torch.tensor([90.0]))
    assert torch.allclose(out, torch.tensor([[[[1.0, 1e4]]]]))


def test_processor_parity_with_the_predicted_field_of_view(tiny_folder):
    """Predictor on a uint8 image == transformers' processor -> model -> post_process_depth_estimation (the
    steps of ``pipeline("depth-estimation")``, whose construction alone takes longer than this test)."""
    from PIL import Image

    model = load(tiny_folder).eval()
    assert isinstance(model, DepthProModel) and model.fixed_network_size == (128, 128)
    assert model.depth_info.input_size == (128, 128)  # followed the folder's preprocessor_config.json
    img = rgb_uint8(60, 80, seed=3)
    proc = transformers.AutoImageProcessor.from_pretrained(tiny_folder)
    hf = transformers.AutoModelForDepthEstimation.from_pretrained(tiny_folder).eval()
    with torch.no_grad():
        ref = proc.post_process_depth_estimation(hf(**proc(images=Image.fromarray(img), return_tensors="pt")),
                                                 target_sizes=[(60, 80)])[0]
    pred = Predictor(model)(img)
    assert pred.kind == "metric" and pred.depth.shape == (60, 80)
    assert rel_diff(pred.depth, ref["predicted_depth"]) < RTOL
    with torch.no_grad():  # the FOV the adapter used is the head's, the one transformers reports
        fov = model(model.preprocess(torch.from_numpy(img).permute(2, 0, 1)))["fov_deg"]
    assert float(fov) == pytest.approx(float(ref["field_of_view"]), rel=1e-5)
    assert 50 < float(fov) < 70


def test_known_field_of_view_replaces_the_head_and_scales_depth(tiny_folder):
    """Metric depth is canonical inverse depth / (2 tan(fov/2)): a known FOV rescales the whole map."""
    model = load(tiny_folder).eval()
    x = model.preprocess(torch.from_numpy(rgb_uint8(60, 80, seed=4)).permute(2, 0, 1))
    with torch.no_grad():
        raw = model.hf(pixel_values=x)
        head = model(x)
        given = model(x, fov_deg=90.0)
        model.fov_deg = fov_from_focal(320.0, 640)  # the attribute: 90 degrees as well
        attr = model(x)
    canon = raw.predicted_depth.unsqueeze(1)
    assert torch.allclose(given["fov_deg"], torch.tensor([90.0]))
    assert rel_diff(given["depth"], 1.0 / (2.0 * canon)) < RTOL  # tan(45 deg) = 1
    assert torch.equal(attr["depth"], given["depth"])
    expected_ratio = math.tan(math.radians(float(head["fov_deg"])) / 2) / math.tan(math.radians(45.0))
    assert float((head["depth"] / given["depth"]).mean()) == pytest.approx(1 / expected_ratio, rel=1e-4)
    built = load(tiny_folder, fov_deg=90.0).eval()
    with torch.no_grad():
        assert torch.equal(built(x)["depth"], given["depth"])


def test_without_fov_head_the_fov_is_required(tiny_folder):
    model = load(tiny_folder, use_fov_model=False).eval()
    assert model.hf.fov_model is None
    x = torch.randn(1, 3, 128, 128)
    with pytest.raises(ValueError, match="no field-of-view head.*pass fov_deg"), torch.no_grad():
        model(x)
    with torch.no_grad():
        assert model(x, fov_deg=torch.tensor([50.0]))["depth"].shape == (1, 1, 128, 128)


def test_any_input_size_goes_through_the_fixed_network_size(tiny_folder):
    import torch.nn.functional as F

    model = load(tiny_folder, fov_deg=70.0).eval()
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)["depth"]
        net = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
        canon = model.hf(pixel_values=net).predicted_depth.unsqueeze(1)
    ref = metric_depth(canon, torch.tensor([70.0, 70.0]), (48, 80))
    assert out.shape == (2, 1, 48, 80) and torch.equal(out, ref)


def test_offline_error_names_hub_id_and_both_local_ways(monkeypatch):
    msg, seen = offline_hub_load(monkeypatch, "depth_pro", config_overrides=TINY_DEPTH_PRO)
    assert seen["source"] == "apple/DepthPro-hf" and seen["local_files_only"] is True
    assert "\n" not in msg and "apple/DepthPro-hf" in msg and "config.json" in msg
    assert "checkpoint_path=PATH" in msg and "--checkpoint-path PATH" in msg


def test_built_in_architecture_is_the_hub_models_size():
    """The pretrained=False architecture (on the meta device: no memory) has Depth Pro's 952M parameters --
    the 1.9 GB float16 model.safetensors of apple/DepthPro-hf -- and the 1536 x 1536 processing size."""
    with torch.device("meta"):
        model = depthlab.create_model("depth_pro")
    assert sum(p.numel() for p in model.parameters()) == 951_994_402
    assert model.fixed_network_size == (1536, 1536) and model.hf.fov_model is not None
    with torch.device("meta"):
        no_fov = depthlab.create_model("depth_pro", use_fov_model=False)
    assert no_fov.hf.fov_model is None
    assert sum(p.numel() for p in no_fov.parameters()) == 951_994_402 - 304_260_577


@pytest.mark.slow  # the dynamo exporter: about 10 s
def test_exports_to_onnx(tiny_folder, tmp_path):
    pytest.importorskip("onnxruntime")
    from depthlab.export.onnx import export_onnx

    model = load(tiny_folder).eval()
    report = export_onnx(model, tmp_path / "depth_pro.onnx", (1, 3, 128, 128))
    assert report.rel_diff <= 1e-4 and (tmp_path / "depth_pro.onnx").exists()
