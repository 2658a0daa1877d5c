"""Export: ONNX files verified against PyTorch, and a cached ONNX Runtime backend (:mod:`.onnx`).

Nothing heavy is imported here; ``from depthlab.export.onnx import export_onnx, OnnxBackend``.
"""
from __future__ import annotations

import importlib

_API = {"export_onnx": "depthlab.export.onnx", "OnnxBackend": "depthlab.export.onnx",
        "OnnxExportError": "depthlab.export.onnx"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'depthlab.export' has no attribute {name!r}")
