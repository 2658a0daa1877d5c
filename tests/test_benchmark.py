"""Zero-shot benchmark (depthlab.evaluation.benchmark / `depthlab benchmark`): protocols per output kind,
outputs, skips."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import depthlab
from depthlab.evaluation.benchmark import dataset_preset, parse_model_spec, protocol_for, run_benchmark

NYU_SAMPLES = Path(depthlab.__file__).resolve().parent / "assets" / "samples" / "nyu"


@pytest.mark.parametrize("kind, dataset, root, expected", [
    ("metric", "nyu", None, "nyu_eigen"),
    ("disparity", "nyu", None, "depth_anything:crop=nyu_eigen,max_depth=10"),
    ("relative", "nyu", None, "marigold:crop=nyu_eigen,max_depth=10"),
    ("metric", "kitti", None, "kitti_garg"),
    ("disparity", "kitti", None, "depth_anything:crop=garg,max_depth=80"),
    ("relative", "diode", None, "marigold:max_depth=350"),
    ("metric", "folder", "data/nyu", "nyu_eigen"),  # a folder named after its family takes that preset
    ("metric", "folder", "data/kitti", "kitti_garg"),
    ("metric", "folder", "my_scans", "none"),
    ("disparity", "synthetic", None, "depth_anything"),
    ("metric", "synthetic", None, "none"),
])
def test_protocol_per_output_kind_and_dataset(kind, dataset, root, expected):
    proto = protocol_for(kind, dataset, root)
    assert proto.name == expected
    if kind == "disparity":
        assert (proto.alignment, proto.alignment_space) == ("lstsq", "disparity")
    elif kind == "relative":
        assert (proto.alignment, proto.alignment_space) == ("lstsq", "depth")
    else:
        assert proto.alignment == "none"


def test_dataset_preset_override_and_model_specs():
    assert dataset_preset("folder", "x/nyu", {"folder": "kitti_garg"}) == "kitti_garg"
    s = parse_model_spec("fastdepth:/tmp/w.safetensors")
    assert (s.name, s.checkpoint_path, s.display) == ("fastdepth", "/tmp/w.safetensors", "fastdepth:/tmp/w.safetensors")
    s = parse_model_spec("fastdepth")
    assert (s.name, s.checkpoint_path, s.pretrained) == ("fastdepth", None, True)
    with pytest.raises(ValueError, match="allowed keys"):
        parse_model_spec({"name": "fastdepth", "weights": "x"})
    with pytest.raises(KeyError, match="fastdepht|fastdepth"):
        run_benchmark(["fastdepht"], ["synthetic"], "unused")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_models import TINY_DAV2

    torch.manual_seed(0)
    tiny = {"name": "depth_anything_v2_vits", "pretrained": False, "label": "dav2_tiny",
            "kwargs": {"config_overrides": TINY_DAV2, "input_size": 140}}
    out = tmp_path_factory.mktemp("bench")
    native = {"name": "fastdepth", "label": "fastdepth_native", "input_size": None}
    models = ["fastdepth", tiny, "fastdepth:does/not/exist.safetensors", native]
    result = run_benchmark(models, ["folder"], out, roots={"folder": NYU_SAMPLES}, limit=2, figure_rows=2)
    return out, result


def test_benchmark_runs_each_model_under_its_protocol_and_skips_missing_weights(bench):
    out, result = bench
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"fastdepth", "dav2_tiny", "fastdepth_native"}
    fd, da = rows["fastdepth"], rows["dav2_tiny"]
    assert fd["status"] == da["status"] == "ok" and fd["n_images"] == da["n_images"] == 2
    assert (fd["output_kind"], fd["protocol"]) == ("metric", "nyu_eigen")
    assert (da["output_kind"], da["protocol"]) == ("disparity", "depth_anything:crop=nyu_eigen,max_depth=10")
    # FastDepth at its training size (depth_info.input_size 224x224) unless told otherwise; DA-V2 at its
    # processor's size (keep aspect, multiple of 14)
    assert fd["resolution"] == "224x224" and rows["fastdepth_native"]["resolution"] == "480x640"
    assert da["resolution"] == "140x182"
    assert fd["params"] == sum(p.numel() for p in depthlab.create_model("fastdepth").parameters())
    assert fd["latency_ms"] > 0 and da["latency_ms"] > 0
    # real FastDepth weights on real NYU samples: a sane metric error at its training size, far worse off it
    assert 0.05 < fd["abs_rel"] < 0.25 and fd["delta1"] > 0.6
    assert rows["fastdepth_native"]["abs_rel"] > 2 * fd["abs_rel"]
    skipped = result["skipped_models"]
    assert list(skipped) == ["fastdepth:does/not/exist.safetensors"]
    assert "weights unavailable" in skipped["fastdepth:does/not/exist.safetensors"]
    assert "does/not/exist.safetensors" in skipped["fastdepth:does/not/exist.safetensors"]

    # the numbers are exactly those of depthlab.evaluation.evaluate under the same protocol
    from depthlab.evaluation.runner import evaluate

    native = rows["fastdepth_native"]
    direct = evaluate("folder", root=NYU_SAMPLES, model=depthlab.create_model("fastdepth", pretrained=True),
                      protocol="nyu_eigen", limit=2, input_size=None)
    assert direct["summary"]["abs_rel"] == native["abs_rel"] and direct["summary"]["rmse"] == native["rmse"]


def test_benchmark_numbers_equal_evaluate_at_the_training_size(bench):
    """The benchmark's FastDepth row is evaluate(..., input_size="model") exactly: the size is chosen in one place
    (the Predictor's "auto" rule)."""
    from depthlab.evaluation.runner import evaluate
    from depthlab.predictor import Predictor

    _, result = bench
    fd = {r["model"]: r for r in result["rows"]}["fastdepth"]
    model = depthlab.create_model("fastdepth", pretrained=True)
    direct = evaluate("folder", root=NYU_SAMPLES, model=model, protocol="nyu_eigen", limit=2, input_size="model")
    assert direct["model"]["input_size"] == [224, 224]
    assert direct["summary"]["abs_rel"] == fd["abs_rel"] and direct["summary"]["rmse"] == fd["rmse"]
    assert Predictor(model).input_size == (224, 224) and Predictor(model, input_size=None).input_size is None
    tiny_unet = depthlab.create_model("unet", base_channels=8)  # declares no training size
    assert Predictor(tiny_unet).input_size is None


def test_benchmark_files_agree_and_the_figure_has_a_panel_per_model(bench):
    out, result = bench
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "results.md", "figure_folder.png"}
    js = json.loads((out / "results.json").read_text())
    with open(out / "results.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    by_model = {r["model"]: r for r in csv_rows}
    assert by_model["fastdepth:does/not/exist.safetensors"]["status"] == "skipped"
    for r in js["rows"]:
        c = by_model[r["model"]]
        assert c["protocol"] == r["protocol"] and c["resolution"] == r["resolution"]
        for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "latency_ms"):
            assert float(c[k]) == r[k], (r["model"], k)
        assert int(c["n_images"]) == r["n_images"] and int(c["params"]) == r["params"]
    md = (out / "results.md").read_text()
    assert "`depth_anything:crop=nyu_eigen,max_depth=10`" in md and "## Skipped models" in md
    assert "does/not/exist.safetensors" in md and "figure_folder.png" in md
    assert f"{result['rows'][0]['abs_rel']:.4f}" in md

    fig = js["figures"]["folder"]
    # the skipped model has no column
    assert fig["columns"] == ["RGB", "ground truth", "fastdepth", "dav2_tiny", "fastdepth_native"]
    assert fig["rows"] == 2 and fig["panels"] == 2 * 5
    from PIL import Image

    with Image.open(out / "figure_folder.png") as im:
        assert im.width > im.height > 100


