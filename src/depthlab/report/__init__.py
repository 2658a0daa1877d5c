"""Experiment reports: self-contained HTML (``html``), Markdown twin, and the figures (``figures``)."""
from depthlab.report.html import render_html, render_markdown, write_markdown, write_report

__all__ = ["render_html", "render_markdown", "write_markdown", "write_report"]
