"""Lazy package namespaces: `from oddspot.detectors import PatchCore` imports torch only when asked.

A package `__init__` lists what it offers and from which submodule; nothing is imported until a
name is used. `oddspot --help` and the torch-free runtime import packages whose heavier members
(torch, numba, scipy) they never touch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` that import `names[name]` (a submodule) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
