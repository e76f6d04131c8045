"""Causal tracing and ROME editing (Meng et al. 2022): where facts live, and changing them.

`facts` builds the fact prompts (GeoNames geography or the user's JSON),
locates subject tokens and keeps the facts the model knows; `trace` runs
causal tracing of one fact, all restorations in batched forwards;
`average` averages traces over facts by token kind; `rome` rewrites a fact
with a rank-one update and evaluates the edit; `runs` writes both as run
folders for the viewer.
"""

from .average import TOKEN_KINDS, AverageTrace, token_kinds, trace_facts
from .facts import Fact, KnownFact, geography_facts, known_facts, load_facts, subject_span
from .rome import Edit, EditReport, RomeConfig, edit, evaluate_edit, key_covariance
from .runs import edit_run, trace_run
from .trace import CausalTrace, noise_scale, trace_fact

__all__ = [
    "TOKEN_KINDS",
    "AverageTrace",
    "token_kinds",
    "trace_facts",
    "CausalTrace",
    "Edit",
    "EditReport",
    "RomeConfig",
    "edit",
    "edit_run",
    "evaluate_edit",
    "key_covariance",
    "trace_run",
    "Fact",
    "KnownFact",
    "geography_facts",
    "known_facts",
    "load_facts",
    "noise_scale",
    "subject_span",
    "trace_fact",
]
