"""Sliding-window raster prediction (depthlab.geo_predict): throughput against the network bound, peak memory
against raster size, Ray against the serial run.

Three parts (``--parts``; each one's result is merged into the JSON, so parts can run separately):

* ``bound``: one ``--bound-size``² RGB GeoTIFF through ``--bound-model`` (default smp U-Net/ResNet34, random
  weights: speed does not depend on them) with ``predict_raster`` (read, normalise, network, blend, write the
  COG). The bound is the network's own forward time over the same tiles (with overlap), measured twice: summed
  inside the same run (a timer around ``model.forward``: same moment, same machine load) and standalone (the
  same number of same-shaped batches of random tiles, right after). Target: end to end >= 0.85 x bound.
* ``rss``: ``depthlab predict RASTER --model --rss-model`` (default fastdepth, whose weights declare their
  224 x 224 training size: 224 px tiles) in a fresh process per ``--sizes`` raster; the child's peak resident
  memory (``wait4`` rusage) and wall time. Target: flat.
* ``ray``: ``--ray-rasters`` rasters of ``--ray-size``² through ``--ray-model``: serial (one process, torch on
  2 threads) vs ``predict_rasters_ray`` on a local ``ray.init(num_cpus=2)`` with 2 workers (1 CPU each). The
  ratio is reported as measured; on 2 cores no speed-up is expected.

    python benchmarks/raster_predict.py                                   # everything (~15 min on 2 busy cores)
    python benchmarks/raster_predict.py --parts rss --sizes 2000,8000     # one part

Inputs are written to a temp folder (uint8 RGB, EPSG:25832, 0.1 m, tiled + deflate, written in strips).
Writes benchmarks/results/raster_predict.json (``--out``); every part records the load average around it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, print_table, write_result  # noqa: E402


def write_raster(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size``² uint8 RGB orthophoto-like GeoTIFF, written in 1024-row strips (never held whole)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:25832", transform=from_origin(350000.0, 5651000.0, 0.1, 0.1), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size]
            band = ((np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 60 + 128 + rng.normal(0, 8, xx.shape)).clip(0, 255)
            band = band.astype(np.uint8)
            dst.write(np.stack([band, band // 2, 255 - band]), window=Window(0, r, size, h))
    return path


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Timed:
    """Wraps a model's forward with a timer (the bound measured inside the end-to-end run)."""

    def __init__(self, model):
        self.model, self.seconds, self.calls = model, 0.0, 0

    def __call__(self, x):
        t = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def __getattr__(self, name):  # the rest of the wrapped object (Network.backend, ...) as it is
        return getattr(self.model, name)


def part_bound(tmp: Path, args) -> dict:
    import torch

    from depthlab.geo_predict import RasterOptions, TileGrid, build_predictor, model_tile, predict_raster

    src = write_raster(tmp / f"bound_{args.bound_size}.tif", args.bound_size)
    p = build_predictor(args.bound_model, pretrained=False, batch_size=args.batch_size)
    tile = model_tile(p.info, None)
    grid = TileGrid.plan(args.bound_size, args.bound_size, tile, args.overlap)
    cols = len(grid.cols)
    batches = [min(args.batch_size, cols - b) for b in range(0, cols, args.batch_size)] * len(grid.rows)
    for n in sorted(set(batches), reverse=True):  # warm-up: the backend's sessions (a smaller batch runs as
        p.predict_tensor(torch.rand(n, 3, *tile))  # single frames, depthlab.backends.Network), as a rerun has
    network = p.network  # what the pipeline runs (ONNX Runtime by default, else PyTorch): Predictor._network
    timed = Timed(network)
    p.network = timed
    before = load()
    t = time.perf_counter()
    r = predict_raster(p, src, tmp / "bound_out.tif", RasterOptions(overlap=args.overlap))
    e2e = time.perf_counter() - t
    p.network = network
    x = torch.rand(args.batch_size, 3, *tile)
    t = time.perf_counter()
    with torch.inference_mode():
        for n in batches:
            network(x[:n])
    standalone = time.perf_counter() - t
    mpix = args.bound_size ** 2 / 1e6
    return {"model": args.bound_model, "raster": args.bound_size, "tile": list(tile), "overlap": args.overlap,
            "tiles": r["tiles"], "batch_size": args.batch_size, "backend": network.backend,
            "torch_threads": torch.get_num_threads(),
            "end_to_end_s": round(e2e, 2),
            "forward_in_run_s": round(timed.seconds, 2), "forward_standalone_s": round(standalone, 2),
            "end_to_end_mpix_s": round(mpix / e2e, 4), "bound_mpix_s": round(mpix / timed.seconds, 4),
            "ratio_to_bound": round(timed.seconds / e2e, 3), "ratio_to_standalone_bound": round(standalone / e2e, 3),
            "target_ratio": 0.85, "load_before": before, "load_after": load()}


LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
if os.waitstatus_to_exitcode(status):
    sys.exit(err.decode()[-2000:])
