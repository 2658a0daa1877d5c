"""Exceptions with one-line, file-naming messages."""
from __future__ import annotations


class DepthlabError(Exception):
    """Base class of depthlab's user-facing errors."""


class DataError(DepthlabError):
    """A bad input item (corrupt file, size mismatch, missing file, no valid pixels).

    ``str(err)`` is one line: ``<path>: <problem>``.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class WeightsUnavailableError(DepthlabError):
    """Pretrained weights could neither be downloaded nor found locally."""
