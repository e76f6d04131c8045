"""``mechscope explain``: explain → simulate → score units of a harvest from the shell."""

from __future__ import annotations

import random
from pathlib import Path

import typer
from rich.console import Console

from ..display import score_table
from ..errors import InputError
from .options import EngineChoice, Placement, engined, numbers, placed

console = Console()


def backend_from_spec(spec: str, place: Placement | None = None, option: str = "--explainer"):
    """A model spec (``smollm2-135m``, a folder, a .gguf) → local backend; ``URL@MODEL`` → HTTP."""
    from urllib.parse import urlsplit

    from ..autointerp import LocalBackend

    if spec.startswith(("http://", "https://")):
        from ..autointerp.http import OpenAIBackend

        url, sep, model = spec.rpartition("@")
        if not sep or not url or not model:
            raise InputError(
                f"{option}: an HTTP backend is URL@MODEL (e.g. http://127.0.0.1:8000/v1@gpt-4o), "
                f"got {spec!r}"
            )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError when out of range)
        except ValueError as e:
            raise InputError(f"{option}: {url!r} is not a valid URL ({e})") from None
        if not parts.hostname:
            raise InputError(f"{option}: {url!r} names no host")
        return OpenAIBackend(url, model)
    return LocalBackend((place or Placement()).load(spec))


def parse_units(store, specs: list[str], sample: int, seed: int) -> list[tuple[str, int]]:
    """``SITE:1,2,5-9`` or a unit query (``L25 N342``) per spec, plus `sample` random units."""
    units: list[tuple[str, int]] = []
    for spec in specs:
        site, sep, rest = spec.rpartition(":")
        if sep and site in store.sites:
            try:
                picked = numbers(rest)
            except ValueError:
                raise InputError(
                    f"--units {spec!r}: units are numbers or ranges like 5-9"
                ) from None
            if not picked or any(u < 0 for u in picked):
                raise InputError(f"--units {spec!r}: units are numbers or ranges like 5-9")
            units += [(site, u) for u in picked]
        else:
            found = store.find_units(spec)
            if not found:
                raise InputError(
                    f"--units {spec!r} names no harvested unit; use SITE:U,U-U or 'L25 N342'"
                )
            units += found
    if sample < 0:
        raise InputError(f"--sample must be 0 or more units, got {sample}")
    if sample:
        rng = random.Random(seed)
        pool = [(s, u) for s in store.sites for u in range(store.n_units(s))]
        pool = [u for u in pool if u not in units]
        if sample > len(pool):
            raise InputError(
                f"--sample {sample} is more than the {len(pool)} harvested units left to draw from"
            )
        units += rng.sample(pool, sample)
    return list(dict.fromkeys(units))


@placed
@engined
def explain_cmd(
    run: Path = typer.Argument(..., help="A harvest run folder."),
    units: list[str] = typer.Option([], "--units", help="SITE:U,U-U or 'L25 N342' (repeatable)."),
    sample: int = typer.Option(0, "--sample", help="Also explain N random units (held out)."),
    explainer: str = typer.Option(
        "smollm2-135m", "--explainer", help="Model spec (local) or URL@MODEL (OpenAI-compatible)."
    ),
    simulator: str = typer.Option(None, "--simulator", help="Same forms; default: the explainer."),
    n_show: int = typer.Option(5, "--show", help="Top windows shown to the explainer."),
    n_test: int = typer.Option(5, "--test", help="Held-out top and random windows per unit."),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("runs/explain"), "--out", help="Run folder to write."),
    *,
    place: Placement,
    engine: EngineChoice,
) -> None:
    """Explain units of a harvest with a language model, simulate them, and score the explanations."""
    from ..autointerp import explain_run
    from ..harvest import open_harvest

    store = open_harvest(run)
    chosen = parse_units(store, units, sample, seed)
    if not chosen:
        raise InputError("no units: give --units and/or --sample N")
    exp = backend_from_spec(explainer, place)
    sim = (
        backend_from_spec(simulator, place, "--simulator")
        if simulator and simulator != explainer
        else None
    )
    result = explain_run(
        store,
        chosen,
        explainer=exp,
        simulator=sim,
        out=out,
        n_show=n_show,
        n_test=n_test,
        seed=seed,
        **engine.kwargs(),
    )
    console.print(score_table(result.summary.records(), f"{len(chosen)} units"))
    rec = result.record
    cost = rec["explainer_cost"]
    console.print(
        f"explainer: {cost['calls']} calls ({cost['cached']} cached), {cost['tokens_in']} tokens in, "
        f"{cost['tokens_out']} out, {cost['seconds']} s; explain {rec['timings']['explain']} s, "
        f"score {rec['timings']['score']} s; failed explanations: {rec['failed_explanations']}"
    )
    console.print(f"view it: mechscope serve {out} {run}")
