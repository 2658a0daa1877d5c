"""The NYU six-model study (docs/studies/nyu_six_models.md): split, ReLU residual, [0, 1]-scale errors,
brightness-only jitter, the Figure 2 run table, and the offline message for the ImageNet encoders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from depthlab import create_model
from depthlab.data.base import read_index_file, split_file_path
from depthlab.data.nyu import NYUv2Labeled, seeded_split, study_split_indices
from depthlab.experiment import expand_grid, load_spec
from depthlab.metrics import compute_metrics, normalized_errors
from depthlab.models.blocks import UpResidual, up2

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "configs" / "studies" / "nyu_six_models.yaml"


# ------------------------------------------------------------------------------------------- split
def test_shipped_split_is_the_seeded_1111_338_draw():
    train = read_index_file(split_file_path("nyu_labeled_train1111.txt"))
    test = read_index_file(split_file_path("nyu_labeled_test338.txt"))
    assert (len(train), len(test)) == (1111, 338)
    assert not set(train) & set(test) and set(train) | set(test) == set(range(1, 1450))
    assert (train, test) == seeded_split(1449, 338, seed=0)
    assert seeded_split(1449, 338, seed=1) != (train, test)  # the seed matters


def _tiny_mat(path: Path, n: int) -> Path:
    import h5py

    with h5py.File(path, "w") as f:  # MATLAB column-major axes, 2x2 frames
        f["images"] = np.zeros((n, 3, 2, 2), np.uint8)
        f["depths"] = np.ones((n, 2, 2), np.float32)
    return path


def test_reader_uses_the_shipped_lists_for_the_1449_frame_file(tmp_path):
    mat = _tiny_mat(tmp_path / "nyu_depth_v2_labeled.mat", 1449)
    ds = NYUv2Labeled(mat, split="test338")
    assert ds.indices == read_index_file(split_file_path("nyu_labeled_test338.txt")) and len(ds) == 338
    assert len(NYUv2Labeled(mat, split="train1111")) == 1111


def test_smaller_file_gets_the_same_draw_scaled(tmp_path):
    mat = _tiny_mat(tmp_path / "nyu_depth_v2_labeled.mat", 12)
    train, test = NYUv2Labeled(mat, split="train1111").indices, NYUv2Labeled(mat, split="test338").indices
    assert len(test) == round(12 * 338 / 1449) == 3 and len(train) == 9
    assert (train, test) == seeded_split(12, 3, seed=0) and set(train) | set(test) == set(range(1, 13))
    assert study_split_indices("test338", 2) and study_split_indices("train1111", 2)  # never an empty side
    with pytest.raises(ValueError, match="train1111 or test338"):
        NYUv2Labeled(mat, split="test339")


# ------------------------------------------------------------------------------------ ReLU residual
def test_resnete_decoder_residual_is_conv_bilinear_relu():
    torch.manual_seed(0)
    res = UpResidual(4, 3, relu=True)
    x = torch.randn(2, 4, 5, 6)
    y = res(x)
    torch.testing.assert_close(y, torch.relu(up2(res.conv(x))))
    assert (y >= 0).all() and (up2(res.conv(x)) < 0).any()  # the ReLU cut something
    v1 = create_model("resnete_v1")
    residuals = [b.residual for b in v1.blocks if b.residual is not None]
    assert len(residuals) == 3 and all(isinstance(r.relu, nn.ReLU) for r in residuals)
    assert isinstance(create_model("resnete_v2").last_residual.relu, nn.ReLU)
    # DE NoSkip's residual is "a convolutional layer and an upsample layer": no ReLU there
    assert all(b.residual.relu is None for b in create_model("de_noskip").blocks if b.residual is not None)


# ------------------------------------------------------------------------------- [0, 1]-scale errors
def test_normalized_errors_by_hand():
    gt = torch.tensor([[2.0, 4.0], [5.0, 10.0]])
    pred = torch.tensor([[3.0, 4.0], [4.0, 6.0]])
    m = compute_metrics(pred, gt)
    out = normalized_errors(m, max_depth=10.0)
    # |p-g| = 1, 0, 1, 4 -> 1.5 m -> 0.15;  (p-g)^2 = 1, 0, 1, 16 -> 4.5 m^2 -> 0.045
    assert float(out["l1_norm"]) == pytest.approx(0.15) and float(out["mse_norm"]) == pytest.approx(0.045)
    # the same as L1 / MSE computed on the normalised maps
    assert float(out["l1_norm"]) == pytest.approx(float((pred / 10 - gt / 10).abs().mean()))
    assert float(out["mse_norm"]) == pytest.approx(float(((pred / 10 - gt / 10) ** 2).mean()))
    assert normalized_errors({"mae": None, "mse": None}, 10.0) == {"l1_norm": None, "mse_norm": None}
    with pytest.raises(ValueError, match="max_depth"):
        normalized_errors(m, 0.0)


def test_brightness_only_jitter():
    from depthlab.data.transforms import build_transforms

    (t,) = build_transforms([{"color_jitter": {"brightness": [0.8, 1.2], "contrast": None, "saturation": None}}]).transforms
    g = torch.Generator().manual_seed(3)
    t.generator = g
    img = torch.rand(3, 4, 5) * 0.8
    out = t({"image": img, "depth": torch.ones(1, 4, 5)})
    f = t.last_factors["brightness"]
    assert set(t.last_factors) == {"brightness"} and 0.8 <= f <= 1.2
    torch.testing.assert_close(out["image"], (img * f).clamp(0, 1))


# ------------------------------------------------------------------------------------ the run table
def test_run_table_is_figure_2():
    from depthlab.training.train import resolve_config

    spec, base_dir = load_spec(STUDY)
    runs = expand_grid(spec)
    want = {"resnete_v1_l1_50": ("resnete_v1", 50, {"l1": 1.0}), "resnete_v2_l1_25": ("resnete_v2", 25, {"l1": 1.0}),
            "resnete_v3_l1_50": ("resnete_v3", 50, {"l1": 1.0}),
            "resnet50_unet_l1_50": ("resnet50_unet", 50, {"l1": 1.0}),
            "resnet50_unet_berhu_50": ("resnet50_unet", 50, {"berhu": 1.0}),
            "resnet50_unet_ssim_l1_50": ("resnet50_unet", 50, {"ssim": 1.0, "l1": 1.0}),
            "de_noskip_l1_50": ("de_noskip", 50, {"l1": 1.0}),
            "densenet121_unet_l1_100": ("densenet121_unet", 100, {"l1": 1.0})}
    assert [r["id"] for r in runs] == list(want)
    for r in runs:
        cfg = resolve_config(str(base_dir / spec.base), r["overrides"])
        assert (cfg.model.name, cfg.train.max_epochs, dict(cfg.loss.terms)) == want[r["id"]]
        assert cfg.model.kwargs["encoder_pretrained"] is True  # ImageNet encoders, as the study
    ev = spec.evaluation
    assert (ev.title, ev.figure_title, ev.normalized_errors) == \
        ("Figure 2: Models' performances", "Figure 3: Models' predictions", True)
    smoke, _ = load_spec(STUDY, smoke=True)
    assert "model.kwargs.encoder_pretrained=false" in smoke.overrides
    assert "without ImageNet weights" in smoke.description
    assert smoke.fixtures["nyu"]["kind"] == "nyu_mat"


def test_report_table_has_the_study_columns_and_titles():
    from depthlab.report.html import render_markdown

    ev = {"key": "test", "status": "ok", "dataset": "nyu", "split": "test338", "n_samples": 338, "protocol": "none",
          "protocol_description": "crop=none", "title": "Figure 2: Models' performances"}
    run = {"id": "resnete_v1_l1_50", "status": "ok", "metrics": {"test": {"l1_norm": 0.0939, "mse_norm": 0.0194}}}
    md = render_markdown({"spec": {"evaluation": {"normalized_errors": True}}, "runs": [run], "evaluations": [ev]})
    assert "## Figure 2: Models' performances (nyu / test338, 338 images)" in md
    assert "| run | L1 [0,1] | MSE [0,1] | AbsRel |" in md and "| resnete_v1_l1_50 | 0.0939 | 0.0194 |" in md
    assert "L1 [0,1]" not in render_markdown({"spec": {}, "runs": [run], "evaluations": [ev]})


# ------------------------------------------------------------------------------------ offline weights
def test_offline_encoder_message_names_hub_and_config_key():
    code = ("from depthlab import create_model\n"
            "try:\n    create_model('resnete_v1', encoder_pretrained=True)\n"
            "except Exception as e:\n    print(type(e).__name__ + ': ' + str(e))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-depthlab-test",
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("WeightsUnavailableError:") and out.count("\n") == 1, out
    assert "Hugging Face hub (timm/resnet34.a1_in1k" in out and "model.kwargs.encoder_checkpoint=FILE" in out


def test_experiment_reports_the_normalized_errors_of_each_run(tmp_path):
    """``evaluation.normalized_errors``: every evaluation summary gets l1_norm = mae / D, mse_norm = mse / D^2
    with D the run's max_depth; the tables and the Markdown description carry them."""
    from depthlab.experiment import run_experiment

    spec = {"name": "tiny_norm", "description": "Runs without ImageNet weights.",
            "config": {"model": {"name": "unet", "kwargs": {"base_channels": 4,
                                                            "depth_info": {"target_encoding": "normalized"}}},
                       "data": {"dataset": "synthetic", "size": [32, 32], "batch_size": 2, "kwargs": {"n": 4},
                                "train_transforms": [], "val_transforms": [], "val_split": None,
                                "target_encoding": "normalized", "max_depth": 8.0},
                       "train": {"max_epochs": -1, "max_steps": 1, "loggers": []}},
            "evaluation": {"protocol": "none", "limit": 2, "batch_size": 2, "normalized_errors": True,
                           "title": "Figure 2: Models' performances"},
            "speed": {"repeats": 1, "warmup": 0}, "report": {"samples": 0}, "threads": 1}
    res = run_experiment(spec, out_dir=tmp_path, quiet=True)
    (run,) = res["runs"]
    assert run["status"] == "ok", run["error"]
    m = run["metrics"]["test"]
    assert m["l1_norm"] == pytest.approx(m["mae"] / 8.0) and m["mse_norm"] == pytest.approx(m["mse"] / 64.0)
    md = (tmp_path / "results.md").read_text()
    assert "Runs without ImageNet weights." in md and "## Figure 2: Models' performances (synthetic / test" in md
    assert "L1 [0,1]" in md and "Figure 2: Models&#x27; performances" in (tmp_path / "report.html").read_text()
