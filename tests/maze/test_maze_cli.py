"""`mechscope maze train|eval|steer` as real processes, on a briefly trained policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mechscope.maze import BehaviourReport, MazePolicy, SteerReport, TrainingCurve
from mechscope.store import open_run


def mechscope(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mechscope", "maze", *args], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip


def test_train_eval_steer_write_run_folders(tmp_path: Path) -> None:
    train = tmp_path / "train"
    res = mechscope(
        "train", "--steps", "30", "--mazes", "200", "--eval-mazes", "20", "--out", str(train)
    )
    assert res.returncode == 0, res.stderr
    assert "held-out training mazes" in res.stdout
    record = open_run(train)
    assert record.record["kind"] == "maze-train" and record.config["steps"] == 30
    curve = TrainingCurve.load(train / "curve.safetensors")
    assert curve.eval_step == [30] and len(curve.reach) == 1 and curve.n_eval == 20
    assert (train / "checkpoints" / "step-30.safetensors").exists()
    for name in ("curve.png", "curve.html", "reach.png", "mazes.png", "rollouts.gif"):
        assert (train / "figures" / name).exists(), name
    MazePolicy.load(train)

    evaluated = tmp_path / "eval"
    res = mechscope("eval", str(train), "--mazes", "12", "--out", str(evaluated))
    assert res.returncode == 0, res.stderr
    assert "deployment mazes" in res.stdout
    behaviour = BehaviourReport.load(evaluated / "report.safetensors")
    assert behaviour.train_mazes == 12
    assert sum(r.mazes for r in behaviour.by_corner_distance) == 12
    for name in (
        "by_corner_distance.png",
        "by_decision_distance.html",
        "fields.png",
        "fields.html",
    ):
        assert (evaluated / "figures" / name).exists(), name

    steered = tmp_path / "steer"
    res = mechscope("steer", str(train / "policy.safetensors"), "--mazes", "10", "--channels", "2",
                    "--strengths", "1", "--coeffs", "0,-1", "--out", str(steered))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "retargeting" in res.stdout
    result = SteerReport.load(steered / "steer.safetensors")
    assert [r.coeff for r in result.sweep] == [0.0, -1.0]
    assert result.sweep[0].cheese_vector == result.p_cheese_before
    assert len(result.retarget.channels) == 2 and result.retarget.mazes == 10
    for name in (
        "cheese_vector.png",
        "fields_cheese_vector.html",
        "channels.png",
        "fields_retarget.png",
    ):
        assert (steered / "figures" / name).exists(), name


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    for args, words in (
        (("eval", str(tmp_path / "none")), "no maze policy"),
        (("train", "--steps", "0"), "--steps"),
        (("steer", str(tmp_path / "none")), "no maze policy"),
    ):
        res = mechscope(*args, "--out", str(tmp_path / "out"))
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "out").exists()
