"""Exceptions with one-line, file-naming messages."""
from __future__ import annotations

import difflib
import importlib
import re
from typing import Iterable


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


class InputError(DepthlabError, ValueError):
    """A bad argument or option the user gave (a ``ValueError``, so ``except ValueError`` still works)."""


class MissingFileError(DepthlabError, FileNotFoundError):
    """A file or folder the user named does not exist (a ``FileNotFoundError``)."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class OutputExistsError(DepthlabError, FileExistsError):
    """An output the user named exists and would be overwritten (a ``FileExistsError``)."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


class UnknownNameError(DepthlabError, KeyError, ValueError):
    """A name that is not among the known ones (model, dataset, protocol, transform, colormap).

    Both a ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument), so either ``except``
    keeps working. ``str(err)`` is the message itself: KeyError's own ``str`` would wrap it in quotes.
    Build it with :func:`unknown_name`.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(DepthlabError):
    """Pretrained weights could neither be downloaded nor found locally."""


class WeightsMismatchError(DepthlabError, RuntimeError):
    """A weights file that does not fit the model it was given to (missing / unexpected keys, shapes)."""


class MissingExtraError(DepthlabError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def did_you_mean(name, choices: Iterable, n: int = 3, cutoff: float = 0.5) -> str:
    """``"; did you mean: a, b?"`` listing the close matches of ``name`` among ``choices``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)
    return f"; did you mean: {', '.join(close)}?" if close else ""


def unknown_keyword(factory, kwargs: dict, skip: Iterable[str] = ()) -> str | None:
    """The first key of ``kwargs`` that ``factory``'s signature does not take, described for a one-line error
    (``"'bse'; did you mean: base? (its options: base, depth)"``); None when every key fits, or when
    ``factory`` takes ``**kwargs`` or has no signature to read (the call then decides). ``skip``: parameters
    that are not options (``self``, positional inputs)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    unknown = [k for k in kwargs if k not in params]
    if not unknown:
        return None
    options = [p for p in params if p not in ("self", *skip)]
    return f"{unknown[0]!r}{did_you_mean(unknown[0], options, n=1)} (its options: {', '.join(options) or 'none'})"


def unknown_name(kind: str, name, choices: Iterable, *, listed: bool | Iterable = True, otherwise: str = "",
                 n: int = 3, cutoff: float = 0.5, error: type[UnknownNameError] = UnknownNameError) -> UnknownNameError:
    """The one "unknown <kind> 'name'; did you mean: a, b? (known: ...)" error (to ``raise``).

    ``listed``: append ``(known: ...)`` listing every choice (True), nothing (False) or these names (an
    iterable, e.g. canonical names when ``choices`` also holds aliases). ``otherwise``: the hint when no
    choice is close.
    """
    choices = list(choices)
    hint = did_you_mean(name, choices, n=n, cutoff=cutoff) or otherwise
    shown = choices if listed is True else list(listed or ())
    known = f" (known: {', '.join(map(str, shown))})" if shown else ""
    return error(f"unknown {kind} {str(name)!r}{hint}{known}")


def require(module: str, extra: str, needed_by: str):
    """``import module``, or raise :class:`MissingExtraError` saying which depthlab extra installs it.

    ``needed_by`` names what needs it, e.g. ``"the web app"`` -> "the web app needs fastapi, which is not
    installed: pip install 'depthlab[web]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.partition(".")[0]
        raise MissingExtraError(f"{needed_by} needs {top}, which is not installed: "
                                f"pip install 'depthlab[{extra}]'") from e


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour codes some libraries put in messages (torch.onnx)


def first_line(e: BaseException, default: str | None = None) -> str:
    """The first non-empty line of ``str(e)``; ``default`` (else the exception's class name) when empty.

    Errors from libraries (h5py, PIL, rasterio, safetensors) often carry multi-line messages; a skipped item
    in a batch is reported on one line, so only the first line is kept.
    """
    for line in _ANSI.sub("", str(e)).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__ if default is None else default


def one_line(e: BaseException) -> str:
    """``"<ExceptionType>: <first line>"`` (just the type when the message is empty)."""
    text = first_line(e, default="")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def item_reason(e: BaseException) -> str:
    """A failed batch item's reason, where the caller already names the file: a DataError's problem alone,
    :func:`one_line` of anything else."""
    return e.problem if isinstance(e, DataError) else one_line(e)
