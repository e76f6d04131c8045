"""Getting the driver's model to Ray workers: saved once as safetensors, loaded by every task.

The driver saves the model's weights and tokenizer once (`save_pretrained`)
into a folder, and every task loads that folder in the driver's dtype, under
the driver's name, source and weights hash, so run records are the local
engine's. Reloading by spec instead would depend on every node resolving the
spec the same way, and would silently miss a model changed in process (an
edited fact, a tiny test model): the saved folder is the very weights the
driver holds. On a cluster of several machines the folder must be on a
filesystem every node sees. Workers run on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..core.loading import _hf_progress_bars
from ..core.model import Model
from . import EngineError

SHIPPED_FILE = "shipped.json"


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    """A model saved for workers: its folder, and what it is called in run records.

    Example: ``ship_model(model, Path("/tmp/ship")).load()`` → the same weights, on the CPU.
    """

    folder: str
    name: str
    source: str | None
    weights_sha256: str | None
    dtype: str

    def load(self) -> Model:
        """The model, in its dtype on the CPU, named as the driver's."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(self.folder)
        with _hf_progress_bars(False):
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, self.dtype))
        tokenizer = (
            AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer.json").exists() else None
        )
        return Model(
            hf.eval(),
            tokenizer,
            name=self.name,
            source=self.source,
            weights_sha256=self.weights_sha256,
        )


def ship_model(model: Model, folder: Path) -> ShippedModel:
    """Save `model` once into `folder` for workers to load (see the module docstring).

    Example: ``shipped = ship_model(model, Path("/tmp/ship"))``; a worker calls ``shipped.load()``.
    """
    if getattr(model, "device_map", None):
        raise EngineError(
            "engine='ray' ships the model's weights to its workers; a model dispatched with "
            "device_map cannot be shipped: load it without device_map"
        )
    if not hasattr(model.hf, "save_pretrained"):
        raise EngineError(
            f"engine='ray' needs an HF model it can save for its workers; {model.name} is a "
            f"{type(model.hf).__name__}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _hf_progress_bars(False):
        model.hf.save_pretrained(folder)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(folder)
    dtype = str(next(model.hf.parameters()).dtype).removeprefix("torch.")
    shipped = ShippedModel(str(folder), model.name, model.source, model.weights_sha256, dtype)
    (folder / SHIPPED_FILE).write_text(json.dumps(dataclasses.asdict(shipped)))
    return shipped


__all__ = ["ShippedModel", "ship_model"]
