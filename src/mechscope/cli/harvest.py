"""``mechscope harvest`` and ``mechscope merge-harvests``: Neuroscope-style harvests from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import EngineChoice, Placement, engined, placed

console = Console()


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes I/N (e.g. 0/4), got {text!r}") from None
    return i, n


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
        ["blocks.*.mlp.post"], "--sites", help="Sites or globs to harvest (repeatable)."
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
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Harvest top-activating examples and statistics for every unit of SITES over a corpus."""
    from ..harvest import harvest

    m = place.load(model)
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
