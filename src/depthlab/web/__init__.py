"""The depthlab web app: a FastAPI layer over :class:`depthlab.predictor.Predictor` (``depthlab serve``).

``create_app(model="fastdepth", ...)`` builds the app; ``serve(...)`` runs it with uvicorn. FastAPI is imported
only when these are called (``pip install 'depthlab[web]'``). See docs/web.md.
"""
from __future__ import annotations

import importlib

_API = {"create_app": "depthlab.web.app", "serve": "depthlab.web.app", "DepthService": "depthlab.web.app"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'depthlab.web' has no attribute {name!r}")
