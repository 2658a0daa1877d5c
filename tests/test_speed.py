"""depthlab.evaluation.speed: the forward timer's per-image median, the latency clock, the cost helpers."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from depthlab.evaluation import speed


class _FakeClock:
    """perf_counter returning the given instants in order."""

    def __init__(self, instants):
        self.instants = list(instants)

    def __call__(self):
        return self.instants.pop(0)


def test_forward_timer_median_per_image_drops_the_warm_up_call(monkeypatch):
    model = nn.Identity()
    timer = speed.ForwardTimer(model)
    # three calls: batch 2 for 1.0 s (500 ms/image), batch 1 for 0.1 s, batch 1 for 0.3 s
    monkeypatch.setattr(speed.time, "perf_counter", _FakeClock([0.0, 1.0, 2.0, 2.1, 3.0, 3.3]))
    model(torch.zeros(2, 3, 4, 4))
    model(torch.zeros(1, 3, 4, 4))
    model(torch.zeros(1, 3, 4, 4))
    assert timer.calls == [500.0, pytest.approx(100.0), pytest.approx(300.0)]
    assert timer.ms_per_image == pytest.approx(200.0)  # median of the calls after the first
    timer.close()
    model(torch.zeros(1, 3, 4, 4))  # detached: no more calls recorded (the fake clock is empty)
    assert len(timer.calls) == 3


def test_forward_timer_single_call_and_none():
    model = nn.Identity()
    timer = speed.ForwardTimer(model)
    assert timer.ms_per_image is None
    model(torch.zeros(1, 3, 2, 2))
    assert len(timer.calls) == 1 and timer.ms_per_image == timer.calls[0]  # nothing to drop
    timer.close()


def test_measure_latency_uses_forward_seconds(monkeypatch):
    """measure_latency reports the median of forward_seconds over the repeats, at the padded network size."""
    seen = []
    times = iter([0.004, 0.001, 0.002])

    def fake(model, x):
        seen.append(tuple(x.shape))
        return next(times)

    monkeypatch.setattr(speed, "forward_seconds", fake)
    conv = nn.Conv2d(3, 1, 1)
    out = speed.measure_latency(conv, (30, 50), repeats=3, warmup=0)
    assert seen == [(1, 3, 30, 50)] * 3
    assert out["latency_ms"] == pytest.approx(2.0) and out["fps"] == pytest.approx(500.0)
    assert out["params"] == 4 == speed.count_params(conv) and out["latency_size"] == [30, 50]


def test_padded_and_network_size():
    assert speed.padded_size((30, 50), 32) == (32, 64) and speed.padded_size((30, 50), None) == (30, 50)

    from depthlab.processing import AdapterProcessor

    class Adapter(nn.Module):  # sizes images through its own processor, as the foundation adapters do
        def processor(self):
            return AdapterProcessor(None, network_size=lambda h, w: (14 * 37, 14 * 49))

    assert speed.network_size(Adapter(), (480, 640), 32) == (518, 686)
    assert speed.network_size(nn.Identity(), (480, 640), 32) == (480, 640)

