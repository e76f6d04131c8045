"""Causal tracing and ROME editing (Meng et al. 2022): where facts live, and changing them.

`facts` builds the fact prompts (GeoNames geography or the user's JSON),
locates subject tokens and keeps the facts the model knows.
"""

from .facts import Fact, KnownFact, geography_facts, known_facts, load_facts, subject_span

__all__ = ["Fact", "KnownFact", "geography_facts", "known_facts", "load_facts", "subject_span"]
