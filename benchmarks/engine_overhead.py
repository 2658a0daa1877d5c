"""Training throughput of the Lightning ``DepthTask`` versus a bare PyTorch loop (target: >= 0.9x).

Both engines train the same model (same initial weights) with the same optimiser (Adam), loss
(``build_loss`` of the config), target encoding and input normalisation on the *same* batches:
synthetic scenes rendered and collated once, before timing, so data loading costs nothing to
either side. The Lightning side is the real task (``DepthTask.training_step`` with its logging)
under a ``Trainer`` with checkpointing, loggers, progress bar and validation switched off (the
engine's floor), and again under ``build_trainer`` -- the Trainer ``depthlab train`` builds, with its
checkpoint and RNG callbacks and the config's loggers (key ``ratio_depthlab_trainer``). The
first ``--warmup`` iterations of every run are excluded. Runs alternate (bare, Lightning, bare,
...) ``--repeats`` times and the best run of each engine is reported (on a shared machine the
fastest run is the least disturbed one), in images per wall-clock second and, as a cross-check
that other processes cannot skew, in images per CPU second of this process. CPU runs use one
torch thread by default (``--threads``).

    python benchmarks/engine_overhead.py                          # unet (base 16), 64x64, batch 8, CPU
    python benchmarks/engine_overhead.py --size 128 --steps 60 --device cuda

Prints a table and writes ``benchmarks/results/engine_overhead.json`` (key ``ratio`` =
Lightning / bare images per second, plus the machine description).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402


def _config(args) -> dict:
    return {
        "name": "engine_overhead", "output_dir": "unused",
        "model": {"name": args.model, "kwargs": dict(args.kwargs)},
        "data": {"dataset": "synthetic", "size": [args.size, args.size], "batch_size": args.batch,
                 "kwargs": {"n": args.batch * args.batches}, "train_transforms": ["random_horizontal_flip"],
                 "val_split": ""},
        "loss": {"terms": {"l1": 1.0}},
        "optim": {"name": "adam", "lr": 1e-4},
        "train": {"accelerator": "cpu" if args.device == "cpu" else "gpu", "devices": 1, "seed": 0},
    }


def make_batches(cfg, n_steps: int) -> list[dict]:
    """``n_steps`` collated training batches (cycled from the data module's first epoch)."""
    from depthlab.training import DepthDataModule

    dm = DepthDataModule(cfg.data, seed=0)
    dm.setup("fit")
    epoch = [{k: v for k, v in b.items() if k != "meta"} for b in dm.train_dataloader()]
    return [epoch[i % len(epoch)] for i in range(n_steps)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bare(task_template, batches: list[dict], warmup: int, device: torch.device) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second) of a plain loop doing what
    ``DepthTask.training_step`` does, minus the engine."""
    task = copy.deepcopy(task_template).to(device)
    model, loss_fn = task.model, task.loss_fn
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    mean, std = task.img_mean, task.img_std
    from depthlab.types import encode_target

    model.train()
    t0 = c0 = None
    images = 0
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
        image = batch["image"].to(device, non_blocking=True)
        depth = batch["depth"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        raw = model((image - mean) / std)["depth"]
        target = encode_target(depth, task.target_encoding, task.max_depth)
        loss = loss_fn(raw, target, mask & (depth > 0), image)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            images += image.shape[0]
    _sync(device)
    return images / (time.perf_counter() - t0), images / (time.process_time() - c0)


def _clock(warmup: int, n_batches: int, device: torch.device):
    """A callback timing the batches after ``warmup`` (wall clock and this process's CPU time)."""
    import lightning as L

    class Clock(L.Callback):
        def __init__(self):
            self.t0 = self.t1 = self.c0 = self.c1 = None
            self.images = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                _sync(device)
                self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= warmup:
                self.images += batch["image"].shape[0]
            if batch_idx == n_batches - 1:
                _sync(device)
                self.t1, self.c1 = time.perf_counter(), time.process_time()

        def rates(self) -> tuple[float, float]:
            return self.images / (self.t1 - self.t0), self.images / (self.c1 - self.c0)

    return Clock()


def run_lightning(task_template, batches: list[dict], warmup: int, device: torch.device) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second) of the same steps through
    ``Trainer.fit(DepthTask)`` with checkpointing, loggers and progress bar off (the engine's floor)."""
    import lightning as L

    task = copy.deepcopy(task_template)
    clock = _clock(warmup, len(batches), device)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, max_epochs=1,
                        max_steps=len(batches), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[clock])
    trainer.fit(task, train_dataloaders=loader)
    return clock.rates()


def run_depthlab_trainer(task_template, cfg, batches: list[dict], warmup: int,
                         device: torch.device) -> tuple[float, float]:
    """The same steps through ``depthlab.training.train.build_trainer`` -- the Trainer ``depthlab train``
    builds (last-checkpoint and RNG callbacks, the config's CSV/TensorBoard loggers, step logging) in a
    temporary run folder."""
    import tempfile

    from depthlab.training.train import build_trainer

    task = copy.deepcopy(task_template)
    clock = _clock(warmup, len(batches), device)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    with tempfile.TemporaryDirectory(prefix="engine_overhead_") as run_dir:
        trainer, _ = build_trainer(cfg, Path(run_dir), callbacks=[clock])
        trainer.fit(task, train_dataloaders=loader)
    return clock.rates()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="unet")
    p.add_argument("--kwargs", default="base_channels=16", help="model kwargs, comma list of key=value (YAML values)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=8, help="distinct batches (cycled)")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per run, warm-up included")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least sensitive to a busy machine)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    import yaml

    args.kwargs = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.kwargs.split(",") if kv)}
    if args.steps <= args.warmup:
        p.error("--steps must exceed --warmup")

    import lightning as L
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from depthlab.config import load_config
    from depthlab.training import DepthTask

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(_config(args))
    device = torch.device(args.device)
    L.seed_everything(0, verbose=False)
    template = DepthTask(cfg)
    batches = make_batches(cfg, args.steps)

    cfg.train.max_steps = len(batches)
    bare, light, full = [], [], []
    for _ in range(args.repeats):
        bare.append(run_bare(template, batches, args.warmup, device))
        light.append(run_lightning(template, batches, args.warmup, device))
        full.append(run_depthlab_trainer(template, cfg, batches, args.warmup, device))
    # best of the repeats: on a shared machine the fastest run is the least disturbed one
    bare_ips, light_ips, full_ips = (max(w for w, _ in r) for r in (bare, light, full))
    bare_cpu, light_cpu, full_cpu = (max(c for _, c in r) for r in (bare, light, full))
    ratio, ratio_cpu = light_ips / bare_ips, light_cpu / bare_cpu
    ratio_full, ratio_full_cpu = full_ips / bare_ips, full_cpu / bare_cpu
    rows = [
        {"engine": "bare PyTorch loop", "images_per_s": round(bare_ips, 1), "images_per_cpu_s": round(bare_cpu, 1),
         "runs (images/s)": ", ".join(f"{w:.1f}" for w, _ in bare)},
        {"engine": "Lightning DepthTask", "images_per_s": round(light_ips, 1), "images_per_cpu_s": round(light_cpu, 1),
         "runs (images/s)": ", ".join(f"{w:.1f}" for w, _ in light)},
        {"engine": "depthlab build_trainer", "images_per_s": round(full_ips, 1), "images_per_cpu_s": round(full_cpu, 1),
         "runs (images/s)": ", ".join(f"{w:.1f}" for w, _ in full)},
    ]
    setting = (f"{args.model} {args.kwargs}, {args.size}x{args.size}, batch {args.batch}, {args.steps - args.warmup} "
               f"timed steps after {args.warmup} warm-up, best of {args.repeats} alternating runs, {args.device}, "
               f"{torch.get_num_threads()} torch thread(s)")
    print(setting)
    print_table(rows, ["engine", "images_per_s", "images_per_cpu_s", "runs (images/s)"])
    print(f"ratio (Lightning / bare images/s) = {ratio:.3f}  (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'}); "
          f"per CPU second: {ratio_cpu:.3f}")
    print(f"ratio (depthlab build_trainer / bare images/s) = {ratio_full:.3f}  (target >= 0.9: "
          f"{'met' if ratio_full >= 0.9 else 'NOT met'}); per CPU second: {ratio_full_cpu:.3f}")
    payload = {
        "setting": setting,
        "model": args.model, "model_kwargs": args.kwargs, "size": args.size, "batch": args.batch,
        "timed_steps": args.steps - args.warmup, "warmup_steps": args.warmup, "repeats": args.repeats,
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "bare_images_per_s": bare_ips, "lightning_images_per_s": light_ips,
        "bare_images_per_cpu_s": bare_cpu, "lightning_images_per_cpu_s": light_cpu,
        "bare_runs": [{"images_per_s": w, "images_per_cpu_s": c} for w, c in bare],
        "lightning_runs": [{"images_per_s": w, "images_per_cpu_s": c} for w, c in light],
        "depthlab_trainer_images_per_s": full_ips, "depthlab_trainer_images_per_cpu_s": full_cpu,
        "depthlab_trainer_runs": [{"images_per_s": w, "images_per_cpu_s": c} for w, c in full],
        "ratio": ratio, "ratio_cpu_time": ratio_cpu,
        "ratio_depthlab_trainer": ratio_full, "ratio_depthlab_trainer_cpu_time": ratio_full_cpu,
        "target_ratio": 0.9, "target_met": min(ratio, ratio_full) >= 0.9,
    }
    if not args.no_write:
        path = write_result("engine_overhead", payload)
        print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
