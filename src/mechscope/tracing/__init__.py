"""Causal tracing and ROME editing (Meng et al. 2022): where facts live, and changing them.

`facts` builds the fact prompts (GeoNames geography or the user's JSON),
locates subject tokens and keeps the facts the model knows; `trace` runs
causal tracing of one fact, all restorations in batched forwards;
`average` averages traces over facts by token kind; `rome` rewrites a fact
with a rank-one update and evaluates the edit; `runs` writes both as run
folders for the viewer; `results` holds the tracing results and `edits`
ROME's (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .average import token_kinds, trace_facts
    from .edits import Edit, EditReport
    from .facts import (
        Fact,
        KnownFact,
        fact_from_prompt,
        fact_set,
        geography_facts,
        known_facts,
        load_facts,
        neighbour_facts,
        subject_span,
    )
    from .results import TOKEN_KINDS, AverageTrace, CausalTrace
    from .rome import RomeConfig, edit, evaluate_edit, key_covariance
    from .runs import edit_run, trace_run
    from .trace import noise_scale, trace_fact

__getattr__, __dir__, __all__ = exports(__name__, __file__)
