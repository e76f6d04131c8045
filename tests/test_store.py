"""Run folders: `open_run` gives back a run's config, record and typed results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mechscope.errors import InputError, MechscopeError
from mechscope.results import fields_equal
from mechscope.store import new_run, open_run
from test_results import SAMPLES


def test_open_run_returns_typed_results(tmp_path: Path) -> None:
    first, last = SAMPLES[0], SAMPLES[-1]
    with new_run("demo", tmp_path / "run", {"seed": 3}) as run:
        first.save(run.dir / "first")
        last.save(run.dir / "parts" / "last")
        run.save_tensors("shard.safetensors", {"x": torch.ones(2)})  # not a result
        (run.dir / ".hidden").mkdir()
        first.save(run.dir / ".hidden" / "skipped")
        run.finish()
    opened = open_run(tmp_path / "run")
    assert opened.kind == "demo" and opened.config["seed"] == 3 and "seconds" in opened.record
    assert list(opened) == ["first", "parts/last"]
    assert opened.formats() == {"first": first.format, "parts/last": last.format}
    assert fields_equal(opened["first"], first) and fields_equal(opened["parts/last"], last)
    assert "demo" in repr(opened) and "parts/last" in repr(opened)
    flat = open_run(tmp_path / "run", arrays="numpy")
    assert fields_equal(flat["first"], first)
    with pytest.raises(KeyError, match="first"):
        opened["missing"]


def test_open_run_refuses_what_is_not_a_finished_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no run folder"):
        open_run(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(MechscopeError, match="no run.json"):
        open_run(tmp_path / "half")
    (tmp_path / "half" / "run.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not a readable JSON record"):
        open_run(tmp_path / "half")
