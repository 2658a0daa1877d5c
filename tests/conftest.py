"""Generic test fixtures shared by the whole suite (keep dataset-specific fixtures in their own test files)."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED_DIR / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder next to the repository (skips the test when it is absent)."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared folder not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> Path:
    """../shared/data: real NYU and KITTI samples (rgb/, depth/, index.csv, intrinsics.csv)."""
    p = shared_dir / "data"
    if not p.is_dir():
        pytest.skip(f"shared data not found at {p}")
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests (``pytestmark = usefixtures(...)``): on the
    shared 2-core CI box extra threads only add contention (50x slower ops seen)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
