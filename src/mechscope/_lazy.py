"""Lazy package exports: a package names its public API once, imported on first use.

A package's ``__init__`` lists its exports as ordinary imports inside an
``if TYPE_CHECKING:`` block (so type checkers and readers see them) and calls
`exports`, which reads that block and returns the module-level ``__getattr__``,
``__dir__`` and ``__all__``. Importing the package then imports none of its
modules (and so no torch); ``package.name`` imports the one module that holds
``name``.

Example::

    from typing import TYPE_CHECKING
    from .._lazy import exports

    if TYPE_CHECKING:
        from .sweep import PatchResult, activation_patching

    __getattr__, __dir__, __all__ = exports(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _table(init_file: str) -> dict[str, tuple[str, str]]:
    """name → (relative module, attribute) for each import under ``if TYPE_CHECKING:``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    table: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom):
                module = "." * stmt.level + (stmt.module or "")
                for alias in stmt.names:
                    table[alias.asname or alias.name] = (module, alias.name)
            elif isinstance(stmt, ast.Import):
                raise TypeError(f"{init_file}: use 'from … import …' under TYPE_CHECKING")
    return table


def exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for the package `package`.

    Example: ``__getattr__, __dir__, __all__ = exports(__name__, __file__)``, the last line of a
    package's ``__init__.py`` (see the module docstring).
    """
    table = _table(init_file)
    pkg = importlib.import_module(package)
    here = Path(init_file).parent
    clashes = {
        name
        for name, (module, attr) in table.items()
        if module.strip(".") and ((here / f"{name}.py").is_file() or (here / name).is_dir())
    }
    if clashes:
        sys.modules[package].__class__ = _keeping(frozenset(clashes))

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = table[name]
        if module.strip(".") == "" and module:  # `from . import sub`
            value = importlib.import_module(f"{module}{attr}", package)
        else:
            value = getattr(importlib.import_module(module, package), attr)
        setattr(pkg, name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(pkg), *table})

    return __getattr__, __dir__, sorted(table)


def _keeping(names: frozenset[str]) -> type[types.ModuleType]:
    """A module class that refuses to rebind `names` to submodules (the import system does
    so after importing ``package.name``), so those names keep meaning the exports."""

    class Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    return Package
