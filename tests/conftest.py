"""Generic test fixtures shared by the whole suite (keep dataset-specific fixtures in their own test files)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from bundled import SAMPLES

# Predictors in the suite run eager PyTorch unless a test asks for a backend: the default ("auto") would export
# and verify an ONNX file for every new model, weights and input shape the suite builds (about 1-3 s each on the
# 2-core CI box, hundreds of them). tests/test_backends.py covers auto; `DEPTHLAB_BACKEND=auto pytest` runs the
# whole suite on the default path (exports then go to a temporary cache, below).
os.environ.setdefault("DEPTHLAB_BACKEND", "eager")


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache_in_tmp(tmp_path_factory):
    """ONNX exports made by tests go to a temporary cache, never the user's ~/.cache/depthlab."""
    if "DEPTHLAB_CACHE" in os.environ:
        yield
        return
    os.environ["DEPTHLAB_CACHE"] = str(tmp_path_factory.mktemp("depthlab_cache"))
    yield
    os.environ.pop("DEPTHLAB_CACHE", None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real NYU and KITTI samples (``nyu/`` and ``kitti/``: rgb/, depth/, index.csv, intrinsics.csv),
    bundled in src/depthlab/assets/samples."""
    return SAMPLES


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests (``pytestmark = usefixtures(...)``): on the
    shared 2-core CI box extra threads only add contention (50x slower ops seen)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
