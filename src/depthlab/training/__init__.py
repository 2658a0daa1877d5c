"""Training on Lightning: the supervised task, the data module, callbacks and ``train()``.

``train(config_or_path, overrides=(), resume=False) -> RunResult`` runs one experiment; see
``docs/training.md`` for configs, the run directory, resume and multi-GPU / multi-node launches.
"""
from depthlab.training.callbacks import LastCheckpoint, RankWeightsDump, RngStateCallback
from depthlab.training.datamodule import (
    DepthDataModule,
    ResumableDataLoader,
    SeededDataset,
    SeededSampler,
    collate_samples,
)
from depthlab.training.distill import Teacher, TeacherCache, build_distillation
from depthlab.training.task import DepthTask, encoder_parameter_names, resolve_target
from depthlab.training.train import RunResult, build_trainer, export_checkpoint, resolve_config, train

__all__ = [
    "DepthDataModule",
    "DepthTask",
    "LastCheckpoint",
    "RankWeightsDump",
    "ResumableDataLoader",
    "RngStateCallback",
    "RunResult",
    "SeededDataset",
    "SeededSampler",
    "Teacher",
    "TeacherCache",
    "build_distillation",
    "build_trainer",
    "collate_samples",
    "encoder_parameter_names",
    "export_checkpoint",
    "resolve_config",
    "resolve_target",
    "train",
]
