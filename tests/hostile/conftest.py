"""The hostile-input suite's harness: the CLI run in this process, and a guard on every model.

`cli(*args)` runs ``mechscope ARGS`` through the real entry point (`mechscope.cli.main`)
in this process, so that hundreds of cases fit in CI; it returns the exit status,
both streams and the traceback if one escaped. `assert_user_error` is the contract of
every row: exit 2, exactly one line starting with ``error:`` (ours) or ``Error:``
(click's usage errors) that names what was wrong, no traceback, and `--out` untouched.

The guard on every model built in a test (no hooks left, weights and attention
implementation unchanged) is the whole suite's: `model_guard` in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from mechscope.testing import tiny_chat_model


@dataclass(frozen=True)
class Outcome:
    """What one in-process CLI call did."""

    code: int
    out: str
    err: str
    traceback: str | None  # set when an exception escaped `main`

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.lower().startswith("error:")]


class CaseTimeout(BaseException):
    """A case ran past its time limit (a check is missing and real work started)."""


def cli(*args: str, cache: Path | None = None, limit_s: int = 60) -> Outcome:
    """Run ``mechscope ARGS`` in this process through `mechscope.cli.main`.

    A case that runs past `limit_s` seconds is stopped with `CaseTimeout` (a
    `BaseException`, so that no ``except Exception`` in the tool swallows it).
    """
    from mechscope.cli import main

    def stop(signum, frame) -> None:
        raise CaseTimeout(f"mechscope {' '.join(a[:40] for a in args)} ran past {limit_s} s")

    out, err = io.StringIO(), io.StringIO()
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = ["mechscope", *args]
    os.environ["COLUMNS"] = "200"
    if cache is not None:
        os.environ["MECHSCOPE_CACHE"] = str(cache)
    code, tb = 0, None
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except CaseTimeout:
        raise
    except BaseException:  # what a user would have seen as a traceback
        code, tb = 1, traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
    return Outcome(code, out.getvalue(), err.getvalue(), tb)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every file under `path` with its bytes (None when `path` does not exist)."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def assert_user_error(res: Outcome, *needles: str, out: Path | None = None, before=None) -> None:
    """One line naming the mistake (each of `needles`, case-insensitive), exit 2, `out` untouched."""
    if res.traceback is not None:
        tail = "\n".join(res.traceback.strip().splitlines()[-6:])
        pytest.fail(f"a traceback escaped:\n{tail}", pytrace=False)
    assert "Traceback" not in res.err, res.err
    if res.code != 2:
        pytest.fail(f"exit {res.code}, not 2:\n{res.out[-1500:]}\n{res.err[-1500:]}", pytrace=False)
    lines = res.error_lines
    assert len(lines) == 1, res.err
    missing = [n for n in needles if n.lower() not in lines[0].lower()]
    if missing:
        pytest.fail(f"the error line lacks {missing}: {lines[0]}", pytrace=False)
    if out is not None:
        assert snapshot(out) == before, f"{out} was changed by a failed command"


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat Llama saved as an HF folder (its chat template makes it an explainer)."""
    path = tmp_path_factory.mktemp("hostile-llama")
    model = tiny_chat_model("llama")
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


# --- the CLI tables ------------------------------------------------------------------


@pytest.fixture(scope="session")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of hostile inputs: a plain file, non-UTF-8 JSON, broken JSON, a JSON list of
    numbers, an empty file, a file of NUL bytes, and a folder holding other files (not a run)."""
    t = tmp_path_factory.mktemp("hostile-files")
    (t / "afile").write_text("not a model, not a run\n")
    (t / "bad.json").write_bytes(b'[{"subject": "caf\xe9"}]')
    (t / "broken.json").write_text('[{"subject": "Paris",')
    (t / "list.json").write_text("[1, 2, 3]")
    (t / "empty.txt").write_text("")
    (t / "nul.bin").write_bytes(b"\0" * 64)
    (t / "other").mkdir()
    (t / "other" / "notes.txt").write_text("my notes\n")
    return t


LONG_PROMPT = "hello " * 3000  # past the tiny models' 2048-token context


@dataclass
class Table:
    """Runs one row of a CLI table: placeholders filled, then the contract of every row.

    ``{F}`` is the tiny chat Llama's HF folder, ``{T}`` the folder of hostile files,
    ``{O}`` the row's `--out` (absent before; it must still be absent afterwards),
    ``{LONG}`` a prompt past the model's context.
    """

    folder: Path
    files: Path

    def fill(self, arg: str, out: Path) -> str:
        if arg == "{LONG}":
            return LONG_PROMPT
        return (
            arg.replace("{F}", str(self.folder))
            .replace("{T}", str(self.files))
            .replace("{O}", str(out))
        )

    def check(self, args: list[str], needles: list[str], tmp_path: Path) -> Outcome:
        out = tmp_path / "out"
        before = snapshot(self.files)
        res = cli(*[self.fill(a, out) for a in args], cache=tmp_path / "cache")
        assert_user_error(res, *needles, out=out, before=None)
        assert snapshot(self.files) == before, "a failed command changed the user's files"
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "cache"]
        assert not leftovers, f"left behind: {leftovers}"
        return res


@pytest.fixture
def table(tiny_folder: Path, hostile_files: Path) -> Table:
    """The runner of CLI table rows (see `Table`)."""
    return Table(tiny_folder, hostile_files)


@pytest.fixture(scope="session")
def harvest_run(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished harvest of the tiny model on a local corpus (read-only for tests)."""
    root = tmp_path_factory.mktemp("hostile-harvest")
    args = ["harvest", str(tiny_folder), "--corpus", "fortunes", "--tokens", "256"]
    args += ["--window", "16", "--batch-size", "4", "--k", "6", "--out", str(root / "h")]
    res = cli(*args, cache=root / "cache")
    assert res.code == 0 and res.traceback is None, (res.err, res.traceback)
    return root / "h"


@pytest.fixture
def hostile():
    """The harness for test modules: ``hostile.cli``, ``hostile.snapshot``, ``hostile.assert_user_error``."""
    import types

    return types.SimpleNamespace(cli=cli, snapshot=snapshot, assert_user_error=assert_user_error)
