"""Params, GMACs and CPU latency of every registered model at 480x640 (the Leve thesis setting), per backend,
against this machine's compute bound.

Random input (1x3x480x640, padded up to each model's ``multiple_of``; a foundation adapter gets the network
input its own processing makes of a 480x640 image, e.g. 518x686 for Depth Anything, while ZoeDepth and
Marigold take the image as it is and resize inside), randomly initialised weights
(latency does not depend on the values), ``torch.inference_mode()``, float32, batch 1.

Per model, interleaved round-robin (so that load changes on a shared machine hit every side alike), each round
times one forward of every backend and one float32 GEMM:

* ``eager``: the PyTorch module, contiguous memory format;
* ``eager_cl``: the PyTorch module in ``channels_last``;
* ``onnx``: ONNX Runtime (``depthlab.export.onnx.OnnxBackend``: exported, verified against PyTorch to 1e-4,
  cached), the same threads as torch;
* ``gemm``: ``torch.mm`` of two 1024x1024 float32 matrices -> this round's GFLOP/s.

Each is clocked twice: wall time, and CPU time of the calling thread (``*_cpu_*``; meaningful with
``--threads 1``, where both engines compute on that thread, and then robust to other processes' load).

``default`` is the backend ``depthlab.backends.Network(model, "auto")`` chooses (what ``Predictor``, ``predict``,
``eval``, ``serve`` and the experiment latency run by default). ``bound_ms`` = the model's FLOPs (2 x MACs) /
the median measured GEMM GFLOP/s: every FLOP at the speed of a large matrix multiply, no memory traffic, no
overhead. ``*_x_bound`` = median ms / bound_ms (1.0 = at the bound). After ``--warmup`` untimed rounds, up to
``--runs`` rounds or until ``--budget-s`` seconds are spent (at least ``--min-runs``).

    python benchmarks/zoo_speed.py                       # every registered model
    python benchmarks/zoo_speed.py --models fastdepth,unet --budget-s 10
    python benchmarks/zoo_speed.py --exclude 'marigold*,*vitl,zoedepth*'   # skip the slowest on a CPU

Writes ``benchmarks/results/zoo_speed.json`` (with machine description, load averages and command line) and
``benchmarks/results/zoo_speed.md`` (the Markdown table the README's model-zoo section reproduces).
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, print_table, write_result, write_text  # noqa: E402

COLUMNS = ["model", "params_M", "GMACs", "input", "bound_ms", "eager_ms", "eager_cl_ms", "onnx_ms", "default",
           "default_ms", "eager_x_bound", "default_x_bound", "eager_over_default", "fps", "runs", "cpu_share"]
CPU_COLUMNS = ["bound_cpu_ms", "eager_cpu_ms", "eager_cl_cpu_ms", "onnx_cpu_ms", "default_cpu_x_bound"]
GEMM_N = 1024


def backends_of(model: torch.nn.Module, x: torch.Tensor, cache_dir: str) -> tuple[dict, str, str | None]:
    """({name: callable}, the default backend's name, why ONNX Runtime is missing or None)."""
    from depthlab.backends import Network

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    sides = {"eager": lambda: model(x), "eager_cl": lambda: model_cl(x_cl)}
    auto = Network(copy.deepcopy(model), "auto", onnx_cache_dir=cache_dir)
    with torch.inference_mode():
        auto(x)  # exports and verifies (or falls back, with a warning) before anything is timed
    if auto.onnx_backend is not None:
        ort = auto.onnx_backend
        sides["onnx"] = lambda: ort(x)
    default = {"onnx": "onnx", "eager-channels_last": "eager_cl", "eager": "eager"}[auto.backend]
    return sides, default, auto.fallback_reason


def _timed(fn) -> tuple[float, float]:
    """(wall ms, CPU ms of the calling thread) of one ``fn()``."""
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - t0) * 1000.0, (time.thread_time() - c0) * 1000.0


