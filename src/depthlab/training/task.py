"""``DepthTask``: supervised depth training as a LightningModule.

One task, driven by an :class:`depthlab.config.ExperimentConfig`:

* model: ``create_model(cfg.model.name, pretrained, checkpoint_path, **cfg.model.kwargs)``; images
  are normalised with the model's ``depth_info.mean/std`` inside the task;
* target: ground truth (metres) is encoded with ``data.target_encoding`` (``depth``, ``inverse`` =
  ``max_depth / d``, ``normalized`` = ``d / max_depth``), which must equal the model's
  ``depth_info.target_encoding``; ``data.max_depth`` (when set) becomes the model's
  ``depth_info.max_depth`` so that exported checkpoints decode exactly as trained;
* loss: ``build_loss(cfg.loss)`` on (raw output, encoded target, valid mask, image);
* validation: the raw output decoded to metres and scored as ``depthlab eval`` scores it, under
  ``train.protocol``: :func:`depthlab.evaluation.runner.apply_protocol` (valid pixels, alignment,
  clipping; it refuses an affine-invariant model without alignment), then one
  :class:`depthlab.metrics.MetricAccumulator` (a ``torchmetrics.Metric``: torchmetrics sums it over
  ranks) averaged as the protocol says;
* optimisation: Adam/AdamW, encoder/decoder learning rates, step / cosine / poly schedules and an
  encoder freeze for the first ``train.freeze_encoder_epochs`` epochs;
* distillation (``distill.teacher`` set and ``distill.epsilon > 0``): the training loss becomes
  :func:`depthlab.losses.distillation_loss` against the teacher map (``batch["teacher"]`` from the
  cache, else the teacher run on the augmented batch), converted to the student's encoding by
  :func:`depthlab.training.distill.teacher_to_encoding`. Validation keeps the plain loss.
"""
from __future__ import annotations

import math
import warnings

import lightning as L
import torch
import torch.nn as nn

from torchmetrics import Metric

from depthlab.metrics import METRIC_NAMES, MetricAccumulator
from depthlab.models.encoders import encoder_parameter_names, freeze_encoder
from depthlab.processing import normalize, resize_to
from depthlab.types import TARGET_ENCODINGS, decode_target, encode_target


def _as_config(config):
    """An ExperimentConfig from a dataclass or a plain dict (as stored in a Lightning checkpoint)."""
    if isinstance(config, dict):
        from depthlab.config import load_config

        return load_config(config)
    return config


def _close(a, b, tol: float = 1e-6) -> bool:
    return len(tuple(a)) == len(tuple(b)) and all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


def resolve_target(model: nn.Module, data_cfg) -> tuple[str, float]:
    """(target encoding, max_depth) used for training; checks them against ``model.depth_info``.

    Raises ``ValueError`` when ``data.target_encoding`` disagrees with the model's declared raw
    output. ``data.max_depth`` (when set) replaces the model's ``depth_info.max_depth``, so that
    decoding after training (Predictor, exported checkpoints) matches the training target.
    """
    info = model.depth_info
    model_enc = info.target_encoding
    enc = data_cfg.target_encoding
    if enc not in TARGET_ENCODINGS:
        raise ValueError(f"data.target_encoding={enc!r} is not one of {TARGET_ENCODINGS}")
    if enc != model_enc:
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(
            f"data.target_encoding={enc!r} but model {name!r} outputs {model_enc!r} "
            f"(depth_info.target_encoding): set data.target_encoding={model_enc} or build the model with "
            f"model.kwargs.depth_info.target_encoding={enc}")
    max_depth = float(data_cfg.max_depth)
    if max_depth <= 0:
        raise ValueError(f"max_depth must be > 0, got {max_depth}")
    if max_depth != info.max_depth:
        model.depth_info = info.replace(max_depth=max_depth)
    return enc, max_depth


