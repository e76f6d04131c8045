"""The viewer's pages, one module per technique; importing this package registers them all.

To add pages for a technique, write ``pages/<technique>.py`` with ``@page`` and
``@home`` handlers (see ``viewer/registry.py``) and import it here.
"""

from __future__ import annotations

from . import (
    editing,
    explain,
    featureviz,
    generic,
    graph,
    harvest,
    maze,
    probes,
    prompts,
    sae,
    steering,
    tracing,
    weights,
    weights_lm,
)

__all__ = [
    "editing",
    "explain",
    "featureviz",
    "generic",
    "graph",
    "harvest",
    "maze",
    "probes",
    "prompts",
    "sae",
    "steering",
    "tracing",
    "weights",
    "weights_lm",
]
