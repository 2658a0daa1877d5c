"""The web app in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright) against the
app served by uvicorn on 127.0.0.1 (FastDepth, bundled weights).

One browser session walks through what a user does: *Example* (a bundled NYU photo) -> result with colour bar
and pixel readout, before/after slider, 3-D point cloud (non-blank WebGL canvas that changes when dragged),
a 16-bit depth map uploaded as a photo (warning), an undecodable upload (error state clears the old result),
and the page at phone width. Nothing may be requested from another host.

Skipped with the reason without ``chromium`` (``make test`` installs it with apt) or the ``playwright``
package (dev extra). ``DEPTHLAB_WEB_SCREENSHOTS=docs/img`` also writes the screenshots of docs/web.md there.
"""
from __future__ import annotations

import base64
import io
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_report_browser import CHROMIUM_FLAGS, _chromium

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "depthlab" / "assets" / "samples" / "nyu"
EXAMPLE = "metric3d_00000.png"
# WebGL without a GPU: Chromium's software rasteriser (SwiftShader) must be allowed explicitly
WEBGL_FLAGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="module")
def browser_setup():
    """(playwright sync API, chromium path); skips before the server starts when either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    return sync_api, _chromium()


@pytest.fixture(scope="module")
def server():
    """(base URL, service) of the app served by uvicorn in a thread; stopped after the module."""
    from depthlab.web.app import DepthService, create_app

    svc = DepthService.build("fastdepth")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(service=svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", svc
    srv.should_exit = True
    thread.join(timeout=10)


def _canvas_rgb(page) -> np.ndarray:
    url = page.evaluate("document.getElementById('cloud').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def _shot(page, tmp_path: Path, name: str, **kw) -> Path:
    """Screenshot into tmp_path, or into $DEPTHLAB_WEB_SCREENSHOTS as a 256-colour PNG (a third of the bytes)."""
    docs = os.environ.get("DEPTHLAB_WEB_SCREENSHOTS")
    path = (Path(docs) if docs else tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), **kw)
    if docs:
        Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _predict_example(page):
    page.locator("#sample").select_option(EXAMPLE)
    page.click("#example")
    page.wait_for_function("document.getElementById('go').disabled === false && "
                           "document.getElementById('msg').textContent.startsWith('done')", timeout=15000)
    assert page.locator("#cloud").get_attribute("data-points"), page.locator("#cloudcap").inner_text()  # WebGL?


def _check_result(page, reference: np.ndarray):
    """Colour bar ticks = colorize's 2nd/98th percentiles; the readout under the cursor = the depth there."""
    lo, hi = np.percentile(reference, (2, 98))
    ticks = [page.locator(f"#tick-{end}").inner_text() for end in ("lo", "hi")]
    assert ticks == [f"{lo:.4g} m", f"{hi:.4g} m"]
    assert page.evaluate("document.getElementById('bar').naturalWidth") == 256
    box = page.locator("#rgb").bounding_box()
    h, w = reference.shape
    row, col = 300, 100
    page.mouse.move(box["x"] + (col + 0.5) * box["width"] / w, box["y"] + (row + 0.5) * box["height"] / h)
    m = re.fullmatch(r"x (\d+), y (\d+): ([0-9.]+) m", page.locator("#readout").inner_text())
    assert m, page.locator("#readout").inner_text()
    r, c = int(m[2]), int(m[1])
    assert abs(r - row) <= 1 and abs(c - col) <= 1
    assert float(m[3]) == pytest.approx(float(reference[r, c]), rel=1e-3)


def _check_slider_and_cloud(page):
    page.locator("#split").fill("20")
    assert "20%" in page.evaluate("getComputedStyle(document.getElementById('depth')).clipPath")
    assert page.evaluate("document.getElementById('divider').style.left") == "20%"
    assert int(page.locator("#cloud").get_attribute("data-points")) == 214 * 160  # 640x480, every 3rd px
    before = _canvas_rgb(page)
    assert (np.abs(before - before[0, 0]).sum(-1) > 30).mean() > 0.2  # not blank: a quarter+ is the scene
    assert len(np.unique(before.reshape(-1, 3), axis=0)) > 500  # the photo's colours, not one flat fill
    box = page.locator("#cloud").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    assert np.abs(_canvas_rgb(page) - before).mean() > 5  # the drag rotated the view


def _check_colormap_change(page, svc):
    """Another colormap re-colours from the server's cache and leaves the 3-D view (photo colours) as it is."""
    runs, canvas = svc.model_runs, _canvas_rgb(page)
    old = page.evaluate("document.getElementById('depth').src")
    page.locator("#cmap").select_option("gray")
    recoloured = f"document.getElementById('depth').src !== {old!r}"
    page.wait_for_function(recoloured + " && !document.getElementById('go').disabled")
    assert svc.model_runs == runs and (_canvas_rgb(page) == canvas).all()
    assert "colormap gray" in page.locator("#barcap").inner_text()


def _check_warning_then_error(page):
    page.locator("#file").set_input_files(str(SAMPLES / "depth" / EXAMPLE))  # a 16-bit depth map as a "photo"
    page.click("#go")
    page.wait_for_selector("#warnings:not([hidden])", timeout=15000)
    assert "looks like a depth map" in page.locator("#warnings").inner_text()
    page.locator("#file").set_input_files({"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"})
    page.click("#go")
    page.wait_for_selector("#status.error", timeout=15000)
    assert page.locator("#msg").inner_text() == \
        "error 400: notes.png: cannot decode image (not a recognised image format)"
    assert page.locator("#result").is_hidden() and page.locator("#warnings").is_hidden()
    assert page.evaluate("document.getElementById('rgb').getAttribute('src')") is None  # the old result is gone
    assert not page.locator("#go").is_disabled()  # the busy state ended


def _check_phone(page):
    page.wait_for_selector("#sample option", state="attached")
    _predict_example(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page wider than the phone: {width}px"
    compare, cloud = page.locator("#compare").bounding_box(), page.locator("#cloud").bounding_box()
    assert cloud["y"] >= compare["y"] + compare["height"] and compare["width"] > 300  # stacked, full width


def test_web_page_in_headless_chromium(browser_setup, server, tmp_path):
    sync_api, exe = browser_setup
    url, svc = server
    reference = svc.predict(Image.open(SAMPLES / "rgb" / EXAMPLE)).depth
    errors: list[str] = []
    foreign: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS + WEBGL_FLAGS)
        try:
            for viewport in ({"width": 1200, "height": 860}, {"width": 390, "height": 844}):
                page = browser.new_page(viewport=viewport, device_scale_factor=1)
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                local = (url, "data:", "blob:")
                page.on("request", lambda r: None if r.url.startswith(local) else foreign.append(r.url))
                page.goto(url, wait_until="load")
                if viewport["width"] > 400:
                    page.wait_for_selector("#sample option", state="attached")
                    _predict_example(page)
                    _check_result(page, reference)
                    _check_slider_and_cloud(page)
                    _shot(page, tmp_path, "web_desktop.png")
                    _check_colormap_change(page, svc)
                    _check_warning_then_error(page)
                    _shot(page, tmp_path, "web_error.png")
                else:
                    _check_phone(page)
                    _shot(page, tmp_path, "web_phone.png", full_page=True)
                page.close()
        finally:
            browser.close()
    errors = [e for e in errors if "400 (Bad Request)" not in e]  # the error step's own failed request
    assert errors == [] and foreign == []
