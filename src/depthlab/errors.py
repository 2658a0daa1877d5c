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


class UnknownNameError(DepthlabError, KeyError):
    """An unregistered model / dataset name (a KeyError, so ``except KeyError`` still works).

    ``str(err)`` is the message itself: KeyError's own ``str`` would wrap it in quotes.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(DepthlabError):
    """Pretrained weights could neither be downloaded nor found locally."""


def first_line(e: BaseException, default: str | None = None) -> str:
    """The first non-empty line of ``str(e)``; ``default`` (else the exception's class name) when empty.

    Errors from libraries (h5py, PIL, rasterio, safetensors) often carry multi-line messages; a skipped item
    in a batch is reported on one line, so only the first line is kept.
    """
    for line in str(e).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__ if default is None else default


def one_line(e: BaseException) -> str:
    """``"<ExceptionType>: <first line>"`` (just the type when the message is empty)."""
    text = first_line(e, default="")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
