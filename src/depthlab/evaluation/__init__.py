"""Evaluation: protocols as data, per-image alignment and ``evaluate`` (``depthlab eval``).

* :mod:`depthlab.evaluation.protocols` -- :class:`Protocol`, presets, crops.
* :mod:`depthlab.evaluation.align` -- median / least-squares alignment in depth or disparity space.
* :mod:`depthlab.evaluation.runner` -- :func:`evaluate` and :func:`format_markdown`.
* :mod:`depthlab.evaluation.benchmark` -- the zero-shot benchmark (models x datasets): ``run_benchmark``.
* :mod:`depthlab.evaluation.speed` -- parameters, MACs and latency (``measure_latency``, ``count_macs``).

Names are imported lazily so ``import depthlab.evaluation.<module>`` stays cheap.
"""
from __future__ import annotations

from depthlab._lazy import lazy_exports

_API = {
    "Protocol": "depthlab.evaluation.protocols",
    "get_protocol": "depthlab.evaluation.protocols",
    "list_protocols": "depthlab.evaluation.protocols",
    "register_protocol": "depthlab.evaluation.protocols",
    "crop_mask": "depthlab.evaluation.protocols",
    "crop_bounds": "depthlab.evaluation.protocols",
    "CROPS": "depthlab.evaluation.protocols",
    "CropError": "depthlab.evaluation.protocols",
    "align": "depthlab.evaluation.align",
    "median_scale": "depthlab.evaluation.align",
    "lstsq_scale_shift": "depthlab.evaluation.align",
    "evaluate": "depthlab.evaluation.runner",
    "format_markdown": "depthlab.evaluation.runner",
    "apply_protocol": "depthlab.evaluation.runner",
    "load_prediction": "depthlab.evaluation.runner",
}

__all__ = sorted(_API)

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
