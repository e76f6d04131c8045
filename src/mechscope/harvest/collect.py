"""The harvest loop: stream corpus windows through the model and fold every site's units into accumulators.

`harvest` runs batched under `no_grad`, stops each forward after the last
harvested site (no unembedding when it is not needed), and reduces each
site's activations inside the forward (`ms.observe`), so memory is bounded
by the batch and the accumulators, never by the corpus. It checkpoints the
accumulators atomically with the number of windows done; a killed harvest
started again with the same arguments resumes from there with nothing lost
or counted twice. `shard=(i, n)` harvests the i-th of n contiguous parts of
the corpus; `merge_harvests` combines the parts into exactly the harvest of
one pass. ``engine="ray"`` does both on a Ray cluster (`mechscope.engine`).

Example::

    import mechscope as ms
    from mechscope.harvest import harvest
    store = harvest(ms.load(), "default", out="runs/harvest", tokens=1_000_000)
    store.unit("blocks.5.mlp.post", 17).top[0].tokens
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..core.sites import Site
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from ..errors import InputError
from ..store import model_record, new_run, without_placement
from .stats import UnitAccumulator
from .tables import TOKENS_FILE, HarvestStore, write_tables

DEFAULT_SITES = "blocks.*.mlp.post"
STATE_FILE = "state.safetensors"


HEAD_AXES = (("batch", "pos", "head", "d_head"), ("batch", "pos", "kv_head", "d_head"))
PATTERN_AXES = ("batch", "head", "q_pos", "k_pos")


def unit_kind(site: Site) -> tuple[str, str]:
    """What one unit of `site` is and how its per-token value is read off the site's tensor.

    Example: ``unit_kind(model.table["blocks.5.mlp.post"])`` → ``("neuron", "value")``.
    """
    axes = site.axes
    if len(axes) == 3 and axes[:2] == ("batch", "pos"):
        return ("neuron" if axes[2] == "d_mlp" else "dimension"), "value"
    if axes in HEAD_AXES:
        return "head", "L2 norm of the head's vector"
    if axes == PATTERN_AXES:
        return "head", "largest attention weight on a key after position 0"
    return "unit", "value (trailing axes flattened)"


def units_of(site: Site, x: Tensor) -> Float[Tensor, "batch pos unit"]:
    """The site's tensor as [batch, pos, unit] (see `unit_kind`).

    Example: ``units_of(model.table["blocks.5.attn.z"], z)`` → [batch, pos, head], each
    head's L2 norm.
    """
    axes = site.axes
    if axes in HEAD_AXES:
        return torch.linalg.vector_norm(x.float(), dim=-1)
    if axes == PATTERN_AXES:
        off_sink = x[..., 1:].amax(-1) if x.shape[-1] > 1 else torch.zeros_like(x[..., 0])
        return off_sink.transpose(1, 2)
    if x.ndim < 3:
        raise InputError(
            f"site {site.name!r} has shape {tuple(x.shape)}: a harvest needs [batch, pos, …]"
        )
    return x.reshape(x.shape[0], x.shape[1], -1)


Reader = Callable[[Tensor], Tensor]  # a site's tensor → [batch, pos, unit]


def _readers(
    model: Model, names: list[str], features: Mapping[str, tuple[str, Reader]]
) -> dict[str, tuple[str, Reader]]:
    """Harvested name → (site it is read from, how its units are read), in forward order."""
    out: dict[str, tuple[str, Reader]] = {}
    for name in names:
        site = model.table[name]
        out[name] = (name, lambda x, site=site: units_of(site, x))
    for name, (site, fn) in features.items():
        if name in out:
            raise InputError(f"feature name {name!r} is also a harvested site; rename it")
        model.table[site]  # unknown site: error with the closest names
        if not callable(fn):
            raise InputError(f"feature {name!r} needs (site, function), got {type(fn).__name__}")
        out[name] = (site, fn)
    order = {n: i for i, n in enumerate(model.table.order([s for s, _ in out.values()]))}
    return dict(sorted(out.items(), key=lambda item: order[item[1][0]]))


def _by_site(readers: Mapping[str, tuple[str, Reader]]) -> dict[str, list[tuple[str, Reader]]]:
    grouped: dict[str, list[tuple[str, Reader]]] = {}
    for name, (site, fn) in readers.items():
        grouped.setdefault(site, []).append((name, fn))
    return grouped


def _sizes(model: Model, readers: Mapping[str, tuple[str, Reader]], window: int) -> dict[str, int]:
    """Units per harvested name, from one forward of one window (exact for any module path)."""
    from ..core.interventions import observe

    sizes: dict[str, int] = {}

    def grab(targets: list[tuple[str, Reader]]) -> Callable[[Tensor], None]:
        def fn(x: Tensor) -> None:
            for name, read in targets:
                out = read(x)
                if out.ndim != 3 or out.shape[:2] != (1, window):
                    raise InputError(
                        f"{name}: a harvest reads [batch, pos, unit] tensors, got {tuple(out.shape)}"
                    )
                sizes[name] = int(out.shape[-1])

        return fn

    ids = torch.zeros(1, window, dtype=torch.long, device=model.device)
    hooks = [observe(site, grab(t)) for site, t in _by_site(readers).items()]
    with model.hooks(hooks), torch.no_grad():
        model.hf(ids, use_cache=False)
    return sizes


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
        return HarvestStore(harvest_folder(model, corpus, shard=shard, **common))


def check_args(k: int, n_random: int, window: int, batch_size: int, tokens: int) -> None:
    """Raise InputError unless the harvest's sizes make sense.

    Example: ``check_args(k=20, n_random=10, window=64, batch_size=32, tokens=1_000_000)``
    passes; ``tokens=10`` (fewer than one window) raises.
    """
    if k < 1 or n_random < 0 or window < 2 or batch_size < 1 or tokens < window:
        raise InputError(
            "harvest needs k ≥ 1, n_random ≥ 0, window ≥ 2, batch_size ≥ 1 and tokens ≥ window; "
            f"got k={k}, n_random={n_random}, window={window}, batch_size={batch_size}, tokens={tokens}"
        )


def harvest_folder(
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

        folder = harvest_folder(model, "default", out="runs/h0", sites="blocks.*.mlp.post",
            tokens=65_536, window=64, k=20, n_random=10, batch_size=32, shard=(0, 2), hist_every=8,
            checkpoint_seconds=120.0, checkpoint_batches=None, resume=True, progress=False,
            keep_state=True, features=None)    # Path("runs/h0")
    """
    check_args(k, n_random, window, batch_size, tokens)
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
    return min(lo * batch_size, n_windows), min(hi * batch_size, n_windows)


