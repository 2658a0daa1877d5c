"""Export: ONNX files verified against PyTorch, and a cached ONNX Runtime backend (:mod:`.onnx`).

Nothing heavy is imported here; ``from depthlab.export.onnx import export_onnx, OnnxBackend``.
"""
from __future__ import annotations

from depthlab._lazy import lazy_exports

_API = {"export_onnx": "depthlab.export.onnx", "OnnxBackend": "depthlab.export.onnx",
        "OnnxExportError": "depthlab.export.onnx"}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
