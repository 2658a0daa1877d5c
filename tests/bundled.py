"""Test helper: where the real data bundled with the package lives (a clone runs the whole suite from these)."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets"
SAMPLES = ASSETS / "samples"
"""Real NYU and KITTI samples (``nyu/``, ``kitti/``: rgb/, depth/, index.csv, intrinsics.csv)."""
FASTDEPTH_REFERENCE = ASSETS / "weights" / "fastdepth_nyu" / "reference"
"""FastDepth's published reference input, ground truth, prediction and metrics."""
