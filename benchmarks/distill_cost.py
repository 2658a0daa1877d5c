"""Cost of knowledge distillation per training epoch: plain vs cached teacher vs uncached teacher.

Three runs of ``depthlab.training.train`` on the same synthetic scenes (``--n`` images at
``--size``, batch ``--batch``, no validation, no loggers), same student (``leve`` by default) and
seed:

* ``plain``    -- no distillation;
* ``cached``   -- distillation with the teacher cache: the cache is filled before training (timed
  separately as ``fill_s``), so every epoch is a warm-cache epoch (hash + ``.npy`` read per sample);
* ``uncached`` -- ``distill.cache=false``: the teacher runs on every augmented batch.

The teacher is Depth Anything V2 Small's architecture, randomly initialised (nothing is
downloaded; the cost of a forward pass does not depend on the weights), processing the 128x128
images at 140x140 (``--teacher-size``, its own resize to a multiple of its 14-pixel patch). Each run trains ``--epochs`` epochs and the last one is timed (wall clock and
CPU seconds of this process, which other processes on a shared machine cannot inflate); runs
alternate ``--repeats`` times and the fastest epoch of each mode is kept. CPU runs use
``--threads`` torch threads.

    python benchmarks/distill_cost.py                         # leve student, DA-V2-S teacher, 32 images
    python benchmarks/distill_cost.py --student unet --n 64 --repeats 3

Prints a table and writes ``benchmarks/results/distill_cost.json`` with ``ratio_cached`` (target
<= 1.15) and ``ratio_uncached`` (epoch time / plain epoch time, wall clock), their CPU-time
counterparts and the machine description.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402


class EpochTimer(Callback):
    """Wall-clock and process-CPU seconds of every training epoch."""

    def __init__(self):
        self.epochs: list[tuple[float, float]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append((time.perf_counter() - self._t[0], time.process_time() - self._t[1]))


def _overrides(args, out: Path, mode: str) -> list[str]:
    ov = [f"output_dir={out}", f"name={mode}", "data.dataset=synthetic", "data.root=null",
          f"data.size=[{args.size},{args.size}]", f"data.batch_size={args.batch}", f"data.kwargs={{n: {args.n}}}",
          "data.val_split=null", "data.num_workers=0", f"train.max_epochs={args.epochs}", "train.max_steps=-1",
          "train.loggers=[]", f"model.name={args.student}", f"train.seed={args.seed}",
          "data.train_transforms=[random_horizontal_flip, color_jitter]"]
    if args.student == "leve":
        ov += ["data.target_encoding=inverse", "loss.terms={l1: 0.1, gradient: 1.0, ssim: 1.0}",
               "loss.params={ssim: {data_range: 100.0}}"]
    if mode != "plain":
        ov += [f"distill.teacher={args.teacher}", "distill.teacher_pretrained=false", "distill.epsilon=0.25",
               f"distill.cache={'true' if mode == 'cached' else 'false'}", f"distill.teacher_batch_size={args.batch}",
               f"distill.cache_dir={out / 'cache'}", f"distill.teacher_input_size={args.teacher_size}"]
    return ov


def run_mode(args, mode: str) -> dict:
    from depthlab.training import train
    from depthlab.training.distill import TeacherCache

    fill = {"s": 0.0}
    original = TeacherCache.fill

    def timed_fill(self, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            fill["s"] += time.perf_counter() - t

    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        TeacherCache.fill = timed_fill
        try:
            train({}, _overrides(args, Path(tmp), mode), callbacks=[timer])
        finally:
            TeacherCache.fill = original
    wall, cpu = timer.epochs[-1]
    return {"mode": mode, "epoch_s": wall, "epoch_cpu_s": cpu, "fill_s": fill["s"] if mode == "cached" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", default="leve")
    p.add_argument("--teacher", default="depth_anything_v2_vits")
    p.add_argument("--teacher-size", type=int, default=140, help="teacher input size (DA-V2: processing size)")
    p.add_argument("--n", type=int, default=32, help="training images (synthetic scenes)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass

    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in ("plain", "cached", "uncached"):
            r = run_mode(args, mode)
            if mode not in best or r["epoch_s"] < best[mode]["epoch_s"]:
                best[mode] = {**r, "epoch_cpu_s": min(r["epoch_cpu_s"], best.get(mode, r)["epoch_cpu_s"])}
    plain = best["plain"]
    rows = []
    for mode in ("plain", "cached", "uncached"):
        r = best[mode]
        rows.append({**r, "ratio": r["epoch_s"] / plain["epoch_s"], "ratio_cpu": r["epoch_cpu_s"] / plain["epoch_cpu_s"]})
    print(f"student {args.student}, teacher {args.teacher} (random init), {args.n} synthetic images "
          f"{args.size}x{args.size}, batch {args.batch}, best of {args.repeats}, {args.threads} thread(s)")
    print_table(rows, ["mode", "epoch_s", "epoch_cpu_s", "ratio", "ratio_cpu", "fill_s"])
    payload = {
        "settings": vars(args),
        "results": rows,
        "ratio_cached": rows[1]["ratio"],
        "ratio_uncached": rows[2]["ratio"],
        "ratio_cached_cpu": rows[1]["ratio_cpu"],
        "ratio_uncached_cpu": rows[2]["ratio_cpu"],
        "target_ratio_cached": 1.15,
    }
    if not args.no_write:
        print(f"wrote {write_result('distill_cost', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
