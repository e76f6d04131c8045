"""The training state of a transcoder set, written whole to one file and read back exactly.

One safetensors file holds every layer's transcoder (in training units),
Adam's moments, the dead-latent counters, and in its metadata the steps done,
the tokens seen, the corpus window to read next, the input and output scales
and the history. It is written atomically, so a killed run finds the last
checkpoint whole or none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._arrays import read_header
from ..sae.train import StateKeys, read_state, write_state
from .model import TranscoderSet

STATE_FORMAT = "mechscope.transcoder_train_state/1"


@dataclass(frozen=True)
class TrainState:
    """Where a training run stands at a checkpoint, besides its tensors.

    Example: ``TrainState(steps_done=40, seen=80_000, next_window=1_536, …)``: step 41 reads
    window 1,536 on.
    """

    layers: list[int]
    steps_done: int
    seen: int  # training tokens, per layer (every layer sees the same positions)
    next_window: int  # the corpus window the next step starts at
    scales: dict[str, list[float]] | None  # layer → [input scale, output scale]
    history: list[dict[str, float]]
    finished: bool  # the loop ended: nothing is left to train


def checkpoint_step(path: str | Path) -> int | None:
    """The steps done in the training state at `path` (None: no readable state there).

    Example: ``checkpoint_step("runs/.tc.partial/train_state.safetensors")`` → e.g. 40.
    """
    try:
        meta, _ = read_header(Path(path))
        return int(json.loads(meta["state"])["steps_done"])
    except Exception:  # missing or damaged: training starts from the beginning
        return None


def _keys(layer: int) -> StateKeys:
    return StateKeys(f"tc.{layer}.", f"adam.{layer}.", f"last_fired.{layer}")


def save_state(
    path: Path,
    transcoders: TranscoderSet,
    optimizers: dict[int, torch.optim.Optimizer],
    last_fired: dict[int, Tensor],
    state: TrainState,
) -> None:
    """Write the training state at `path` atomically.

    Example: ``save_state(run.dir / "train_state.safetensors", tcs, opts, fired, state)``.
    """
    tensors: dict[str, Tensor] = {}
    for layer, tc in transcoders.items():
        tensors |= _keys(layer).pack(tc, optimizers[layer], last_fired[layer])
    write_state(path, STATE_FORMAT, state, tensors)


def restore_state(
    path: Path,
    transcoders: TranscoderSet,
    optimizers: dict[int, torch.optim.Optimizer],
    last_fired: dict[int, Tensor],
) -> TrainState | None:
    """Load the state at `path` into the transcoders, optimisers and counters; None (nothing
    changed) when the file is not a whole state of this run, which then starts again.

    Example: ``state = restore_state(path, tcs, opts, fired) or fresh_state``.
    """
    read = read_state(path, STATE_FORMAT, TrainState)
    if read is None or read[0].layers != transcoders.layers:
        return None
    state, tensors = read
    loads = []
    for layer, tc in transcoders.items():
        keys, stepped = _keys(layer), bool(state.steps_done)
        load = keys.loader(tensors, tc, optimizers[layer], last_fired[layer], stepped=stepped)
        if load is None:
            return None
        loads.append(load)
    for load in loads:  # all checked: now change things
        load()
    return state
