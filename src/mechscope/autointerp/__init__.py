"""Automated explanations of units: explain → simulate → score (Bills et al. 2023; delphi).

Example::

    import mechscope as ms
    from mechscope.autointerp import LocalBackend, explain_run
    from mechscope.harvest import open_harvest
    store = open_harvest("runs/harvest")
    result = explain_run(store, [("blocks.20.mlp.post", u) for u in range(10)],
                           explainer=LocalBackend(ms.load()), out="runs/explain")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .backends import Backend, Completion, LocalBackend, Message
    from .explainer import Explanation, explain, parse_explanation, top_tokens_explanation
    from .http import BackendError, OpenAIBackend
    from .pipeline import METHODS, SCORERS, ExplainResult, explain_run
    from .results import ExplainRun, ExplainSummary
    from .scoring import Judge, auroc, correlation, detection, fuzzing, mean_ci
    from .simulator import JsonSimulator, LogprobSimulator, Simulation, parse_simulation

__getattr__, __dir__, __all__ = exports(__name__, __file__)