def _check_pipeline_targets(data_cfg, encoding: str, max_depth: float) -> None:
    """An ``EncodeTarget`` in the data pipelines must agree with the training target (the task
    encodes the metric ``depth`` itself and ignores a ``target`` key)."""
    from depthlab.data.transforms import EncodeTarget, build_transforms

    for key in ("train_transforms", "val_transforms"):
        for t in build_transforms(getattr(data_cfg, key), train=key.startswith("train")):
            if isinstance(t, EncodeTarget) and (t.encoding != encoding or abs(t.max_depth - max_depth) > 1e-9):
                raise ValueError(f"data.{key}: EncodeTarget(encoding={t.encoding!r}, max_depth={t.max_depth:g}) "
                                 f"disagrees with the training target ({encoding!r}, max_depth={max_depth:g}) "
                                 "set by data.target_encoding / data.max_depth and the model's depth_info")


class _StepSchedule:
    """Multiplier of a group's base lr at optimiser step ``step``: linear warm-up, then cosine or poly
    decay to ``min_lr`` over the run.

    The run length is asked for (``total_steps()``, i.e. ``trainer.estimated_stepping_batches``)
    only at the first step after warm-up, not in ``configure_optimizers``: asking there would make
    Lightning build the train loader before a resumed run has restored its data position.
    """

    def __init__(self, kind: str, total_steps, warmup: int = 0, min_lr: float = 0.0, power: float = 0.9):
        self.kind, self.total_steps, self.warmup, self.min_lr, self.power = kind, total_steps, warmup, min_lr, power
        self._total: int | None = None

    def __call__(self, step: int, base: float) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if step == self.warmup:
            t = 0.0
        else:
            if self._total is None:
                self._total = int(self.total_steps())
            span = max(1, self._total - self.warmup)
            t = min(step - self.warmup, span) / span
        floor = min(1.0, self.min_lr / base) if base > 0 else 0.0
        if self.kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return floor + (1 - floor) * (1 - t) ** self.power


