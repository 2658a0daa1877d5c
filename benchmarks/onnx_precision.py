"""ONNX precisions for FastDepth: accuracy on the bundled real NYU frames and CPU latency, fp32 vs fp16 vs int8.

For each precision of :func:`depthlab.export.onnx.export_onnx` (fp32, fp16, int8-dynamic, int8-static calibrated
on the bundled NYU frames, plus int8-static calibrated on the bundled KITTI frames, which share no frame with
the evaluation) the bundled FastDepth weights are exported at 1x3x224x224 and

1. evaluated with :func:`depthlab.evaluate` on ``src/depthlab/assets/samples/nyu`` under ``nyu_eigen`` (the
   four 640x480 frames; AbsRel, RMSE, delta1 and their change vs fp32), ONNX Runtime replacing PyTorch as
   the network inside the Predictor;
2. timed in ONNX Runtime on one normalised frame: every precision in turn, ``--repeats`` rounds
   interleaved so that a load change on the shared machine hits all of them alike; median ms and the ratio
   to fp32 (``speedup_vs_fp32`` > 1 = faster), the same ratio of the 10th percentiles (the least disturbed
   runs), and the median CPU time of the calling thread (ONNX Runtime runs on it with 1 intra-op thread), which
   waiting for a core does not inflate (``cpu_speedup_vs_fp32``); plus the file size.

    python benchmarks/onnx_precision.py              # defaults: 200 rounds, 1 ONNX Runtime thread

Prints a table and writes ``benchmarks/results/onnx_precision.json`` (machine description, load averages).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

SHAPE = (1, 3, 224, 224)  # FastDepth's training size: what the Predictor feeds it ("auto" input size)
VARIANTS = [  # (label, precision, calibration folder under the package assets or None = default NYU frames)
    ("fp32", "fp32", None),
    ("fp16", "fp16", None),
    ("int8-dynamic", "int8-dynamic", None),
    ("int8-static", "int8-static", None),
    ("int8-static (KITTI calib.)", "int8-static", "samples/kitti/rgb"),
]


class OrtNetwork(nn.Module):
    """An ONNX Runtime session standing in for the network inside :class:`depthlab.Predictor`."""

    def __init__(self, session, depth_info, name: str):
        super().__init__()
        self.session, self.depth_info, self.model_name = session, depth_info, name
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return {"depth": torch.from_numpy(out)}


def export_all(model, folder: Path) -> list[dict]:
    from depthlab.export.onnx import export_onnx
    from depthlab.models.weights import ASSETS_DIR

    rows = []
    for label, precision, calib in VARIANTS:
        path = folder / f"{label.split()[0]}{'-kitti' if calib else ''}.onnx"
        report = export_onnx(model, path, SHAPE, precision=precision,
                             calibration=ASSETS_DIR / calib if calib else None)
        rows.append({"label": label, "precision": precision, "path": path, "size_kb": path.stat().st_size / 1024,
                     "rel_diff_vs_torch": report.rel_diff, "mean_rel_diff_vs_torch": report.mean_rel_diff,
                     "calibration_frames": report.calibration_frames})
    return rows


def accuracy(rows: list[dict], info, threads: int) -> None:
    from depthlab import evaluate
    from depthlab.export.onnx import ort_session  # the session options of the Predictor's ONNX backend
    from depthlab.models.weights import ASSETS_DIR

    root = ASSETS_DIR / "samples" / "nyu"
    for r in rows:
        net = OrtNetwork(ort_session(r["path"], threads), info, f"fastdepth/{r['label']}")
        res = evaluate("folder", root=root, model=net, protocol="nyu_eigen")
        s = res["summary"]
        r.update(abs_rel=s["abs_rel"], rmse=s["rmse"], delta1=s["delta1"], n_images=s["n_images"])
        r["session"] = net.session
    base = rows[0]
    for r in rows:
        r.update(d_abs_rel=r["abs_rel"] - base["abs_rel"], d_rmse=r["rmse"] - base["rmse"],
                 d_delta1=r["delta1"] - base["delta1"])


def latency(rows: list[dict], x: np.ndarray, rounds: int, warmup: int = 3) -> None:
    feeds = [(r, r["session"].get_inputs()[0].name) for r in rows]
    for r, name in feeds:
        for _ in range(warmup):
            r["session"].run(None, {name: x})
        r["times"], r["cpu_times"] = [], []
    for _ in range(rounds):  # interleaved: a load spike on the shared machine lands on every precision alike
        for r, name in feeds:
            t0, c0 = time.perf_counter(), time.thread_time()
            r["session"].run(None, {name: x})
            r["cpu_times"].append(time.thread_time() - c0)  # 1 intra-op thread = this thread: CPU time used
            r["times"].append(time.perf_counter() - t0)
    base, base_p10 = statistics.median(rows[0]["times"]), np.percentile(rows[0]["times"], 10)
    base_cpu = statistics.median(rows[0]["cpu_times"])
    for r in rows:
        med, p10, cpu = statistics.median(r["times"]), np.percentile(r["times"], 10), statistics.median(r["cpu_times"])
        r.update(ms=med * 1e3, ms_p10=p10 * 1e3, ms_p90=np.percentile(r["times"], 90) * 1e3, cpu_ms=cpu * 1e3,
                 speedup_vs_fp32=base / med, speedup_vs_fp32_p10=float(base_p10 / p10),
                 cpu_speedup_vs_fp32=base_cpu / cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200, help="interleaved timing rounds (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--out", default="onnx_precision", help="results/<out>.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import onnxruntime

    import depthlab
    from depthlab.export.onnx import calibration_inputs

    load_before = os.getloadavg()
    model = depthlab.create_model("fastdepth", pretrained=True).eval()
    with tempfile.TemporaryDirectory(prefix="depthlab_onnx_precision_") as tmp:
        rows = export_all(model, Path(tmp))
        accuracy(rows, model.depth_info, args.threads)
        _, frames = calibration_inputs(model.depth_info, SHAPE)
        latency(rows, frames[1].numpy(), args.repeats)  # metric3d_00000, a 640x480 frame at 224x224
        load_after = os.getloadavg()
        for r in rows:
            r.pop("session")
            r.pop("path")
            r["times_ms"] = [round(t * 1e3, 3) for t in r.pop("times")]
            r["cpu_times_ms"] = [round(t * 1e3, 3) for t in r.pop("cpu_times")]
    cols = ["label", "abs_rel", "d_abs_rel", "rmse", "d_rmse", "delta1", "d_delta1", "mean_rel_diff_vs_torch", "ms",
            "speedup_vs_fp32", "speedup_vs_fp32_p10", "cpu_ms", "cpu_speedup_vs_fp32", "size_kb"]
    print_table(rows, cols)
    print(f"load average 1/5/15 min: before {load_before}, after {load_after}")
    write_result(args.out, {
        "model": "fastdepth (bundled NYU weights, fp16-exact values widened to fp32)",
        "input_shape": list(SHAPE),
        "protocol": "nyu_eigen on src/depthlab/assets/samples/nyu (the four 640x480 frames; the 224x224 crop "
                    "is skipped by the Eigen crop)",
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_threads": args.threads,
        "rounds": args.repeats,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "note": "2 CPU cores shared with other jobs (load average above): absolute wall-clock ms are noisy; the "
                "interleaved ratios to fp32, and above all the CPU-time ratios (cpu_speedup_vs_fp32: time on a core, "
                "not time waiting for one), are the result. int8-static (NYU calib.) is calibrated on the same "
                "frames it is evaluated on; the KITTI-calibrated row shares no frame with the evaluation.",
        "rows": rows,
    })


if __name__ == "__main__":
    main()