def time_rounds(sides: dict, warmup: int, runs: int, budget_s: float, min_runs: int) -> dict[str, list[tuple]]:
    """(wall ms, thread CPU ms) per backend, and per round for one GEMM under "gemm", interleaved round-robin."""
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    sides = {**sides, "gemm": lambda: a @ b}
    times: dict[str, list[tuple]] = {k: [] for k in sides}
    with torch.inference_mode():
        for _ in range(max(warmup, 0)):
            t0 = time.perf_counter()
            for fn in sides.values():
                fn()
            if time.perf_counter() - t0 > budget_s / 2:  # a very slow model: one warm-up round is enough
                break
        start = time.perf_counter()
        while len(times["gemm"]) < runs and (len(times["gemm"]) < min_runs or time.perf_counter() - start < budget_s):
            for k, fn in sides.items():
                times[k].append(_timed(fn))
    return times


def bench_one(name: str, size: tuple[int, int], args, cache_dir: str) -> dict:
    from depthlab.evaluation.speed import count_macs, count_params, network_size
    from depthlab.models.registry import create_model, get_entry

    info = get_entry(name).info
    row = {"model": name, "output": info.output_kind}
    try:
        model = create_model(name).eval()
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    h, w = network_size(model, size, info.multiple_of)  # adapters: their own processing size
    row.update(params=count_params(model), params_M=round(count_params(model) / 1e6, 3), input=f"{h}x{w}")
    row["GMACs"] = round(count_macs(model, size, info.multiple_of) / 1e9, 3)
    torch.manual_seed(0)
    x = torch.rand(1, 3, h, w)
    sides, default, why = backends_of(model, x, cache_dir)
    row.update(default=default, **({"onnx_unavailable": why} if why else {}))
    load_before = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    t = time_rounds(sides, args.warmup, args.runs, args.budget_s, args.min_runs)
    # Share of the CPU time the torch threads could use that we actually got: well below 1 = other processes took
    # the cores (ONNX Runtime uses as many threads as torch).
    row["cpu_share"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0) / torch.get_num_threads(), 2)
    row["load_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
    gemm_flop = 2 * GEMM_N**3
    for clock, suffix in ((0, ""), (1, "_cpu")):  # wall clock; CPU time of the calling thread
        gemm = float(np.median([gemm_flop / (w[clock] / 1000.0) / 1e9 for w in t["gemm"]]))
        bound = 2 * row["GMACs"] / gemm * 1000.0
        row.update({f"gemm{suffix}_gflop_per_s": round(gemm, 1), f"bound{suffix}_ms": round(bound, 2)})
        for k, v in t.items():
            if k == "gemm":
                continue
            v = np.asarray([w[clock] for w in v])
            med = float(np.median(v))
            row.update({f"{k}{suffix}_ms": round(med, 2), f"{k}{suffix}_x_bound": round(med / bound, 2)})
            if not suffix:
                row.update({f"{k}_p10_ms": round(float(np.percentile(v, 10)), 2),
                            f"{k}_p90_ms": round(float(np.percentile(v, 90)), 2)})
        row.update({f"default{suffix}_ms": row[f"{default}{suffix}_ms"],
                    f"default{suffix}_x_bound": row[f"{default}{suffix}_x_bound"]})
    med = row["default_ms"]
    row.update(runs=len(t["gemm"]), fps=round(1000.0 / med, 2), eager_over_default=round(row["eager_ms"] / med, 2))
    return row


TARGET_X_BOUND = 1.25  # issue #15: the default path within 1.25x the GEMM bound


def markdown(rows: list[dict], settings: dict, m: dict, args) -> str:
    size, gemm = settings["size"], settings["gemm_gflop_per_s_median"]
    one_thread = m["torch_threads"] == 1
    columns = COLUMNS + (CPU_COLUMNS if one_thread else [])
    md = [f"Latency at {size[0]}x{size[1]}, batch 1, float32, CPU ({m['cpu']}, {m['cpu_cores_usable']} cores, "
          f"{m['torch_threads']} torch threads = ONNX Runtime threads, torch {m['torch']}, onnxruntime "
          f"{settings['onnxruntime']}); backends timed interleaved round-robin, median of up to {args.runs} rounds "
          f"(budget {args.budget_s:g} s per model) after {args.warmup} warm-up rounds. GMACs = FLOPs/2 from "
          f"torch.utils.flop_counter. bound_ms = 2 x GMACs / GEMM GFLOP/s (torch.mm 1024x1024 float32, measured in "
          f"every round: median {gemm:.0f} GFLOP/s over all models); `*_x_bound` = median / bound_ms. default = "
          f"the backend depthlab runs by default (`backend=\"auto\"`). cpu_share = CPU time received / (wall time "
          f"x threads) while timing: close to 1 = the cores were ours, well below 1 = the machine was shared. "
          f"Load average (1 min) {settings['load_before'][0]:.1f} before, {settings['load_after'][0]:.1f} after."
          + (" With one thread ONNX Runtime and torch compute on the calling thread, so `*_cpu_*` columns give that "
             "thread's CPU time (waiting for a core does not count; the GEMM bound is measured the same way): the "
             "load-robust numbers on a shared machine." if one_thread else ""),
          "", markdown_table(rows, columns)]
    timed = [r for r in rows if "default_x_bound" in r]
    for key, what in (("default_x_bound", "wall clock"), ("default_cpu_x_bound", "thread CPU time"))[:1 + one_thread]:
        over = [f"{r['model']} ({r[key]}x)" for r in timed if r[key] > TARGET_X_BOUND]
        md += [f"Default path within {TARGET_X_BOUND}x the bound ({what}): {len(timed) - len(over)} of {len(timed)} "
               f"models" + (f"; above it: {', '.join(over)}." if over else "."), ""]
    if settings["excluded_patterns"]:
        md += [f"Excluded (not timed): models matching {', '.join(settings['excluded_patterns'])}.", ""]
    if settings["contended_models"]:
        md += [f"**Warning:** other processes took CPU while timing {', '.join(settings['contended_models'])} "
               "(cpu_share < 0.8); absolute latencies are inflated and the GEMM bound measured under the same load. "
               "Ratios between backends measured in the same rounds are the comparable numbers.", ""]
    notes = [f"- {r['model']}: {r['error']}" for r in rows if r.get("error")]
    notes += [f"- {r['model']}: no ONNX Runtime ({r['onnx_unavailable']})" for r in rows if r.get("onnx_unavailable")]
    if notes:
        md += ["Notes:", *notes, ""]
    return "\n".join(md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma list of model names (default: every registered model)")
    p.add_argument("--exclude", default="", help="comma list of shell patterns of models to skip "
                   "(e.g. 'marigold*,*vitl' for models too slow for a CPU)")
    p.add_argument("--size", default="480x640", help="HxW of the random input")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    p.add_argument("--runs", type=int, default=200, help="maximum timed rounds per model")
    p.add_argument("--min-runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=15.0, help="time budget of the timed rounds per model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--onnx-cache", default=None, help="ONNX export cache (default: depthlab's, ~/.cache/depthlab/onnx)")
    p.add_argument("--name", default="zoo_speed", help="results file stem")
    args = p.parse_args(argv)

    try:  # an optional extra ([onnx]): without it every row times eager only, with the reason noted
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    from depthlab.models.registry import list_models

    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list_models()
    excluded = [p.strip() for p in args.exclude.split(",") if p.strip()]
    names = [n for n in names if not any(fnmatch.fnmatch(n, pat) for pat in excluded)]
    settings = {"size": list(size), "batch": 1, "dtype": "float32", "device": "cpu", "warmup": args.warmup,
                "max_runs": args.runs, "min_runs": args.min_runs, "budget_s": args.budget_s, "gemm_n": GEMM_N,
                "weights": "random init (latency does not depend on values)", "input": "torch.rand, seed 0",
                "excluded_patterns": excluded, "onnxruntime": ort_version,
                "load_before": list(os.getloadavg()), "target_x_bound": TARGET_X_BOUND}
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(bench_one(name, size, args, args.onnx_cache))
        write_result(args.name, {"settings": settings, "rows": rows, "complete": False})  # survive interruption
    print_table(rows, COLUMNS)
    gemms = [r["gemm_gflop_per_s"] for r in rows if "gemm_gflop_per_s" in r]
    settings.update(load_after=list(os.getloadavg()), gemm_gflop_per_s_median=float(np.median(gemms)) if gemms else 0.0,
                    contended_models=[r["model"] for r in rows if r.get("cpu_share", 1.0) < 0.8])
    path = write_result(args.name, {"settings": settings, "rows": rows, "complete": True})
    write_text(f"{args.name}.md", markdown(rows, settings, machine_info(), args))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
