"""``train(config, overrides, resume)``: one experiment, start to finish, on Lightning.

Run directory ``<output_dir>/<name>/``::

    config.yaml            resolved configuration (YAML + overrides)
    git_commit.txt         ``git rev-parse HEAD`` of the depthlab checkout, or "unknown"
    logs/csv/metrics.csv   CSV log (train/*, val/*, lr)
    logs/tensorboard/      TensorBoard events
    checkpoints/last.ckpt  Lightning checkpoint (model, optimiser, scheduler, loops, data order, RNG)
    checkpoints/best.ckpt  best by ``train.monitor`` (``val/rmse``, min by default); weights, no optimiser
    best.safetensors       depthlab checkpoints of the best and last weights: config, val metrics
    last.safetensors       and model description included, so ``load_checkpoint`` rebuilds the model

``resume=True`` continues from ``checkpoints/last.ckpt`` exactly (same weights as an uninterrupted
run on the same machine and settings).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from depthlab.config import ConfigError
from depthlab.errors import MissingFileError, OutputExistsError, first_line

from depthlab.training.callbacks import LastCheckpoint, RngStateCallback
from depthlab.training.datamodule import DepthDataModule
from depthlab.training.task import DepthTask

CHECKPOINT_DIR = "checkpoints"


@dataclass
class RunResult:
    """What a finished (or resumed-and-finished) run left behind."""

    run_dir: Path
    best_checkpoint: Path | None  # depthlab safetensors checkpoint of the best validation score
    last_checkpoint: Path | None  # depthlab safetensors checkpoint of the final weights
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics of the best checkpoint
    last_metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics
    global_step: int = 0
    lightning_checkpoint: Path | None = None  # checkpoints/last.ckpt (resume point)


# ------------------------------------------------------------------------------------------- config
def resolve_config(cfg_or_path, overrides: Sequence[str] = ()):
    """The ExperimentConfig of a YAML path, dict or config plus dotted overrides."""
    from depthlab.config import load_config

    if isinstance(overrides, str):
        overrides = [overrides]
    return load_config(cfg_or_path, list(overrides or ()))


def git_commit() -> str:
    """``git rev-parse HEAD`` of the depthlab source tree (else of the working directory), or "unknown"."""
    here = Path(__file__).resolve().parent
    for where in (here, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return "unknown"


def global_rank() -> int:
    """This process's rank (0 when not distributed), as Lightning's ``rank_zero_only`` knows it: from the
    launcher's environment before a Trainer exists, from the Trainer after."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# ------------------------------------------------------------------------------------------- trainer