class _ValidationLoss(Metric):
    """Mean over validation images of the loss and each of its terms (batch means weighted by batch size),
    in float64 and summed over ranks by torchmetrics. Not ``torchmetrics.MeanMetric``: it drops NaN
    batches, or with ``nan_strategy="disable"`` their weights, and a diverged run must show a NaN loss."""

    full_state_update = False

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names
        self.add_state("sums", torch.zeros(len(names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        self.sums += torch.stack([values[k].detach().to(self.sums) for k in self.names]) * batch_size
        self.n += batch_size

    def compute(self) -> dict[str, torch.Tensor]:
        return {**dict(zip(self.names, self.sums / self.n)), "n": self.n}


class DepthTask(L.LightningModule):
    """LightningModule wrapping a depthlab model, its loss, optimiser and validation metrics.

    ``DepthTask(config)`` with an ExperimentConfig or its dict form (``config_to_dict``); the dict is
    saved as the Lightning hyper-parameters, so ``DepthTask.load_from_checkpoint(ckpt)`` works.
    ``model`` may be given to reuse an already built module (benchmarks, tests); ``teacher`` (a
    :class:`depthlab.training.distill.Teacher`) likewise, else it is built from ``distill`` when
    fitting starts. The teacher is not a submodule: it is in neither the optimiser nor checkpoints.
    """

    def __init__(self, config, model: nn.Module | None = None, teacher=None):
        super().__init__()
        from depthlab.config import config_to_dict
        from depthlab.losses import build_loss

        cfg = _as_config(config)
        self.cfg = cfg
        self.save_hyperparameters({"config": config_to_dict(cfg)})
        if model is None:
            from depthlab.config import ConfigError
            from depthlab.errors import DepthlabError, one_line
            from depthlab.models.registry import ModelOptionError, create_model

            mc = cfg.model
            try:
                model = create_model(mc.name, pretrained=mc.pretrained, checkpoint_path=mc.checkpoint_path,
                                     **mc.kwargs)
            except ModelOptionError as e:  # a key the model does not take
                raise ConfigError(f"model.kwargs: {e}") from None
            except DepthlabError:
                raise
            except (ValueError, RuntimeError) as e:
                if not mc.kwargs:  # the model's defaults failing is a bug: its traceback stays
                    raise
                # a constructor refusing a value of model.kwargs (a negative width: torch's RuntimeError)
                raise ConfigError(f"model.kwargs: {mc.name} cannot be built with {mc.kwargs} ({one_line(e)})") from None
        self.model = model
        self.target_encoding, self.max_depth = resolve_target(model, cfg.data)
        _check_pipeline_targets(cfg.data, self.target_encoding, self.max_depth)
        self.loss_fn = build_loss(cfg.loss)
        info = model.depth_info
        from depthlab.training.datamodule import pipeline_normalization

        piped = pipeline_normalization(cfg.data)
        if piped is not None and (_close(piped[0], info.mean) and _close(piped[1], info.std)) is False:
            raise ValueError(
                f"data transforms normalise images with mean={piped[0]} std={piped[1]} but model "
                f"{getattr(model, 'model_name', '?')!r} expects mean={tuple(info.mean)} std={tuple(info.std)} "
                "(depth_info); remove Normalize from data.*_transforms (the task normalises per the model)")
        self.normalize_inputs = piped is None  # else the pipeline already did it
        self.register_buffer("img_mean", torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("img_std", torch.tensor(info.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._encoder_names = encoder_parameter_names(model)
        self.freeze_encoder_epochs = cfg.train.freeze_encoder_epochs
        self._encoder_frozen = False
        self.protocol = self._load_protocol(cfg.train.protocol)
        self._crop_warned = False
        self.last_val_metrics: dict[str, float] = {}
        self.val_metrics = MetricAccumulator(self.protocol.averaging)
        self.val_loss = _ValidationLoss(["loss", *sorted(f"loss_{k}" for k in getattr(self.loss_fn, "keys", []))])
        from depthlab.training.distill import distill_active

        self.distill_epsilon = float(cfg.distill.epsilon) if distill_active(cfg) else 0.0
        self.teacher = teacher  # a plain attribute (Teacher is not an nn.Module)

    # ------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _load_protocol(name):
        from depthlab.evaluation.protocols import get_protocol

        return get_protocol(name or "none")

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the model's input normalisation (identity if the data pipeline did it)."""
        if not self.normalize_inputs:
            return image
        return normalize(image, self.img_mean, self.img_std)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Raw output ``(B,1,H,W)`` (in ``target_encoding``) for images in [0, 1], at the input size."""
        return resize_to(self.model(self.normalize(image))["depth"], image.shape)

    def predict_metres(self, image: torch.Tensor) -> torch.Tensor:
        """Decoded depth ``(B,1,H,W)`` in the model's declared unit for images in [0, 1]."""
        return decode_target(self(image).float(), self.target_encoding, self.max_depth)

    def _encoded_target(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, valid)``: the batch's depth in ``target_encoding`` and its valid pixels (mask and depth > 0)."""
        depth, mask = batch["depth"], batch["mask"]
        return encode_target(depth, self.target_encoding, self.max_depth), mask.bool() & (depth > 0)

    def compute_loss(self, raw: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, detached per-term values) of the configured loss (``cfg.loss``) of the raw output ``raw``
        on the batch's encoded target; only valid pixels count."""
        target, valid = self._encoded_target(batch)
        total, terms = self.loss_fn.compute(raw, target, valid, batch["image"])
        return total, {str(k): v for k, v in terms.items()}

    def _distill_loss(self, raw: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Leve's distillation loss against the cached (or freshly computed) teacher map."""
        from depthlab.losses import distillation_loss
        from depthlab.training.distill import TEACHER_KEY, teacher_to_encoding

        teacher = batch.get(TEACHER_KEY)
        if teacher is None:  # no cache: the teacher sees the augmented batch, in [0, 1]
            image = batch["image"]
            if not self.normalize_inputs:  # the pipeline normalised with the model's statistics
                image = image * self.img_std + self.img_mean
            teacher = self.teacher.to(image.device).predict(image)  # no-op when already there
        teacher = teacher_to_encoding(teacher.to(raw.device), self.teacher.kind, self.target_encoding,
                                      self.max_depth)
        target, valid = self._encoded_target(batch)
        total, parts = distillation_loss(raw, target, teacher, valid, batch["image"], epsilon=self.distill_epsilon,
                                         student_loss=self.loss_fn, return_terms=True)
        terms = {**{str(k): v for k, v in self.loss_fn.last_terms.items()}, **parts}
        return total, terms

    def on_fit_start(self) -> None:
        self._record_gsd()
        if self.distill_epsilon > 0:
            if self.teacher is None:
                from depthlab.training.distill import build_distillation

                self.teacher, _ = build_distillation(self.cfg, ".", device=self.device)
            if not self.cfg.distill.cache:
                # uncached: the teacher runs on every batch, on the student's device; cached: the data module
                # filled the cache on this device and then sent the teacher back to the CPU (rare misses only)
                self.teacher.to(self.device)

    def _record_gsd(self) -> None:
        """Training data with a ground sampling distance (``aerial``: metres per pixel) -> ``depth_info.gsd``, so
        tiled prediction resamples rasters at another GSD to it (:mod:`depthlab.geo_predict`)."""
        ds = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        while ds is not None and not hasattr(ds, "gsd"):
            ds = getattr(ds, "dataset", None)
        gsd = getattr(ds, "gsd", None)
        if gsd and self.model.depth_info.gsd is None:
            self.model.depth_info = self.model.depth_info.replace(gsd=float(gsd))

    # ------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raw = self(batch["image"])
        if self.distill_epsilon > 0:
            loss, terms = self._distill_loss(raw, batch)
        else:
            loss, terms = self.compute_loss(raw, batch)
        if not bool(torch.isfinite(loss)):  # stop before a NaN/inf gradient reaches the weights
            from depthlab.errors import DepthlabError

            raise DepthlabError(f"training diverged: the loss is {float(loss)} at step {self.global_step} "
                                f"(epoch {self.current_epoch}); lower optim.lr or check the data")
        bs = batch["image"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        # the epoch's mean training loss (studies that plot per epoch; experiment.read_curves)
        self.log("train/epoch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=bs)
        if len(terms) > 1:  # a single term equals train/loss (each self.log costs time on small models)
            for name, value in terms.items():
                self.log(f"train/loss_{name}", value, batch_size=bs)
        return loss

    def on_train_epoch_start(self) -> None:
        self.set_encoder_frozen(self.current_epoch < self.freeze_encoder_epochs)

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, batch-norm statistics kept) or unfreeze the encoder: :func:`freeze_encoder`."""
        if not self._encoder_names or frozen == self._encoder_frozen:
            return
        self._encoder_frozen = frozen
        freeze_encoder(self.model, frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self._encoder_frozen:  # train() put the frozen encoder back in training mode
            freeze_encoder(self.model)
        return self

    # ------------------------------------------------------------------------------------ validation
    def _scored(self, raw: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw output -> ``(final depth in metres, valid pixels)`` as ``depthlab eval`` scores them: decoded from the
        target encoding, then :func:`~depthlab.evaluation.runner.apply_protocol` (valid pixels, alignment, clipping).
        A crop that does not fit the validation size is dropped, with a warning; the depth caps still apply."""
        from depthlab.evaluation.protocols import CropError
        from depthlab.evaluation.runner import apply_protocol

        pred = decode_target(raw.float(), self.target_encoding, self.max_depth)
        kind = self.model.depth_info.output_kind
        try:
            return apply_protocol(pred, depth, self.protocol, mask, pred_kind=kind)
        except CropError as e:  # e.g. a 480x640 crop on a down-scaled validation set
            if not self._crop_warned:
                warnings.warn(f"validation: protocol {self.protocol.name!r} crop not applied ({e}); depth caps still are")
                self._crop_warned = True
            return apply_protocol(pred, depth, self.protocol.replace(crop="none"), mask, pred_kind=kind)

    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "mps":  # no float64 there: sums in float32, as metric_sums does
            self.val_metrics.set_dtype(torch.float32)
            self.val_loss.set_dtype(torch.float32)

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self.val_loss.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        raw = self(batch["image"])
        loss, terms = self.compute_loss(raw, batch)
        depth = batch["depth"].float()
        final, valid = self._scored(raw, depth, batch["mask"].bool())
        self.val_metrics.update(final, depth, valid)
        self.val_loss.update({"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}, raw.shape[0])

    def on_validation_epoch_end(self) -> None:
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1 and not self.val_loss.update_called:
            return
        losses = self.val_loss.compute()  # every rank takes part in the sync, even one whose shard had no batch
        if float(losses.pop("n")) == 0:
            return
        metrics = self.val_metrics.compute()
        out = {**{k: float(metrics[k]) for k in METRIC_NAMES}, **{k: float(v) for k, v in losses.items()},
               "n_images": float(metrics["n_images"])}
        for name, value in out.items():
            self.log(f"val/{name}", value, prog_bar=name in ("rmse", "abs_rel"))  # already summed over ranks
        if not self.trainer.sanity_checking:
            self.last_val_metrics = {"epoch": int(self.current_epoch), "step": int(self.global_step), **out}

    # ------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["depthlab"] = {"val_metrics": dict(self.last_val_metrics),
                                  "target_encoding": self.target_encoding, "max_depth": self.max_depth,
                                  "depth_info": self.model.depth_info.to_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.last_val_metrics = dict(checkpoint.get("depthlab", {}).get("val_metrics", {}))

    # ------------------------------------------------------------------------------------ optimisers
    def param_groups(self) -> list[dict]:
        """Decoder (everything not under ``encoder``) at ``optim.lr``; encoder at ``optim.encoder_lr``."""
        o = self.cfg.optim
        lr = float(o.lr)
        enc_lr = lr if o.encoder_lr is None else float(o.encoder_lr)
        enc, rest = [], []
        for name, p in self.model.named_parameters():
            (enc if name in self._encoder_names else rest).append(p)
        groups = [{"params": rest, "lr": lr, "name": "decoder"}]
        if enc:
            groups.append({"params": enc, "lr": enc_lr, "name": "encoder"})
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        o = self.cfg.optim
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        if o.name not in optimizers:
            raise ValueError(f"optim.name={o.name!r}: choose adam, adamw or sgd")
        extra = {"momentum": o.momentum} if o.name == "sgd" else {}
        opt = optimizers[o.name](self.param_groups(), lr=o.lr, weight_decay=o.weight_decay, **extra)
        sched = self._scheduler(opt)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def _total_steps(self) -> int:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        if not total or total <= 0 or total == float("inf"):
            raise ValueError("cosine/poly schedules need a finite train.max_steps or train.max_epochs")
        return int(total)

    def _scheduler(self, opt):
        o = self.cfg.optim
        if o.scheduler is None:
            return None
        if o.scheduler == "step":  # epoch-based decay: lr *= gamma every step_size epochs (Leve: 0.99 / 5)
            s = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
            return {"scheduler": s, "interval": "epoch", "name": "lr"}
        if o.scheduler not in ("cosine", "poly"):
            raise ValueError(f"optim.scheduler={o.scheduler!r}: choose step, cosine, poly or null")
        schedule = _StepSchedule(o.scheduler, self._total_steps, warmup=o.warmup_steps, min_lr=o.min_lr,
                                 power=o.power)
        lambdas = [(lambda step, b=g["lr"]: schedule(step, b)) for g in opt.param_groups]
        s = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"scheduler": s, "interval": "step", "name": "lr"}
