"""``mechscope transcoders train|eval``: per-layer transcoders from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import Placement, numbers, placed

console = Console()
transcoders_app = typer.Typer(
    help="Train and evaluate transcoders (sparse replacements of every MLP).",
    no_args_is_help=True,
)

MODEL = typer.Option("smollm2-135m", "--model", help="Model spec (default: the built-in SmolLM2).")
CORPUS = typer.Option("default", "--corpus", help="Corpus name, mix or file (as for harvest).")
MAX_LAYERS = 10_000  # past any model's depth: a longer --layers range is a typo


def layer_list(spec: str | None) -> list[int] | None:
    """``--layers`` as a list (None: every layer), or an InputError naming the forms it takes."""
    if spec is None or spec == "all":
        return None
    for part in spec.split(","):  # `numbers` would list a range of 10¹¹ layers, one by one
        low, _, high = part.partition("-")
        if low.strip().isdigit() and high.strip().isdigit() and int(high) - int(low) > MAX_LAYERS:
            raise InputError(
                f"--layers {spec!r}: the range {part!r} is longer than any model "
                f"(≤ {MAX_LAYERS} layers); give layers of the model, e.g. '0-29'"
            )
    try:
        picked = numbers(spec)
    except ValueError as e:
        raise InputError(f"--layers takes 'all', '0,2,4' or '0-29', got {spec!r} ({e})") from None
    if not picked:
        raise InputError(f"--layers names no layer: {spec!r}")
    return picked


@transcoders_app.command("train")
@placed
def train_cmd(
    model: str = MODEL,
    corpus: str = CORPUS,
    layers: str = typer.Option(None, "--layers", help="Layers, e.g. 0-29 or 3,5 (default: all)."),
    kind: str = typer.Option("topk", "--kind", help="topk or jumprelu."),
    width: int = typer.Option(4608, "--width", help="Latents per layer."),
    k: int = typer.Option(32, "--k", help="Active latents per token (topk)."),
    skip: bool = typer.Option(True, "--skip/--no-skip", help="Add a linear skip connection."),
    tokens: int = typer.Option(1_000_000, "--tokens", help="Training tokens."),
    batch_size: int = typer.Option(2048, "--batch-size", help="Tokens per step."),
    window: int = typer.Option(64, "--window", help="Tokens per corpus window."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 0.07/sqrt(width))."),
    l0: float = typer.Option(2e-3, "--l0", help="L0 coefficient (jumprelu)."),
    eval_tokens: int = typer.Option(16_384, "--eval-tokens", help="Held-out tokens."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps per checkpoint."),
    max_steps: int = typer.Option(
        None, "--max-steps", help="Pause after this many steps (run again to resume)."
    ),
    finish_early: bool = typer.Option(
        False, "--finish-early", help="With --max-steps: end the run there (save and evaluate)."
    ),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/transcoders"), "--out", help="Run folder to write."),
    *,
    place: Placement,
) -> None:
    """Train one transcoder per MLP from one forward per step, then evaluate the set spliced
    in (a stopped run started again resumes from its last checkpoint, bit for bit)."""
    from ..transcoders import TranscoderTrainConfig, train_transcoders

    config = TranscoderTrainConfig(
        kind=kind, width=width, k=k, skip=skip, tokens=tokens, batch_size=batch_size,
        window=window, lr=lr, l0_coef=l0, seed=seed, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    picked = layer_list(layers)
    if finish_early and max_steps is None:
        raise InputError("--finish-early needs --max-steps: the step to end the run at")
    m = place.load(model)
    trained = train_transcoders(
        m, corpus, layers=picked, config=config, out=out, eval_tokens=eval_tokens,
        max_steps=max_steps, finish_early=finish_early,
    )  # fmt: skip
    console.print(repr(trained), highlight=False)
    if not trained.finished:
        console.print(f"paused after {trained.steps} steps; run the same command to go on")
        return
    if trained.eval is not None:
        console.print(trained.eval)
    console.print(f"saved to {trained.path}; view it: mechscope serve {trained.path}")


@transcoders_app.command("eval")
@placed
def eval_cmd(
    run: Path = typer.Argument(..., help="Transcoder run folder (or a transcoders/ set folder)."),
    model: str = MODEL,
    corpus: str = CORPUS,
    tokens: int = typer.Option(16_384, "--tokens", help="Held-out corpus tokens."),
    window: int = typer.Option(64, "--window", help="Tokens per corpus window."),
    start_window: int = typer.Option(0, "--start-window", help="First corpus window to read."),
    *,
    place: Placement,
) -> None:
    """Score a transcoder set: FVU, L0 and dead latents per layer; CE loss with every MLP
    replaced, with and without error terms; top-1 agreement with the model."""
    from ..transcoders import TranscoderSet, evaluate_transcoders

    m = place.load(model)
    folder = run / "transcoders" if (run / "transcoders").is_dir() else run
    tcs = TranscoderSet.load(folder, model=m)
    ev = evaluate_transcoders(
        m, tcs, corpus, tokens=tokens, window=window, start_window=start_window
    )
    console.print(repr(tcs), highlight=False)
    console.print(ev)
