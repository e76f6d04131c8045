"""A site's activations over a corpus, streamed or stored (SAE training data, ROME's key
covariance, any statistic over many tokens).

`stream_activations` runs the model over corpus windows and yields the
site's vectors (the forward stops right after the site). Positions holding
the window's first token or a document separator are left out by default:
their residual norms are orders of magnitude above the rest (attention
sinks) and would dominate the reconstruction loss. `ShuffleBuffer` mixes
tokens from many windows so a batch is not a run of neighbours.
`store_activations` writes the same vectors as safetensors shards, which
`load_activations` reads back (for repeated training runs and benchmarks).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm

from .._arrays import atomic_file, is_partial_file, remove_partial_files, save_torch
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from ..errors import InputError
from ..store import holding
from .interventions import observe, stop
from .model import Model

META_FILE = "activations.json"


def stream_activations(
    model: Model,
    site: str,
    corpus: Corpus | str = "default",
    *,
    tokens: int | None = None,
    window: int = 64,
    batch_windows: int = 32,
    start_window: int = 0,
    skip_boundary: bool = True,
    progress: bool = False,
) -> Iterator[Float[Tensor, "n d_in"]]:
    """Yield `site`'s vectors, one chunk per forward of `batch_windows` windows (float32).

    The chunks stay on the site's device (the model's): an SAE trained there,
    or a covariance summed there, never waits for a copy to the host.

    `tokens` bounds the corpus tokens read (None: the whole corpus); windows
    start at `start_window`, so a held-out range can follow the training one.

    Example: ``next(stream_activations(model, "blocks.15.resid_post", tokens=4096))`` → [n, 576],
    n a little under 32 × 64 (boundary tokens left out).
    """
    model.table[site]  # unknown site: error naming the closest ones
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    limit = None if tokens is None else max(1, tokens // window)
    skip = torch.tensor([t for t in boundary_tokens(model) if t is not None])
    grabbed: list[Tensor] = []

    def grab(x: Tensor) -> None:
        grabbed.append(x.detach())

    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc=site, disable=not progress)

    def forward(ids: Tensor) -> Tensor:
        grabbed.clear()
        # hooks only around this forward: between chunks the model is the caller's again
        # the forward ends at the site: the layers above it are not needed
        with model.hooks([observe(site, grab), stop(site)]), torch.no_grad():
            model.hf(ids.to(model.device), use_cache=False)
        if not grabbed:
            raise InputError(f"site {site!r} was not reached in the forward")
        x = grabbed[0]
        if x.ndim != 3:
            raise InputError(
                f"site {site!r} has shape {tuple(x.shape)}; an SAE needs [batch pos d]"
            )
        keep = ~torch.isin(ids, skip) if skip_boundary else torch.ones_like(ids, dtype=torch.bool)
        bar.update(ids.numel())
        return x[keep.to(x.device)].float()

    for ids in window_batches(
        model, corpus, window, batch_windows, start=start_window, limit=limit
    ):
        yield forward(ids)
    bar.close()


class ShuffleBuffer:
    """Mix a stream of [n, d] chunks: fill `size` rows, shuffle, hand out half, refill.

    Iterating yields batches of `batch` rows until the stream is exhausted.

    Example::

        buffer = ShuffleBuffer(stream_activations(model, "blocks.15.resid_post"), 1 << 17, 4096)
        x = next(iter(buffer))    # [4096, 576]
    """

    def __init__(self, chunks: Iterable[Tensor], size: int, batch: int, seed: int = 0) -> None:
        if size < 2 * batch:
            raise InputError(f"buffer size {size} must hold at least two batches of {batch}")
        self.chunks, self.size, self.batch = chunks, size, batch
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Float[Tensor, "batch d_in"]]:
        pending: list[Tensor] = []
        held = 0
        source = iter(self.chunks)
        exhausted = False
        while True:
            while held < self.size and not exhausted:
                try:
                    chunk = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(chunk)
                held += len(chunk)
            if held < self.batch:
                return
            buf = torch.cat(pending)
            # the permutation is drawn on the CPU: the same batches whatever the device
            buf = buf[torch.randperm(len(buf), generator=self.generator).to(buf.device)]
            out = len(buf) if exhausted else max(self.batch, len(buf) // 2)
            out -= out % self.batch
            for i in range(0, out, self.batch):
                yield buf[i : i + self.batch]
            pending, held = [buf[out:]], len(buf) - out
            if exhausted and held < self.batch:
                return


def store_activations(
    model: Model,
    site: str,
    out: str | Path,
    corpus: Corpus | str = "default",
    *,
    tokens: int,
    window: int = 64,
    batch_windows: int = 32,
    start_window: int = 0,
    shard_tokens: int = 1 << 16,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> Path:
    """Write `site`'s vectors over `tokens` corpus tokens as safetensors shards in `out`.

    The folder is complete only when ``activations.json`` exists (written last).
    ``engine="ray"`` splits the windows into contiguous ranges, one Ray task
    each (`workers` of `threads` torch threads; see
    `mechscope.engine.activations`): the rows, in order, are the local
    engine's bit for bit; only the cut into shard files differs.

    Example: ``store_activations(model, "blocks.15.resid_post", "acts/l15", tokens=100_000)``
    → ``Path("acts/l15")``, then ``load_activations("acts/l15")``.
    """
    from ..engine import check_engine

    check_engine(engine, address=address, workers=workers, threads=threads)
    model.table[site]  # unknown site: error naming the closest ones, before any work
    if tokens < 1:
        raise InputError(f"tokens must be at least 1, got {tokens}")
    if start_window < 0:
        raise InputError(f"start_window must be >= 0 (the first corpus window), got {start_window}")
    _check_folder(out)
    if engine == "ray":
        from ..engine.activations import store_activations_on_ray

        return store_activations_on_ray(
            model, site, out, corpus, tokens=tokens, window=window,
            batch_windows=batch_windows, start_window=start_window, shard_tokens=shard_tokens,
            dtype=dtype, progress=progress, address=address, workers=workers,
            threads=threads or 1,
        )  # fmt: skip
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus  # before `out`
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with holding(out):  # a second process storing into `out` at the same time refuses
        return _store_local(
            model, site, out, corpus, tokens=tokens, window=window, batch_windows=batch_windows,
            start_window=start_window, shard_tokens=shard_tokens, dtype=dtype, progress=progress,
        )  # fmt: skip


def _check_folder(out: str | Path) -> None:
    """`out` as a folder of shards to write: named, not a file, and new, empty or holding
    stored activations (which are replaced)."""
    text = str(out)
    path = Path(text)
    if not text.strip() or path.name in ("", ".", ".."):
        raise InputError(
            f"the activations folder (--out) must be named, e.g. acts/l15; got {text!r}"
        )
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} is a file; a folder for the shards is expected")
    # a store killed during its first write left only a temporary file: it may start again
    stored = (path / META_FILE).is_file() or any(path.glob("acts-*.safetensors"))
    stored = stored or (path.is_dir() and any(is_partial_file(p.name) for p in path.iterdir()))
    if path.is_dir() and not stored and any(path.iterdir()):
        raise InputError(
            f"--out {path} is a folder that holds no stored activations; it would be filled "
            "with shards, so give a new or empty folder"
        )


def _store_local(
    model: Model,
    site: str,
    out: Path,
    corpus: Corpus | str,
    *,
    tokens: int,
    window: int,
    batch_windows: int,
    start_window: int,
    shard_tokens: int,
    dtype: torch.dtype,
    progress: bool,
) -> Path:
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    (out / META_FILE).unlink(missing_ok=True)
    remove_partial_files(out)  # what killed writes left: the shards are all written again
    pending: list[Tensor] = []
    held, n_shards, total = 0, 0, 0

    def flush(rows: Tensor) -> None:
        nonlocal n_shards
        write_shard(out, n_shards, rows, dtype)
        n_shards += 1

    stream = stream_activations(
        model, site, corpus, tokens=tokens, window=window, batch_windows=batch_windows,
        start_window=start_window, progress=progress,
    )  # fmt: skip
    d_in = 0
    for chunk in stream:
        d_in = chunk.shape[1]
        pending.append(chunk)
        held += len(chunk)
        total += len(chunk)
        while held >= shard_tokens:
            buf = torch.cat(pending)
            flush(buf[:shard_tokens])
            pending, held = [buf[shard_tokens:]], held - shard_tokens
    if held:
        flush(torch.cat(pending))
    for old in out.glob("acts-*.safetensors"):  # a larger store's shards, replaced by this one
        index = old.name.removeprefix("acts-").removesuffix(".safetensors")
        if index.isdigit() and int(index) >= n_shards:
            old.unlink()
    write_meta(out, model, site, corpus, d_in=d_in, rows=total, shards=n_shards, tokens=tokens,
               window=window, start_window=start_window, dtype=dtype)  # fmt: skip
    return out


def write_shard(folder: Path, index: int, rows: Tensor, dtype: torch.dtype) -> None:
    """Write ``acts-<index>.safetensors`` in `folder` whole or not at all (via a temporary file).

    Example: ``write_shard(Path("acts"), 0, torch.randn(8, 576), torch.float16)`` writes
    ``acts/acts-00000.safetensors`` (the folder must exist).
    """
    with atomic_file(folder / f"acts-{index:05d}.safetensors") as tmp:
        save_torch(tmp, {"acts": rows.to("cpu", dtype).contiguous()})


def write_meta(
    out: Path,
    model: Model,
    site: str,
    corpus: Corpus,
    *,
    d_in: int,
    rows: int,
    shards: int,
    tokens: int,
    window: int,
    start_window: int,
    dtype: torch.dtype,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``activations.json``, the record that marks a stored folder complete.

    Example::

        write_meta(out, model, "blocks.15.resid_post", open_corpus("default"), d_in=576,
                   rows=n, shards=1, tokens=n, window=64, start_window=0, dtype=torch.float32)
    """
    meta: dict[str, Any] = {
        "site": site,
        "model": getattr(model, "name", ""),
        "d_in": d_in,
        "rows": rows,
        "corpus": corpus.record(),
        "corpus_tokens": tokens,
        "window": window,
        "start_window": start_window,
        "shards": shards,
        "dtype": str(dtype).removeprefix("torch."),
        **(extra or {}),
    }
    with atomic_file(out / META_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def activations_meta(folder: str | Path) -> dict[str, Any]:
    """The record written by `store_activations` (site, model, rows, corpus).

    Example: ``activations_meta("acts/l15")["rows"]`` → the number of stored vectors.
    """
    path = Path(folder) / META_FILE
    if not path.exists():
        raise InputError(f"{folder} holds no stored activations (no {META_FILE}; was it finished?)")
    return json.loads(path.read_text())


def load_activations(folder: str | Path, rows: int | None = None) -> Float[Tensor, "rows d_in"]:
    """All stored vectors (or the first `rows`) as one float32 tensor.

    Example: ``load_activations("acts/l15", rows=4096)`` → [4096, 576] float32.
    """
    meta = activations_meta(folder)
    parts: list[Tensor] = []
    held = 0
    for i in range(meta["shards"]):
        if rows is not None and held >= rows:
            break
        part = load_file(str(Path(folder) / f"acts-{i:05d}.safetensors"))["acts"].float()
        parts.append(part)
        held += len(part)
    acts = torch.cat(parts)
    return acts if rows is None else acts[:rows]
