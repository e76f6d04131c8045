"""Stored activations on a real local Ray cluster: the rows are the local engine's bit for bit,
a task resumes from its checkpoint, and ``mechscope sae store --engine ray`` joins a cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ray
import torch
from safetensors.torch import load_file

from mechscope.core.activations import activations_meta, load_activations, store_activations
from mechscope.corpus import open_corpus
from mechscope.engine import torch_threads
from mechscope.engine.activations import CHECKPOINT, _store_range
from mechscope.engine.cluster import Reporter
from mechscope.engine.ship import ship_model
from mechscope.testing import run_cli as mechscope
from mechscope.testing import save_tiny, tiny_model

SITE = "blocks.0.resid_post"
# 90 windows of 16 in batches of 4 (the last short): 23 batches, split 11 + 12 over two tasks
ARGS: dict[str, Any] = dict(
    tokens=90 * 16, window=16, batch_windows=4, start_window=3, shard_tokens=200, progress=False
)


def test_two_ray_workers_store_the_local_rows_bit_for_bit(tmp_path: Path) -> None:
    model = tiny_model("llama")
    with torch_threads(1):  # each Ray task runs on one thread
        store_activations(model, SITE, tmp_path / "local", "fortunes", **ARGS)
    out = store_activations(
        model, SITE, tmp_path / "ray", "fortunes", engine="ray", workers=2, threads=1, **ARGS
    )
    local, remote = load_activations(tmp_path / "local"), load_activations(out)
    assert remote.shape == local.shape and local.shape[0] > 1000
    assert remote.equal(local)
    meta = activations_meta(out)
    assert meta["rows"] == len(local)
    assert meta["start_window"] == 3 and meta["site"] == SITE
    parts = meta["engine"]["parts"]
    assert [p["first_window"] for p in parts] == [3, 3 + 11 * 4]
    assert [p["windows"] for p in parts] == [44, 46]
    assert parts[0]["pids"][0] != parts[1]["pids"][0]  # two worker processes
    assert not (tmp_path / ".ray.parts").exists()  # the parts folder is gone after the move


def test_a_retried_task_drops_its_unfinished_shard_and_goes_on(tmp_path: Path) -> None:
    """A task run again after its worker died: past its checkpoint, nothing is kept."""
    model = tiny_model("llama")
    shipped = ship_model(model, tmp_path / "model")
    corpus = open_corpus("fortunes")
    options = {"site": SITE, "window": 16, "batch_windows": 4, "shard_tokens": 200}
    options |= {"dtype": "float32", "threads": 1}
    report = Reporter(str(tmp_path / "progress"))
    whole = _store_range(report, 0, shipped, corpus, 3, 40, str(tmp_path / "a"), options)
    part = tmp_path / "b" / "part-0"
    first = _store_range(report, 0, shipped, corpus, 3, 40, str(tmp_path / "b"), options)
    assert first["shards"] == whole["shards"] >= 3
    # the state a kill leaves: the checkpoint after shard 1, shard 2 written, a shard half written
    checkpoint = json.loads((part / CHECKPOINT).read_text())
    rows_01 = sum(len(load_file(str(part / f"acts-{i:05d}.safetensors"))["acts"]) for i in (0, 1))
    checkpoint.update(shards=2, rows=rows_01, windows=checkpoint["ends"][1])
    checkpoint["ends"] = checkpoint["ends"][:2]
    (part / CHECKPOINT).write_text(json.dumps(checkpoint))
    (part / ".acts-00002.tmp").write_bytes(b"half")
    again = _store_range(report, 0, shipped, corpus, 3, 40, str(tmp_path / "b"), options)
    assert again["rows"] == whole["rows"] and again["shards"] == whole["shards"]
    assert len(again["pids"]) == 2 and not (part / ".acts-00002.tmp").exists()
    for i in range(whole["shards"]):
        name = f"acts-{i:05d}.safetensors"
        a = load_file(str(tmp_path / "a" / "part-0" / name))["acts"]
        assert load_file(str(part / name))["acts"].equal(a), name


def test_cli_sae_store_on_ray_joins_the_cluster(tmp_path: Path) -> None:
    folder = save_tiny("llama", tmp_path / "tiny")
    args = ["sae", "store", SITE, "--model", str(folder), "--corpus", "fortunes"]
    args += ["--tokens", str(64 * 64), "--start-window", "0", "--store-dtype", "float32"]
    env = {"OMP_NUM_THREADS": "1"}  # the local run on one thread, as each Ray task
    local = mechscope(*args, "--out", str(tmp_path / "local"), cache=tmp_path, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    address = ray.get_runtime_context().gcs_address
    remote = mechscope(
        *args, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2",
        "--address", address, cache=tmp_path, env=env,
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr[-3000:]
    a, b = load_activations(tmp_path / "local"), load_activations(tmp_path / "ray")
    assert a.dtype == torch.float32 and b.equal(a)
    assert activations_meta(tmp_path / "ray")["engine"]["workers"] == 2
    bad = mechscope(
        *args, "--out", str(tmp_path / "bad"), "--workers", "2", cache=tmp_path, env=env
    )
    assert bad.returncode == 2 and "engine='ray'" in bad.stderr
    assert os.path.exists(tmp_path / "local" / "activations.json")
