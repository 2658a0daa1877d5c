"""depthlab: monocular depth estimation -- datasets, model zoo, training, evaluation, reports.

The public API is imported lazily so that ``import depthlab`` and the CLI start fast.
"""
from __future__ import annotations

from depthlab._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "create_model": "depthlab.models.registry",
    "list_models": "depthlab.models.registry",
    "register_model": "depthlab.models.registry",
    "WeightsInfo": "depthlab.models.registry",
    "resolve_model": "depthlab.models.registry",
    "save_checkpoint": "depthlab.checkpoint",
    "load_checkpoint": "depthlab.checkpoint",
    "create_dataset": "depthlab.data",
    "list_datasets": "depthlab.data",
    "SyntheticScenes": "depthlab.data.synthetic",
    "Protocol": "depthlab.evaluation.protocols",
    "get_protocol": "depthlab.evaluation.protocols",
    "list_protocols": "depthlab.evaluation.protocols",
    "evaluate": "depthlab.evaluation.runner",
    "compute_metrics": "depthlab.metrics",
    "Predictor": "depthlab.predictor",
    "Prediction": "depthlab.predictor",
    "predict_files": "depthlab.predictor",
    "predict_video": "depthlab.video",
    "build_loss": "depthlab.losses",
    "list_losses": "depthlab.losses",
    "ExperimentConfig": "depthlab.config",
    "load_config": "depthlab.config",
    "train": "depthlab.training.train",
    "RunResult": "depthlab.training.train",
    "DepthTask": "depthlab.training.task",
    "DepthDataModule": "depthlab.training.datamodule",
    "export_onnx": "depthlab.export.onnx",
    "export_model": "depthlab.export.model",
    "run_benchmark": "depthlab.evaluation.benchmark",
    "run_experiment": "depthlab.experiment",
    "create_app": "depthlab.web",
    "depth_to_points": "depthlab.pointcloud",
}

__all__ = sorted(_API) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
