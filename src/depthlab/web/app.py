"""FastAPI app: upload an image, get its depth as JSON + PNGs, or as the raw ``.npy`` / 16-bit PNG / PLY file.

Endpoints (see docs/web.md):

* ``GET /`` -- the HTML page; ``GET /static/...`` -- its vendored scripts (three.js subset, point-cloud viewer):
  nothing comes from a CDN (FastAPI's CDN-loaded ``/docs`` and ``/redoc`` are off);
* ``POST /api/predict`` -- multipart field ``file``; query ``format=json|npy|png16|ply`` (default json),
  ``colormap`` (matplotlib name, default ``Spectral_r``), for ``ply`` ``max_side`` and ``ply_scale``;
* ``GET /api/models`` -- the served model (name, kind, unit, input constraints) and the registered names;
* ``GET /api/samples``, ``GET /api/samples/{name}`` -- the bundled NYU sample photos (the page's *Example*);
* ``GET /healthz`` -- liveness.

A bad request (no file, empty or undecodable upload, unknown format or colormap, a bad query value: a
:class:`~depthlab.errors.DepthlabError`) is a 400 whose JSON ``detail`` is one line naming the upload or the
parameter; an upload above ``max_upload_mb`` is a 413. Anything else is a bug: a 500 whose ``detail`` names the
exception type, while the exception goes on to the server, which logs its traceback. The model is built once in :func:`create_app`; predictions are serialised with a lock (one PyTorch
model, many request threads).
"""
# no `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime

import hashlib
import io as _pyio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depthlab.errors import DataError, DepthlabError, InputError, first_line, require
from depthlab.io import ImageTooLargeError
from depthlab.outputs import colorize_prediction, png16_encoding, png16_text
from depthlab.web.views import b64, cloud_ply, color_scale, png_bytes, readout_grid, sample_images, upload_warnings

RAW_FORMATS = ("json", "npy", "png16", "ply")
STATIC_DIR = Path(__file__).resolve().parent / "static"
COLORMAPS = ("Spectral_r", "magma", "inferno", "viridis", "plasma", "turbo", "gray")


WEB_MAX_PIXELS = 16_000_000  # an upload's pixel cap (create_app's max_pixels): ~4900x3300, 48 MB as 8-bit RGB
WEB_MAX_DECODES = 2  # uploads decoded and predicted at the same time (create_app's max_decodes)


def decode_upload(data: bytes, name: str, max_pixels: int | None = WEB_MAX_PIXELS):
    """Upload bytes -> a fully decoded, EXIF-oriented PIL image (as files are read); DataError naming the upload
    (:class:`~depthlab.io.ImageTooLargeError` above ``max_pixels``, read from the header before decoding)."""
    from depthlab.io import open_pil

    if not data:
        raise DataError(name, "empty upload")
    return open_pil(name, data=data, max_pixels=max_pixels)


