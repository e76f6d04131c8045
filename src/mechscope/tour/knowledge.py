"""The tour's sections on what a model knows: causal tracing and ROME; probes, CCS and steering.

Example::

    from rich.console import Console
    from mechscope.tour.knowledge import tracing_and_rome
    tracing_and_rome(mechscope.load(), Console())   # trace a fact, edit one, undo the edit
"""

from __future__ import annotations

import torch
from rich.console import Console

from .. import Model
from .settings import (
    OUT_DIR,
    TOUR_EDIT_FACT,
    TOUR_PROBE_PAIRS,
    TOUR_STEER,
    TOUR_STEER_COEF,
    TOUR_STEER_LAYER,
    TOUR_TRACE_FACTS,
)


def tracing_and_rome(model: Model, console: Console) -> None:
    """Causal tracing of one fact and a small average; a ROME edit, evaluated, then undone.

    Example: ``tracing_and_rome(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from ..tracing import Fact, geography_facts, known_facts
    from ..tracing.facts import neighbour_facts, sample_facts
    from ..tracing.rome import _down, default_layer
    from ..tracing.runs import edit_run, trace_run

    fact = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")
    trace = trace_run(model, fact, OUT_DIR / "trace-eiffel", samples=10, progress=False)
    console.print(trace)
    capitals = [k.fact for k in known_facts(model, geography_facts("country_capital", limit=80))]
    few = sample_facts(capitals, TOUR_TRACE_FACTS, seed=1)
    avg = trace_run(model, few, OUT_DIR / "trace-capitals", samples=3)
    console.print(avg)
    console.print("(the 60-fact average: mechscope trace --facts "
                  "country_capital,city_country,country_continent)")  # fmt: skip
    target, new = capitals[TOUR_EDIT_FACT], capitals[TOUR_EDIT_FACT + 1].object
    neighbours = neighbour_facts(model, target, new, capitals)
    layer = default_layer(model)
    weight = _down(model, layer).weight.detach().clone()
    report, _ = edit_run(model, target, new, neighbours, OUT_DIR / "edit", layer=layer)
    console.print(repr(report), highlight=False)
    s = report.scores()
    console.print(
        f"efficacy {s['efficacy_before']:.0%} → {s['efficacy']:.0%}, paraphrases "
        f"{s['paraphrase_before']:.0%} → {s['paraphrase']:.0%}, neighbourhood "
        f"{s['neighbourhood_before']:.0%} → {s['neighbourhood']:.0%}",
        highlight=False,
    )
    for p, b, a in zip(report.prompts["generation"], report.generations_before,
                       report.generations_after, strict=True):  # fmt: skip
        console.print(f"  {p!r}\n    before: {b.strip()[:90]!r}\n    after:  {a.strip()[:90]!r}",
                      highlight=False)  # fmt: skip
    same = torch.equal(_down(model, layer).weight, weight)
    console.print(f"edit undone; weights restored bit for bit: {same}")
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")


def probes_and_steering(model: Model, console: Console) -> None:
    """CCS against supervised probes and zero-shot on tweets; one vector steering generation.

    Example: ``probes_and_steering(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from .. import steering as st
    from ..probes import sentiment_pairs
    from ..probes.runs import probe_run
    from ..steering.runs import steer_examples, steer_run

    assert model.dims is not None
    pairs = sentiment_pairs(limit=TOUR_PROBE_PAIRS)
    console.print(f"{len(pairs)} crowd-labelled tweets, each asked 'negative or positive?' and "
                  "answered both ways; probes read the last token's residual stream")  # fmt: skip
    res = probe_run(model, pairs, OUT_DIR / "probe-sentiment", dataset="sentiment", test=400,
                    layers=range(0, model.dims.n_layers, 3), restarts=5, epochs=500)  # fmt: skip
    console.print(res)
    vector = st.actadd(model, *TOUR_STEER, TOUR_STEER_LAYER)
    console.print(f"activation addition {TOUR_STEER[0]!r} − {TOUR_STEER[1]!r}: {vector!r}",
                  highlight=False)  # fmt: skip
    prompts = list(st.PROMPTS[:3])
    console.print(steer_examples(model, prompts, vector, TOUR_STEER_COEF, max_new_tokens=30))
    sweep = steer_run(model, [vector, st.actadd(model, *TOUR_STEER, 2)], [0.5, 1.0, 2.0],
                      OUT_DIR / "steer-weddings", samples=2, progress=False)  # fmt: skip
    console.print(sweep)
    console.print(f"pages: [bold]mechscope serve {OUT_DIR}[/bold]")
