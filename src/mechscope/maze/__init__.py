"""Shard theory's maze agent (Turner, Mini et al. 2023): mazes, a policy, its misgeneralisation, its steering.

- `env`: procedurally generated perfect mazes, batched and seeded (`generate`, `Mazes`, `rollout`).
- `policy`: the IMPALA-style convnet (`MazePolicy`), saved as safetensors.
- `train`: imitation of shortest paths with cheese only in the top-right corner (`train_policy`).
- `behaviour`: decision squares, rollouts binned by distance, vector fields.
- `steer`: the cheese vector and its control, cheese channels, retargeting.
- `results`: the results of all of them (`Mazes`, `Behaviour`, `Retargeting`, …), readable without torch.
- `reports`: the runs' records (`TrainingCurve`, `BehaviourReport`, `SteerReport`), readable without torch.
- `runs`: the run folders behind ``mechscope maze train|eval|steer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .behaviour import behaviour, decision_squares, vector_field
    from .env import generate, rollout
    from .policy import MazePolicy, PolicyConfig
    from .reports import BehaviourReport, SteerReport, TrainingCurve
    from .results import (
        ACTIONS,
        GRID,
        Behaviour,
        CheeseChannels,
        DecisionEffect,
        Mazes,
        Retargeting,
        VectorField,
    )
    from .runs import eval_run, policy_model, steer_run, train_run
    from .steer import (
        cheese_channels,
        cheese_vectors,
        control_vectors,
        decision_effect,
        decision_effects,
        retarget,
    )
    from .train import reach_rate, train_policy

__getattr__, __dir__, __all__ = exports(__name__, __file__)
