"""The training state of a transcoder set, written whole to one file and read back exactly.

One safetensors file holds every layer's transcoder (in training units),
Adam's moments, the dead-latent counters, and in its metadata the steps done,
the tokens seen, the corpus window to read next, the input and output scales
and the history. It is written atomically, so a killed run finds the last
checkpoint whole or none.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from .._arrays import atomic_file, read_header, save_torch
from .model import TranscoderSet

STATE_FORMAT = "mechscope.transcoder_train_state/1"
ADAM_KEYS = {"step", "exp_avg", "exp_avg_sq"}


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
        tensors |= {f"tc.{layer}.{k}": v for k, v in tc.state_dict().items()}
        names = {p: name for name, p in tc.named_parameters()}
        for p, moments in optimizers[layer].state.items():
            for key, v in moments.items():
                tensors[f"adam.{layer}.{names[p]}.{key}"] = v
        tensors[f"last_fired.{layer}"] = last_fired[layer]
    meta = {"format": STATE_FORMAT, "state": json.dumps(dataclasses.asdict(state))}
    with atomic_file(path) as tmp:
        save_torch(tmp, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta)


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
    try:
        meta, _ = read_header(path)
        if meta.get("format") != STATE_FORMAT:
            return None
        state = TrainState(**json.loads(meta["state"]))
        tensors = load_file(str(path))
    except Exception:  # a damaged file: safetensors' or JSON's errors, a missing field
        return None
    if state.layers != transcoders.layers:
        return None
    loads = []
    for layer, tc in transcoders.items():
        own = tc.state_dict()
        weights = {k: tensors.get(f"tc.{layer}.{k}") for k in own}
        params = [name for name, _ in tc.named_parameters()]
        moments = {
            name: {
                key: tensors[f"adam.{layer}.{name}.{key}"]
                for key in ADAM_KEYS
                if f"adam.{layer}.{name}.{key}" in tensors
            }
            for name in params
        }
        fired = tensors.get(f"last_fired.{layer}")
        fits = (
            all(v is not None and v.shape == own[k].shape for k, v in weights.items())
            and all(
                m.keys() == (ADAM_KEYS if state.steps_done else set()) for m in moments.values()
            )
            and fired is not None
            and fired.shape == last_fired[layer].shape
        )
        if not fits:
            return None
        loads.append((layer, tc, weights, params, moments, fired))
    for layer, tc, weights, params, moments, fired in loads:  # all checked: now change things
        tc.load_state_dict(weights)
        opt = optimizers[layer]
        saved = opt.state_dict()
        saved["state"] = {i: moments[name] for i, name in enumerate(params) if moments[name]}
        opt.load_state_dict(saved)
        last_fired[layer].copy_(fired)
    return state
