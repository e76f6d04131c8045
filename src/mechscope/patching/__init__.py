"""Activation patching: sweeps, path patching, attribution patching and circuit discovery.

The result classes (`PatchResult`, `AttributionPatching`, `EdgeScores`,
`Circuit`) live in the torch-free `mechscope.patching.results`; the
techniques that make them import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .ablation import evaluate_circuit
    from .attribution import RankAgreement, attribution_patching, rank_agreement
    from .circuit import acdc, circuit_from_scores
    from .eap import edge_attribution_patching
    from .paths import path_patching
    from .results import AttributionPatching, Circuit, EdgeScores, PatchResult
    from .sweep import Metric, activation_patching

__getattr__, __dir__, __all__ = exports(__name__, __file__)