def test_benchmark_cli(tmp_path):
    from typer.testing import CliRunner

    from depthlab.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["benchmark", "--models", "fastdepth", "--datasets", "folder", "--root",
                              f"folder={NYU_SAMPLES}", "--limit", "1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "nyu_eigen" in res.output and (tmp_path / "b" / "results.csv").exists()
    res = runner.invoke(app, ["benchmark", "--models", "fastdepth", "--datasets", "folder", "--root", "nyu",
                              "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "expected DATASET=PATH" in res.output


# ---------------------------------------------------------------------------------------- in-domain marking
@pytest.mark.parametrize("model, dataset, root, expected", [
    ("zoedepth_nyu", "nyu", None, True),             # metric head fine-tuned on NYU
    ("zoedepth_nyu", "nyu_mat", None, True),
    ("zoedepth_kitti", "kitti", None, True),
    ("zoedepth_nyu", "kitti", None, True),           # its relative pre-training (MiDaS v3.1 mix) holds KITTI too
    ("zoedepth_nyu_kitti", "diode", None, False),
    ("zoedepth_kitti", "folder", "data/nyu", True),  # a folder named after its family
    ("midas_dpt_beit_large_512", "kitti", None, True),
    ("midas_dpt_large", "nyu", None, False),         # MiDaS v3.0 mix: neither NYU nor KITTI
    ("depth_anything_v2_vitl", "nyu", None, False),
    ("depth_anything_v1_vits", "kitti", None, False),
    ("marigold_depth", "nyu", None, False),
    ("fastdepth", "nyu", None, True),
    ("fastdepth", "folder", "my_scans", False),      # unknown family: never in-domain
])
def test_in_domain_follows_the_weights_training_data(model, dataset, root, expected):
    from types import SimpleNamespace

    from depthlab.evaluation.benchmark import in_domain
    from depthlab.models.registry import get_weights_info

    assert in_domain(SimpleNamespace(depth_info=get_weights_info(model)), dataset, root) is expected


def test_benchmark_marks_in_domain_scores(bench):
    out, result = bench
    rows = {r["model"]: r for r in result["rows"]}
    # bundled NYU frames (folder .../samples/nyu): FastDepth was trained on NYU, Depth Anything V2 was not
    assert rows["fastdepth"]["in_domain"] is True and rows["dav2_tiny"]["in_domain"] is False
    assert "nyu" in result["train_datasets"]["fastdepth"]
    with open(out / "results.csv", newline="") as f:
        csv_rows = {r["model"]: r for r in csv.DictReader(f)}
    assert csv_rows["fastdepth"]["in_domain"] == "True" and csv_rows["dav2_tiny"]["in_domain"] == "False"
    md_rows = {line.split(" | ")[0].lstrip("| "): line for line in (out / "results.md").read_text().splitlines()
               if line.startswith("| ")}
    assert "| **in-domain** |" in md_rows["fastdepth"] and "| zero-shot |" in md_rows["dav2_tiny"]
