"""Raw outputs, aerial tiling and the web app: time and size of each output format, tile throughput, HTTP overhead.

Three measurements on CPU (median of ``--repeats`` runs, after one warm-up):

1. ``write_outputs`` per format (npy, png16, color, tiff, ply) for one FastDepth prediction of a real
   640x480 NYU frame (bundled weights): milliseconds and file size;
2. the ``aerial`` dataset reading a generated ``--raster`` x ``--raster`` orthophoto + height GeoTIFF pair
   in ``--tile`` x ``--tile`` windows: tiles per second (and MPix/s);
3. the web app (FastAPI TestClient, no network): ``POST /api/predict`` (json and npy) versus calling the
   ``Predictor`` directly on the same image: the HTTP + encoding overhead in milliseconds.

    python benchmarks/outputs_speed.py                 # defaults: 5 repeats, raster 2048, tile 512

Prints a table and writes ``benchmarks/results/outputs_speed.json`` (with the machine description).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NYU_FRAME = REPO.parent / "shared" / "data" / "nyu" / "rgb" / "metric3d_00000.png"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_formats(predictor, image: Path, out: Path, repeats: int) -> list[dict]:
    from depthlab.io import read_rgb
    from depthlab.outputs import write_outputs

    pred = predictor(image)
    rgb = read_rgb(image)
    rows = []
    for fmt in ("npy", "png16", "color", "tiff", "ply"):
        files: list[str] = []

        def run():
            files[:] = write_outputs(pred, rgb, out, "frame", [fmt])[0]

        sec = timed(run, repeats)
        rows.append({"what": f"write {fmt}", "ms": sec * 1e3, "size_kb": Path(files[0]).stat().st_size / 1024,
                     "detail": Path(files[0]).name})
    return rows


def bench_aerial(tmp: Path, raster: int, tile: int, repeats: int) -> dict:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from depthlab.data import create_dataset

    rng = np.random.default_rng(0)
    transform = from_origin(500000.0, 5600000.0, 0.2, 0.2)
    for sub, arr, dtype in (("rgb", rng.integers(0, 256, (3, raster, raster)), "uint8"),
                            ("height", rng.random((1, raster, raster)) * 30, "float32")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        with rasterio.open(tmp / sub / "city.tif", "w", driver="GTiff", width=raster, height=raster,
                           count=arr.shape[0], dtype=dtype, crs=CRS.from_epsg(25832), transform=transform,
                           tiled=True, blockxsize=256, blockysize=256, nodata=-9999 if dtype == "float32" else None) as d:
            d.write(arr.astype(dtype))
    ds = create_dataset("aerial", root=tmp, tile_size=tile)

    def read_all():
        for i in range(len(ds)):
            ds[i]

    sec = timed(read_all, repeats)
    return {"what": f"aerial {raster}x{raster} -> {len(ds)} tiles of {tile}", "ms": sec * 1e3,
            "tiles_per_s": len(ds) / sec, "mpix_per_s": raster * raster / sec / 1e6}


def bench_web(predictor, image: Path, repeats: int) -> list[dict]:
    from fastapi.testclient import TestClient

    from depthlab.web.app import DepthService, create_app

    client = TestClient(create_app(service=DepthService(predictor)))
    data = image.read_bytes()
    direct = timed(lambda: predictor(image), repeats)
    rows = [{"what": "Predictor (direct)", "ms": direct * 1e3}]
    for fmt in ("json", "npy"):
        def post():
            r = client.post("/api/predict", params={"format": fmt}, files={"file": ("frame.png", data, "image/png")})
            assert r.status_code == 200, r.text

        sec = timed(post, repeats)
        rows.append({"what": f"POST /api/predict format={fmt}", "ms": sec * 1e3, "overhead_ms": (sec - direct) * 1e3})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--raster", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--image", type=Path, default=NYU_FRAME)
    args = ap.parse_args()

    import torch

    from depthlab import Predictor

    torch.set_num_threads(1)
    predictor = Predictor("fastdepth")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = bench_formats(predictor, args.image, tmp / "out", args.repeats)
        rows.append(bench_aerial(tmp / "aerial", args.raster, args.tile, args.repeats))
        rows += bench_web(predictor, args.image, args.repeats)
    print_table(rows, ["what", "ms", "size_kb", "tiles_per_s", "mpix_per_s", "overhead_ms"])
    path = write_result("outputs_speed", {"settings": vars(args) | {"image": str(args.image.name), "torch_threads": 1},
                                          "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
