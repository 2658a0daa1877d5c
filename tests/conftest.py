"""Generic test fixtures shared by the whole suite (keep dataset-specific fixtures in their own test files)."""
from __future__ import annotations

from pathlib import Path

import pytest
from bundled import SAMPLES


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
