"""Stored activations on Ray: the windows in contiguous ranges, one Ray task each, joined in order.

Range boundaries fall on whole batches of the local engine (``start_window``
plus multiples of ``batch_windows``), so every task runs the very forwards
the local engine runs, and the rows, read back in order, are its rows bit for
bit (at the same torch threads). Each task writes its shards into
``.<out>.parts/part-<i>`` and, after every shard, a checkpoint saying how many
windows the written shards hold; a task retried after its worker was killed
drops whatever its last attempt left unfinished and goes on from there. The
driver then moves the shards into `out`, in order, and writes
``activations.json`` last. Workers get the model as `mechscope.engine.ship`
says; on several machines `out` must be on a filesystem every node sees.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..core.model import Model
from ..corpus import Corpus, open_corpus
from .cluster import Reporter, attempts, note_attempt, ray_session, run_shards, split
from .ship import ShippedModel, ship_model

CHECKPOINT = "checkpoint.json"


def store_activations_on_ray(
    model: Model,
    site: str,
    out: str | Path,
    corpus: Corpus | str | Path,
    *,
    tokens: int,
    window: int,
    batch_windows: int,
    start_window: int,
    shard_tokens: int,
    dtype: torch.dtype,
    progress: bool,
    address: str | None,
    workers: int | None,
    threads: int,
) -> Path:
    """`store_activations` with ``engine="ray"`` (see the module docstring); the folder written.

    >>> store_activations_on_ray(model, "blocks.3.resid_post", "acts", "default",
    ...     tokens=65536, window=64, batch_windows=32, start_window=256, shard_tokens=1 << 16,
    ...     dtype=torch.float16, progress=True, address=None, workers=2, threads=1)  # doctest: +SKIP
    """
    out = Path(out)
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    n_windows = max(1, tokens // window)
    n_batches = -(-n_windows // batch_windows)
    root = out.with_name(f".{out.name}.parts")
    started = time.perf_counter()
    with ray_session(address, cpus=workers * threads if workers else None) as ray:
        spans = split(ray, n_batches, workers, threads)  # contiguous runs of whole batches
        n = len(spans)
        shipped = ship_model(model, root / "model")
        ranges = [
            (
                start_window + lo * batch_windows,
                min(hi * batch_windows, n_windows) - lo * batch_windows,
            )
            for lo, hi in spans
        ]
        options = {
            "site": site,
            "window": window,
            "batch_windows": batch_windows,
            "shard_tokens": shard_tokens,
            "dtype": str(dtype).removeprefix("torch."),
            "threads": threads,
        }
        args = [(shipped, corpus, first, count, str(root), options) for first, count in ranges]
        parts = run_shards(
            ray,
            _store_range,
            args,
            folder=root,
            threads=threads,
            total=n_windows * window,
            unit="tok",
            desc=f"{site} on {n} Ray workers",
            progress=progress,
        )
    # the parts' shards, renamed in order into `out`; the record last
    out.mkdir(parents=True, exist_ok=True)
    (out / "activations.json").unlink(missing_ok=True)
    for stale in out.glob("acts-*.safetensors"):
        stale.unlink()
    k = 0
    for i, part in enumerate(parts):
        for j in range(part["shards"]):
            os.replace(
                root / f"part-{i}" / f"acts-{j:05d}.safetensors", out / f"acts-{k:05d}.safetensors"
            )
            k += 1
    from ..core.activations import write_meta

    engine = {
        "name": "ray",
        "address": address,
        "workers": n,
        "threads": threads,
        "seconds": round(time.perf_counter() - started, 3),
        "parts": [
            {key: p[key] for key in ("first_window", "windows", "rows", "pids")} for p in parts
        ],
    }
    write_meta(
        out, model, site, corpus, d_in=max(p["d_in"] for p in parts),
        rows=sum(p["rows"] for p in parts), shards=k, tokens=tokens, window=window,
        start_window=start_window, dtype=dtype, extra={"engine": engine},
    )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return out


def _store_range(
    report: Reporter,
    shard: int,
    shipped: ShippedModel,
    corpus: Corpus,
    first: int,
    count: int,
    root: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One Ray task: windows ``first … first + count`` into ``root/part-<shard>``, resumed."""
    from ..core.activations import stream_activations, write_shard

    torch.set_num_threads(options["threads"])
    folder = Path(root) / f"part-{shard}"
    folder.mkdir(parents=True, exist_ok=True)
    note_attempt(folder / "pids")
    # windows: held by the shards written; ends: the window count at each shard's end
    state: dict[str, Any] = {"windows": 0, "shards": 0, "rows": 0, "d_in": 0, "ends": []}
    if (folder / CHECKPOINT).exists():
        state = json.loads((folder / CHECKPOINT).read_text())
    # anything past the checkpoint is an unfinished attempt's: dropped
    for path in folder.glob("acts-*.safetensors"):
        if int(path.stem.removeprefix("acts-")) >= state["shards"]:
            path.unlink()
    for tmp in folder.glob("*.tmp"):
        tmp.unlink()
    window, per_batch = options["window"], options["batch_windows"]
    dtype = getattr(torch, options["dtype"])
    report(state["windows"] * window, final=True)

    def flush(rows: torch.Tensor, windows: int) -> None:
        write_shard(folder, state["shards"], rows, dtype)
        state.update(
            windows=windows,
            shards=state["shards"] + 1,
            rows=state["rows"] + len(rows),
            ends=[*state["ends"], windows],
        )
        check = folder / f"{CHECKPOINT}.tmp"
        check.write_text(json.dumps(state))
        os.replace(check, folder / CHECKPOINT)

    left = count - state["windows"]
    if left > 0:
        model = shipped.load()
        stream = stream_activations(
            model, options["site"], corpus, tokens=left * window, window=window,
            batch_windows=per_batch, start_window=first + state["windows"],
        )  # fmt: skip
        pending: list[torch.Tensor] = []
        held, done = 0, state["windows"]
        for chunk in stream:
            # shards end on whole batches, so the checkpoint is a window count
            state["d_in"] = chunk.shape[1]
            pending.append(chunk)
            held += len(chunk)
            done = min(done + per_batch, count)
            if held >= options["shard_tokens"]:
                flush(torch.cat(pending), done)
                pending, held = [], 0
            report(done * window)
        if pending:
            flush(torch.cat(pending), count)
    report(count * window, final=True)
    return {
        "first_window": first,
        "windows": count,
        "rows": state["rows"],
        "shards": state["shards"],
        "d_in": state["d_in"],
        "pids": attempts(folder / "pids"),
    }


__all__ = ["store_activations_on_ray"]
