"""Flicker of depth videos with and without temporal smoothing (``depthlab.video``).

Two clips are made from the bundled NYU sample (``metric3d_00000.png`` at ``--size``, H.264 at 30 fps):

* ``static``: the same frame ``--frames`` times, with independent Gaussian noise (``--noise`` grey levels)
  per frame: the true depth never changes, so every frame-to-frame change of the output is flicker;
* ``pan``: a window sliding 2 px per frame across the (noisy) image: the depth really changes, and smoothing
  pays for less flicker with lag.

Models: ``fastdepth`` (metric, bundled weights) and ``fastdepth+jitter`` — the same network with each
frame's output mapped through a random scale (x0.8..1.25) and shift (+-0.3 m), a *simulated* relative model
(a relative model's per-frame scale and shift are arbitrary). No relative model has local weights here.

Columns: ``flicker`` (:class:`depthlab.video.FlickerMeter`: mean absolute frame-to-frame change / mean
depth); ``err_vs_clean``: mean absolute difference to the model's prediction of the noise-free frame,
over its mean (after one least-squares scale/shift over the whole clip for the jitter model, whose
output scale is arbitrary), i.e. what the smoothing costs or gains in accuracy.

    OMP_NUM_THREADS=1 python benchmarks/video_flicker.py

Memory: the peak RSS of a fresh process predicting panning clips of ``--memory-frames`` lengths (all four
formats, smoothing on), to show it does not grow with the clip.

Prints tables and writes ``benchmarks/results/video_flicker.json`` (with the machine description).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result  # noqa: E402

SETTINGS = [  # (label, smooth, align)
    ("none", None, None),
    ("ema 0.5", 0.5, False),
    ("ema 0.3", 0.3, False),
    ("ema 0.1", 0.1, False),
    ("align+ema 0.5", 0.5, True),
    ("align+ema 0.3", 0.3, True),
    ("align+ema 0.1", 0.1, True),
]


class Jitter(nn.Module):
    """Wraps a depth model: each forward maps its depth through a random scale and shift (seeded)."""

    def __init__(self, model: nn.Module, seed: int = 0):
        super().__init__()
        self.model, self.gen = model, torch.Generator().manual_seed(seed)
        self.depth_info = model.depth_info

    def forward(self, x):
        out = self.model(x)["depth"]
        s = torch.exp(torch.empty(out.shape[0], 1, 1, 1).uniform_(-0.22, 0.22, generator=self.gen))
        t = torch.empty(out.shape[0], 1, 1, 1).uniform_(-0.3, 0.3, generator=self.gen)
        return {"depth": out * s + t}


def make_frames(image: np.ndarray, clip: str, n: int, noise: float, width: int, seed: int = 0):
    """(clean, noisy) uint8 frames of the ``static`` or ``pan`` clip."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        clean = image[:, : width] if clip == "static" else image[:, 2 * i: 2 * i + width]
        noisy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 255).astype(np.uint8)
        yield np.ascontiguousarray(np.round(clean).astype(np.uint8)), noisy


def lstsq_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from depthlab.evaluation.align import lstsq_scale_shift

    ok = torch.from_numpy(np.isfinite(x) & np.isfinite(y))
    return lstsq_scale_shift(torch.from_numpy(x)[None], torch.from_numpy(y)[None], ok[None])[0][0].numpy()


def run(args) -> dict:
    from PIL import Image

    from depthlab.models.weights import ASSETS_DIR
    from depthlab.predictor import Predictor
    from depthlab.video import mp4_writer, predict_video

    h, w = args.size
    image = np.asarray(Image.open(ASSETS_DIR / "samples" / "nyu" / "rgb" / "metric3d_00000.png").convert("RGB")
                       .resize((w + 2 * args.frames, h), Image.BILINEAR)).astype(np.float64)
    base = Predictor("fastdepth")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in ("static", "pan"):
            path, clean = Path(tmp) / f"{clip}.mp4", []
            with mp4_writer(path, 30) as write:
                for c, noisy in make_frames(image, clip, args.frames, args.noise, w):
                    clean.append(c)
                    write(noisy)
            clean_depth = np.stack(base.predict_batches([torch.from_numpy(c).permute(2, 0, 1) for c in clean]))
            for model_name in ("fastdepth", "fastdepth+jitter"):
                for label, smooth, align in SETTINGS:
                    if model_name == "fastdepth+jitter":
                        predictor = Predictor(Jitter(base.model, seed=1))
                    else:
                        predictor = base
                    t0 = time.perf_counter()
                    rep = predict_video(path, predictor, Path(tmp) / "out", formats="npz", smooth=smooth, align=align)
                    sec = time.perf_counter() - t0
                    d = np.load(Path(tmp) / "out" / f"{clip}_depth.npz")["depth"]
                    if model_name == "fastdepth+jitter":
                        d = lstsq_fit(d.reshape(1, -1), clean_depth.reshape(1, -1)).reshape(d.shape)
                    err = float(np.abs(d - clean_depth).mean() / np.abs(clean_depth).mean())
                    rows.append({"clip": clip, "model": model_name, "smoothing": label, "flicker": rep.flicker,
                                 "err_vs_clean": err, "frames": rep.n_frames, "fps_end_to_end": rep.n_frames / sec})
            print_table([r for r in rows if r["clip"] == clip])
            print()
    return {"settings": {"frames": args.frames, "size_hw": [h, w], "noise_grey_levels": args.noise,
                         "clip_fps": 30, "codec": "libx264 crf 18 yuv420p", "input_size": "auto (224x224)"},
            "rows": rows}


def peak_rss(n: int, tmp: str) -> dict:
    """Peak RSS (MB) of a fresh process predicting an ``n``-frame 240x320 panning clip of random pixels
    (FastDepth, all four formats, smoothing on): flat in ``n`` when nothing holds the clip."""
    import json
    import subprocess

    code = f"""
import json, time, numpy as np
from depthlab.video import mp4_writer, predict_video
def hwm():  # this process's peak RSS in MB (VmHWM; ru_maxrss would include the parent's, kept across exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
img = np.random.default_rng(0).integers(0, 255, (240, 320 + 2 * {n}, 3), dtype=np.uint8)
with mp4_writer("{tmp}/rss.mp4", 30) as write:
    for i in range({n}):
        write(np.ascontiguousarray(img[:, 2 * i: 2 * i + 320]))
before = hwm()
t0 = time.perf_counter()
r = predict_video("{tmp}/rss.mp4", "fastdepth", "{tmp}/rss_out", formats="color,side,png16,npz", smooth=0.3)
print(json.dumps({{"frames": r.n_frames, "peak_rss_mb": hwm(),
                   "rss_before_predict_mb": before, "fps_end_to_end": r.n_frames / (time.perf_counter() - t0)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--noise", type=float, default=4.0, help="per-frame Gaussian noise, grey levels")
    ap.add_argument("--memory-frames", type=int, nargs="*", default=[120, 1200],
                    help="clip lengths whose peak RSS is measured (each in a fresh process)")
    ap.add_argument("--results-dir", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    result = run(args)
    with tempfile.TemporaryDirectory() as tmp:
        result["memory"] = [peak_rss(n, tmp) for n in args.memory_frames]
    print_table(result["memory"])
    print(write_result("video_flicker", result, args.results_dir))


if __name__ == "__main__":
    main()
