"""Harvests on Ray: the corpus in shards, one Ray task each, merged exactly into one run.

Each shard task runs the ordinary one-process harvest of its contiguous
part (`shard=(i, n)`) into its own folder, with the ordinary checkpoints, so
a shard whose worker is killed is retried by Ray and resumes from its last
checkpoint. The driver then merges the shards (`merge_harvests`) into the run
at `out`, which is the local engine's run: the same config.json, state,
tokens and tables, bit for bit.

Workers get the model as `mechscope.engine.ship` says; on a cluster of several
machines `out` must be on a filesystem every node sees (the shards'
checkpoints need that, for a retry on another node to resume).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.model import Model
from ..corpus import Corpus, open_corpus
from ..harvest.collect import check_args, harvest_run
from ..harvest.state import merge_harvests
from ..harvest.tables import HarvestStore
from .cluster import Reporter, attempts, cluster_cpus, note_attempt, ray_session, run_shards
from .ship import ShippedModel, ship_model


def harvest_on_ray(
    model: Model,
    corpus: Corpus | str | Path,
    *,
    out: str | Path,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    resume: bool = True,
    progress: bool = True,
    keep_state: bool = True,
    **harvest_args: Any,
) -> HarvestStore:
    """`harvest` with ``engine="ray"``: `workers` shard tasks of `threads` torch threads each.

    `workers` defaults to the cluster's CPUs // `threads`. Shard folders and
    the shipped model live in ``.<out>.shards`` beside `out` until the merge;
    run again after the driver died and the shards resume from their
    checkpoints. run.json records the engine and, per shard, its worker
    pids (one per attempt) and where it resumed.

    >>> harvest_on_ray(model, "fortunes", out="runs/h", tokens=4096, workers=2)  # doctest: +SKIP
    """
    out = Path(out)
    check_args(
        harvest_args["k"],
        harvest_args["n_random"],
        harvest_args["window"],
        harvest_args["batch_size"],
        harvest_args["tokens"],
    )
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    sites = harvest_args["sites"]
    if sites:
        model.table.expand(sites)  # a wrong site fails here, before any cluster starts
    n_windows = harvest_args["tokens"] // harvest_args["window"]
    n_batches = -(-n_windows // harvest_args["batch_size"])
    root = out.with_name(f".{out.name}.shards")
    if not resume:
        shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    with ray_session(address, cpus=workers * threads if workers else None) as ray:
        n_workers = workers or max(1, cluster_cpus(ray) // threads)
        n_shards = max(1, min(n_workers, n_batches))
        shipped = ship_model(model, root / "model")
        shipped_s = time.perf_counter() - started
        args = [(shipped, corpus, n_shards, str(root), threads, harvest_args)] * n_shards
        records = run_shards(
            ray,
            _harvest_shard,
            args,
            folder=root,
            threads=threads,
            total=n_windows * harvest_args["window"],
            unit="tok",
            desc=f"harvest on {n_shards} Ray workers",
            progress=progress,
        )
    sharded_s = time.perf_counter() - started
    parts = [root / f"shard-{i}" for i in range(n_shards)]
    record = {
        # "harvest": wall time up to the merge (cluster start, shipping, shards); "seconds": the merge
        "timings": {"harvest": round(sharded_s, 3), "ship_model": round(shipped_s, 3)},
        "engine": {
            "name": "ray",
            "address": address,
            "workers": n_shards,
            "threads": threads,
            "shards": records,
        },
    }
    store = merge_harvests(model, parts, out=out, record_parts=False, extra=record)
    if not keep_state:
        (store.path / "state.safetensors").unlink()
    shutil.rmtree(root, ignore_errors=True)
    return store


def _harvest_shard(
    report: Reporter,
    shard: int,
    shipped: ShippedModel,
    corpus: Corpus,
    n_shards: int,
    root: str,
    threads: int,
    harvest_args: Mapping[str, Any],
) -> dict[str, Any]:
    """One Ray task: shard `shard` of `n_shards` into ``root/shard-<i>``, resuming its checkpoint."""
    began = time.time()
    torch.set_num_threads(threads)
    folder = Path(root) / f"shard-{shard}"
    pids = Path(root) / f"shard-{shard}.pids"
    note_attempt(pids)
    t0 = time.perf_counter()
    model = shipped.load()
    loaded = time.perf_counter()
    path = harvest_run(
        model,
        corpus,
        out=folder,
        shard=(shard, n_shards),
        resume=True,
        progress=False,
        keep_state=True,
        report=report,
        tables=False,
        **harvest_args,
    )
    run = json.loads((path / "run.json").read_text())
    windows = json.loads((path / "config.json").read_text())["windows"]
    report((windows[1] - windows[0]) * harvest_args["window"], final=True)
    return {
        "shard": shard,
        "windows": windows,
        "pids": attempts(pids),
        "resumed_from_window": run.get("resumed_from_window"),
        "seconds": {"load_model": round(loaded - t0, 3), "harvest": run["timings"]["harvest"]},
        "started_at": began,
        "ended_at": time.time(),
    }


__all__ = ["harvest_on_ray"]
