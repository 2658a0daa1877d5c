"""The report in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright without a
browser download) loads it without console errors, shows the metrics table and decodes every figure,
and renders it to a PNG.

``make test`` installs ``chromium`` with apt when it is missing; without it (or without the Python
``playwright`` package from the ``dev`` extra) this test is skipped with the reason.
"""
from __future__ import annotations

import shutil

import pytest

from test_report import make_results

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium executable (make test installs Debian's `chromium` with apt-get; apt unavailable here?)")


def test_report_renders_in_headless_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    from depthlab.report.html import write_report

    exe = _chromium()
    report = write_report(make_results(tmp_path), tmp_path / "report.html", base=tmp_path)
    shot = tmp_path / "report.png"
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        # Playwright gives the browser its own temporary profile (--user-data-dir is its business)
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            rows = page.locator("table#metrics-test tbody tr").count()
            best = page.locator("table#metrics-test td.best").count()
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            details = page.locator("details").count()
            title = page.title()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []  # nothing from the network
    assert rows == 3 and best >= 9  # two runs + the failed one; a best cell in every metric column
    assert len(images) == 3 and all(ok and w > 100 and h > 50 for ok, w, h in images)
    assert details == 3 and title == "unit <report>"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