def safe_upload_name(name: str | None) -> str:
    """The base name of an uploaded file, as the browser sent it, made harmless to echo back: no folders
    (``../../x.npy`` -> ``x.npy``), no control characters, no leading dots; ``upload`` when nothing is left."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    return base[:200] or "upload"


def attachment_header(filename: str) -> str:
    """``Content-Disposition`` for a download named ``filename`` (any Unicode): an ASCII ``filename=`` fallback
    plus the exact name as RFC 5987 ``filename*=UTF-8''...`` (RFC 6266). HTTP headers are latin-1: a raw
    non-ASCII name there cannot be sent at all."""
    from urllib.parse import quote

    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


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
    max_pixels: int | None = WEB_MAX_PIXELS
    max_decodes: int = WEB_MAX_DECODES

    def __post_init__(self):
        if self.max_decodes < 1:
            raise ValueError(f"max_decodes must be >= 1, got {self.max_decodes}")
        # decoded uploads held at once (the model lock alone would let every request thread decode in parallel)
        self._decode_slots = threading.BoundedSemaphore(self.max_decodes)
        self._lock = threading.Lock()  # the model
        self._cache_lock = threading.Lock()  # the recent predictions
        self._recent: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.model_runs = 0

    @classmethod
    def build(cls, model="fastdepth", checkpoint_path=None, device: str = "cpu", pretrained: bool = True,
              input_size="auto", backend: str | None = None, **options) -> "DepthService":
        from depthlab.predictor import Predictor

        p = Predictor(model, device=device, checkpoint_path=checkpoint_path, pretrained=pretrained,
                      input_size=input_size, backend=backend)
        return cls(p, str(checkpoint_path) if checkpoint_path else None, **options)

    def describe(self) -> dict[str, Any]:
        info = self.predictor.info
        return {"name": self.predictor.model_name, "kind": self.predictor.kind, "unit": self.predictor.unit,
                "multiple_of": info.multiple_of, "input_size": info.input_size,
                "checkpoint_path": self.checkpoint_path,
                "backend": self.predictor.backend_used or self.predictor.backend}  # used so far, else requested

    def predict(self, image):
        with self._lock:
            self.model_runs += 1
            return self.predictor(image)

    def predict_upload(self, data: bytes, name: str):
        """(image, prediction, model seconds, cached) for upload bytes; a recent identical upload is not re-run.
        At most ``max_decodes`` uploads are decoded and predicted at once (the others wait): memory stays below
        about ``max_decodes`` x the cost of a ``max_pixels`` image."""
        with self._decode_slots:
            return self._predict_upload(data, name)

    def _predict_upload(self, data: bytes, name: str):
        image = decode_upload(data, name, self.max_pixels)
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


def prediction_json(pred, image, colormap: str, seconds: float, cached: bool = False,
                    name: str = "upload") -> dict[str, Any]:
    """The JSON body of ``/api/predict``: stats, the 16-bit PNG decoding, base64 RGB and colourised PNGs."""
    from depthlab.io import pil_to_rgb_array, to_uint8

    d = pred.depth
    color, valid = colorize_prediction(pred, colormap)
    rgb = to_uint8(pil_to_rgb_array(image))
    _, png16 = png16_encoding(d, pred.kind)
    return {
        "model": pred.model, "kind": pred.kind, "unit": pred.unit, "shape": list(d.shape),
        "min": float(d[valid].min()) if valid.any() else None, "max": float(d[valid].max()) if valid.any() else None,
        "valid_fraction": float(valid.mean()), "colormap": colormap, "seconds": round(seconds, 4),
        "cached": cached,
        "png16": png16, "rgb_png": b64(png_bytes(rgb)), "depth_png": b64(png_bytes(color)),
        "color_scale": color_scale(d, valid, pred.kind, pred.unit, colormap), "readout": readout_grid(d, valid),
        "warnings": upload_warnings(image, name),  # color_scale, readout, warnings: see depthlab.web.views
    }


def _bad(status: int, msg: str):
    """The error answer of every endpoint: ``{"detail": one line}`` with ``status``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": msg}, status_code=status)


def create_app(model="fastdepth", checkpoint_path=None, device: str = "cpu", pretrained: bool = True,
               input_size="auto", max_upload_mb: float = 25.0, service: DepthService | None = None,
               max_pixels: int | None = WEB_MAX_PIXELS, max_decodes: int = WEB_MAX_DECODES,
               backend: str | None = None):
    """The FastAPI app serving ``model`` (registered name, depthlab checkpoint path or ``nn.Module``).

    ``checkpoint_path``: local weights for a registered ``model``. ``input_size``: as in
    :class:`~depthlab.predictor.Predictor` (None = native resolution, padded). ``max_upload_mb``: larger uploads
    get a 413. ``service``: a prebuilt :class:`DepthService` (then the other model arguments are ignored).
    ``max_pixels``: an upload declaring more pixels is a 413, refused from its header; ``max_decodes``: uploads
    decoded and predicted at once.
    ``backend``: what runs the network, as in the Predictor (default auto: ONNX Runtime when it verifies).
    """
    require("fastapi", "web", "the web app")
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.staticfiles import StaticFiles

    from depthlab import __version__

    if not max_upload_mb > 0:
        raise InputError(f"max_upload_mb must be > 0, got {max_upload_mb!r}")
    svc = service or DepthService.build(model, checkpoint_path, device, pretrained, input_size,
                                        max_pixels=max_pixels, max_decodes=max_decodes, backend=backend)
    # /docs and /redoc would load Swagger UI / ReDoc from a CDN: off, so that nothing leaves the machine
    # (the schema stays at /openapi.json)
    app = FastAPI(title="depthlab", version=__version__, docs_url=None, redoc_url=None,
                  description="Monocular depth estimation: upload an image, get depth.")
    app.state.service = svc
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    def invalid_query(request, exc):  # FastAPI's 422 + list of dicts -> our one-line 400
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        return _bad(400, f"{where}: {err.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    def internal_error(request, exc):  # a bug: one JSON line here; Starlette re-raises it for the server's log
        return _bad(500, f"internal error ({type(exc).__name__}); the traceback is in the server log")

    _add_info_routes(app, svc, __version__)
    _add_predict_route(app, svc, max_upload_mb)
    return app


def _add_info_routes(app, svc: DepthService, version: str) -> None:
    """``GET /``, ``/healthz``, ``/api/models``, ``/api/samples[/{name}]``."""
    from fastapi.responses import FileResponse, HTMLResponse

    from depthlab.web.page import INDEX_HTML

    @app.get("/", response_class=HTMLResponse)
    def index():
        return HTMLResponse(INDEX_HTML)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "model": svc.predictor.model_name, "version": version}

    @app.get("/api/models")
    def models():
        from depthlab.models.registry import list_models

        return {"current": svc.describe(), "available": list_models(), "colormaps": list(COLORMAPS),
                "formats": list(RAW_FORMATS)}

    @app.get("/api/samples")
    def samples():
        return {"samples": list(sample_images())}

    @app.get("/api/samples/{name}")
    def sample(name: str):
        path = sample_images().get(name)
        if path is None:
            return _bad(404, f"no bundled sample {name!r}; see GET /api/samples")
        return FileResponse(path)


