"""The main job on the embedded default: bundled real NYU samples + real FastDepth NYU weights.

1. FastDepth predicts depth for the bundled NYU frames; the predictions are written (``.npy``,
   16-bit PNG, colourised PNG) and evaluated under ``nyu_eigen`` (the four 640x480 frames) and the
   FastDepth reference sample under ``none`` (224x224, no crop), which must reproduce the published
   reference metrics.
2. A summary (JSON + Markdown) is written to the output folder and returned.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from depthlab.io import write_json
from depthlab.models.weights import ASSETS_DIR

SAMPLES = ASSETS_DIR / "samples" / "nyu"


def _subset_folder(src: Path, names: list[str], dst: Path) -> Path:
    """A folder dataset (rgb/, depth/, index.csv) holding only ``names`` from ``src``."""
    (dst / "rgb").mkdir(parents=True, exist_ok=True)
    (dst / "depth").mkdir(parents=True, exist_ok=True)
    with open(src / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["name"] in names]
    for r in rows:
        shutil.copy(src / r["rgb"], dst / r["rgb"])
        shutil.copy(src / r["depth"], dst / r["depth"])
    with open(dst / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    return dst


def run_demo(out: str | Path = "outputs/demo", console: Console | None = None) -> dict:
    from depthlab.evaluation.evaluate import evaluate, format_markdown
    from depthlab.predictor import predict_files

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    console.rule("depthlab demo: FastDepth (NYU weights) on the bundled NYU samples")
    pred_dir = out / "predictions"
    report = predict_files([str(SAMPLES / "rgb")], model="fastdepth", checkpoint_path=None, pretrained=True,
                           out_dir=pred_dir, formats=["npy", "png16", "color", "side"], colormap="Spectral_r",
                           batch_size=1, device="cpu", progress=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        full = _subset_folder(SAMPLES, ["metric3d_00000", "metric3d_00050", "metric3d_00100", "unidepth_demo"],
                              Path(tmp) / "nyu_full")
        ref = _subset_folder(SAMPLES, ["fastdepth_sample"], Path(tmp) / "nyu_ref")
        for key, root, protocol in (("nyu_eigen", full, "nyu_eigen"), ("reference_none", ref, "none")):
            res = evaluate(dataset="folder", root=root, split="test", model=None, checkpoint_path=None,
                           checkpoint=None, predictions=pred_dir, pred_scale=None, protocol=protocol,
                           out=out / f"eval_{key}.json", device="cpu", limit=None, progress=False)
            results[key] = res
            console.print(format_markdown(res), highlight=False, soft_wrap=True)
    summary = {
        "predicted": report.n_ok,
        "failed": len(report.failures),
        "eval": {k: {"protocol": v["protocol"]["name"], **v["summary"]} for k, v in results.items()},
        "seconds": round(time.perf_counter() - t0, 2),
        "outputs": str(out),
    }
    write_json(out / "summary.json", summary)
    console.print(f"[green]demo done in {summary['seconds']} s[/green]: {out}/summary.json")
    return {"summary": summary}
