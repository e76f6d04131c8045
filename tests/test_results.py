"""The one result contract: every result class saves and reopens (torch and numpy) equal."""

from __future__ import annotations

import importlib
import io
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import samples as samples_pkg
from mechscope._arrays import as_numpy
from mechscope.results import (
    FORMATS,
    Result,
    ResultFormatError,
    fields_equal,
    open_result,
    result_class,
)


def _all_samples() -> list[Result]:
    out: list[Result] = []
    for info in pkgutil.iter_modules(samples_pkg.__path__):
        out += importlib.import_module(f"{samples_pkg.__name__}.{info.name}").samples()
    return out


SAMPLES = _all_samples()


def _id(r: Result) -> str:
    return f"{type(r).__name__}"


def test_every_format_has_a_class_and_a_sample() -> None:
    covered = {r.format for r in SAMPLES}
    for fmt in FORMATS:
        assert result_class(fmt).format == fmt
    assert sorted(set(FORMATS) - covered) == []


@pytest.mark.parametrize("result", SAMPLES, ids=_id)
def test_round_trip(result: Result, tmp_path: Path) -> None:
    path = result.save(tmp_path / "r")
    assert path == tmp_path / "r.safetensors" and path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # no temporary left
    again = type(result).load(path)
    assert fields_equal(again, result) and again == result
    flat = type(result).load(path, arrays="numpy")
    assert fields_equal(flat, result)
    for name in flat.__dataclass_fields__:
        value = getattr(flat, name)
        assert not isinstance(value, torch.Tensor), name
    assert open_result(path) == result
    assert isinstance(repr(result), str) and result.summary()
    assert type(result).__name__ in result._repr_html_()
    # the repr of a numpy-loaded result is the same as the original's
    assert repr(flat) == repr(result)


@pytest.mark.parametrize("result", SAMPLES, ids=_id)
def test_prints_itself_the_same_from_numpy(result: Result, tmp_path: Path) -> None:
    from rich.console import Console

    def shown(r: Result) -> str:
        console = Console(file=io.StringIO(), width=100, record=True)
        console.print(r)
        return console.export_text()

    flat = type(result).load(result.save(tmp_path / "r"), arrays="numpy")
    assert shown(result).strip() and shown(flat) == shown(result)


@pytest.mark.parametrize("result", SAMPLES[:1] + SAMPLES[-1:], ids=_id)
def test_another_format_fails_in_one_line(result: Result, tmp_path: Path) -> None:
    other = next(r for r in SAMPLES if r.format != result.format)
    path = other.save(tmp_path / "other")
    with pytest.raises(ResultFormatError) as err:
        type(result).load(path)
    message = str(err.value)
    assert "\n" not in message and other.format in message and result.format in message


def test_damaged_files_fail_in_one_line(tmp_path: Path) -> None:
    path = SAMPLES[0].save(tmp_path / "r")
    data = path.read_bytes()
    cases = {
        "cut.safetensors": data[: len(data) // 2],
        "empty.safetensors": b"",
        "junk.safetensors": b"\xff" * 64,
        "untagged.safetensors": _untagged(tmp_path),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        for arrays in ("torch", "numpy"):
            with pytest.raises(ResultFormatError) as err:
                type(SAMPLES[0]).load(tmp_path / name, arrays=arrays)  # type: ignore[arg-type]
            assert "\n" not in str(err.value) and name in str(err.value)
    with pytest.raises(ResultFormatError, match="folder"):
        open_result(tmp_path)
    with pytest.raises(ResultFormatError, match="no saved result"):
        open_result(tmp_path / "missing")


def _untagged(tmp_path: Path) -> bytes:
    from safetensors.torch import save_file

    save_file({"x": torch.ones(2)}, str(tmp_path / "u"), {"site": "x"})
    return (tmp_path / "u").read_bytes()


def test_bfloat16_reads_without_torch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mechscope._arrays import read_safetensors

    x = torch.randn(3, 4).bfloat16()
    save_file({"x": x}, str(tmp_path / "b.safetensors"))
    _, arrays = read_safetensors(tmp_path / "b.safetensors")
    assert np.array_equal(arrays["x"], as_numpy(x))


def test_numpy_loading_imports_no_torch(tmp_path: Path) -> None:
    paths = [str(r.save(tmp_path / f"{i}")) for i, r in enumerate(SAMPLES)]
    code = (
        "import sys; from mechscope.results import open_result\n"
        f"for p in {paths!r}: open_result(p, arrays='numpy')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_light_imports() -> None:
    code = (
        "import sys, mechscope, mechscope.viewer, mechscope.results, mechscope.store\n"
        "import mechscope.viewer.pages\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import mechscope.viewer"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()]
    assert "torch" not in imported and imported