def _add_predict_route(app, svc: DepthService, max_upload_mb: float) -> None:
    """``POST /api/predict``: checks, the (cached) prediction, then the JSON or one raw file."""
    from fastapi import File, Query, UploadFile
    from fastapi.responses import Response

    max_bytes = int(max_upload_mb * 1024 * 1024)

    @app.post("/api/predict")
    def predict(file: UploadFile | None = File(None), format: str = Query("json"),
                colormap: str = Query("Spectral_r"), max_side: int | None = Query(None, ge=1),
                ply_scale: float | None = Query(None, gt=0)):
        from depthlab.viz.colorize import get_cmap

        if format not in RAW_FORMATS:
            return _bad(400, f"unknown format {format!r}; choose {', '.join(RAW_FORMATS)}")
        try:
            get_cmap(colormap)
        except DepthlabError as e:
            return _bad(400, str(e))
        if file is None:
            return _bad(400, "no image uploaded: send it as the multipart field 'file'")
        name = safe_upload_name(file.filename)
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return _bad(413, f"{name}: upload larger than {max_upload_mb:g} MB")
        try:
            image, pred, seconds, cached = svc.predict_upload(data, name)
            if format == "json":
                return prediction_json(pred, image, colormap, seconds, cached, name)
            body, media, headers = file_response(pred, image, format, name, max_side, ply_scale)
        except ImageTooLargeError as e:
            return _bad(413, str(e))
        except DataError as e:  # its message names the upload already
            return _bad(400, str(e))
        except DepthlabError as e:  # e.g. an image the model cannot take, a PLY of relative depth without a scale
            return _bad(400, f"{name}: {first_line(e)}")
        return Response(body, media_type=media, headers=headers)


def file_response(pred, image, format: str, name: str, max_side: int | None = None,
                  ply_scale: float | None = None) -> tuple[bytes, str, dict[str, str]]:
    """(body, media type, headers) of a raw ``/api/predict`` answer: ``npy``, ``png16`` or ``ply`` (the
    coloured point cloud; ``max_side`` subsamples it, ``ply_scale`` scales relative/disparity depth)."""
    from depthlab.io import pil_to_rgb_array

    stem = name.rsplit(".", 1)[0] or "depth"
    headers = {"X-Depth-Kind": pred.kind, "X-Depth-Unit": pred.unit.encode("ascii", "replace").decode()}
    if format == "npy":
        buf = _pyio.BytesIO()
        np.save(buf, pred.depth.astype(np.float32))
        body, media, fname = buf.getvalue(), "application/octet-stream", f"{stem}.npy"
    elif format == "png16":
        v, desc = png16_encoding(pred.depth, pred.kind)
        headers.update({f"X-Png16-{k[6:].capitalize()}": str(val) for k, val in desc.items()})
        # the file says what it holds, as `depthlab predict --formats png16` writes it (docs/outputs.md)
        body, media, fname = png_bytes(v, text=png16_text(desc, pred)), "image/png", f"{stem}_depth16.png"
    else:
        rgb = pil_to_rgb_array(image)  # uint8, or float [0, 1] for 16-bit images: the PLY writer takes both
        body, media, fname = cloud_ply(pred, rgb, max_side, ply_scale), "application/octet-stream", f"{stem}.ply"
    headers["Content-Disposition"] = attachment_header(fname)
    return body, media, headers


def serve(model="fastdepth", checkpoint_path=None, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", input_size="auto", max_upload_mb: float = 25.0, log_level: str = "info",
          max_pixels: int | None = WEB_MAX_PIXELS, backend: str | None = None) -> None:
    """Build the app and run it with uvicorn until interrupted (``depthlab serve``)."""
    uvicorn = require("uvicorn", "web", "the web app")
    app = create_app(model=model, checkpoint_path=checkpoint_path, device=device, input_size=input_size,
                     max_upload_mb=max_upload_mb, max_pixels=max_pixels, backend=backend)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["create_app", "serve", "DepthService", "decode_upload", "safe_upload_name", "attachment_header",
           "prediction_json", "file_response", "RAW_FORMATS",
           "COLORMAPS", "STATIC_DIR"]
