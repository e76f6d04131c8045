"""A harvest's state file: the accumulators checkpointed, resumed, and shard runs merged.

The state file (``state.safetensors`` in the run folder) holds every site's
accumulators and the number of windows done, written atomically, so a
killed harvest resumes where its last checkpoint left off. Shards of one
harvest (contiguous window ranges, each keeping its state) merge into
exactly the run of one pass (`merge_harvests`).

Example::

    from mechscope.harvest import merge_harvests
    store = merge_harvests(model, ["runs/h0", "runs/h1"], out="runs/h")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from .._arrays import atomic_file, read_header, save_torch
from ..core.model import Model
from ..errors import InputError
from ..store import new_run, without_placement
from .stats import UnitAccumulator
from .tables import TOKENS_FILE, HarvestStore, write_tables

STATE_FILE = "state.safetensors"


def _load_checkpoint(
    folder: Path,
    names: list[str],
    sizes: dict[str, int],
    k: int,
    n_random: int,
    window: int,
    hist_every: int,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, UnitAccumulator], int]:
    """Accumulators (on `device`) and windows done from the folder's checkpoint, or fresh ones.

    A checkpoint that cannot be read back whole is started again, not resumed.
    """
    tokens = folder / TOKENS_FILE
    try:
        accs, done = (
            _read_state(folder, names, device) if (folder / STATE_FILE).exists() else ({}, 0)
        )
        if (tokens.stat().st_size if tokens.exists() else 0) < done * window * 4:
            raise InputError(f"{tokens} holds fewer windows than the checkpoint counts")
    except InputError:
        accs, done = {}, 0
    if not accs:
        accs = {
            name: UnitAccumulator.empty(
                sizes[name], k, n_random, window, salt=i, hist_every=hist_every, device=device
            )
            for i, name in enumerate(names)
        }
        done = 0
    # tokens written after the last checkpoint belong to batches that will be redone
    with open(tokens, "ab") as f:
        f.truncate(done * window * 4)
    return accs, done


def save_state(
    folder: Path, names: Sequence[str], accs: dict[str, UnitAccumulator], done: int
) -> None:
    """Write all accumulators and the windows-done count in one file, atomically.

    Example: ``save_state(Path("runs/h"), ["blocks.5.mlp.post"], accs, done=128)`` writes
    ``runs/h/state.safetensors``.
    """
    tensors: dict[str, Tensor] = {"windows_done": torch.tensor(done)}
    for i, name in enumerate(names):
        for key, v in accs[name].state_dict().items():
            tensors[f"{i}.{key}"] = v.cpu().contiguous()  # the host only at checkpoints
    with atomic_file(folder / STATE_FILE) as tmp:
        save_torch(tmp, tensors, {"sites": json.dumps(list(names))})


def merge_harvests(
    model: Model,
    parts: Sequence[str | Path],
    *,
    out: str | Path,
    record_parts: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> HarvestStore:
    """Merge shard runs of one harvest (contiguous window ranges) into one run at `out`.

    The result equals one uninterrupted harvest over the union of the shards
    (same batches): top-k, samples, counts and histograms exactly, and sums
    too (they are fixed point). Each part must keep its state (``keep_state``).
    ``record_parts=False`` leaves the parts' folders out of config.json (an
    engine's temporary shards: the config is then the one-pass run's); `extra`
    goes into run.json.

    Example::

        for i in range(2):
            harvest(model, out=f"runs/h{i}", tokens=100_000, shard=(i, 2))
        store = merge_harvests(model, ["runs/h0", "runs/h1"], out="runs/h")
    """
    if not parts:
        raise InputError("merge_harvests needs at least one harvest run folder")
    loaded, seen = [], set()
    for part in parts:
        folder = Path(part)
        if folder.resolve() in seen:
            raise InputError(f"harvest part {folder} is given twice: each shard counts once")
        seen.add(folder.resolve())
        cfg_file, state_file = folder / "config.json", folder / STATE_FILE
        if not cfg_file.exists() or not state_file.exists():
            raise InputError(
                f"{folder} is not a finished harvest with its state (config.json and {STATE_FILE})"
            )
        loaded.append((json.loads(cfg_file.read_text()), folder))
    loaded.sort(key=lambda cf: cf[0]["windows"][0])
    first = loaded[0][0]
    same = ("model", "corpus", "sites", "units", "window", "k", "n_random", "batch_size")
    for cfg, folder in loaded[1:]:
        diff = [
            key
            for key in (*same, "hist_every")
            if without_placement(cfg.get(key)) != without_placement(first.get(key))
        ]
        if diff:
            raise InputError(f"{folder} differs from {loaded[0][1]} in {', '.join(diff)}")
    for (a, fa), (b, fb) in zip(loaded, loaded[1:], strict=False):
        if a["windows"][1] != b["windows"][0]:
            raise InputError(
                f"shards must be contiguous: {fa} covers windows {a['windows']}, "
                f"{fb} covers {b['windows']}"
            )
    names = list(first["sites"])
    window = int(first["window"])
    config = {
        **first,
        "windows": [first["windows"][0], loaded[-1][0]["windows"][1]],
        "shard": None,
        **({"merged_from": [str(folder) for _, folder in loaded]} if record_parts else {}),
    }
    config.pop("kind", None)
    run = new_run("harvest", out, config)
    accs: dict[str, UnitAccumulator] | None = None
    with open(run.dir / TOKENS_FILE, "wb") as tokens_out:
        for _, folder in loaded:
            state, _ = _read_state(folder, names)
            if accs is None:
                accs = state
            else:
                for name in names:
                    accs[name].merge(state[name])
            tokens_out.write((folder / TOKENS_FILE).read_bytes())
    assert accs is not None
    done = config["windows"][1] - config["windows"][0]
    save_state(run.dir, names, accs, done)
    summary = write_tables(run.dir, model, accs, {**config, "window": window})
    run.extra.update(summary)
    run.extra.update(extra or {})
    return HarvestStore(run.finish())


def _read_state(
    folder: Path, names: list[str], device: torch.device | str = "cpu"
) -> tuple[dict[str, UnitAccumulator], int]:
    """The accumulators and windows done in `folder`'s state file; one line if it is not one
    written for `names`."""
    path = folder / STATE_FILE
    try:
        meta, _ = read_header(path)
        if json.loads(meta.get("sites", "null")) != list(names):
            raise ValueError(f"it holds the sites {meta.get('sites')}, not {names}")
        state = load_file(str(path))
        accs = {}
        for i, name in enumerate(names):
            prefix = f"{i}."
            accs[name] = UnitAccumulator.from_state(
                {key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)},
                device,
            )
        return accs, int(state["windows_done"])
    except OSError as e:
        raise InputError(f"cannot read the harvest state {path}: {e.strerror or e}") from None
    except Exception as e:  # a damaged file: safetensors' errors, missing or misshapen tensors
        raise InputError(f"{path} is not a whole harvest state ({e})") from None
