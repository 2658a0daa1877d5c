"""Params, GMACs and CPU latency of every registered model at 480x640 (the Leve thesis setting).

Random input (1x3x480x640, padded up to each model's ``multiple_of``; a foundation adapter gets the network
input its own processing makes of a 480x640 image, e.g. 518x686 for Depth Anything, while ZoeDepth and
Marigold take the image as it is and resize inside), randomly initialised weights
(latency does not depend on the values), ``torch.inference_mode()``, float32, batch 1. Per model:
``--warmup`` untimed runs, then up to ``--runs`` timed runs or until ``--budget-s`` seconds are spent
(at least ``--min-runs``). Reports median latency, p10/p90 spread and FPS (= 1000 / median ms).

    python benchmarks/zoo_speed.py                       # every registered model
    python benchmarks/zoo_speed.py --models fastdepth,unet --budget-s 10
    python benchmarks/zoo_speed.py --exclude 'marigold*,*vitl,zoedepth*'   # skip the slowest on a CPU

Writes ``benchmarks/results/zoo_speed.json`` (with machine description and command line) and
``benchmarks/results/zoo_speed.md`` (the Markdown table the README's model-zoo section reproduces).
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, print_table, write_result, write_text  # noqa: E402

COLUMNS = ["model", "params_M", "GMACs", "input", "median_ms", "p10_ms", "p90_ms", "fps", "runs", "output"]


def time_model(model: torch.nn.Module, x: torch.Tensor, warmup: int, runs: int, budget_s: float,
               min_runs: int) -> list[float]:
    """Latencies in milliseconds of ``model(x)`` (each pass timed by ``depthlab.evaluation.speed.forward_seconds``)."""
    from depthlab.evaluation.speed import forward_seconds

    times: list[float] = []
    with torch.inference_mode():
        for _ in range(max(warmup, 0)):
            t0 = time.perf_counter()
            model(x)
            if time.perf_counter() - t0 > budget_s / 2:  # a very slow model: one warm-up is enough
                break
        start = time.perf_counter()
        while len(times) < runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
            times.append(forward_seconds(model, x) * 1000.0)
    return times


def bench_one(name: str, size: tuple[int, int], args) -> dict:
    from depthlab.models.registry import create_model, get_entry
    from depthlab.evaluation.speed import count_macs, count_params, network_size

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
    load_before = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    t = np.asarray(time_model(model, x, args.warmup, args.runs, args.budget_s, args.min_runs))
    # Share of the torch threads' CPU time we actually got: well below 1 = other processes took the cores.
    row["cpu_share"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0) / torch.get_num_threads(), 2)
    row["load_1m"] = round(max(load_before, os.getloadavg()[0]), 2)
    med = float(np.median(t))
    row.update(median_ms=round(med, 2), p10_ms=round(float(np.percentile(t, 10)), 2),
               p90_ms=round(float(np.percentile(t, 90)), 2), mean_ms=round(float(t.mean()), 2),
               min_ms=round(float(t.min()), 2),
               fps=round(1000.0 / med, 2), runs=int(t.size))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma list of model names (default: every registered model)")
    p.add_argument("--exclude", default="", help="comma list of shell patterns of models to skip "
                   "(e.g. 'marigold*,*vitl' for models too slow for a CPU)")
    p.add_argument("--size", default="480x640", help="HxW of the random input")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=200, help="maximum timed runs per model")
    p.add_argument("--min-runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=10.0, help="time budget of the timed runs per model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--name", default="zoo_speed", help="results file stem")
    args = p.parse_args(argv)

    from depthlab.models.registry import list_models

    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list_models()
    excluded = [p.strip() for p in args.exclude.split(",") if p.strip()]
    names = [n for n in names if not any(fnmatch.fnmatch(n, pat) for pat in excluded)]
    settings = {"size": list(size), "batch": 1, "dtype": "float32", "device": "cpu", "warmup": args.warmup,
                "max_runs": args.runs, "min_runs": args.min_runs, "budget_s": args.budget_s,
                "weights": "random init (latency does not depend on values)", "input": "torch.rand, seed 0",
                "excluded_patterns": excluded}
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(bench_one(name, size, args))
        write_result(args.name, {"settings": settings, "rows": rows, "complete": False})  # survive interruption
    print_table(rows, COLUMNS + ["cpu_share"])
    m = machine_info()
    contended = [r["model"] for r in rows if r.get("cpu_share", 1.0) < 0.8]
    settings["contended_models"] = contended
    path = write_result(args.name, {"settings": settings, "rows": rows, "complete": True})
    md = [f"Latency at {size[0]}x{size[1]}, batch 1, float32, CPU ({m['cpu']}, {m['cpu_cores_usable']} cores, "
          f"{m['torch_threads']} torch threads, torch {m['torch']}); median of up to {args.runs} runs "
          f"(budget {args.budget_s:g} s per model) after {args.warmup} warm-up runs; p10/p90 = spread. "
          f"GMACs = FLOPs/2 from torch.utils.flop_counter. cpu_share = CPU time received / (wall time x torch "
          f"threads) while timing: close to 1 = the cores were ours, well below 1 = the machine was shared "
          f"and the latency is inflated.", "", markdown_table(rows, COLUMNS + ["cpu_share"])]
    if excluded:
        md += [f"Excluded (not timed): models matching {', '.join(excluded)}.", ""]
    if contended:
        md += [f"**Warning:** other processes took CPU while timing {', '.join(contended)} (cpu_share < 0.8); "
               "those latencies are inflated. Re-run on an idle machine for reportable numbers.", ""]
    errors = [f"- {r['model']}: {r['error']}" for r in rows if r.get("error")]
    if errors:
        md += ["Not measured:", *errors, ""]
    write_text(f"{args.name}.md", "\n".join(md))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