print(usage.ru_maxrss / 1024)
"""


def part_rss(tmp: Path, args) -> list[dict]:
    import rasterio

    rows = []
    for size in args.sizes:
        src = write_raster(tmp / f"rss_{size}.tif", size)
        out = tmp / f"rss_out_{size}"
        cmd = [sys.executable, "-m", "depthlab", "predict", str(src), "--model", args.rss_model, "--out", str(out),
               "--batch-size", str(args.batch_size), *(["--no-pretrained"] if args.rss_no_pretrained else [])]
        before = load()
        t = time.perf_counter()
        # a bare launcher forks the command: a child's ru_maxrss starts from its parent's RSS at fork, and
        # this process holds a model and Ray by now
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
        peak_mb = float(proc.stdout.strip().splitlines()[-1])
        with rasterio.open(out / f"{src.stem}_depth.tif") as r:
            cog = {"tiled": r.profile.get("tiled"), "compress": r.profile.get("compress"), "overviews": r.overviews(1)}
        rows.append({"model": args.rss_model, "raster": size, "mpix": round(size * size / 1e6, 1),
                     "peak_rss_mb": round(peak_mb, 1), "wall_s": round(wall, 1),
                     "mpix_s": round(size * size / 1e6 / wall, 3), "output": cog, "cog_valid": cog_valid(
                         out / f"{src.stem}_depth.tif"), "load_before": before, "load_after": load(),
                     "command": "depthlab " + " ".join(cmd[3:])})
        print(rows[-1], flush=True)
        for f in out.iterdir():
            f.unlink()
    return rows


def cog_valid(path: Path):
    try:
        from rio_cogeo.cogeo import cog_validate
    except ImportError:
        return None
    return bool(cog_validate(str(path))[0])


def part_ray(tmp: Path, args) -> dict:
    import ray

    from depthlab.geo_predict import predict_rasters, predict_rasters_ray
    from depthlab.runtime import torch_threads

    folder = tmp / "ray_in"
    folder.mkdir()
    for i in range(args.ray_rasters):
        write_raster(folder / f"r{i}.tif", args.ray_size, seed=i)
    predict_rasters(folder / "r0.tif", tmp / "warm-up", args.ray_model, batch_size=args.batch_size)  # load once
    before = load()
    serial = {}
    for threads in (2, 1):  # 2: the same CPU as 2 workers; 1: the workers' own thread count (bit-identity)
        with torch_threads(threads):  # restored: the JSON's machine block records the process's own count
            t = time.perf_counter()
            rep = predict_rasters(folder, tmp / f"serial{threads}", args.ray_model, batch_size=args.batch_size)
            serial[threads] = (time.perf_counter() - t, len(rep.written))
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t
    t = time.perf_counter()
    dist = predict_rasters_ray(folder, tmp / "ray", args.ray_model, batch_size=args.batch_size, workers=2)
    t_ray = time.perf_counter() - t
    ray.shutdown()

    def same(threads):
        return all((tmp / f"serial{threads}" / f"r{i}_depth.tif").read_bytes()
                   == (tmp / "ray" / f"r{i}_depth.tif").read_bytes() for i in range(args.ray_rasters))

    return {"model": args.ray_model, "rasters": args.ray_rasters, "raster": args.ray_size,
            "serial_2_threads_s": round(serial[2][0], 2), "serial_1_thread_s": round(serial[1][0], 2),
            "ray_workers": 2, "ray_cpus_per_worker": 1, "ray_init_s": round(t_init, 2), "ray_s": round(t_ray, 2),
            "ray_over_serial_2_threads_time": round(t_ray / serial[2][0], 3),
            "ray_over_serial_1_thread_time": round(t_ray / serial[1][0], 3),
            "bit_identical_to_serial_1_thread": same(1), "bit_identical_to_serial_2_threads": same(2),
            "written": [serial[2][1], serial[1][1], len(dist.written)], "load_before": before, "load_after": load()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="bound,rss,ray")
    ap.add_argument("--sizes", default="2000,8000,12000", type=lambda s: [int(v) for v in s.split(",")])
    ap.add_argument("--rss-model", default="fastdepth")
    ap.add_argument("--rss-no-pretrained", action="store_true", help="random weights (models without bundled ones)")
    ap.add_argument("--rss-key", default="rss", help="JSON key of the rss rows (another model's curve: rss_smp)")
    ap.add_argument("--bound-model", default="smp_unet_resnet34")
    ap.add_argument("--bound-size", type=int, default=2000)
    ap.add_argument("--ray-model", default="fastdepth")
    ap.add_argument("--ray-rasters", type=int, default=6)
    ap.add_argument("--ray-size", type=int, default=1000)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()
    path = args.out / "raster_predict.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    parts = {k: v for k, v in doc.items() if k.startswith(("bound", "rss", "ray"))}
    with tempfile.TemporaryDirectory(prefix="raster_predict_") as tmp:
        for part in args.parts.split(","):
            key = args.rss_key if part == "rss" else part
            parts[key] = {"bound": part_bound, "rss": part_rss, "ray": part_ray}[part](Path(tmp), args)
            parts[f"{key}_command"] = "python " + " ".join(sys.argv)
            write_result("raster_predict", parts, args.out)
    for part in ("bound", "ray"):
        if part in parts:
            print_table([parts[part]], [k for k in parts[part] if not k.startswith("load")])
    for key in [k for k in parts if k.startswith("rss") and not k.endswith("_command")]:
        print_table(parts[key], ["model", "raster", "mpix", "peak_rss_mb", "wall_s", "mpix_s", "cog_valid"])


if __name__ == "__main__":
    main()
