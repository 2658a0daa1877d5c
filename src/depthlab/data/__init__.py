"""Datasets in their real on-disk formats, behind one factory.

>>> from depthlab.data import create_dataset, list_datasets
>>> ds = create_dataset("nyu", root="nyu_depth_v2_labeled.mat", split="test")   # doctest: +SKIP
>>> sample = ds[0]   # {"image" (3,H,W) [0,1], "depth" (1,H,W) metres, "mask" (1,H,W) bool, "meta" {...}}

Readers are imported lazily (``name -> "module:attribute"``), so importing this package stays cheap.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from depthlab._lazy import lazy_exports
from depthlab.errors import DepthlabError, unknown_keyword, unknown_name


class DatasetOptionError(DepthlabError, TypeError):
    """A reader option (``data.kwargs`` key) the dataset does not take; one line naming the key and the dataset."""

#: dataset name -> "module:attribute" (a Dataset class or a factory returning one)
_DATASETS: dict[str, str] = {
    "nyu": "depthlab.data.nyu:open_nyu",
    "nyu_mat": "depthlab.data.nyu:NYUv2Labeled",
    "nyu_reduced": "depthlab.data.nyu:NYUReduced",
    "kitti": "depthlab.data.kitti:KITTIEigen",
    "diode": "depthlab.data.diode:DIODE",
    "endoslam": "depthlab.data.endoslam:EndoSLAM",
    "folder": "depthlab.data.folder:FolderDataset",
    "synthetic": "depthlab.data.synthetic:SyntheticScenes",
    "aerial": "depthlab.data.aerial:AerialHeights",
}

# public class name -> module, for ``from depthlab.data import FolderDataset`` without eager imports
_CLASSES = {
    "DepthDataset": "depthlab.data.base",
    "FolderDataset": "depthlab.data.folder",
    "NYUv2Labeled": "depthlab.data.nyu",
    "NYUReduced": "depthlab.data.nyu",
    "open_nyu": "depthlab.data.nyu",
    "KITTIEigen": "depthlab.data.kitti",
    "DIODE": "depthlab.data.diode",
    "EndoSLAM": "depthlab.data.endoslam",
    "AerialHeights": "depthlab.data.aerial",
}


def resolve_dataset(name: str) -> Callable[..., Any]:
    """The reader class (or factory) registered as ``name``; unknown names list close matches."""
    try:
        target = _DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, sorted(_DATASETS)) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_dataset(name: str, root=None, split: str = "test", transform: Callable | None = None, **kwargs):
    """Build a registered dataset: ``create_dataset("kitti", root=..., split="test", transform=None, **reader_options)``.

    Unknown names raise KeyError listing close matches. Reader options are documented on each reader
    (``describe_datasets()`` and docs/datasets.md). An option the reader does not take raises
    :class:`DatasetOptionError` (a ``TypeError``); the readers check what the user named before reading
    anything and raise :class:`~depthlab.errors.MissingFileError` (a ``FileNotFoundError``) for a missing
    root / folder / file and :class:`~depthlab.errors.InputError` (a ``ValueError``) for a bad split or option
    value. Anything else is a bug and keeps its traceback.
    """
    factory = resolve_dataset(name)
    _check_options(name, factory, kwargs)
    return factory(root=root, split=split, transform=transform, **kwargs)


def dataset_accepts(name: str, argument: str) -> bool:
    """Whether the reader registered as ``name`` takes the keyword ``argument`` (False for unknown names)."""
    try:
        return argument in inspect.signature(resolve_dataset(name)).parameters
    except (TypeError, ValueError, KeyError):
        return False


def _check_options(name: str, factory: Callable[..., Any], kwargs: dict) -> None:
    """Raise :class:`DatasetOptionError` for a keyword the reader's signature does not take (instead of a
    ``TypeError`` from deep inside the constructor); readers taking ``**kwargs`` accept anything."""
    what = unknown_keyword(factory, kwargs, skip=("root", "split", "transform"))
    if what:
        raise DatasetOptionError(f"data.kwargs: dataset {name!r} has no option {what}")


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style ``pattern``, sorted."""
    import fnmatch

    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def describe_datasets() -> dict[str, str]:
    """Dataset name -> first line of its reader's docstring (imports the readers), its reStructuredText
    literals (double backticks) shown as plain text."""
    out = {}
    for name in list_datasets():
        doc = (resolve_dataset(name).__doc__ or "").strip()
        out[name] = doc.splitlines()[0].replace("``", "") if doc else ""
    return out


__all__ = ["create_dataset", "DatasetOptionError", "list_datasets", "describe_datasets", "resolve_dataset",
           "dataset_accepts", *sorted(_CLASSES)]

__getattr__, __dir__ = lazy_exports(__name__, _CLASSES, __all__)