def _load_checkpoint(
    folder: Path,
    names: list[str],
    sizes: dict[str, int],
    k: int,
    n_random: int,
    window: int,
    hist_every: int,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, UnitAccumulator], int]:
    """Accumulators (on `device`) and windows done from the folder's checkpoint, or fresh ones."""
    if (folder / STATE_FILE).exists():
        accs, done = _read_state(folder, names, device)
    else:
        accs = {
            name: UnitAccumulator.empty(
                sizes[name], k, n_random, window, salt=i, hist_every=hist_every, device=device
            )
            for i, name in enumerate(names)
        }
        done = 0
    # tokens written after the last checkpoint belong to batches that will be redone
    tokens = folder / TOKENS_FILE
    with open(tokens, "ab") as f:
        f.truncate(done * window * 4)
    return accs, done


def save_state(
    folder: Path, names: Sequence[str], accs: dict[str, UnitAccumulator], done: int
) -> None:
    """Write all accumulators and the windows-done count in one file, atomically.

    Example: ``save_state(Path("runs/h"), ["blocks.5.mlp.post"], accs, done=128)`` writes
    ``runs/h/state.safetensors``.
    """
    tensors: dict[str, Tensor] = {"windows_done": torch.tensor(done)}
    for i, name in enumerate(names):
        for key, v in accs[name].state_dict().items():
            tensors[f"{i}.{key}"] = v.cpu().contiguous()  # the host only at checkpoints
    tmp = folder / (STATE_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"sites": json.dumps(list(names))})
    os.replace(tmp, folder / STATE_FILE)


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
    with open(folder / TOKENS_FILE, "ab") as token_file, model.hooks(hooks), torch.no_grad():
        for first, ids in _batches(model, corpus, window, start + done, stop, batch_size):
            state["ids"] = torch.arange(first, first + len(ids))
            with contextlib.suppress(StopForward):  # the last site was seen: skip the rest
                model.hf(ids.to(model.device), use_cache=False)
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
                token_file.flush()
                os.fsync(token_file.fileno())
                save_state(folder, names, accs, done)
                last_save, since_save = time.perf_counter(), 0
        token_file.flush()
    bar.close()
    save_state(folder, names, accs, done)


