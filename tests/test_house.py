"""The house rules that a reader of the source relies on: no import circles, the CLI on top.

The import graph is read from the source (every ``import`` and ``from … import``,
also inside functions, but not under ``if TYPE_CHECKING:``), so a circle that
only shows at run time is caught too. Two kinds of deferred circle are allowed
and listed: a technique handing its work to the Ray engine, whose tasks call
the technique's own worker function back, and `Model` methods that live in
their own modules (`Model.trace`, `Model.capture`/`resume`).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

ALLOWED = {
    frozenset({"mechscope.engine.harvest", "mechscope.harvest.collect"}),
    frozenset({"mechscope.engine.activations", "mechscope.core.activations"}),
    frozenset({"mechscope.engine.tracing", "mechscope.tracing.average"}),
    frozenset({"mechscope.engine.ioi", "mechscope.ioi.measures"}),
    frozenset({"mechscope.engine.explain", "mechscope.autointerp.pipeline"}),
    frozenset({"mechscope.core.model", "mechscope.core.trace"}),
    frozenset({"mechscope.core.model", "mechscope.core.resume"}),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path], top_only: bool) -> set[str]:
    """The mechscope modules that module `name` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body if top_only else ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import mod` imports the module; `from mod import name`, the module
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("mechscope.") and target != name:
                found.add(target)
    return found


def _graph(top_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules, top_only) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Pairs of modules that import each other, and longer circles as their member sets."""
    pairs = {frozenset({a, b}) for a in graph for b in graph[a] if a in graph.get(b, ())}
    return sorted(pairs, key=sorted)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_module_level_imports_form_no_circle() -> None:
    graph = _graph(top_only=True)
    # packages import their modules lazily (mechscope._lazy), so a package's __init__ is a leaf
    in_circles = sorted(m for m in graph if m in _reachable(graph, m))
    assert in_circles == []


def test_no_two_modules_import_each_other_beyond_the_listed_dispatch() -> None:
    circles = set(_circles(_graph(top_only=False)))
    assert circles - ALLOWED == set()
    assert ALLOWED - circles == set(), "a listed circle is gone: take it off the list"


def test_nothing_below_the_cli_imports_it() -> None:
    graph = _graph(top_only=False)
    users = sorted(
        m
        for m, targets in graph.items()
        if not m.startswith("mechscope.cli")
        and m != "mechscope.__main__"
        and any(t == "mechscope.cli" or t.startswith("mechscope.cli.") for t in targets)
    )
    assert users == []


def test_every_public_function_and_class_has_a_docstring_with_an_example() -> None:
    """The library API (not the CLI's commands nor the viewer's page handlers, whose
    docstrings are their help text) shows how it is called."""
    missing = []
    for name, path in sorted(_modules().items()):
        parts = name.split(".")
        if any(p.startswith("_") for p in parts) or ".cli" in name or ".viewer.pages" in name:
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node) or ""
                if "Example" not in doc and ">>>" not in doc:
                    missing.append(f"{name}.{node.name}")
    assert missing == []
