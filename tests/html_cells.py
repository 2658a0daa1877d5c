"""Test helper: read the report HTML back (table cells with their data-* attributes, images, links)."""
from __future__ import annotations

from html.parser import HTMLParser


class TableReader(HTMLParser):
    """Collects every <td data-run data-col data-value> cell with its text, classes and table id, and <img> sources."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._cell = None
        self._table = None  # id of the enclosing <table>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self._table = a.get("id")
        if tag == "td" and "data-col" in a:
            self._cell = {**a, "text": "", "table": self._table}
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("href", "src"):
            if key in a and tag != "img":
                self.links.append(a[key])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None
