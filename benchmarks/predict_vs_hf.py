"""End-to-end latency: depthlab's ``Predictor(model, backend="onnx")`` vs ``transformers.pipeline("depth-estimation")``.

Model: the Depth Anything V2 Small *architecture* (ViT-S/14 DINOv2 + DPT head, 24.8 M parameters) with
random weights (seeded): built once, saved to a temporary Hugging Face folder with Depth Anything V2's
image-processor settings; transformers loads the pipeline from that folder and depthlab loads the same
folder with ``create_model("depth_anything_v2_vits", checkpoint_path=folder)``, so both run identical weights.
Input: one 640x480 RGB image (PIL), resized to 518 px on the short side (518 x 686, multiples of 14).

Both sides do the whole job, PIL image in -> depth at 480x640 out:

* ``hf``: ``pipeline(image)`` -- processor (uint8 bicubic resize, normalise), eager PyTorch forward,
  bicubic post-processing (plus the pipeline's 8-bit preview image, which is part of its cost);
* ``depthlab_onnx``: ``Predictor(model, backend="onnx")(image)`` -- the adapter's own pre/post-processing
  (same as the processor) around ONNX Runtime (exported once at Predictor construction, verified against
  PyTorch, cached on disk; float32 -- no reduced precision);
* ``depthlab_eager``: ``Predictor(model, backend="eager")(image)``, the same with eager PyTorch (``--no-eager`` skips it);
* ``depthlab_eager_bf16``: ``Predictor(model, autocast_bf16=True)(image)``, the users' opt-in reduced precision,
  shown for what it costs in accuracy (``--no-bf16`` skips it); it is not a candidate for the target.

Roofline. The script also counts the network's floating-point operations (``torch.utils.flop_counter``,
attention through the math SDPA path so that its two matrix products are counted) and measures this
machine's float32 matrix-multiply peak (``torch.mm`` on square matrices, best of a few sizes, same threads).
``gflop_per_s`` per side and ``fp32_speedup_bound`` = hf time / (FLOPs / peak) -- the speedup over the
pipeline that a float32 backend running *every* FLOP at the GEMM peak, with zero pre/post-processing, would
reach -- say how far any float32 execution backend could go on this CPU.

Timings are medians of ``--runs`` runs after ``--warmup`` warm-up runs, interleaved round-robin so that
load changes on a shared machine hit every side alike. ``speedup`` = median(hf) / median(depthlab_onnx).
Outputs are compared with the pipeline's ``predicted_depth`` (max abs and max relative difference).

    python benchmarks/predict_vs_hf.py                 # writes benchmarks/results/predict_vs_hf.json
    python benchmarks/predict_vs_hf.py --runs 5 --threads 2
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import gemm_peak_gflops, print_table, write_result  # noqa: E402


def build_folder(folder: Path, seed: int) -> None:
    """Random-weight Depth Anything V2 Small + its image processor, saved in Hugging Face format."""
    import transformers

    import depthlab

    torch.manual_seed(seed)
    model = depthlab.create_model("depth_anything_v2_vits")  # built-in ViT-S config, random init
    model.hf.save_pretrained(folder)
    transformers.DPTImageProcessor(
        size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        do_pad=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)


def load_depthlab(folder: Path):
    import depthlab

    return depthlab.create_model("depth_anything_v2_vits", checkpoint_path=str(folder)).eval()


def median_ms(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def forward_rows(model, backend, net_hw, tmp: Path, runs: int) -> tuple[list[dict], dict]:
    """The forward pass alone (no pre/post-processing) at the pipeline's 518x686 and at a square 518x518:
    eager PyTorch, ONNX Runtime float32, and ONNX Runtime after int8 dynamic quantisation (onnxruntime
    ``quantize_dynamic``, weights int8) with its output difference to float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from depthlab.export.onnx import export_onnx, ort_session

    rows, rel = [], {}
    for hw in (tuple(net_hw), (518, 518)):
        shape = (1, 3, *hw)
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        if hw == tuple(net_hw):  # the Predictor's own exported, verified file
            sess, path = backend.session_for(shape), backend.path_for(shape)
        else:
            path = tmp / f"square_{hw[0]}x{hw[1]}.onnx"
            export_onnx(model, path, shape)
            sess = ort_session(path)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        with torch.inference_mode():
            rows.append({"what": f"eager forward {hw[0]}x{hw[1]}", "median_ms": median_ms(lambda: model(x), runs)})
        rows.append({"what": f"onnxruntime forward {hw[0]}x{hw[1]}",
                     "median_ms": median_ms(lambda: sess.run(None, feed), runs)})
        if hw == tuple(net_hw):
            q = tmp / "int8.onnx"
            quantize_dynamic(str(path), str(q), weight_type=QuantType.QInt8)
            qs = ort_session(q)
            rows.append({"what": f"onnxruntime int8 dynamic {hw[0]}x{hw[1]}",
                         "median_ms": median_ms(lambda: qs.run(None, feed), runs)})
            a, b = sess.run(None, feed)[0], qs.run(None, feed)[0]
            rel["int8_rel_diff"] = float(np.abs(b - a).max() / np.abs(a).max())
    return rows, rel


