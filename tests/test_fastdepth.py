"""FastDepth (bundled NYU weights): exact module tree, strict loading, reference output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from depthlab import create_model, list_models
from depthlab.io import read_rgb
from depthlab.models.weights import ASSETS_DIR

FD_DIR = ASSETS_DIR / "weights" / "fastdepth_nyu"
REF = FD_DIR / "reference"


@pytest.fixture(scope="module")
def fastdepth():
    return create_model("fastdepth", pretrained=True).eval()


def test_registered_with_declared_metadata():
    assert "fastdepth" in list_models("fast*")
    m = create_model("fastdepth")
    info = m.depth_info
    assert (info.output_kind, info.target_encoding) == ("metric", "depth")
    assert info.input_size == (224, 224) and info.multiple_of == 32
    assert info.mean == (0.0, 0.0, 0.0) and info.std == (1.0, 1.0, 1.0)
    assert (info.min_depth, info.max_depth) == (0.1, 10.0)
    assert info.license.startswith("MIT") and "PROVENANCE" in info.license
    assert "FastDepth" in info.paper and "ICRA 2019" in info.paper
    assert (ASSETS_DIR / info.local_file).exists()


def test_parameter_count_and_keys_match_the_file():
    m = create_model("fastdepth")
    assert sum(p.numel() for p in m.parameters()) == 1_352_225
    state = load_file(str(FD_DIR / "fastdepth_nyu.safetensors"))
    ours = m.state_dict()
    assert set(ours) == set(state) and len(state) == 76
    assert all(ours[k].shape == state[k].shape for k in state)
    with safe_open(str(FD_DIR / "fastdepth_nyu.safetensors"), framework="pt") as f:
        assert int(f.metadata()["num_parameters"]) == 1_352_225


def test_reproduces_reference_prediction(fastdepth):
    x = read_rgb(REF / "rgb.png")[None]
    with torch.inference_mode():
        out = fastdepth(x)
    assert set(out) == {"depth"}
    pred = out["depth"].numpy()
    expected = np.load(REF / "expected_pred.npy")
    assert pred.shape == expected.shape == (1, 1, 224, 224)
    assert np.abs(pred - expected).max() < 1e-4


def test_reference_metrics_against_ground_truth(fastdepth):
    """RMSE / AbsRel / delta1 of the bundled sample (all pixels valid) as published with the weights."""
    from PIL import Image

    gt = np.asarray(Image.open(REF / "depth_mm.png")).astype(np.float64) / 1000.0
    with torch.inference_mode():
        pred = fastdepth(read_rgb(REF / "rgb.png")[None])["depth"][0, 0].double().numpy()
    ref = json.loads((REF / "expected_metrics.json").read_text())["metrics_expected_pred_vs_depth_mm_png"]
    assert ref["n_valid"] == gt.size == int((gt > 0).sum())
    rmse = np.sqrt(np.mean((pred - gt) ** 2))
    absrel = np.mean(np.abs(pred - gt) / gt)
    d1 = np.mean(np.maximum(pred / gt, gt / pred) < 1.25)
    assert rmse == pytest.approx(ref["rmse"], abs=1e-4) and rmse == pytest.approx(0.619, abs=1e-3)
    assert absrel == pytest.approx(ref["abs_rel"], abs=1e-4)
    assert d1 == pytest.approx(ref["delta1"], abs=1e-3)


def test_strict_loading_rejects_a_bn_variant(tmp_path):
    """A state dict with an extra BatchNorm (a common re-implementation mistake) must not load."""
    from safetensors.torch import save_file

    state = load_file(str(FD_DIR / "fastdepth_nyu.safetensors"))
    state["encoder.0.bn.weight"] = torch.ones(16)
    del state["head.bias"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(RuntimeError, match=r"1 missing.*head\.bias.*1 unexpected.*encoder\.0\.bn\.weight"):
        create_model("fastdepth", checkpoint_path=bad)


def test_any_multiple_of_32_and_rejects_others(fastdepth):
    with torch.inference_mode():
        assert fastdepth(torch.rand(2, 3, 96, 160))["depth"].shape == (2, 1, 96, 160)
        with pytest.raises(ValueError, match="multiples of 32"):
            fastdepth(torch.rand(1, 3, 100, 160))


def test_backward_runs():
    m = create_model("fastdepth").train()
    out = m(torch.rand(1, 3, 64, 64))["depth"]
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
