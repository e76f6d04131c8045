"""``mechscope trace`` and ``mechscope edit``: causal tracing and ROME from the shell."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from .options import EngineChoice, Placement, engined, placed

console = Console()

MODEL = typer.Argument(..., help="Built-in name (smollm2-135m), HF folder, .gguf file, or hub id.")


@placed
@engined
def trace_cmd(
    model: str = MODEL,
    prompt: str = typer.Argument(None, help="A factual prompt, e.g. 'The Eiffel Tower is in'."),
    subject: str = typer.Option(None, "--subject", help="The subject's words in the prompt."),
    obj: str = typer.Option(None, "--object", help="The answer (default: the model's next token)."),
    facts: str = typer.Option(
        None,
        "--facts",
        help="Average over many facts instead: relations (country_capital,city_country,"
        "country_continent) or a JSON file of facts.",
    ),
    n: int = typer.Option(60, "--n", help="With --facts: how many facts (split over relations)."),
    known: bool = typer.Option(True, "--known/--all", help="With --facts: keep only known facts."),
    samples: int = typer.Option(10, "--samples", help="Noise samples per fact."),
    noise: float = typer.Option(3.0, "--noise", help="Noise level, in σ of the embeddings."),
    replace_with: str = typer.Option(
        None, "--replace-with", help="Corrupt by other subjects instead (comma-separated)."
    ),
    window: int = typer.Option(10, "--window", help="Layers restored together for MLP/attention."),
    kinds: str = typer.Option("hidden,mlp,attn", "--kinds", help="What to restore."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/trace-…)."),
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Causal tracing: where a fact lives (indirect effect per layer × token), or its average."""
    from ..tracing.average import AverageTrace
    from ..tracing.facts import fact_from_prompt, fact_set
    from ..tracing.runs import trace_run
    from ..tracing.trace import noise_scale

    if (prompt is None) == (facts is None):
        raise InputError("give either a PROMPT with --subject, or --facts for an average")
    if not math.isfinite(noise) or noise <= 0:
        raise InputError(f"--noise must be a finite number above 0, got {noise}")
    for name, value in (("--samples", samples), ("--n", n), ("--window", window)):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if prompt is not None and not subject:
        raise InputError("--subject is required with a prompt (the words the fact is about)")
    if engine.engine != "local" and facts is None:
        raise InputError("--engine ray shards the facts of --facts; one prompt runs here")
    m = place.load(model)
    sigma = noise_scale(m, noise)
    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    if facts is not None:
        fact_list = fact_set(m, facts, n, known=known, seed=seed)
        target = out or Path("runs") / f"trace-{facts.replace(',', '-').replace('/', '_')}"
        console.print(f"tracing {len(fact_list)} facts into {target}")
        result = trace_run(m, fact_list, target, kinds=chosen, samples=samples, noise=sigma,
                           window=window, seed=seed, **engine.kwargs())  # fmt: skip
        assert isinstance(result, AverageTrace)
        console.print(result)
    else:
        fact = fact_from_prompt(m, prompt, subject, obj)
        others = [s.strip() for s in replace_with.split(",")] if replace_with else None
        if others is not None and not all(others):
            raise InputError(
                f"--replace-with takes subjects separated by commas, got {replace_with!r}"
            )
        target = out or Path("runs") / f"trace-{_slug(fact.subject)}"
        result = trace_run(m, fact, target, kinds=chosen, samples=samples, noise=sigma,
                           replace_with=others, window=window, seed=seed)  # fmt: skip
        console.print(result)
    console.print(f"saved to {target}; view it: mechscope serve {target}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "fact"


@placed
def edit_cmd(
    model: str = MODEL,
    prompt: str = typer.Argument(
        ..., help="The fact's prompt, e.g. 'The capital of France is the city of'."
    ),
    subject: str = typer.Option(..., "--subject", help="The subject's words in the prompt."),
    new: str = typer.Option(..., "--new", help="The new object the model should answer."),
    obj: str = typer.Option(None, "--object", help="The current answer (default: the model's)."),
    relation: str = typer.Option(
        None, "--relation", help="Built-in relation, for paraphrases and neighbours."
    ),
    neighbours: str = typer.Option(
        None,
        "--neighbours",
        help="JSON file of neighbour facts (default: known facts of the same built-in relation).",
    ),
    n_neighbours: int = typer.Option(20, "--n-neighbours", help="How many neighbour prompts."),
    layer: int = typer.Option(None, "--layer", help="MLP layer to edit (default: n_layers / 6)."),
    steps: int = typer.Option(30, "--steps", help="Adam steps of the value search."),
    prefixes: int = typer.Option(10, "--prefixes", help="Random prefixes the key averages over."),
    cov_tokens: int = typer.Option(
        100_000, "--cov-tokens", help="Corpus tokens for the key covariance (cached)."
    ),
    corpus: str = typer.Option("default", "--corpus", help="Corpus for the key covariance."),
    out: Path = typer.Option(None, "--out", help="Run folder (default: runs/edit-…)."),
    *,
    place: Placement,
) -> None:
    """ROME: rewrite one fact, then score it on held-out prompts (the edit is saved, not kept)."""
    from ..corpus import open_corpus
    from ..store import check_out
    from ..tracing.facts import fact_from_prompt, load_facts, neighbour_facts
    from ..tracing.rome import RomeConfig, check_edit
    from ..tracing.runs import edit_run

    if steps < 1 or prefixes < 0 or cov_tokens < 1:
        raise InputError("--steps and --cov-tokens must be at least 1, --prefixes at least 0")
    if n_neighbours < 1:
        raise InputError(f"--n-neighbours must be at least 1, got {n_neighbours}")
    if out is not None:
        check_out(out, "edit")
    open_corpus(corpus)  # an unknown corpus fails here, not after the model loads
    cfg = RomeConfig(steps=steps, prefixes=prefixes, covariance_tokens=cov_tokens, corpus=corpus)
    m = place.load(model)
    fact = fact_from_prompt(m, prompt, subject, obj, relation)
    check_edit(m, fact, new, layer)
    if neighbours is None and fact.relation == "custom":
        raise InputError(
            "the prompt is not a built-in relation's template: give --relation or --neighbours"
        )
    pool = load_facts(neighbours) if neighbours is not None else None
    pool = neighbour_facts(m, fact, new, pool, n=n_neighbours)
    target = out or Path("runs") / f"edit-{_slug(fact.subject)}-{_slug(new)}"
    report, _ = edit_run(m, fact, new, pool, target, layer=layer, config=cfg)
    console.print(repr(report), highlight=False)
    table = Table(title="held-out evaluation")
    table.add_column("score")
    table.add_column("value", justify="right")
    for k, v in report.scores().items():
        table.add_row(k, f"{v:.3f}")
    console.print(table)
    console.print("after the edit:", highlight=False)
    for p, g in zip(report.prompts["generation"], report.generations_after, strict=True):
        console.print(f"  {p!r} → {g.strip()[:120]!r}", highlight=False)
    console.print(f"saved to {target} (the edit is undone; Edit.load re-applies it); "
                  f"view it: mechscope serve {target}")  # fmt: skip
