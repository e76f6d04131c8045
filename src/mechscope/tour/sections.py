"""The tour's order of sections, `SECTIONS`, and `run_tour`, which runs them on one model.

Each section is a function taking the model and a console; a new technique
adds its section to `SECTIONS`. Results are written under ``runs/tour``.

Example::

    from rich.console import Console
    from mechscope.tour import run_tour
    run_tour("smollm2-135m", Console())   # what ``mechscope tour`` runs
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from .. import Model, load
from .basics import (
    cache_shapes,
    generation,
    ioi_heatmap,
    ioi_patching,
    next_tokens,
    precision_and_dispatch,
)
from .circuits import circuit_tracing
from .convnets import feature_visualisation, maze_agent
from .features import autointerp, neuroscope, sparse_autoencoder, toy_superposition
from .knowledge import probes_and_steering, tracing_and_rome
from .settings import OUT_DIR

SECTIONS: list[tuple[str, Callable[[Model, Console], None]]] = [
    ("Next tokens", next_tokens),
    ("Sites and the cache", cache_shapes),
    ("Interventions: IOI and per-row patching", ioi_patching),
    ("Circuits: IOI patching heatmaps", ioi_heatmap),
    ("Generation with interventions", generation),
    ("Neuroscope: top-activating examples of every MLP neuron", neuroscope),
    ("Automated explanations: explain, simulate, score", autointerp),
    ("Superposition: toy models", toy_superposition),
    ("Sparse autoencoder on the residual stream", sparse_autoencoder),
    ("Circuit tracing: transcoders and an attribution graph", circuit_tracing),
    ("Causal tracing and ROME: where a fact lives, and rewriting it", tracing_and_rome),
    ("Latent knowledge and steering: CCS, probes, activation addition", probes_and_steering),
    ("Feature visualisation and circuits in the weights", feature_visualisation),
    ("Shard theory's maze agent: misgeneralisation, the cheese vector, retargeting", maze_agent),
    ("Scale: bfloat16, and a model spread over the CPU and the disk", precision_and_dispatch),
]


def run_tour(spec: str, console: Console, **placement: Any) -> None:
    """Load `spec` (placed by `placement`: device, dtype, device_map) and run every section.

    Example: ``run_tour("smollm2-135m", Console())`` (what ``mechscope tour`` runs).
    """
    start = time.perf_counter()
    model = load(spec, **placement)
    console.print(f"[bold]{model!r}[/bold] loaded in {time.perf_counter() - start:.1f} s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for title, section in SECTIONS:
        console.rule(title)
        section(model, console)
    console.rule()
    console.print(f"tour done in {time.perf_counter() - start:.1f} s; outputs in {OUT_DIR}/")
