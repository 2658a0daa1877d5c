"""`depthlab aerial prepare` on one portal-sized tile: time and peak memory.

Writes, in a temp folder, what a portal hands out for one tile: a ``--size`` x ``--size`` uint8 RGB orthophoto
at 0.1 m in EPSG:25832 (tiled, deflate; written block by block), a 1 m DSM GeoTIFF in EPSG:25833 and a 1 m
DTM as an ``x y z`` grid in EPSG:4647 (NRW's DGM1 layout), then runs :func:`prepare_aerial` on them with
``--chip`` px chips and reports the wall time of each step and the process's peak resident memory. The
default (10000 px = 1 km²) shows the orthophoto is never held whole: 10000² RGB is 300 MB.

    python benchmarks/aerial_prepare_speed.py                  # 10000 px, 512 px chips
    python benchmarks/aerial_prepare_speed.py --size 2048      # quick

Prints a table; writes nothing outside the temp folder.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402


def write_inputs(root: Path, size: int) -> dict:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform, transform_bounds
    from rasterio.windows import Window

    x0, y0, pixel, extent = 350000.0, 5651000.0, 0.1, size * 0.1
    (root / "ortho").mkdir(parents=True)
    with rasterio.open(root / "ortho" / "dop.tif", "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs="EPSG:25832", transform=from_origin(x0, y0, pixel, pixel), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            yy, xx = np.mgrid[r:r + h, 0:size]
            band = ((np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 60 + 128).astype(np.uint8)
            dst.write(np.stack([band, band // 2, 255 - band]), window=Window(0, r, size, h))

    def surface(x, y, objects: bool):
        ground = 60.0 + 0.01 * (x - x0)
        return ground + (np.where((np.sin(x / 9.0) > 0.6) & (np.cos(y / 7.0) > 0.6), 10.0, 0.0) if objects else 0.0)

    for crs, name, objects in (("EPSG:25833", "dsm", True), ("EPSG:4647", "dtm", False)):
        left, bottom, right, top = transform_bounds("EPSG:25832", crs, x0 - 5, y0 - extent - 5, x0 + extent + 5, y0 + 5)
        gx, gy = np.meshgrid(np.arange(np.floor(left), right, 1.0) + 0.5, np.arange(np.ceil(top), bottom, -1.0) - 0.5)
        ux, uy = (np.asarray(v).reshape(gx.shape) for v in transform(crs, "EPSG:25832", gx.ravel(), gy.ravel()))
        z = surface(ux, uy, objects).astype(np.float32)
        if name == "dsm":
            with rasterio.open(root / "dsm.tif", "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1,
                               dtype="float32", crs=crs, transform=from_origin(gx[0, 0] - 0.5, gy[0, 0] + 0.5, 1, 1)) as d:
                d.write(z[None])
        else:
            np.savetxt(root / "dtm.xyz", np.column_stack([gx.ravel(), gy.ravel(), z.ravel()]), fmt="%.2f %.2f %.3f")
    return {"xyz_lines": int(z.size)}


def run_prepare(root: str, chip: int, queue) -> None:
    """In a fresh (spawned) process: peak memory after the imports, then after prepare."""
    import depthlab.data.aerial  # noqa: F401  (prepare imports it, and torch with it)
    import depthlab.io  # noqa: F401
    from depthlab.data.aerial_prepare import prepare_aerial

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    r = prepare_aerial(Path(root) / "out", [Path(root) / "ortho"], [Path(root) / "dsm.tif"], [Path(root) / "dtm.xyz"],
                       height_crs="EPSG:4647", chip_size=chip)
    queue.put((time.perf_counter() - t, sum(r.counts.values()) + len(r.dropped), base,
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def time_lidar(root: Path, n_points: int, side: float = 1000.0) -> dict:
    """A classified LAZ of ``n_points`` random points over ``side`` x ``side`` m (60 % ground, buildings of
    20 m x 20 m on a 50 m raster without ground below them) -> DSM + DTM at 1 m, timed."""
    import laspy
    from laspy.vlrs.known import WktCoordinateSystemVlr
    from rasterio.crs import CRS

    from depthlab.data.aerial_sources import lidar_surfaces

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, side, n_points), rng.uniform(0, side, n_points)
    roof = ((x % 50) < 20) & ((y % 50) < 20)
    ground = ~roof & (rng.random(n_points) < 0.6)
    cls = np.where(roof, 6, np.where(ground, 2, 5)).astype(np.uint8)
    z = 60 + 0.01 * x + np.where(roof, 12.0, np.where(ground, 0.0, rng.uniform(0, 20, n_points)))
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets, header.scales = [350000.0, 5650000.0, 0.0], [0.01, 0.01, 0.01]
    header.vlrs.append(WktCoordinateSystemVlr(CRS.from_epsg(25832).to_wkt()))
    las = laspy.LasData(header)
    las.x, las.y, las.z, las.classification = x + 350000.0, y + 5650000.0, z, cls
    las.write(root / "points.laz")
    t = time.perf_counter()
    s = lidar_surfaces(root / "points.laz", resolution=1.0)
    return {"laz_points": n_points, "laz_mb": round((root / "points.laz").stat().st_size / 2**20, 1),
            "dsm_dtm_s": round(time.perf_counter() - t, 1), "cells": int(s.dsm.size),
            "dtm_cells_filled": int(np.isnan(s.dtm).sum() == 0)}


def main() -> None:
    import multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000, help="orthophoto side in pixels (0.1 m)")
    ap.add_argument("--chip", type=int, default=512, help="chip side in pixels")
    ap.add_argument("--laz-points", type=int, default=0, help="also time a LAZ of this many points -> DSM/DTM")
    args = ap.parse_args()
    if args.laz_points:
        with tempfile.TemporaryDirectory() as tmp:
            print_table([time_lidar(Path(tmp), args.laz_points)])
        return
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        info = write_inputs(Path(tmp), args.size)
        t_inputs = time.perf_counter() - t
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=run_prepare, args=(tmp, args.chip, queue))
        proc.start()
        t_prep, n, base, peak = queue.get()
        proc.join()
        print_table([{"orthophoto": f"{args.size}x{args.size} RGB uint8", "chips": n, "chip_px": args.chip,
                      "dtm_xyz_lines": info["xyz_lines"], "write_inputs_s": round(t_inputs, 1),
                      "prepare_s": round(t_prep, 1), "chips_per_s": round(n / t_prep, 1),
                      "rss_after_imports_mb": round(base), "peak_rss_mb": round(peak)}])


if __name__ == "__main__":
    main()