def _loggers(cfg, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    out = []
    for name in cfg.train.loggers:
        name = str(name).lower()
        if name == "csv":
            out.append(CSVLogger(save_dir=str(run_dir), name="logs", version="csv"))
        elif name in ("tensorboard", "tb"):
            out.append(TensorBoardLogger(save_dir=str(run_dir), name="logs", version="tensorboard",
                                         default_hp_metric=False))
        elif name == "wandb":
            try:
                import wandb  # noqa: F401
                from lightning.pytorch.loggers import WandbLogger
            except ImportError:
                warnings.warn("train.loggers asks for wandb but it is not installed (pip install wandb); skipped")
                continue
            out.append(WandbLogger(project=os.environ.get("WANDB_PROJECT", "depthlab"), name=cfg.name,
                                   save_dir=str(run_dir), id=_wandb_id(run_dir), resume="allow"))
        elif name in ("none", ""):
            continue
        else:
            raise ConfigError(f"train.loggers: unknown logger {name!r} (choose csv, tensorboard, wandb)")
    return out


def _wandb_id(run_dir: Path) -> str:
    """A W&B run id kept in the run dir so a resumed run continues the same W&B run."""
    f = run_dir / "wandb_id.txt"
    if f.exists():
        return f.read_text().strip()
    import uuid

    rid = uuid.uuid4().hex[:12]
    if global_rank() == 0:
        from depthlab.io import atomic_write

        with atomic_write(f, "w") as fh:
            fh.write(rid + "\n")
    return rid


def _strategy(cfg):
    strategy = cfg.train.strategy
    if strategy == "ddp" and cfg.train.freeze_encoder_epochs > 0:
        # frozen encoder parameters receive no gradient for a while: DDP must not wait for them
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return strategy


def _interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("DEPTHLAB_NO_PROGRESS", "") == ""


def _check_cpu_devices(t) -> None:
    """``train.devices: 64`` on a CPU machine starts 64 processes that wait for each other forever: refuse more
    CPU processes than twice the cores (a one-line ConfigError) instead of hanging."""
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    n = t.devices
    n = len(n) if isinstance(n, (list, tuple)) else int(n) if str(n).strip().isdigit() else None
    cores = os.cpu_count() or 1
    if on_cpu and n is not None and n > 2 * cores:  # some oversubscription is fine (tests run DDP on 2 cores)
        raise ConfigError(f"train.devices: {n} CPU processes requested, but this machine has {cores} cores and "
                          f"no GPU (accelerator={t.accelerator!r}); use train.devices <= {2 * cores}")


def _progress_callbacks(cfg, progress_lines: bool) -> list:
    """A progress bar on a terminal; else plain step / validation lines (``progress_lines``); none with
    ``DEPTHLAB_NO_PROGRESS`` set."""
    from lightning.pytorch.callbacks import RichProgressBar

    from depthlab.training.progress import ProgressLines

    if _interactive():
        return [RichProgressBar()]
    if progress_lines and os.environ.get("DEPTHLAB_NO_PROGRESS", "") == "":
        return [ProgressLines(every_n_steps=cfg.train.log_every_n_steps)]
    return []


def build_trainer(cfg, run_dir: Path, callbacks: Iterable = (),
                  progress_lines: bool = True) -> tuple[L.Trainer, LastCheckpoint]:
    """The Lightning Trainer of a run, with depthlab's checkpoint, RNG, logging and progress callbacks."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    t = cfg.train
    ckpt_dir = run_dir / CHECKPOINT_DIR
    last_cb = LastCheckpoint(ckpt_dir, every_n_train_steps=cfg.train.checkpoint_every_n_steps)
    cbs: list = [last_cb, RngStateCallback()]
    if cfg.data.val_split:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=t.monitor, mode=t.monitor_mode,
                                   save_top_k=1, save_last=False, auto_insert_metric_name=False,
                                   # resuming reads last.ckpt: best.ckpt needs no optimiser state (2x the
                                   # weights with Adam), only the weights, hparams and depthlab's metrics
                                   save_weights_only=True, enable_version_counter=False))
    loggers = _loggers(cfg, run_dir)
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    cbs.extend(_progress_callbacks(cfg, progress_lines))
    cbs.extend(callbacks)
    val_interval = t.val_check_interval
    _check_cpu_devices(t)
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=_strategy(cfg),
        precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps,
        gradient_clip_val=t.gradient_clip_val, deterministic=t.deterministic, log_every_n_steps=t.log_every_n_steps,
        # an int val_check_interval counts optimiser batches across epochs (not within each epoch)
        check_val_every_n_epoch=None if isinstance(val_interval, int) else (t.val_every_n_epochs or None),
        val_check_interval=val_interval,
        limit_val_batches=None if cfg.data.val_split else 0,  # no validation set: no validation loop (quietly)
        callbacks=cbs,
        # Lightning adds a ModelCheckpoint of its own (epoch=N-step=M.ckpt, a third full copy of model and
        # optimiser) when none is given: a run without validation keeps last.ckpt only, as documented above
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in cbs),
        logger=loggers or False,
        default_root_dir=str(run_dir),
        enable_progress_bar=_interactive(),
        enable_model_summary=False,  # its FLOPs column reads 0 without an example input; ProgressLines counts params
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # DepthDataModule shards with its own seeded sampler
        benchmark=False,
    )
    return trainer, last_cb


# ------------------------------------------------------------------------------------------- export
def _load_lightning_checkpoint(path: Path) -> dict:
    # depthlab's Lightning checkpoints hold tensors and plain Python values only
    return torch.load(path, map_location="cpu", weights_only=True)


def export_checkpoint(task: DepthTask, ckpt_path: Path, out: Path, config: dict) -> dict:
    """Lightning checkpoint -> depthlab safetensors checkpoint (weights of ``task.model``); returns its metrics."""
    import copy

    from depthlab.checkpoint import save_checkpoint

    ckpt = _load_lightning_checkpoint(ckpt_path)
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model = copy.deepcopy(task.model).cpu()
    model.load_state_dict(state, strict=True)
    # metrics: the validation that the checkpoint had seen ("step"/"epoch" = when it ran);
    # global_step/epoch in the header: where the weights come from
    metrics = dict(ckpt.get("depthlab", {}).get("val_metrics", {}))
    save_checkpoint(model, out, config=config, metrics=metrics,
                    extra={"target_encoding": task.target_encoding, "lightning_checkpoint": ckpt_path.name,
                           "global_step": int(ckpt.get("global_step", 0)), "epoch": int(ckpt.get("epoch", 0))})
    return metrics


# ------------------------------------------------------------------------------------------- train
def prepare_run_dir(cfg, resume: bool) -> Path:
    """Create ``<output_dir>/<name>/`` with config.yaml and git_commit.txt (rank 0 writes)."""
    from depthlab.config import save_config

    run_dir = Path(cfg.output_dir) / cfg.name
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if resume and not last.exists():
        raise MissingFileError(f"{last}: nothing to resume (no last.ckpt in the run directory)")
    if not resume and last.exists() and global_rank() == 0:
        raise OutputExistsError(f"{run_dir}: a run with this name already has checkpoints; pass --resume to "
                                "continue it, or choose another name / output_dir")
    if global_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (run_dir / "config.yaml").exists():
            from depthlab.config import config_diff, load_config

            try:
                changed = sorted(config_diff(load_config(str(run_dir / "config.yaml")), cfg))
                if changed:
                    warnings.warn(f"resuming {run_dir} with a changed config: {', '.join(changed)}")
            except Exception as e:  # an unreadable old config must not block the resume
                warnings.warn(f"could not compare with the previous config.yaml: {e}")
        save_config(cfg, run_dir / "config.yaml")
        from depthlab.io import atomic_write

        with atomic_write(run_dir / "git_commit.txt", "w") as f:
            f.write(git_commit() + "\n")
    return run_dir


# Lightning lines that tell a depthlab user nothing: its advertising tips (litmodels, litlogger), and the note,
# three times per run, that it saves its own full checkpoints (depthlab's exported weights are safetensors)
_LIGHTNING_CHATTER = ("Tip:", "`weights_only` was not set")
_CHATTY_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.trainer.connectors.checkpoint_connector")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(s in str(record.msg) for s in _LIGHTNING_CHATTER)


@contextlib.contextmanager
def _without_lightning_tips():
    """:data:`_LIGHTNING_CHATTER` left out of a run's output (Lightning's other lines, e.g. the devices, stay)."""
    loggers, drop = [logging.getLogger(name) for name in _CHATTY_LOGGERS], _DropChatter()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def train(cfg_or_path, overrides: Sequence[str] = (), resume: bool = False, *,
          callbacks: Iterable = (), progress_lines: bool = True) -> RunResult:
    """Train the experiment described by a YAML file / dict / ExperimentConfig plus dotted overrides.

    Returns a :class:`RunResult` with the run directory, the exported depthlab checkpoints
    (``best.safetensors``, ``last.safetensors``) and the best validation metrics. ``callbacks`` are
    extra Lightning callbacks (tests, tooling). Progress: a bar when stderr is a terminal, else plain
    step and validation lines on stderr (``progress_lines=False``: none; callers with their own progress
    display, e.g. ``run_experiment``). Launched under torchrun / SLURM, every process calls this
    function; rank 0 writes the run directory files. ``train.threads`` sets torch's intra-op threads for
    the run (restored afterwards).
    """
    from depthlab.runtime import torch_threads

    cfg = resolve_config(cfg_or_path, overrides)
    with torch_threads(cfg.train.threads), _without_lightning_tips():  # tips come at build and at fit time
        return _run(cfg, resume, callbacks, progress_lines)


def _run(cfg, resume: bool, callbacks: Iterable, progress_lines: bool) -> RunResult:
    """:func:`train` once the configuration is resolved."""
    seed = cfg.train.seed
    L.seed_everything(seed, workers=True)
    run_dir = prepare_run_dir(cfg, resume)

    task = DepthTask(cfg)
    from depthlab.training.distill import build_distillation

    teacher, cache = build_distillation(cfg, run_dir)  # after the student: its init is unchanged
    task.teacher = teacher
    data = DepthDataModule(cfg.data, seed=seed, teacher_cache=cache)
    try:
        trainer, _ = build_trainer(cfg, run_dir, callbacks, progress_lines=progress_lines)
    except MisconfigurationException as e:  # devices, precision or strategy this machine cannot honour
        raise ConfigError(f"train: {first_line(e)}") from e
    ckpt_path = run_dir / CHECKPOINT_DIR / "last.ckpt" if resume else None
    with warnings.catch_warnings():
        # expected here: the run's own folders exist on resume; workers=0 is a valid choice on CPU
        warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        # Lightning's own pytree helper on this torch; nothing a depthlab user can change
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return _finish_run(cfg, task, trainer, data, run_dir)


def _same_file(src: Path, dst: Path) -> None:
    """Publish ``dst`` as a hard link to ``src`` (no second copy of the weights on disk), or as a copy where the
    file system has no hard links. Safe to share: checkpoints are only ever replaced by a rename, never
    rewritten in place, so a later ``last.safetensors`` leaves ``best.safetensors`` as it was."""
    from depthlab.io import atomic_path

    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _finish_run(cfg, task: DepthTask, trainer: L.Trainer, data, run_dir: Path) -> RunResult:
    """After ``fit``: validate once if the run never did, export ``best`` / ``last.safetensors`` (rank 0), and
    the :class:`RunResult` every rank returns."""
    from depthlab.config import config_to_dict

    ckpt_dir = run_dir / CHECKPOINT_DIR
    best_ckpt, last_ckpt = ckpt_dir / "best.ckpt", ckpt_dir / "last.ckpt"
    # rank 0 decides (file systems may differ between nodes): every rank must take the same branch, since
    # validate() and save_checkpoint() synchronise the processes
    no_validation = trainer.strategy.broadcast(not best_ckpt.exists(), src=0)
    if cfg.data.val_split and no_validation and trainer.global_step > 0:
        # the run ended before its first validation (max_steps shorter than an epoch or than
        # val_check_interval): validate the final weights once, so the run reports metrics and its
        # best checkpoint is the validated last one
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            trainer.validate(task, datamodule=data, verbose=False)
        trainer.save_checkpoint(best_ckpt, weights_only=True)
    result = RunResult(run_dir=run_dir, best_checkpoint=None, last_checkpoint=None,
                       global_step=int(trainer.global_step),
                       lightning_checkpoint=last_ckpt if last_ckpt.exists() else None)
    if trainer.is_global_zero:
        cfg_dict = config_to_dict(cfg)
        if last_ckpt.exists():
            result.last_metrics = export_checkpoint(task, last_ckpt, run_dir / "last.safetensors", cfg_dict)
            result.last_checkpoint = run_dir / "last.safetensors"
        if best_ckpt.exists():
            result.metrics = export_checkpoint(task, best_ckpt, run_dir / "best.safetensors", cfg_dict)
        elif last_ckpt.exists():  # no validation: the last weights are the best we know (the same file)
            _same_file(run_dir / "last.safetensors", run_dir / "best.safetensors")
            result.metrics = dict(result.last_metrics)
        result.best_checkpoint = run_dir / "best.safetensors" if (run_dir / "best.safetensors").exists() else None
    trainer.strategy.barrier("depthlab-export")
    if not trainer.is_global_zero:
        result.best_checkpoint = run_dir / "best.safetensors"
        result.last_checkpoint = run_dir / "last.safetensors"
    return result


__all__ = ["RunResult", "build_trainer", "export_checkpoint", "git_commit", "prepare_run_dir", "resolve_config",
           "train"]
