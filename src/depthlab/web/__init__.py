"""The depthlab web app: a FastAPI layer over :class:`depthlab.predictor.Predictor` (``depthlab serve``).

``create_app(model="fastdepth", ...)`` builds the app; ``serve(...)`` runs it with uvicorn. FastAPI is imported
only when these are called (``pip install 'depthlab[web]'``). See docs/web.md.
"""
from __future__ import annotations

from depthlab._lazy import lazy_exports

_API = {"create_app": "depthlab.web.app", "serve": "depthlab.web.app", "DepthService": "depthlab.web.app"}
__all__ = sorted(_API)

__getattr__, __dir__ = lazy_exports(__name__, _API, __all__)
