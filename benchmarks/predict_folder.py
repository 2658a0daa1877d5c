"""Throughput of ``depthlab predict`` on a folder against the Predictor alone on the same frames.

The frames are the bundled 640x480 NYU samples (``src/depthlab/assets/samples/nyu/rgb/metric3d_*.png`` and
``unidepth_demo.png``) copied round-robin into a temporary folder until there are ``--frames`` of them.
Measured, alternating, ``--repeats`` times on one machine and in one process:

* ``forward``: :meth:`Predictor.predict_batches` on the frames already decoded (uint8 tensors), i.e. the
  Predictor's pre-processing, network and post-processing and nothing else (images/s);
* ``predict_files``: :func:`depthlab.predict_files` on the folder with ``--formats`` (decode, predict, write
  every file and ``predictions.json``), for each ``--workers`` value (passed as ``io_workers``; 1 = one reader
  and one writer thread).

The ratio ``predict_files / forward`` (images per second) is the number to read: both sides run in the same
process, alternating, so load from other processes hits both alike. Each row also gives the process's CPU time
per image (user + system, all threads): when the cores are busy (a shared machine), overlapping cannot beat
``forward CPU / predict_files CPU``; with a free core per stage it approaches the slowest stage. Also records
the time of each writer on one frame (``write_outputs`` per format). Prints a table and writes
``benchmarks/results/predict_folder.json`` with the machine description and the load average before and after.
``--random-weights`` builds ``--model`` without its weights (for models without local weights: speed only).

    python benchmarks/predict_folder.py                          # 200 frames, npy,png16,color, FastDepth
    python benchmarks/predict_folder.py --frames 40 --workers 1 2
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "depthlab" / "assets" / "samples" / "nyu" / "rgb"
FRAMES = ("metric3d_00000.png", "metric3d_00050.png", "metric3d_00100.png", "unidepth_demo.png")


def make_folder(folder: Path, n: int) -> list[Path]:
    """``n`` frames named ``frame_0000.png``... copied round-robin from the bundled samples."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        dst = folder / f"frame_{i:04d}.png"
        shutil.copyfile(SAMPLES / FRAMES[i % len(FRAMES)], dst)
        paths.append(dst)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process, every thread (user + system)."""
    return time.process_time()


def time_forward(predictor, tensors) -> tuple[float, float]:
    """(wall, CPU) seconds of the Predictor on decoded frames."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    predictor.predict_batches(tensors)
    return time.perf_counter() - t0, cpu_seconds() - c0


def time_predict_files(model, folder: Path, out: Path, formats: str, workers: int, batch_size: int,
                       input_size) -> tuple[float, float]:
    """(wall, CPU) seconds of predict_files on the folder."""
    from depthlab import predict_files

    shutil.rmtree(out, ignore_errors=True)
    pools = {"io_workers": workers} if workers else {}  # 0: predict_files' default (also before io_workers)
    t0, c0 = time.perf_counter(), cpu_seconds()
    report = predict_files([folder], model=model, out_dir=out, formats=formats, batch_size=batch_size,
                           input_size=input_size, **pools)
    sec, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    assert report.n_ok == len(list(folder.iterdir())) and not report.failures, report.failures
    return sec, cpu


def time_stages(predictor, paths: list[Path], out: Path, formats: list[str], n: int = 20) -> dict:
    """{stage: (wall ms, CPU ms) per frame} of the two other stages run alone on ``n`` frames: decoding
    (``image_to_tensor``) and ``write_outputs`` (all ``formats`` together, then each alone)."""
    from depthlab.outputs import write_outputs
    from depthlab.predictor import image_to_tensor

    frames = paths[:n]
    preds = [predictor(p) for p in frames]
    stages = {"decode": lambda: [image_to_tensor(p, keep_uint8=True) for p in frames]}
    rgbs = stages["decode"]()
    for fmts in [formats] + [[f] for f in formats] * (len(formats) > 1):
        stages["write " + ",".join(fmts)] = (
            lambda fmts=fmts: [write_outputs(q, t, out, "one", fmts) for q, t in zip(preds, rgbs)])
    result = {}
    for name, run in stages.items():
        run()  # warm-up
        t0, c0 = time.perf_counter(), cpu_seconds()
        run()
        result[name] = ((time.perf_counter() - t0) / len(frames) * 1e3, (cpu_seconds() - c0) / len(frames) * 1e3)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fastdepth")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--formats", default="npy,png16,color")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="pool sizes to measure; 0 = predict_files' default without passing workers")
    ap.add_argument("--results-dir", default=None, help="where the JSON goes (default benchmarks/results)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--random-weights", action="store_true", help="build --model without loading weights")
    ap.add_argument("--input-size", default="auto", help="the Predictor's input_size (auto, native, N, HxW)")
    args = ap.parse_args()

    import torch

    from depthlab import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    predictor = Predictor(args.model, batch_size=args.batch_size, pretrained=not args.random_weights,
                          input_size=args.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        times, stages = measure(predictor, args, Path(tmp))
    rows = summarise(times, stages, args.frames)
    print_table(rows, ["what", "images_per_s", "ms_per_image", "cpu_ms_per_image", "ratio_to_forward"])
    settings = vars(args) | {"frames_from": [f"src/depthlab/assets/samples/nyu/rgb/{f}" for f in FRAMES],
                             "torch_threads": torch.get_num_threads(), "image_size": "640x480"}
    path = write_result("predict_folder", {
        "settings": settings, "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "note": "ratios are measured in one process, alternating forward and predict_files runs; the machine "
                "is shared with other jobs (see load averages), so absolute rates vary between runs",
        "seconds_wall_cpu": times, "rows": rows}, args.results_dir)
    print(f"wrote {path}")


def measure(predictor, args, tmp: Path) -> tuple[dict, dict]:
    """{what: [(wall s, CPU s) per repeat]} for the forward pass and each workers value; writer ms."""
    from depthlab.predictor import image_to_tensor

    times: dict[str, list] = {"forward": []} | {f"predict_files workers={w}": [] for w in args.workers}
    paths = make_folder(tmp / "in", args.frames)
    tensors = [image_to_tensor(p, keep_uint8=True) for p in paths]
    predictor.predict_batches(tensors[:4])  # warm-up
    for _ in range(args.repeats):
        times["forward"].append(time_forward(predictor, tensors))
        for w in args.workers:
            times[f"predict_files workers={w}"].append(time_predict_files(
                predictor.model, tmp / "in", tmp / "out", args.formats, w, args.batch_size, predictor.input_size))
    stages = time_stages(predictor, paths, tmp / "one", args.formats.split(","))
    return times, stages


def summarise(times: dict, stages: dict, frames: int) -> list[dict]:
    base = frames / statistics.median(w for w, _ in times["forward"])
    rows = []
    for what, runs in times.items():
        rate = frames / statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs) / frames
        rows.append({"what": what, "images_per_s": rate, "ms_per_image": 1e3 / rate, "cpu_ms_per_image": cpu * 1e3,
                     "ratio_to_forward": rate / base})
    return rows + [{"what": f"{name} (stage alone)", "ms_per_image": ms, "cpu_ms_per_image": cpu}
                   for name, (ms, cpu) in stages.items()]


if __name__ == "__main__":
    main()