def test_image(seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (61, 81, 3)).astype(np.float32)
    img = np.kron(small, np.ones((8, 8, 1)))[:480, :640] + rng.normal(0, 10, (480, 640, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="ONNX cache (default: a temporary folder, so the export "
                                                      "is part of this run)")
    ap.add_argument("--no-eager", action="store_true", help="skip the depthlab eager row")
    ap.add_argument("--no-bf16", action="store_true", help="skip the opt-in bf16 autocast row")
    ap.add_argument("--no-forward", action="store_true", help="skip the forward-only / square / int8 rows")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args(argv)

    import transformers

    from depthlab.predictor import Predictor

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory(prefix="predict_vs_hf_") as tmp:
        folder = Path(tmp) / "dav2_small_random"
        build_folder(folder, args.seed)
        pipe = transformers.pipeline("depth-estimation", model=str(folder), device="cpu")
        model = load_depthlab(folder)
        image = test_image(args.seed)
        h, w = image.height, image.width
        eager = Predictor(model, backend="eager")
        net_hw = eager.network_size(h, w)
        from depthlab.evaluation.speed import macs_by_op

        split = {op: 2 * m / 1e9 for op, m in macs_by_op(model, (h, w)).items()}  # GFLOP per ATen op
        gflops = sum(split.values())
        peak = gemm_peak_gflops()

        t0 = time.perf_counter()  # export + verification against PyTorch, at construction
        onnx = Predictor(model, backend="onnx", onnx_cache_dir=args.cache_dir or Path(tmp) / "onnx",
                         onnx_input_shape=(1, 3, *net_hw))
        export_s = time.perf_counter() - t0
        backend = onnx._onnx

        def run_hf():
            return pipe(image)["predicted_depth"]

        def run_eager():
            return torch.from_numpy(eager(image).depth)

        def run_onnx():
            return torch.from_numpy(onnx(image).depth)

        sides = {"hf": run_hf, "depthlab_onnx": run_onnx}
        if not args.no_eager:
            sides["depthlab_eager"] = run_eager
        if not args.no_bf16:
            bf16 = Predictor(model, backend="eager", autocast_bf16=True)
            sides["depthlab_eager_bf16"] = lambda: torch.from_numpy(bf16(image).depth)
        outputs = {k: f() for k, f in sides.items()}  # also the first warm-up
        for _ in range(max(args.warmup - 1, 0)):
            for f in sides.values():
                f()
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.runs):
            for k, f in sides.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        fwd_rows, fwd_rel = ([], {}) if args.no_forward else forward_rows(
            model, backend, net_hw, Path(tmp), max(3, args.runs // 2))

    ref = outputs["hf"].float()
    rows, diffs = [], {}
    for k in sides:
        d = (outputs[k].float() - ref).abs().max().item()
        diffs[k] = {"max_abs_diff": d, "rel_diff": d / ref.abs().max().item()}
        ms = [t * 1000 for t in times[k]]
        rows.append({"side": k, "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                     "runs": len(ms), "speedup_vs_hf": statistics.median(times["hf"]) / statistics.median(times[k]),
                     "rel_diff_vs_hf": diffs[k]["rel_diff"],
                     "gflop_per_s": gflops / statistics.median(times[k]),
                     "fraction_of_gemm_peak": gflops / statistics.median(times[k]) / peak})
    hf_s = statistics.median(times["hf"])
    bound = hf_s / (gflops / peak)
    print(f"Depth Anything V2 Small architecture (random weights), 640x480 -> network {net_hw[0]}x{net_hw[1]}, "
          f"{threads} threads, ONNX export+verify {export_s:.1f} s")
    print_table(rows, ["side", "median_ms", "min_ms", "max_ms", "runs", "speedup_vs_hf", "rel_diff_vs_hf",
                       "gflop_per_s", "fraction_of_gemm_peak"])
    print(f"roofline: {gflops:.1f} GFLOP per forward, float32 GEMM peak {peak:.0f} GFLOP/s -> no float32 backend "
          f"can beat the pipeline by more than {bound:.2f}x here")
    if fwd_rows:
        print_table(fwd_rows, ["what", "median_ms"])
        print(f"int8 dynamic quantisation: relative output difference {fwd_rel['int8_rel_diff']:.3g}")
    print("GFLOP by op: " + ", ".join(f"{op} {g:.1f}" for op, g in split.items()))
    speedup = hf_s / statistics.median(times["depthlab_onnx"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    payload = {
        "model": "depth_anything_v2_vits architecture, random weights (seed %d), same HF folder for both" % args.seed,
        "depthlab_side": "Predictor(create_model('depth_anything_v2_vits', checkpoint_path=folder), backend='onnx')(PIL image)",
        "hf_side": "transformers.pipeline('depth-estimation', model=folder)(PIL image)['predicted_depth']",
        "params": sum(p.numel() for p in model.parameters()),
        "image": [h, w], "network_input": list(net_hw), "threads": threads,
        "speedup": speedup,
        "hf_median_ms": statistics.median(times["hf"]) * 1000,
        "depthlab_median_ms": statistics.median(times["depthlab_onnx"]) * 1000,
        "depthlab_eager_median_ms": (statistics.median(times["depthlab_eager"]) * 1000
                                     if "depthlab_eager" in times else None),
        "max_abs_diff": diffs["depthlab_onnx"]["max_abs_diff"],
        "rel_diff": diffs["depthlab_onnx"]["rel_diff"],
        "eager_rel_diff": diffs.get("depthlab_eager", {}).get("rel_diff"),
        "bf16_rel_diff": diffs.get("depthlab_eager_bf16", {}).get("rel_diff"),
        "model_gflop": gflops,
        "model_gflop_by_op": split,
        "forward_only": fwd_rows, **fwd_rel,
        "gemm_peak_gflop_per_s": peak,
        "fp32_speedup_bound": bound,
        "onnx_export_seconds": export_s,
        "onnx_export_report": backend.reports[backend.input_shape],
        "rows": rows,
        "runs": args.runs, "warmup": args.warmup,
        "notes": "Medians of interleaved runs after warm-up. fp32 except the opt-in bf16 row. fp32_speedup_bound = "
                 "hf time / (model_gflop / gemm_peak_gflop_per_s): every FLOP at the measured float32 GEMM peak, "
                 "no pre/post-processing. The machine is shared "
                 "with other developers' jobs (2 cores); load average at the end of the run: %s." % (load,),
    }
    path = write_result("predict_vs_hf", payload, args.results_dir)
    print(f"speedup (hf / depthlab onnx, medians): {speedup:.2f}x; max abs diff {payload['max_abs_diff']:.3g}, "
          f"relative {payload['rel_diff']:.3g} -> {path}")
    return payload


if __name__ == "__main__":
    main()
