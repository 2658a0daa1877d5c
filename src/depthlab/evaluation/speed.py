"""Model cost in one place: parameters, MACs (FLOP counting) and latency.

* :func:`count_params`, :func:`network_size` -- the size of a model and of the input the Predictor feeds it.
* :func:`count_macs` / :func:`macs_by_op` -- multiply-accumulates of one forward pass, counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (attention included, MACs = FLOPs / 2); used by the model
  zoo table (``depthlab models``) and ``benchmarks/``.
* :func:`measure_latency` -- median latency and FPS on a random input (an experiment's ``speed:`` section,
  the Leve FPS protocol); :func:`forward_seconds` is its clock: CUDA events between synchronisations on a
  GPU, ``time.perf_counter`` on a CPU.
* :class:`ForwardTimer` -- per-image time of every ``forward`` call during an evaluation (forward hooks;
  the zero-shot benchmark's ``latency_ms``).
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
import torch.nn as nn

from depthlab.processing import has_own_processor, padded_size

COST_SIZE = (480, 640)  # (H, W) at which the model zoo reports GMACs


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def network_size(model: nn.Module, size: tuple[int, int], multiple_of: int | None = None) -> tuple[int, int]:
    """The network input for an ``H x W`` image: an adapter's own processor's size (Depth Anything: 518 short
    side, multiple of 14), else ``size`` padded up to ``multiple_of`` -- what the Predictor feeds at native size."""
    if has_own_processor(model):
        return model.processor().network_size(*size)
    return padded_size(size, multiple_of)


def count_macs(model: nn.Module, size: tuple[int, int] = COST_SIZE, multiple_of: int | None = None,
               device: str = "cpu") -> float:
    """Multiply-accumulates (MACs) of one forward pass for an ``H x W`` image, at :func:`network_size`.

    Attention runs through PyTorch's math path while counting so that its two matrix products are counted
    (the fused CPU kernels are invisible to ``torch.utils.flop_counter``). A model with its own
    ``count_macs(h, w, device)`` (Marigold: a denoising loop) counts itself.
    """
    if hasattr(model, "count_macs"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            return float(model.count_macs(*size, device=device))
    return sum(macs_by_op(model, size, multiple_of, device).values())


def macs_by_op(model: nn.Module, size: tuple[int, int] = COST_SIZE, multiple_of: int | None = None,
               device: str = "cpu") -> dict[str, float]:
    """:func:`count_macs` split by ATen op (``addmm``/``mm`` = linear layers, ``bmm`` = attention's products
    on the math path, ``convolution`` ...), for one forward pass at :func:`network_size`."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        x = torch.rand(1, 3, *network_size(model, size, multiple_of), device=device)
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return {str(op).split(".")[-1]: flops / 2.0 for op, flops in counter.get_flop_counts()["Global"].items()}


def measure_latency(model, size: Sequence[int], repeats: int = 5, warmup: int = 1, device: str = "cpu",
                    backend: str | None = None) -> dict[str, float]:
    """Median latency (ms) of ``model`` on one random input for an ``HxW`` image (at the network size the Predictor
    feeds: padded to ``multiple_of``, or an adapter's own processing size; :func:`network_size`) and FPS.

    ``device``: ``cpu``, ``cuda[:i]`` or ``auto`` (CUDA when available). On CUDA each run is timed with CUDA
    events after a synchronisation (the Leve thesis' protocol: a random 640x480 tensor, ~200 runs); on a CPU
    with ``time.perf_counter`` around the same runs (:func:`forward_seconds`). ``backend``: what runs the network,
    as the Predictor chooses it (:class:`depthlab.backends.Network`; default auto = ONNX Runtime when it verifies,
    else eager channels_last); the export happens before the clock starts; ``latency_backend`` says what ran."""
    from depthlab.backends import Network

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    info = getattr(model, "depth_info", None)
    h, w = network_size(model, tuple(int(s) for s in size), getattr(info, "multiple_of", None))
    x = torch.rand(1, 3, h, w, device=dev)
    model = model.eval().to(dev)
    net = Network(model, backend, dev)
    with torch.inference_mode():
        net.prepare(x.shape)  # export / load the ONNX file outside the timed runs
        for _ in range(max(warmup, 1 if net.requested == "auto" else 0)):  # auto's eager check runs untimed
            net(x)
        times = sorted(forward_seconds(net, x) for _ in range(repeats))
    if net.channels_last:  # auto's eager fallback switched the module to channels_last: give it back as it was
        model.to(memory_format=torch.contiguous_format)
    model.cpu()
    ms = 1000.0 * times[len(times) // 2]
    return {"params": int(count_params(model)), "latency_ms": ms, "fps": 1000.0 / ms if ms > 0 else None,
            "latency_size": [h, w], "latency_threads": torch.get_num_threads(), "latency_device": str(dev),
            "latency_repeats": int(repeats), "latency_backend": net.backend}


def forward_seconds(model, x: torch.Tensor) -> float:
    """Seconds of one ``model(x)``: CUDA events between synchronisations when ``x`` is on a GPU, perf_counter
    otherwise."""
    if x.device.type != "cuda":
        t0 = time.perf_counter()
        model(x)
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(x.device)
    start.record()
    model(x)
    end.record()
    torch.cuda.synchronize(x.device)
    return start.elapsed_time(end) / 1000.0


class ForwardTimer:
    """Per-image wall time of each ``model.forward`` call while attached (forward hooks); reported as the
    median over calls after the first (the first call pays one-off warm-up costs). ``close()`` detaches."""

    def __init__(self, model: nn.Module):
        self.calls: list[float] = []  # ms per image of each forward call
        self._t0 = None
        self._handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._t0 = time.perf_counter()

    def _post(self, module, args, output):
        if self._t0 is not None:
            n = int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1
            self.calls.append(1000.0 * (time.perf_counter() - self._t0) / max(n, 1))
            self._t0 = None

    def close(self):
        for h in self._handles:
            h.remove()

    @property
    def ms_per_image(self) -> float | None:
        timed = self.calls[1:] or self.calls  # drop the warm-up call when there are others
        return float(statistics.median(timed)) if timed else None


__all__ = ["count_params", "network_size", "padded_size", "count_macs", "macs_by_op", "measure_latency",
           "forward_seconds", "ForwardTimer", "COST_SIZE"]
