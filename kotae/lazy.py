"""Haystack-style lazy exports for a package ``__init__``: names resolve on first use.

A package lists its public names and the module each lives in; importing the package stays cheap
(``kotae --help`` never loads torch or Haystack) and the modules load only when a name is used::

    __getattr__, __dir__ = lazy_exports(__name__, {"KotaeDocumentStore": "kotae.indexing.store"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` that imports ``exports[name]`` on first use, and a matching ``__dir__``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
