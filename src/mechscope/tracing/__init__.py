"""Causal tracing and ROME editing (Meng et al. 2022): where facts live, and changing them.

`facts` builds the fact prompts (GeoNames geography or the user's JSON),
locates subject tokens and keeps the facts the model knows; `trace` runs
causal tracing of one fact, all restorations in batched forwards.
"""

from .average import TOKEN_KINDS, AverageTrace, token_kinds, trace_facts
from .facts import Fact, KnownFact, geography_facts, known_facts, load_facts, subject_span
from .trace import CausalTrace, noise_scale, trace_fact

__all__ = [
    "TOKEN_KINDS",
    "AverageTrace",
    "token_kinds",
    "trace_facts",
    "CausalTrace",
    "Fact",
    "KnownFact",
    "geography_facts",
    "known_facts",
    "load_facts",
    "noise_scale",
    "subject_span",
    "trace_fact",
]
