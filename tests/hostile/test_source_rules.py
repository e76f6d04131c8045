"""The source never loads code from data: no pickle, no eval, no shell, weights-only loads.

Every Python file under src/ and benchmarks/ is parsed with `ast` (not grepped as
text, so ``model.eval()`` and a docstring that mentions ``pickle`` pass) and each of
these is a finding:

- ``torch.load`` without ``weights_only=True``;
- importing ``pickle``, ``cPickle``, ``dill``, ``marshal`` or ``shelve``, or calling their
  ``load``/``loads``;
- a call of the builtin ``eval``, ``exec`` or ``compile`` (a bare name, not a method);
- ``os.system``, ``os.popen``, ``os.exec*``/``os.spawn*``, ``commands.*``;
- a ``subprocess`` or ``asyncio`` call with ``shell=True`` (or ``create_subprocess_shell``);
- ``yaml.load`` (or ``load_all``) without ``Loader=SafeLoader``/``CSafeLoader``, and
  ``yaml.unsafe_load``/``full_load``;
- ``np.load``/``numpy.load`` without ``allow_pickle=False``.

`test_the_checker_flags_each_rule` feeds the checker one bad snippet per rule (and
good twins that must pass), so the rule test can fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src", "benchmarks")

PICKLES = {"pickle", "cPickle", "_pickle", "dill", "marshal", "shelve", "cloudpickle", "joblib"}
BUILTINS = {"eval", "exec", "compile", "__import__"}
OS_SHELL = {"system", "popen", "popen2", "popen3", "popen4", "startfile"}
OS_EXEC_PREFIXES = ("exec", "spawn")
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Aliases(ast.NodeVisitor):
    """What each local name stands for: ``import numpy as np`` → np: numpy, ``from torch import
    load`` → load: torch.load."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.names[a.asname or a.name.split(".")[0]] = (
                a.name if a.asname else a.name.split(".")[0]
            )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            for a in node.names:
                self.names[a.asname or a.name] = f"{node.module}.{a.name}"


def _resolve(dotted: str, aliases: dict[str, str]) -> str:
    head, _, rest = dotted.partition(".")
    full = aliases.get(head, head)
    return f"{full}.{rest}" if rest else full


def findings(source: str, filename: str = "<snippet>") -> list[str]:
    """Each broken rule in `source`, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    alias = _Aliases()
    alias.visit(tree)
    names = alias.names
    out: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PICKLES:
                    flag(node, f"imports {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in PICKLES:
                flag(node, f"imports from {node.module}")
            if root == "os" and any(a.name in OS_SHELL for a in node.names):
                flag(node, "imports a shell function from os")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS and func.id not in names:
            flag(node, f"calls the builtin {func.id}()")
            continue
        dotted = _dotted(func)
        if dotted is None:
            continue
        full = _resolve(dotted, names)
        module, _, attr = full.rpartition(".")
        if full in ("torch.load", "torch.serialization.load") and not _is_const(
            _keyword(node, "weights_only"), True
        ):
            flag(node, "torch.load without weights_only=True")
        elif (
            module.split(".")[0] in PICKLES
            and attr in ("load", "loads", "Unpickler", "open")
            or module == "os"
            and (attr in OS_SHELL or attr.startswith(OS_EXEC_PREFIXES))
            or module == "commands"
        ):
            flag(node, f"{full}()")
        elif module in ("subprocess", "asyncio") and _is_const(_keyword(node, "shell"), True):
            flag(node, f"{full}(shell=True)")
        elif (
            full == "asyncio.create_subprocess_shell"
            or module == "yaml"
            and attr in ("unsafe_load", "unsafe_load_all", "full_load")
        ):
            flag(node, f"{full}()")
        elif module == "yaml" and attr in ("load", "load_all"):
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            name = _dotted(loader) if loader is not None else None
            if name is None or name.rpartition(".")[2] not in SAFE_YAML_LOADERS:
                flag(node, f"{full} without Loader=SafeLoader")
        elif full == "numpy.load" and not _is_const(_keyword(node, "allow_pickle"), False):
            flag(node, "numpy.load without allow_pickle=False")
    return out


def _python_files() -> Iterator[Path]:
    for folder in FOLDERS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_the_source_follows_the_rules() -> None:
    files = list(_python_files())
    assert len(files) > 100, "the checker found too few files: is ROOT right?"
    found = [f for path in files for f in findings(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == [], "\n".join(found)


BAD = [
    ("torch.load bare", "import torch\ntorch.load('w.pt')"),
    ("torch.load weights_only=False", "import torch\ntorch.load('w.pt', weights_only=False)"),
    ("torch.load from-import", "from torch import load\nload('w.pt')"),
    ("torch.load aliased", "import torch as T\nT.load(f, map_location='cpu')"),
    ("import pickle", "import pickle"),
    ("from pickle import", "from pickle import loads"),
    ("import dill", "import dill as d"),
    ("import marshal", "import marshal"),
    ("pickle.loads via alias", "import pickle as p\np.loads(b'')"),
    ("eval", "eval('1 + 1')"),
    ("exec", "exec('x = 1')"),
    ("compile", "compile('x', 'f', 'exec')"),
    ("os.system", "import os\nos.system('ls')"),
    ("os.popen", "import os\nos.popen('ls')"),
    ("from os import system", "from os import system\nsystem('ls')"),
    ("os.execv", "import os\nos.execv('/bin/sh', ['sh'])"),
    ("subprocess shell", "import subprocess\nsubprocess.run('ls', shell=True)"),
    ("subprocess Popen shell", "import subprocess as sp\nsp.Popen('ls', shell=True)"),
    ("check_output shell", "from subprocess import check_output\ncheck_output('ls', shell=True)"),
    ("asyncio shell", "import asyncio\nasyncio.create_subprocess_shell('ls')"),
    ("yaml.load bare", "import yaml\nyaml.load(s)"),
    ("yaml.load FullLoader", "import yaml\nyaml.load(s, Loader=yaml.FullLoader)"),
    ("yaml.unsafe_load", "import yaml\nyaml.unsafe_load(s)"),
    ("np.load bare", "import numpy as np\nnp.load('a.npy')"),
    ("np.load allow_pickle=True", "import numpy as np\nnp.load('a.npy', allow_pickle=True)"),
]

GOOD = [
    ("module.eval()", "model.eval()\nself.hf.eval()\nnet.train().eval()"),
    ("torch.load weights_only=True", "import torch\ntorch.load('w.pt', weights_only=True)"),
    ("subprocess list", "import subprocess\nsubprocess.run(['ls', '-l'], check=True)"),
    ("shell=False", "import subprocess\nsubprocess.run(['ls'], shell=False)"),
    ("yaml.safe_load", "import yaml\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)"),
    ("np.load allow_pickle=False", "import numpy as np\nnp.load('a.npy', allow_pickle=False)"),
    ("words in strings", "'''pickle, eval(), os.system and torch.load'''\nx = 'exec'"),
    (
        "a local eval",
        "def eval(x):\n    return x\n",
    ),
    ("json.load", "import json\njson.load(f)\njson.loads(s)"),
    ("safetensors", "from safetensors.torch import load_file\nload_file('w.safetensors')"),
]


@pytest.mark.parametrize(("name", "source"), BAD, ids=[n for n, _ in BAD])
def test_the_checker_flags_each_rule(name: str, source: str) -> None:
    assert findings(source), f"{name}: the checker missed it"


@pytest.mark.parametrize(("name", "source"), GOOD, ids=[n for n, _ in GOOD])
def test_the_checker_passes_safe_code(name: str, source: str) -> None:
    assert findings(source) == []
