"""The public Python API: every documented name resolves; removing one is a breaking change this test catches."""
from __future__ import annotations

import subprocess
import sys

import depthlab

DOCUMENTED = {
    "create_model", "list_models", "register_model", "WeightsInfo", "save_checkpoint", "load_checkpoint",
    "create_dataset", "list_datasets", "SyntheticScenes", "Protocol", "get_protocol", "list_protocols",
    "evaluate", "compute_metrics", "Predictor", "Prediction", "predict_files", "build_loss", "list_losses",
    "ExperimentConfig", "load_config", "train", "RunResult", "DepthTask", "DepthDataModule", "export_onnx",
    "export_model", "run_benchmark", "run_experiment", "create_app", "depth_to_points", "predict_video",
}


def test_documented_names_resolve():
    missing = DOCUMENTED - set(depthlab.__all__)
    assert not missing, f"public names removed from depthlab.__all__: {sorted(missing)}"
    for name in sorted(depthlab.__all__):
        assert getattr(depthlab, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        depthlab.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_is_lazy():
    """`import depthlab` must not import torch-heavy modules (the CLI starts fast)."""
    code = "import sys, depthlab; print('lightning' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_evaluate_is_the_function_whatever_was_imported_first():
    """The evaluation package's ``evaluate`` must not be shadowed by a submodule of the same name."""
    import subprocess
    import sys

    code = ("import depthlab.evaluation.runner, depthlab.evaluation.protocols\n"
            "from depthlab.evaluation import evaluate\n"
            "import depthlab\n"
            "assert callable(evaluate) and evaluate is depthlab.evaluate, evaluate\n")
    subprocess.run([sys.executable, "-c", code], check=True)
