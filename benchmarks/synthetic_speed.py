"""Rendering speed of the procedural synthetic scenes (depthlab.data.synthetic).

Renders ``--n`` scenes (seeds 0..n-1, the default 1,000) at ``--size`` with ``render_scene`` in
this process, pinned to one CPU core with single-threaded math libraries (so the number is a
one-core number whatever the machine), prints a table and writes a JSON record with the machine
description and the command used::

    python benchmarks/synthetic_speed.py                       # 1000 x 128x128, one core
    python benchmarks/synthetic_speed.py --n 200 --size 256 256 --workers 2 --out /tmp/s.json
"""
from __future__ import annotations

import os

# Single-threaded numerics before numpy/torch load: the benchmark measures one core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402


from depthlab.data.synthetic import RENDER_VERSION, render_scene  # noqa: E402
from depthlab.io import write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "synthetic_speed.json"


def machine() -> dict:
    info = machine_info()  # the description every benchmark records (benchmarks/common.py)
    info["cores_used"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info["threads_env"] = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return info


def _render_range(args: tuple[int, int, tuple[int, int], int]) -> int:
    start, stop, size, supersample = args
    for seed in range(start, stop):
        render_scene(seed, size, supersample=supersample)
    return stop - start


def run(n: int, size: tuple[int, int], workers: int, supersample: int) -> dict:
    render_scene(10**9, size, supersample=supersample)  # warm-up (imports, first allocations)
    c0 = time.process_time()
    t0 = time.perf_counter()
    if workers <= 1:
        _render_range((0, n, size, supersample))
    else:
        chunks = [(n * k // workers, n * (k + 1) // workers, size, supersample) for k in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            assert sum(pool.map(_render_range, chunks)) == n
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0  # this process only (0 for the workers' share)
    return {
        "n": n,
        "size": list(size),
        "supersample": supersample,
        "workers": workers,
        "total_s": round(total, 3),
        "cpu_s_main_process": round(cpu, 3),
        "samples_per_s": round(n / total, 2),
        "ms_per_sample": round(1000 * total / n, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="number of scenes (seeds 0..n-1)")
    p.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    p.add_argument("--workers", type=int, default=1, help="processes (1 = this process only)")
    p.add_argument("--supersample", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU core")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    if not args.no_pin and args.workers <= 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result = run(args.n, tuple(args.size), args.workers, args.supersample)
    record = {
        "benchmark": "synthetic_speed",
        "render_version": RENDER_VERSION,
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "results": [result],
    }
    header = f"{'size':>9} {'n':>6} {'workers':>7} {'total s':>9} {'cpu s':>8} {'samples/s':>10} {'ms/sample':>10}"
    print(header)
    print("-" * len(header))
    r = result
    print(
        f"{r['size'][0]}x{r['size'][1]:<5} {r['n']:>6} {r['workers']:>7} {r['total_s']:>9.2f} {r['cpu_s_main_process']:>8.2f} "
        f"{r['samples_per_s']:>10.1f} {r['ms_per_sample']:>10.2f}"
    )
    m = record["machine"]
    print(f"machine: {m['cpu']}, cores used {m['cores_used']}, load average {m['load_average_1m']}")
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
