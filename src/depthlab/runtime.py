"""Process-wide runtime settings that several layers (training, experiments, the demo, benchmarks) share."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n):
    """``torch.set_num_threads(n)`` for the block (``None`` or 0 = leave it), restored afterwards.

    Why a run may ask for 1: small models at small sizes run many tiny parallel regions, and on a CPU shared
    with other jobs the OpenMP workers of each region wait for descheduled siblings."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["torch_threads"]