def merge_harvests(
    model: Model,
    parts: Sequence[str | Path],
    *,
    out: str | Path,
    record_parts: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> HarvestStore:
    """Merge shard runs of one harvest (contiguous window ranges) into one run at `out`.

    The result equals one uninterrupted harvest over the union of the shards
    (same batches): top-k, samples, counts and histograms exactly, and sums
    too (they are fixed point). Each part must keep its state (``keep_state``).
    ``record_parts=False`` leaves the parts' folders out of config.json (an
    engine's temporary shards: the config is then the one-pass run's); `extra`
    goes into run.json.

    Example::

        for i in range(2):
            harvest(model, out=f"runs/h{i}", tokens=100_000, shard=(i, 2))
        store = merge_harvests(model, ["runs/h0", "runs/h1"], out="runs/h")
    """
    if not parts:
        raise InputError("merge_harvests needs at least one harvest run folder")
    loaded = []
    for part in parts:
        folder = Path(part)
        cfg_file, state_file = folder / "config.json", folder / STATE_FILE
        if not cfg_file.exists() or not state_file.exists():
            raise InputError(
                f"{folder} is not a finished harvest with its state (config.json and {STATE_FILE})"
            )
        loaded.append((json.loads(cfg_file.read_text()), folder))
    loaded.sort(key=lambda cf: cf[0]["windows"][0])
    first = loaded[0][0]
    same = ("model", "corpus", "sites", "units", "window", "k", "n_random", "batch_size")
    for cfg, folder in loaded[1:]:
        diff = [
            key
            for key in (*same, "hist_every")
            if without_placement(cfg.get(key)) != without_placement(first.get(key))
        ]
        if diff:
            raise InputError(f"{folder} differs from {loaded[0][1]} in {', '.join(diff)}")
    for (a, fa), (b, fb) in zip(loaded, loaded[1:], strict=False):
        if a["windows"][1] != b["windows"][0]:
            raise InputError(
                f"shards must be contiguous: {fa} covers windows {a['windows']}, "
                f"{fb} covers {b['windows']}"
            )
    names = list(first["sites"])
    window = int(first["window"])
    config = {
        **first,
        "windows": [first["windows"][0], loaded[-1][0]["windows"][1]],
        "shard": None,
        **({"merged_from": [str(folder) for _, folder in loaded]} if record_parts else {}),
    }
    config.pop("kind", None)
    run = new_run("harvest", out, config)
    accs: dict[str, UnitAccumulator] | None = None
    with open(run.dir / TOKENS_FILE, "wb") as tokens_out:
        for _, folder in loaded:
            state, _ = _read_state(folder, names)
            if accs is None:
                accs = state
            else:
                for name in names:
                    accs[name].merge(state[name])
            tokens_out.write((folder / TOKENS_FILE).read_bytes())
    assert accs is not None
    done = config["windows"][1] - config["windows"][0]
    save_state(run.dir, names, accs, done)
    summary = write_tables(run.dir, model, accs, {**config, "window": window})
    run.extra.update(summary)
    run.extra.update(extra or {})
    return HarvestStore(run.finish())


def _read_state(
    folder: Path, names: list[str], device: torch.device | str = "cpu"
) -> tuple[dict[str, UnitAccumulator], int]:
    state = load_file(str(folder / STATE_FILE))
    accs = {}
    for i, name in enumerate(names):
        prefix = f"{i}."
        accs[name] = UnitAccumulator.from_state(
            {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)}, device
        )
    return accs, int(state["windows_done"])
