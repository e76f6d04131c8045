"""``mechscope harvest`` and ``mechscope merge-harvests``: Neuroscope-style harvests from the shell."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from ..errors import InputError
from .options import EngineChoice, Placement, engined, placed

if TYPE_CHECKING:
    from ..core.model import Model

console = Console()


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes I/N (e.g. 0/4), got {text!r}") from None
    return i, n


def _check_transcoders(path: Path, engine: EngineChoice) -> None:
    """Refuse a --transcoders that cannot work before any model loads."""
    from ..transcoders.model import CONFIG_FILE

    if engine.engine != "local":
        raise InputError(
            "--transcoders works with --engine local only: Ray workers load the model afresh, "
            "without the attached transcoders"
        )
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise InputError(
            f"--transcoders {path} {what}: give a transcoder run folder (holding transcoders/) "
            f"or a set folder (holding {CONFIG_FILE})"
        )


@contextlib.contextmanager
def _attached(model: Model, path: Path | None) -> Iterator[None]:
    """The transcoder set at `path` attached to `model` for the block (nothing if None)."""
    if path is None:
        yield
        return
    from ..transcoders import TranscoderSet, attach_transcoders

    with attach_transcoders(model, TranscoderSet.load(path, model=model)) as tc_sites:
        console.print(repr(tc_sites), highlight=False)
        yield


@placed
@engined
def harvest_cmd(
    model: str = typer.Argument("smollm2-135m", help="Model spec (default: the built-in SmolLM2)."),
    corpus: str = typer.Option(
        "default",
        "--corpus",
        help="default, austen, gcide, fortunes, pydocs, wordnet, a mix 'austen,fortunes', "
        "or a .txt/.jsonl/.parquet file or a saved datasets folder.",
    ),
    sites: list[str] = typer.Option(
        ["blocks.*.mlp.post"], "--sites", "--site", help="Sites or globs to harvest (repeatable)."
    ),
    tokens: int = typer.Option(1_000_000, "--tokens", help="Corpus tokens to harvest."),
    out: Path = typer.Option(Path("runs/harvest"), "--out", help="Run folder to write."),
    window: int = typer.Option(64, "--window", help="Tokens per window (BOS included)."),
    k: int = typer.Option(20, "--k", help="Top examples kept per unit."),
    n_random: int = typer.Option(10, "--random", help="Random examples kept per unit."),
    batch_size: int = typer.Option(32, "--batch-size", help="Windows per forward."),
    shard: str = typer.Option(None, "--shard", help="Harvest part I of N (I/N); merge after."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore an interrupted run's checkpoint."),
    checkpoint_every: int = typer.Option(
        None, "--checkpoint-every", help="Checkpoint every N batches (default: every 120 s)."
    ),
    transcoders: Path = typer.Option(
        None,
        "--transcoders",
        help="A transcoder run folder (or set folder) to attach first, so that "
        "blocks.L.mlp.tc.latents and blocks.L.mlp.tc.error are sites.",
    ),
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Harvest top-activating examples and statistics for every unit of SITES over a corpus."""
    from ..harvest import harvest

    if transcoders is not None:
        _check_transcoders(transcoders, engine)
    m = place.load(model)
    with _attached(m, transcoders):
        store = harvest(
            m,
            corpus,
            out=out,
            sites=sites,
            tokens=tokens,
            window=window,
            k=k,
            n_random=n_random,
            batch_size=batch_size,
            shard=_shard(shard),
            resume=not fresh,
            checkpoint_batches=checkpoint_every,
            **engine.kwargs(),
        )
    run = store.run
    console.print(repr(store), highlight=False)
    if run.get("resumed_from_window"):
        console.print(f"resumed from window {run['resumed_from_window']}")
    seconds = run["timings"]["harvest"]
    console.print(f"{run['harvested_tokens'] / max(seconds, 1e-9):,.0f} tokens/s over {seconds} s")
    console.print(f"view it: mechscope serve {out}")


@placed
def merge_cmd(
    parts: list[Path] = typer.Argument(..., help="Shard run folders of one harvest."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    *,
    place: Placement,
) -> None:
    """Merge harvest shards (contiguous parts of one corpus) into one run, exactly."""
    from ..errors import ModelLoadError
    from ..harvest import merge_harvests
    from ..store import open_run

    record = open_run(parts[0]).config["model"]
    try:
        model = place.load(record["name"])
    except ModelLoadError:
        model = place.load(record["source"])
    store = merge_harvests(model, parts, out=out)
    console.print(repr(store), highlight=False)
