"""Every command that computes takes --device/--dtype/--device-map, and a wrong one is one line."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
import typer

from mechscope.cli import app, main

# commands that load nothing and compute nothing
NOT_PLACED = {("models",), ("serve",)}


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(prefix: tuple[str, ...], cmd: Any) -> None:
        if hasattr(cmd, "commands"):  # a group (typer's click types are its own)
            for name, sub in cmd.commands.items():
                walk((*prefix, name), sub)
        else:
            found.append((prefix, cmd))

    walk((), root)
    return found


COMMANDS = _commands()
PLACED = [(path, cmd) for path, cmd in COMMANDS if path not in NOT_PLACED]


def _required_args(cmd: Any) -> list[str]:
    """Placeholder values for a command's required parameters (never used: placement fails first)."""
    args: list[str] = []
    for param in cmd.params:
        if not param.required:
            continue
        value = "1"  # parses as a number, a text and a path alike
        if param.param_type_name == "option":
            args += [param.opts[0], value]
        else:
            args += [value] * max(param.nargs, 1)
    return args


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["mechscope", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old
    return int(exit_info.value.code or 0), capsys.readouterr().err


def test_the_walk_finds_the_commands() -> None:
    names = {" ".join(path) for path, _ in PLACED}
    assert {"run", "harvest", "tour", "sae store", "maze train", "weights lm", "trace"} <= names
    assert len(PLACED) >= 20


@pytest.mark.parametrize(("path", "cmd"), PLACED, ids=[" ".join(p) for p, _ in PLACED])
def test_every_command_has_the_placement_options(path: tuple[str, ...], cmd: Any) -> None:
    options = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
    assert {"--device", "--dtype", "--device-map"} <= options, path


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
@pytest.mark.parametrize(("path", "cmd"), PLACED, ids=[" ".join(p) for p, _ in PLACED])
def test_a_wrong_device_or_dtype_is_one_line(
    path: tuple[str, ...], cmd: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [*path, *_required_args(cmd)]
    for extra, message in [
        (["--device", "cuda:7"], "valid here: cpu"),
        (["--dtype", "int8"], "valid: auto, float32, bfloat16"),
        (["--device-map", "everywhere"], "--device-map takes auto"),
    ]:
        code, err = _run([*base, *extra], capsys)
        assert code == 2, (path, extra, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (path, extra, err)
