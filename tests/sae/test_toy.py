"""Toy models of superposition: the paper's findings at small scale, the measures, saving, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from mechscope.errors import InputError, MechscopeError
from mechscope.sae.runs import toy_run
from mechscope.sae.toy import (
    PHASES,
    ToyResult,
    dims_per_feature,
    feature_norms,
    features_represented,
    phase_diagram,
    phases,
    superposition,
    train_toy,
)


def test_sparsity_brings_superposition_and_the_linear_model_never_does() -> None:
    m = 5
    relu = train_toy(20, m, sparsities=[0.0, 0.999], steps=1500, seed=0)
    dense, sparse = features_represented(relu.W).tolist()
    # dense: about m features, orthogonal, and they are the most important ones
    assert dense <= m + 1
    assert bool((feature_norms(relu.W[0])[:m] > 0.9).all())
    assert float(superposition(relu.W[0])[:m].max()) < 0.1
    # sparse: more features than dimensions
    assert sparse > m
    assert float(dims_per_feature(relu.W[1])) < 0.8
    linear = train_toy(20, m, sparsities=[0.999], relu=False, steps=1500, seed=0)
    assert int(features_represented(linear.W)[0]) <= m


def test_measures_on_known_weights() -> None:
    # m=2, n=4: features 0 and 1 antipodal on one axis, feature 2 alone on the other, 3 dropped
    W = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.1]])
    torch.testing.assert_close(feature_norms(W), torch.tensor([1.0, 1.0, 1.0, 0.1]))
    torch.testing.assert_close(superposition(W), torch.tensor([1.0, 1.0, 0.01, 1.0]))
    assert int(features_represented(W)) == 3
    torch.testing.assert_close(dims_per_feature(W), torch.tensor(2 / 3.01))
    # leading grid axes are kept
    assert features_represented(torch.stack([W, torch.eye(2, 4)])).tolist() == [3, 2]


def _result(W: torch.Tensor) -> ToyResult:
    k, n = W.shape[0], W.shape[-1]
    return ToyResult(
        W, torch.zeros(k, n), torch.zeros(k), torch.ones(k, n), torch.zeros(k),
        {"relative_importance": (1.0,), "sparsity": tuple(float(i) / k for i in range(k))},
    )  # fmt: skip


def test_phases_of_the_extra_feature() -> None:
    W = torch.tensor([[[1.0, 0.0]], [[1.0, -1.0]], [[0.0, 1.0]]])
    assert [PHASES[p] for p in phases(_result(W))] == list(PHASES)


def test_phase_diagram_corners() -> None:
    result = phase_diagram(
        relative_importances=[0.1, 10.0], sparsities=[0.0, 0.99], steps=600, restarts=4, seed=0
    )
    grid = result.reshape(phases(result))  # [importance, sparsity]
    assert result.W.shape == (4, 1, 2)
    assert PHASES[grid[0, 0]] == "not represented"  # dense, unimportant: dropped
    assert PHASES[grid[1, 0]] == "dedicated dimension"  # dense, important: takes the dimension
    assert [PHASES[p] for p in grid[:, 1]] == ["superposition"] * 2  # sparse: shared


def test_seeded_and_reproducible() -> None:
    a = train_toy(6, 2, sparsities=[0.5], steps=20, seed=3)
    b = train_toy(6, 2, sparsities=[0.5], steps=20, seed=3)
    c = train_toy(6, 2, sparsities=[0.5], steps=20, seed=4)
    torch.testing.assert_close(a.W, b.W)
    assert not torch.allclose(a.W, c.W)


def test_grid_order_and_save_load_round_trip(tmp_path: Path) -> None:
    result = train_toy(6, 2, sparsities=[0.0, 0.9, 0.99], decays=[0.9, 0.5], steps=10, seed=1)
    assert result.W.shape == (6, 2, 6)
    # decay outer, sparsity inner
    torch.testing.assert_close(result.sparsity, torch.tensor([0.0, 0.9, 0.99] * 2))
    torch.testing.assert_close(result.importance[4], 0.5 ** torch.arange(6.0))
    assert [(r["decay"], r["sparsity"]) for r in result.rows()][3] == (0.5, 0.0)
    assert [r["features_represented"] for r in result.rows()] == (
        features_represented(result.W).tolist()
    )
    assert result.reshape(result.loss).shape == (2, 3)

    path = result.save(tmp_path / "toy")
    assert path == tmp_path / "toy.safetensors"
    back = ToyResult.load(path)
    for name in ("W", "b", "sparsity", "importance", "loss"):
        torch.testing.assert_close(getattr(back, name), getattr(result, name))
    assert (back.grid, back.relu, back.config) == (result.grid, result.relu, result.config)
    assert back.grid["decay"] == (0.9, 0.5)  # tuples stay tuples
    assert repr(back) == repr(result)
    assert repr(result).startswith("ToyResult(ReLU, n=6, m=2, decay=2 × sparsity=3;")
    assert "<table>" in result._repr_html_()
    flat = ToyResult.load(path, arrays="numpy")
    assert flat.rows() == result.rows() and flat.reshape(flat.loss).shape == (2, 3)

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(MechscopeError, match="not mechscope.toy/1"):
        ToyResult.load(tmp_path / "other.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 5, "d_hidden": 5}, "1 <= m < n"),
        ({"n_features": 5, "d_hidden": 0}, "1 <= m < n"),
        ({"sparsities": [0.5, 1.0]}, r"must be in \[0, 1\); got \[1.0\]"),
        ({"sparsities": [-0.1]}, r"\[0, 1\)"),
        ({"decays": [0.0]}, r"decays must be in \(0, 1\]"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        train_toy(**{"steps": 1, **kwargs})


def test_toy_run_writes_a_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    results = toy_run(
        out, n_features=6, d_hidden=2, sparsities=[0.0, 0.99], steps=20, phase_steps=20
    )
    assert set(results) == {"relu", "linear", "phase"}
    assert not results["linear"].relu
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "toy" and config["n_features"] == 6 and config["steps"] == 20
    run = json.loads((out / "run.json").read_text())
    assert run["features_represented"] == features_represented(results["relu"].W).tolist()
    summary = json.loads((out / "summary.json").read_text())
    assert [row["sparsity"] for row in summary["relu"]] == [0.0, 0.99]
    for name in ("sparsity_sweep", "features_represented", "phase_diagram"):
        for fmt in ("png", "svg", "html"):
            assert (out / "figures" / f"{name}.{fmt}").stat().st_size > 0
    torch.testing.assert_close(ToyResult.load(out / "phase.safetensors").W, results["phase"].W)


def test_cli_prints_the_table_and_writes_the_run(tmp_path: Path, monkeypatch) -> None:
    from mechscope.cli import app
    from mechscope.cli import toy as toy_cli

    # the command's console took its width when first imported, maybe by another test
    monkeypatch.setattr(toy_cli.console, "width", 200)

    out = tmp_path / "toy"
    args = ["toy", "--n", "6", "--m", "2", "--sparsities", "0,0.99", "--steps", "20"]
    res = CliRunner().invoke(app, [*args, "--no-phase", "--out", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "features represented" in res.output and "0.99" in res.output
    assert (out / "relu.safetensors").exists() and not (out / "phase.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["sparsities"] == [0.0, 0.99]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "4", "--m", "4"], "got n=4, m=4"),
        (["--sparsities", "0,1"], "must be in [0, 1)"),
        (["--sparsities", "0,dense"], "numbers separated by commas"),
    ],
)
def test_cli_mistakes_are_one_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    from mechscope.cli import main

    monkeypatch.setattr(sys, "argv", ["mechscope", "toy", *args, "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "t").exists()
