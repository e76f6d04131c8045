"""Shard theory's maze agent (Turner, Mini et al. 2023): mazes, a policy, its misgeneralisation, its steering.

- `env`: procedurally generated perfect mazes, batched and seeded (`generate`, `Mazes`, `rollout`).
- `policy`: the IMPALA-style convnet (`MazePolicy`), saved as safetensors.
- `train`: imitation of shortest paths with cheese only in the top-right corner (`train_policy`).
- `behaviour`: decision squares, rollouts binned by distance, vector fields.
- `steer`: the cheese vector and its control, cheese channels, retargeting.
- `runs`: the run folders behind ``mechscope maze train|eval|steer``.
"""

from .behaviour import Behaviour, VectorField, behaviour, decision_squares, vector_field
from .env import ACTIONS, GRID, Mazes, generate, rollout
from .policy import MazePolicy, PolicyConfig
from .runs import eval_run, policy_model, steer_run, train_run
from .steer import (
    CheeseChannels,
    DecisionEffect,
    Retargeting,
    cheese_channels,
    cheese_vectors,
    control_vectors,
    decision_effect,
    decision_effects,
    retarget,
)
from .train import TrainingCurve, reach_rate, train_policy

__all__ = [
    "ACTIONS",
    "GRID",
    "Behaviour",
    "CheeseChannels",
    "DecisionEffect",
    "MazePolicy",
    "Mazes",
    "PolicyConfig",
    "Retargeting",
    "TrainingCurve",
    "VectorField",
    "behaviour",
    "cheese_channels",
    "cheese_vectors",
    "control_vectors",
    "decision_effect",
    "decision_effects",
    "decision_squares",
    "eval_run",
    "generate",
    "policy_model",
    "reach_rate",
    "retarget",
    "rollout",
    "steer_run",
    "train_policy",
    "train_run",
    "vector_field",
]
