"""The IOI reproduction's prompt-level measures on Ray: contiguous runs of prompt blocks, one task each.

Each task computes the blocks of `mechscope.ioi.measures.prompt_block` for
its run of blocks and returns them; the driver merges all blocks in order,
as the local engine does, so the logit differences, DLA and head scores are
the local engine's at the same torch threads. The sweeps, path patching and
circuit discovery that follow work on the small sweep subset, in the driver.
Workers get the model as `mechscope.engine.ship` says.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..core.model import Model
from ..ioi.dataset import IOIDataset
from .cluster import Reporter, ray_session, run_shards, split
from .ship import ShippedModel, ship_model

Sets = tuple[IOIDataset, IOIDataset, IOIDataset]


def prompt_blocks_on_ray(
    model: Model,
    sets: Sets,
    blocks: list[tuple[int, int]],
    *,
    address: str | None,
    workers: int | None,
    threads: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Every block's measures, in block order, and how many Ray tasks computed them.

    Example::

        ds = ioi_dataset(model, 64)
        sets = (ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))
        parts, n = prompt_blocks_on_ray(model, sets, [(0, 32), (32, 64)], address=None,
                                        workers=2, threads=1, progress=False)   # 2 dicts, n=2
    """
    root = Path(tempfile.mkdtemp(prefix="mechscope-ioi-"))
    try:
        with ray_session(address, cpus=workers * threads if workers else None) as ray:
            spans = split(ray, len(blocks), workers, threads)
            n = len(spans)
            shipped = ship_model(model, root / "model")
            args = [(shipped, sets, blocks[lo:hi], threads) for lo, hi in spans]
            runs = run_shards(
                ray,
                _blocks_task,
                args,
                folder=root,
                threads=threads,
                total=blocks[-1][1],
                unit="prompt",
                desc=f"IOI prompts on {n} Ray workers",
                progress=progress,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [block for run in runs for block in run], n


def _blocks_task(
    report: Reporter,
    shard: int,
    shipped: ShippedModel,
    sets: Sets,
    blocks: list[tuple[int, int]],
    threads: int,
) -> list[dict[str, Any]]:
    """One Ray task: the measures of its blocks, in order."""
    from ..ioi.measures import prompt_block

    torch.set_num_threads(threads)
    model = shipped.load()
    out, done = [], 0
    for lo, hi in blocks:
        out.append(prompt_block(model, sets, lo, hi))
        done += hi - lo
        report(done)
    report(done, final=True)
    return out


__all__ = ["prompt_blocks_on_ray"]
