"""Activation patching: sweeps, path patching, attribution patching and circuit discovery."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .attribution import (
        AttributionPatching,
        RankAgreement,
        attribution_patching,
        rank_agreement,
    )
    from .circuit import (
        Circuit,
        EdgeScores,
        acdc,
        circuit_from_scores,
        edge_attribution_patching,
        evaluate_circuit,
    )
    from .paths import path_patching
    from .sweep import Metric, PatchResult, activation_patching

__getattr__, __dir__, __all__ = exports(__name__, __file__)
