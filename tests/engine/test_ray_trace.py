"""Causal traces of many facts spread over Ray workers (a real local cluster) are the local
engine's traces, file for file, from the library and from ``mechscope trace --facts``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import ray

from mechscope.testing import tiny_model
from mechscope.tracing.facts import Fact
from mechscope.tracing.runs import trace_run

FACTS = [
    Fact("Rome", "The city of {} lies in", "Italy"),
    Fact("Oslo", "{} is in", "Norway"),
    Fact("Lima", "{} is the capital of", "Peru"),
    Fact("Kyiv", "The capital {} is in", "Ukraine"),
    Fact("Bern", "{} lies in", "Switzerland"),
]
# one torch thread in every process: the last bits of CPU matrix products depend on the count
ARGS: dict[str, Any] = dict(
    kinds=["hidden", "mlp", "attn"], samples=3, noise=2.0, window=1, threads=1
)


def assert_same_trace_run(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "facts").iterdir())
    assert names == sorted(p.name for p in (b / "facts").iterdir())
    assert len(names) == len(FACTS)
    for name in names:
        assert (a / "facts" / name).read_bytes() == (b / "facts" / name).read_bytes(), name
    assert (a / "average.safetensors").read_bytes() == (b / "average.safetensors").read_bytes()
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()


def test_facts_over_two_ray_workers_are_the_local_traces(tmp_path: Path) -> None:
    model = tiny_model("llama")
    local = trace_run(model, FACTS, tmp_path / "local", progress=False, **ARGS)
    remote = trace_run(
        model, FACTS, tmp_path / "ray", engine="ray", workers=2, progress=False, **ARGS
    )
    assert_same_trace_run(tmp_path / "local", tmp_path / "ray")
    for kind in ARGS["kinds"]:
        assert remote.effects[kind].equal(local.effects[kind])  # type: ignore[union-attr]
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["engine"] == {"name": "ray", "address": None, "workers": 2, "threads": 1}
    assert not any(p.name.startswith(".") for p in (tmp_path / "ray").rglob("*"))


def test_cli_trace_facts_on_ray_joins_the_cluster_and_gives_the_local_run(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    model = tiny_model("llama")
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([f.to_dict() for f in FACTS]))
    args = ["--facts", str(facts), "--n", str(len(FACTS)), "--all", "--samples", "3"]
    args += ["--window", "1", "--noise", "3"]
    # the local run on one thread, as each Ray worker
    env = {**os.environ, "MECHSCOPE_CACHE": str(tmp_path), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, extra in {
        "local": [],
        "ray": [
            "--engine",
            "ray",
            "--workers",
            "2",
            "--address",
            ray.get_runtime_context().gcs_address,
        ],
    }.items():
        res = subprocess.run(
            [sys.executable, "-m", "mechscope", "trace", str(folder), *args, "--out",
             str(tmp_path / name), *extra],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = tmp_path / name
    assert_same_trace_run(runs["local"], runs["ray"])
    assert json.loads((runs["ray"] / "run.json").read_text())["engine"]["workers"] == 2
