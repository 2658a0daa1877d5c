"""FastAPI app: upload an image, get its depth as JSON + PNGs, or as the raw ``.npy`` / 16-bit PNG file.

Endpoints (see docs/web.md):

* ``GET /`` -- one self-contained HTML page (no external assets);
* ``POST /api/predict`` -- multipart field ``file``; query ``format=json|npy|png16`` (default json) and
  ``colormap`` (matplotlib name, default ``Spectral_r``);
* ``GET /api/models`` -- the served model (name, kind, unit, input constraints) and the registered names;
* ``GET /healthz`` -- liveness.

A bad request (no file, empty or undecodable upload, unknown format or colormap) is a 400 whose JSON
``detail`` is one line naming the upload; an upload above ``max_upload_mb`` is a 413. The model is built
once in :func:`create_app`; predictions are serialised with a lock (one PyTorch model, many request threads).
"""
# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime

import base64
import hashlib
import io as _pyio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from depthlab.errors import DataError, first_line

WEB_INSTALL_HINT = "the web app needs FastAPI and uvicorn: pip install 'depthlab[web]'"
RAW_FORMATS = ("json", "npy", "png16")
COLORMAPS = ("Spectral_r", "magma", "inferno", "viridis", "plasma", "turbo", "gray")


def _png_bytes(array: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes; level 1 (fast deflate) encodes a 640x480 photo ~3x faster than PIL's default 6 for ~12 % more
    bytes, the better trade for a response built per request."""
    from PIL import Image

    buf = _pyio.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_upload(data: bytes, name: str):
    """Upload bytes -> a fully decoded, EXIF-oriented PIL image (as files are read); DataError naming the upload."""
    from depthlab.io import open_pil

    if not data:
        raise DataError(name, "empty upload")
    return open_pil(name, data=data)


@dataclass
class DepthService:
    """The model behind the app: one :class:`~depthlab.predictor.Predictor`, used under a lock.

    Recent predictions are kept by upload content (SHA-1), at most ``cache_size`` of them and
    ``cache_mb`` megabytes of depth maps: the page re-sends the same image when the user only changes the
    colormap, and re-colouring must not re-run the model. The cache has its own lock, so a re-colour never
    waits behind a prediction in progress.
    """

    predictor: Any
    checkpoint_path: str | None = None
    cache_size: int = 8
    cache_mb: float = 256.0

    def __post_init__(self):
        self._lock = threading.Lock()  # the model
        self._cache_lock = threading.Lock()  # the recent predictions
        self._recent: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.model_runs = 0

    @classmethod
    def build(cls, model="fastdepth", checkpoint_path=None, device: str = "cpu", pretrained: bool = True,
              input_size="auto") -> "DepthService":
        from depthlab.predictor import Predictor

        p = Predictor(model, device=device, checkpoint_path=checkpoint_path, pretrained=pretrained,
                      input_size=input_size)
        return cls(p, str(checkpoint_path) if checkpoint_path else None)

    def describe(self) -> dict[str, Any]:
        info = self.predictor.info
        return {"name": self.predictor.model_name, "kind": self.predictor.kind, "unit": self.predictor.unit,
                "multiple_of": info.multiple_of, "input_size": info.input_size,
                "checkpoint_path": self.checkpoint_path}

    def predict(self, image):
        with self._lock:
            self.model_runs += 1
            return self.predictor(image)

    def predict_upload(self, data: bytes, name: str):
        """(image, prediction, model seconds, cached) for upload bytes; a recent identical upload is not re-run."""
        image = decode_upload(data, name)
        key = hashlib.sha1(data).hexdigest()
        with self._cache_lock:
            hit = self._recent.get(key)
            if hit is not None:
                self._recent.move_to_end(key)
                return image, hit[0], hit[1], True
        t0 = time.perf_counter()
        pred = self.predict(image)
        seconds = time.perf_counter() - t0
        limit = self.cache_mb * 2**20
        if pred.depth.nbytes <= limit:  # predictions are only read afterwards: sharing them is safe
            with self._cache_lock:
                self._recent[key] = (pred, seconds)
                while len(self._recent) > self.cache_size or \
                        sum(p.depth.nbytes for p, _ in self._recent.values()) > limit:
                    self._recent.popitem(last=False)
        return image, pred, seconds, False


def prediction_json(pred, image, colormap: str, seconds: float, cached: bool = False) -> dict[str, Any]:
    """The JSON body of ``/api/predict``: stats, the 16-bit PNG decoding, base64 RGB and colourised PNGs."""
    from depthlab.io import pil_to_rgb_array
    from depthlab.predictor import png16_encoding
    from depthlab.viz.colorize import colorize

    d = pred.depth
    finite = np.isfinite(d)
    valid = finite & (d > 0) if pred.kind == "metric" else finite
    color = colorize(d, cmap=colormap, mask=valid, reverse=pred.kind != "disparity")
    rgb = pil_to_rgb_array(image)
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    _, png16 = png16_encoding(d, pred.kind)
    return {
        "model": pred.model, "kind": pred.kind, "unit": pred.unit, "shape": list(d.shape),
        "min": float(d[valid].min()) if valid.any() else None, "max": float(d[valid].max()) if valid.any() else None,
        "valid_fraction": float(valid.mean()), "colormap": colormap, "seconds": round(seconds, 4),
        "cached": cached,
        "png16": png16, "rgb_png": _b64(_png_bytes(rgb)), "depth_png": _b64(_png_bytes(color)),
    }


def create_app(model="fastdepth", checkpoint_path=None, device: str = "cpu", pretrained: bool = True,
               input_size="auto", max_upload_mb: float = 25.0, service: DepthService | None = None):
    """The FastAPI app serving ``model`` (registered name, depthlab checkpoint path or ``nn.Module``).

    ``checkpoint_path``: local weights for a registered ``model``. ``input_size``: as in
    :class:`~depthlab.predictor.Predictor` (None = native resolution, padded). ``service``: a prebuilt
    :class:`DepthService` (then the other model arguments are ignored).
    """
    try:
        from fastapi import FastAPI, File, Query, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse, Response
    except ImportError as e:  # pragma: no cover - only without the [web] extra
        raise ImportError(WEB_INSTALL_HINT) from e

    from depthlab import __version__
    from depthlab.web.page import INDEX_HTML

    svc = service or DepthService.build(model, checkpoint_path, device, pretrained, input_size)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    app = FastAPI(title="depthlab", version=__version__,
                  description="Monocular depth estimation: upload an image, get depth.")
    app.state.service = svc

    def bad(status: int, msg: str):
        return JSONResponse({"detail": msg}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(INDEX_HTML)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "model": svc.predictor.model_name, "version": __version__}

    @app.get("/api/models")
    def models():
        from depthlab.models.registry import list_models

        return {"current": svc.describe(), "available": list_models(), "colormaps": list(COLORMAPS),
                "formats": list(RAW_FORMATS)}

    @app.post("/api/predict")
    def predict(file: UploadFile | None = File(None), format: str = Query("json"),
                colormap: str = Query("Spectral_r")):
        from depthlab.viz.colorize import get_cmap

        if format not in RAW_FORMATS:
            return bad(400, f"unknown format {format!r}; choose {', '.join(RAW_FORMATS)}")
        try:
            get_cmap(colormap)
        except ValueError as e:
            return bad(400, str(e))
        if file is None:
            return bad(400, "no image uploaded: send it as the multipart field 'file'")
        name = file.filename or "upload"
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return bad(413, f"{name}: upload larger than {max_upload_mb:g} MB")
        try:
            image, pred, seconds, cached = svc.predict_upload(data, name)
        except DataError as e:
            return bad(400, str(e))
        except ValueError as e:  # e.g. an image the model cannot take
            return bad(400, f"{name}: {first_line(e)}")
        stem = name.rsplit(".", 1)[0] or "depth"
        headers = {"X-Depth-Kind": pred.kind, "X-Depth-Unit": pred.unit.encode("ascii", "replace").decode()}
        if format == "npy":
            buf = _pyio.BytesIO()
            np.save(buf, pred.depth.astype(np.float32))
            headers["Content-Disposition"] = f'attachment; filename="{stem}.npy"'
            return Response(buf.getvalue(), media_type="application/octet-stream", headers=headers)
        if format == "png16":
            from depthlab.predictor import png16_encoding

            v, desc = png16_encoding(pred.depth, pred.kind)
            headers["Content-Disposition"] = f'attachment; filename="{stem}_depth16.png"'
            headers.update({f"X-Png16-{k[6:].capitalize()}": str(val) for k, val in desc.items()})
            return Response(_png_bytes(v), media_type="image/png", headers=headers)
        return prediction_json(pred, image, colormap, seconds, cached)

    return app


def serve(model="fastdepth", checkpoint_path=None, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", input_size="auto", log_level: str = "info") -> None:
    """Build the app and run it with uvicorn until interrupted (``depthlab serve``)."""
    try:
        import uvicorn
    except ImportError as e:  # pragma: no cover - only without the [web] extra
        raise ImportError(WEB_INSTALL_HINT) from e
    app = create_app(model=model, checkpoint_path=checkpoint_path, device=device, input_size=input_size)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve", "DepthService", "decode_upload", "prediction_json", "RAW_FORMATS", "COLORMAPS"]
