"""`mechscope tour`: the main job, a guided run of each technique on the default model.

Each section is a function taking the model and a console; later techniques
add their sections to `SECTIONS`. Results are written under ``runs/tour``.
`settings` holds the prompts and the size of each section's run; `basics`
the core (sites, the cache, interventions, patching, placement); `features`
harvesting, explanations, superposition and SAEs; `knowledge` causal
tracing, ROME, probes and steering; `convnets` feature visualisation,
weight circuits and the maze agent; `sections` their order and `run_tour`.

Example::

    from rich.console import Console
    from mechscope.tour import run_tour
    run_tour("smollm2-135m", Console())   # what ``mechscope tour`` runs
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .sections import SECTIONS, run_tour

__getattr__, __dir__, __all__ = exports(__name__, __file__)
