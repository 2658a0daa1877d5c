"""Helpers shared by every benchmark script: machine description, JSON results, a printed table.

``python benchmarks/common.py`` prints the machine description.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """Where a number was measured: OS, CPU, cores, RAM, library versions, threads, GPU, load."""
    import numpy as np
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": _ram_gb(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def gemm_seconds(n: int = 1024) -> float:
    """Seconds of one float32 ``torch.mm`` of two ``n x n`` matrices (``2 n^3`` FLOP) at torch's threads."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        a @ b
        t = time.perf_counter()
        a @ b
        return time.perf_counter() - t


def gemm_peak_gflops(sizes=(1024, 2048, 3072), runs: int = 5) -> float:
    """This CPU's float32 matrix-multiply throughput (``torch.mm``, torch's threads): best median over a few
    square sizes, in GFLOP/s."""
    return max(2 * n**3 / statistics.median(gemm_seconds(n) for _ in range(runs)) / 1e9 for n in sizes)


def write_result(name: str, payload: dict, results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` atomically with the machine description and the command line."""
    from depthlab.io import write_json

    out = Path(results_dir) if results_dir else RESULTS_DIR
    doc = {
        "benchmark": name,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        **payload,
    }
    return write_json(out / f"{name}.json", doc)


def write_text(name: str, text: str, results_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<results_dir>/<name>`` (e.g. a Markdown table) atomically."""
    from depthlab.io import atomic_write

    path = (Path(results_dir) if results_dir else RESULTS_DIR) / name
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table_lines(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    if not rows:
        return ["(no rows)"]
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Print dict rows as an aligned plain-text table (first column left-aligned)."""
    print("\n".join(table_lines(rows, columns)))


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return ""
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(json.dumps(machine_info(), indent=2))
