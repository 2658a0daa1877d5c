"""Training progress as plain lines, for runs whose output is not a terminal (a log file, CI, nohup).

On a terminal ``depthlab train`` shows Lightning's progress bar; redirected, a bar is unreadable and
Lightning prints nothing until the run ends. :class:`ProgressLines` prints instead, on rank 0:

* when training starts: the model's parameter count, batches per epoch and the stopping rule;
* every ``every_n_steps`` optimiser steps, or after ``every_s`` seconds without a line: epoch, step, the
  last training loss, elapsed time;
* after every validation: the validation metrics.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import Callback

SHOWN_VAL_METRICS = ("loss", "abs_rel", "rmse", "delta1")


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


class ProgressLines(Callback):
    """Plain progress lines on ``stream`` (default: stderr at print time); see the module docstring."""

    def __init__(self, every_n_steps: int = 10, every_s: float = 30.0, stream: TextIO | None = None):
        self.every_n_steps = max(1, int(every_n_steps))
        self.every_s = float(every_s)
        self.stream = stream
        self._t0 = self._last_t = time.monotonic()
        self._last_step = -1

    def _print(self, trainer: "L.Trainer", text: str) -> None:
        if trainer.is_global_zero:
            print(text, file=self.stream or sys.stderr, flush=True)

    def _where(self, trainer: "L.Trainer") -> str:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        steps = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{epochs} step {trainer.global_step}{steps}"

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._t0 = self._last_t = time.monotonic()
        self._last_step = trainer.global_step
        model = getattr(pl_module, "model", pl_module)
        n = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        batches = trainer.num_training_batches
        per_epoch = f"{int(batches)} batches per epoch" if batches != float("inf") else "an iterable dataset"
        self._print(trainer, f"training {type(model).__name__}: {n / 1e6:.2f} M parameters "
                             f"({n_train / 1e6:.2f} M trainable), {per_epoch}; starting at {self._where(trainer)}")

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step, now = trainer.global_step, time.monotonic()
        if step == self._last_step or (step % self.every_n_steps and now - self._last_t < self.every_s):
            return
        self._last_step, self._last_t = step, now
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        shown = f"loss {float(loss):.4f}, " if loss is not None else ""
        self._print(trainer, f"{self._where(trainer)}: {shown}{_elapsed(now - self._t0)} elapsed")

    def on_validation_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        shown = [f"{k} {float(m[f'val/{k}']):.4f}" for k in SHOWN_VAL_METRICS if f"val/{k}" in m]
        self._last_t = time.monotonic()
        self._print(trainer, f"{self._where(trainer)} validation: {', '.join(shown) or 'no metrics'} "
                             f"({_elapsed(self._last_t - self._t0)} elapsed)")


__all__ = ["ProgressLines"]
