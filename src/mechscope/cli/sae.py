"""``mechscope sae train|eval|store``: sparse autoencoders from the shell."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import EngineChoice, Placement, engined, placed

console = Console()
sae_app = typer.Typer(
    help="Train, evaluate and record data for sparse autoencoders.", no_args_is_help=True
)

MODEL = typer.Option("smollm2-135m", "--model", help="Model spec (default: the built-in SmolLM2).")
CORPUS = typer.Option("default", "--corpus", help="Corpus name, mix or file (as for harvest).")


@sae_app.command("train")
@placed
def train_cmd(
    site: str = typer.Argument(..., help="Site to read, e.g. blocks.15.resid_post."),
    model: str = MODEL,
    corpus: str = CORPUS,
    kind: str = typer.Option("topk", "--kind", help="topk, relu (L1) or jumprelu."),
    width: int = typer.Option(4608, "--width", help="Number of latents."),
    k: int = typer.Option(32, "--k", help="Active latents per token (topk)."),
    tokens: int = typer.Option(1_000_000, "--tokens", help="Training tokens."),
    batch_size: int = typer.Option(2048, "--batch-size", help="Tokens per step."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 0.07/sqrt(width))."),
    l1: float = typer.Option(5.0, "--l1", help="L1 coefficient (relu)."),
    l0: float = typer.Option(0.05, "--l0", help="L0 coefficient (jumprelu)."),
    activations: Path = typer.Option(
        None, "--activations", help="Train on a folder from `sae store`."
    ),
    eval_tokens: int = typer.Option(
        16_384, "--eval-tokens", help="Held-out tokens for evaluation."
    ),
    harvest_tokens: int = typer.Option(
        65_536, "--harvest-tokens", help="Tokens to harvest latents over (0: none)."
    ),
    seed: int = typer.Option(0, "--seed"),
    checkpoint_every: int = typer.Option(
        None, "--checkpoint-every", help="Checkpoint every N steps (default: only at the end)."
    ),
    out: Path = typer.Option(Path("runs/sae"), "--out", help="Run folder to write."),
    *,
    place: Placement,
) -> None:
    """Train an SAE on SITE's activations; evaluate it and harvest its latents (a killed run
    started again resumes from its last checkpoint)."""
    from ..sae.fit import sae_run
    from ..sae.train import TrainConfig

    config = TrainConfig(
        kind=kind, width=width, k=k, tokens=tokens, batch_size=batch_size, lr=lr, l1_coef=l1, l0_coef=l0,
        seed=seed, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    m = place.load(model)
    run = sae_run(m, site, config, out=out, corpus=corpus, activations=activations,
                  eval_tokens=eval_tokens, harvest_tokens=harvest_tokens)  # fmt: skip
    console.print(repr(run.sae), highlight=False)
    assert run.eval is not None
    console.print(run.eval)
    console.print(f"saved to {run.path}; view it: mechscope serve {run.path}")


@sae_app.command("eval")
@placed
def eval_cmd(
    sae_path: Path = typer.Argument(
        ..., help="SAE folder (sae.json + sae.safetensors) or SAE run folder."
    ),
    model: str = MODEL,
    corpus: str = CORPUS,
    site: str = typer.Option(None, "--site", help="Site to splice at (default: the SAE's own)."),
    tokens: int = typer.Option(16_384, "--tokens", help="Held-out corpus tokens."),
    start_window: int = typer.Option(0, "--start-window", help="First corpus window to read."),
    *,
    place: Placement,
) -> None:
    """Evaluate a saved SAE: L0, explained variance, CE loss recovered, dead and dense latents."""
    from ..sae.evaluate import evaluate_sae
    from ..sae.model import SparseAutoencoder

    sae = SparseAutoencoder.load(sae_path)
    m = place.load(model)
    if sae.cfg.model and sae.cfg.model != m.name:
        console.print(
            f"[yellow]note: the SAE was trained on {sae.cfg.model}, evaluating on {m.name}[/yellow]"
        )
    ev = evaluate_sae(m, sae, corpus, site=site, tokens=tokens, start_window=start_window)
    console.print(repr(sae), highlight=False)
    console.print(ev)


@sae_app.command("store")
@placed
@engined
def store_cmd(
    site: str = typer.Argument(..., help="Site to record."),
    out: Path = typer.Option(..., "--out", help="Folder for the shards."),
    model: str = MODEL,
    corpus: str = CORPUS,
    tokens: int = typer.Option(1_000_000, "--tokens", help="Corpus tokens to read."),
    start_window: int = typer.Option(
        256, "--start-window", help="First window (default skips the held-out ones)."
    ),
    store_dtype: str = typer.Option(
        "float16",
        "--store-dtype",
        help="Precision of the stored activations: float16, bfloat16 or float32.",
    ),
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Record SITE's activations as safetensors shards, to train SAEs on repeatedly."""
    import torch

    from ..core.activations import store_activations

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    if store_dtype not in dtypes:
        raise InputError(f"--store-dtype must be one of {', '.join(dtypes)}, got {store_dtype!r}")
    m = place.load(model)
    path = store_activations(
        m,
        site,
        out,
        corpus,
        tokens=tokens,
        start_window=start_window,
        dtype=dtypes[store_dtype],
        **engine.kwargs(),
    )
    console.print(f"stored {site} in {path}")
