"""Activation patching: sweeps, path patching, attribution patching and circuit discovery."""

from __future__ import annotations

from .attribution import AttributionPatching, RankAgreement, attribution_patching, rank_agreement
from .paths import path_patching
from .sweep import Metric, PatchResult, activation_patching

__all__ = [
    "AttributionPatching",
    "Metric",
    "PatchResult",
    "RankAgreement",
    "activation_patching",
    "attribution_patching",
    "path_patching",
    "rank_agreement",
]

from .circuit import (  # noqa: E402
    Circuit,
    EdgeScores,
    acdc,
    circuit_from_scores,
    edge_attribution_patching,
    evaluate_circuit,
)

__all__ += [
    "Circuit",
    "EdgeScores",
    "acdc",
    "circuit_from_scores",
    "edge_attribution_patching",
    "evaluate_circuit",
]
