"""The harvest loop: stream corpus windows through the model and fold every site's units into accumulators.

`harvest` runs batched under `no_grad`, stops each forward after the last
harvested site (no unembedding when it is not needed), and reduces each
site's activations inside the forward (`ms.observe`), so memory is bounded
by the batch and the accumulators, never by the corpus. It checkpoints the
accumulators atomically with the number of windows done; a killed harvest
started again with the same arguments resumes from there with nothing lost
or counted twice. `shard=(i, n)` harvests the i-th of n contiguous parts of
the corpus; `merge_harvests` (`harvest.state`) combines the parts into
exactly the harvest of one pass. ``engine="ray"`` does both on a Ray cluster
(`mechscope.engine`). What a unit of each site is lives in `harvest.units`.

Example::

    import mechscope as ms
    from mechscope.harvest import harvest
    store = harvest(ms.load(), "default", out="runs/harvest", tokens=1_000_000)
    store.unit("blocks.5.mlp.post", 17).top[0].tokens
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._arrays import naming
from ..core.model import Model
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from ..errors import InputError
from ..store import model_record, new_run
from .state import STATE_FILE, _load_checkpoint, save_state
from .stats import UnitAccumulator
from .tables import TOKENS_FILE, HarvestStore, write_tables
from .units import Reader, _by_site, _readers, _sizes, unit_kind

DEFAULT_SITES = "blocks.*.mlp.post"


def harvest(
    model: Model,
    corpus: Corpus | str = "default",
    *,
    out: str | Path,
    sites: str | Sequence[str] = DEFAULT_SITES,
    tokens: int = 1_000_000,
    window: int = 64,
    k: int = 20,
    n_random: int = 10,
    batch_size: int = 32,
    shard: tuple[int, int] | None = None,
    hist_every: int = 8,
    checkpoint_seconds: float = 120.0,
    checkpoint_batches: int | None = None,
    resume: bool = True,
    progress: bool = True,
    keep_state: bool = True,
    features: Mapping[str, tuple[str, Reader]] | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> HarvestStore:
    """Harvest top-k examples and statistics of every unit of `sites` over `tokens` corpus tokens.

    The corpus is packed into windows of `window` tokens (BOS first); the
    first ``tokens // window`` windows are used (or the `shard` part of
    them). A run folder is written at `out` and returned opened. Started
    again after a kill with the same arguments, it resumes.

    `features` harvests units computed from a site, e.g. SAE latents:
    ``{"sae6": ("blocks.6.resid_post", sae.encode)}`` (the function maps the
    site's tensor to [batch, pos, unit]); they are stored and served like sites.
    Pass ``sites=[]`` to harvest only features.

    ``engine="ray"`` splits the corpus into `workers` shards, harvests each
    as a Ray task with `threads` torch threads (on the cluster at `address`,
    or a local one) and merges them into the same run as the local engine's
    at `threads` threads (see `mechscope.engine.harvest_on_ray`). With the
    local engine, `threads` sets torch's threads for the run.

    Example::

        store = harvest(model, out="runs/harvest", sites="blocks.*.mlp.post", tokens=100_000)
        store.unit("blocks.5.mlp.post", 17).top[0].max_act
    """
    from ..engine import check_engine, torch_threads

    check_engine(engine, address=address, workers=workers, threads=threads)
    # what a harvest is, whichever engine runs it
    common: dict[str, Any] = dict(
        out=out, sites=sites, tokens=tokens, window=window, k=k, n_random=n_random,
        batch_size=batch_size, hist_every=hist_every, checkpoint_seconds=checkpoint_seconds,
        checkpoint_batches=checkpoint_batches, resume=resume, progress=progress,
        keep_state=keep_state, features=features,
    )  # fmt: skip
    if engine == "ray":
        if shard is not None:
            raise InputError("engine='ray' shards the corpus itself: drop shard=")
        from ..engine.harvest import harvest_on_ray

        return harvest_on_ray(
            model, corpus, address=address, workers=workers, threads=threads or 1, **common
        )
    with torch_threads(threads):
        return HarvestStore(harvest_run(model, corpus, shard=shard, **common))


def check_args(
    k: int,
    n_random: int,
    window: int,
    batch_size: int,
    tokens: int,
    checkpoint_batches: int | None = None,
) -> None:
    """Raise InputError unless the harvest's sizes make sense.

    Example: ``check_args(k=20, n_random=10, window=64, batch_size=32, tokens=1_000_000)``
    passes; ``tokens=10`` (fewer than one window) raises.
    """
    sizes = {"k": k, "n_random": n_random, "window": window, "batch_size": batch_size,
             "tokens": tokens}  # fmt: skip
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"harvest's {name} must be an integer, got {value!r}")
    if k < 1 or n_random < 0 or window < 2 or batch_size < 1 or tokens < window:
        raise InputError(
            "harvest needs k ≥ 1, n_random ≥ 0, window ≥ 2, batch_size ≥ 1 and tokens ≥ window; "
            f"got k={k}, n_random={n_random}, window={window}, batch_size={batch_size}, tokens={tokens}"
        )
    if checkpoint_batches is not None and checkpoint_batches < 1:
        raise InputError(f"checkpoints are every N ≥ 1 batches, got {checkpoint_batches}")


def harvest_run(
    model: Model,
    corpus: Corpus | str | Path,
    *,
    out: str | Path,
    sites: str | Sequence[str],
    tokens: int,
    window: int,
    k: int,
    n_random: int,
    batch_size: int,
    shard: tuple[int, int] | None,
    hist_every: int,
    checkpoint_seconds: float,
    checkpoint_batches: int | None,
    resume: bool,
    progress: bool,
    keep_state: bool,
    features: Mapping[str, tuple[str, Reader]] | None,
    report: Callable[[int], None] | None = None,
    tables: bool = True,
) -> Path:
    """`harvest`'s work on one process: the finished run folder.

    `report` is called with the tokens done after each batch (an engine's
    progress); ``tables=False`` keeps only the state and tokens, for shards
    that are merged afterwards.

    Example::

        folder = harvest_run(model, "default", out="runs/h0", sites="blocks.*.mlp.post",
            tokens=65_536, window=64, k=20, n_random=10, batch_size=32, shard=(0, 2), hist_every=8,
            checkpoint_seconds=120.0, checkpoint_batches=None, resume=True, progress=False,
            keep_state=True, features=None)    # Path("runs/h0")
    """
    check_args(k, n_random, window, batch_size, tokens, checkpoint_batches)
    model.check_length(window, "a harvest window")
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    readers = _readers(model, model.table.expand(sites) if sites else [], features or {})
    names = list(readers)
    if not names:
        raise InputError(f"nothing to harvest: no sites ({sites!r}) and no features")
    n_windows = tokens // window
    start, stop = _shard_range(n_windows, batch_size, shard)
    sizes = _sizes(model, readers, window)
    config: dict[str, Any] = {
        "model": model_record(model),
        "corpus": corpus.record(),
        "sites": names,
        "units": sizes,
        "unit_kinds": {
            n: unit_kind(model.table[n])
            if n == site
            else ("feature", f"{getattr(fn, '__qualname__', type(fn).__name__)} of {site}")
            for n, (site, fn) in readers.items()
        },
        "feature_sites": {n: site for n, (site, _) in readers.items() if n != site},
        "window": window,
        "tokens": n_windows * window,
        "k": k,
        "n_random": n_random,
        "batch_size": batch_size,
        "hist_every": hist_every,
        "windows": [start, stop],
        "shard": list(shard) if shard else None,
        "boundary_tokens": dict(zip(("first", "separator"), boundary_tokens(model), strict=True)),
    }
    run = new_run("harvest", out, config, resume=resume)
    try:
        accs, done = _load_checkpoint(
            run.dir, names, sizes, k, n_random, window, hist_every, device=model.device
        )
        started = time.perf_counter()
        _loop(
            model,
            corpus,
            readers,
            accs,
            run.dir,
            window=window,
            start=start,
            stop=stop,
            done=done,
            batch_size=batch_size,
            checkpoint_seconds=checkpoint_seconds,
            checkpoint_batches=checkpoint_batches,
            progress=progress,
            report=report,
        )
        run.timed("harvest", started)
        if tables:
            t0 = time.perf_counter()
            summary = write_tables(run.dir, model, accs, config)
            run.timed("tables", t0)
            run.extra.update(summary)
        run.extra["resumed_from_window"] = start + done if run.resumed else None
        if not keep_state:
            (run.dir / STATE_FILE).unlink()
    except InputError:
        run.abandon()
        raise
    # any other exit (a kill, Ctrl-C) leaves the partial folder: run again to resume
    return run.finish()


def _shard_range(n_windows: int, batch_size: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Window range of shard i of n: whole batches, so batches are the same as in one pass."""
    if shard is None:
        return 0, n_windows
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"shard must be (i, n) with 0 ≤ i < n, got {shard}")
    batches = -(-n_windows // batch_size)
    lo, hi = i * batches // n, (i + 1) * batches // n
    if hi <= lo:
        raise InputError(
            f"shard {i}/{n} would be empty: {n_windows} windows make {batches} batches of "
            f"{batch_size}, fewer than {n} shards; ask for more tokens, fewer shards or a "
            "smaller batch size"
        )
    return min(lo * batch_size, n_windows), min(hi * batch_size, n_windows)


def _batches(
    model: Model, corpus: Corpus, window: int, first: int, stop: int, batch_size: int
) -> Iterator[tuple[int, Tensor]]:
    """(first window id, ids [batch window]) for the windows first … stop-1."""
    at = first
    for ids in window_batches(model, corpus, window, batch_size, start=first, limit=stop - first):
        yield at, ids
        at += len(ids)
    if at < stop:
        raise InputError(
            f"the corpus {corpus.spec!r} has only {at} windows of {window} tokens; "
            f"asked for {stop}: ask for fewer tokens or a larger corpus"
        )


def _loop(
    model: Model,
    corpus: Corpus,
    readers: Mapping[str, tuple[str, Reader]],
    accs: dict[str, UnitAccumulator],
    folder: Path,
    *,
    window: int,
    start: int,
    stop: int,
    done: int,
    batch_size: int,
    checkpoint_seconds: float,
    checkpoint_batches: int | None,
    progress: bool,
    report: Callable[[int], None] | None = None,
) -> None:
    from ..core.interventions import StopForward, observe
    from ..core.interventions import stop as stop_at

    state: dict[str, Any] = {"ids": None}
    grouped = _by_site(readers)

    def observer(targets: list[tuple[str, Reader]]) -> Callable[[Tensor], None]:
        def fn(x: Tensor) -> None:
            for name, read in targets:
                accs[name].update(read(x), state["ids"])

        return fn

    hooks = [observe(site, observer(targets)) for site, targets in grouped.items()]
    hooks.append(stop_at(model.table.order(list(grouped))[-1]))  # the rest of the forward is unused
    names = list(readers)
    total = (stop - start) * window
    bar = tqdm(
        total=total,
        initial=done * window,
        unit="tok",
        unit_scale=True,
        desc="harvest",
        disable=not progress,
        smoothing=0.1,
    )
    last_save = time.perf_counter()
    since_save = 0
    if report:
        report(done * window)
    tokens = folder / TOKENS_FILE
    with open(tokens, "ab") as token_file, model.hooks(hooks), torch.no_grad():
        for first, ids in _batches(model, corpus, window, start + done, stop, batch_size):
            state["ids"] = torch.arange(first, first + len(ids))
            with contextlib.suppress(StopForward):  # the last site was seen: skip the rest
                model.hf(ids.to(model.device), use_cache=False)
            with naming(tokens):  # a full disk: one line naming the file
                token_file.write(ids.numpy().astype(np.int32).tobytes())
            done = first + len(ids) - start
            bar.update(ids.numel())
            if report:
                report(done * window)
            since_save += 1
            due = (
                since_save >= checkpoint_batches
                if checkpoint_batches
                else time.perf_counter() - last_save > checkpoint_seconds
            )
            if due:
                with naming(tokens):
                    token_file.flush()
                    os.fsync(token_file.fileno())
                save_state(folder, names, accs, done)
                last_save, since_save = time.perf_counter(), 0
        with naming(tokens):
            token_file.flush()
    bar.close()
    save_state(folder, names, accs, done)
