"""Lightning callbacks used by :func:`depthlab.training.train.train`.

* :class:`LastCheckpoint` -- ``last.ckpt`` every N optimiser steps (default: once per epoch) so a
  killed run loses at most the work since then; ``train()`` also writes it when training ends.
* :class:`RngStateCallback` -- puts the torch / CUDA / numpy / python RNG states of every rank into
  the checkpoint and restores them when a resumed run starts training (Lightning restores model,
  optimiser, scheduler and loop state, but not the global RNGs that dropout and friends use).
* :class:`RankWeightsDump` -- debugging / tests: each rank writes its final weights to a file.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class LastCheckpoint(Callback):
    """Writes ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` optimiser steps, and when training ends.

    ``every_n_train_steps=None`` means once per epoch (the number of training batches per epoch,
    known when training starts). Keeps no other file: the "best" checkpoint is a separate
    :class:`~lightning.pytorch.callbacks.ModelCheckpoint`. Written with ``trainer.save_checkpoint``
    (every rank calls it; the strategy writes once), at the hook ModelCheckpoint uses for step saves.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath, every_n_train_steps: int | None = None):
        self.dirpath = Path(dirpath)
        self._requested_every = every_n_train_steps
        self.every_n_train_steps = int(every_n_train_steps or 1)
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if not self._requested_every:
            per_epoch = trainer.num_training_batches
            if isinstance(per_epoch, (int, float)) and per_epoch != float("inf"):
                self.every_n_train_steps = max(1, int(per_epoch) // max(1, trainer.accumulate_grad_batches))

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", *args) -> None:
        step = trainer.global_step  # optimiser steps: unchanged by the batches of an accumulation
        if step % self.every_n_train_steps == 0 and step != self._saved_step and not trainer.sanity_checking \
                and not trainer.fast_dev_run:
            self.save_now(trainer)

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        # the final state (including the last validation, which may have run after the last save)
        self.save_now(trainer)

    def save_now(self, trainer: "L.Trainer") -> None:
        """Write ``last.ckpt`` for the current state."""
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step


def rng_states() -> dict[str, Any]:
    """Global RNG states as tensors and plain Python values (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class RngStateCallback(Callback):
    """Saves every rank's RNG states in the checkpoint; restores this rank's when training starts."""

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        mine = rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, mine)
            return {"per_rank": gathered}
        return {"per_rank": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if not self._pending:
            return
        per_rank = self._pending.get("per_rank") or []
        self._pending = None
        rank = trainer.global_rank
        if rank < len(per_rank):
            set_rng_states(per_rank[rank])
        elif per_rank:  # resumed on more ranks than saved: derive a distinct state from rank 0's
            set_rng_states(per_rank[0])
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + rank)


class RankWeightsDump(Callback):
    """Every rank saves its weights when training starts and ends: ``<dirpath>/rank<r>_{start,end}.pt``
    (``{"state_dict", "global_step"}``). For checking that distributed ranks stay in sync."""

    def __init__(self, dirpath):
        self.dirpath = Path(dirpath)

    def _dump(self, trainer: "L.Trainer", pl_module: "L.LightningModule", tag: str) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state_dict": state, "global_step": trainer.global_step},
                   self.dirpath / f"rank{trainer.global_rank}_{tag}.pt")

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._dump(trainer, pl_module, "start")

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._dump(trainer, pl_module, "end")
