"""Lazy public names for the package ``__init__`` modules (PEP 562 module ``__getattr__``).

``import depthlab`` and the CLI start fast because a public name's module (torch, Lightning, transformers
behind it) is imported on first access only; the value is then cached on the package.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, names: dict[str, str], public) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``names`` (public name -> defining module)."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return list(public)

    return __getattr__, __dir__
