"""Capturing a forward's block inputs, and resuming the forward from any block.

`capture` runs once and records what each block received besides the residual
stream (masks, rotary embeddings, ...) in a `ForwardContext`; `resume` runs
blocks L… and the unembedding from a given ``blocks.L.resid_pre``, for many
experiment copies of the batch at once. Patching sweeps use it so that a patch
at layer L does not recompute the blocks below L.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InputError
from .hooks import BlockInputs
from .interventions import Intervention
from .model import Inputs, Model, RunOutput
from .weights import norm_module


@dataclass(frozen=True)
class ForwardContext:
    """What each block received besides the residual stream in a captured forward.

    Example::

        out, ctx = model.capture(prompts)       # ctx: a ForwardContext
        model.resume(3, out.cache["blocks.3.resid_pre"], ctx).logits   # out.logits again
    """

    args: list[tuple[Any, ...]]  # positional arguments after the hidden states
    kwargs: list[dict[str, Any]]
    batch: int


def _tile_batch(obj: Any, batch: int, tile: int) -> Any:
    """Repeat tensors whose first axis is the captured batch `tile` times (experiment-major)."""
    if tile == 1 or batch == 1:
        return obj
    if isinstance(obj, Tensor):
        if obj.ndim and obj.shape[0] == batch:
            return obj.repeat(tile, *([1] * (obj.ndim - 1)))
        return obj
    if isinstance(obj, dict):
        return {k: _tile_batch(v, batch, tile) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_tile_batch(v, batch, tile) for v in obj)
    return obj


def capture(
    model: Model,
    inputs: Inputs,
    save: str | Sequence[str] = (),
    interventions: Sequence[Intervention] = (),
    *,
    prepend_bos: bool | None = None,
) -> tuple[RunOutput, ForwardContext]:
    """Run once and record what every block received, so `resume` can start from any block.

    The cache always holds ``blocks.*.resid_pre`` besides `save`; with
    `interventions`, those are the intervened run's states.

    Example::

        out, ctx = capture(model, "The capital of France is")
        out.cache["blocks.3.resid_pre"].shape     # [1, pos, d_model]
    """
    x, kwargs = model._prepare(inputs, prepend_bos)
    resid = [f"blocks.{i}.resid_pre" for i in range(len(model._blocks()))]
    names = list(dict.fromkeys([*model.table.expand(save or []), *resid]))
    with (
        BlockInputs(model._blocks()) as rec,
        model.hooks(interventions, save=names) as cache,
        torch.no_grad(),
    ):
        out = model.hf(x, use_cache=False, **kwargs)
    context = ForwardContext(rec.args, rec.kwargs, int(x.shape[0]))
    return RunOutput(out.logits, cache), context


def resume(
    model: Model,
    layer: int,
    resid_pre: Float[Tensor, "batch pos d_model"],
    context: ForwardContext,
    interventions: Sequence[Intervention] = (),
    save: str | Sequence[str] = (),
    *,
    logits_at: int | None = None,
) -> RunOutput:
    """Run blocks `layer`… and the unembedding from a given ``blocks.{layer}.resid_pre``.

    The rows of `resid_pre` are experiment-major copies of the captured
    batch (row e·n + i is prompt i). Interventions and saves work as in
    `run` for every site from block `layer` on. `logits_at` keeps one
    position only (the final norm is per position, so this is exact).

    Example::

        out, ctx = capture(model, prompt)
        resume(model, 3, out.cache["blocks.3.resid_pre"].repeat(2, 1, 1), ctx, logits_at=-1)
        # RunOutput, logits [2, 1, vocab]: two experiment copies of the one prompt
    """
    blocks = model._blocks()
    if not 0 <= layer < len(blocks):
        raise InputError(f"layer {layer} out of range: the model has {len(blocks)} blocks")
    if resid_pre.shape[0] % context.batch:
        raise InputError(
            f"resume needs a multiple of the captured batch ({context.batch}) rows, "
            f"got {resid_pre.shape[0]}"
        )
    tile = resid_pre.shape[0] // context.batch
    final_norm = norm_module(model, "final")
    with model.hooks(interventions, save) as cache, torch.no_grad():
        h = resid_pre
        for i in range(layer, len(blocks)):
            args = _tile_batch(context.args[i], context.batch, tile)
            out = blocks[i](h, *args, **_tile_batch(context.kwargs[i], context.batch, tile))
            h = out[0] if isinstance(out, tuple) else out
        if logits_at is not None:
            h = h[:, logits_at].unsqueeze(1)
        logits = model.unembed(final_norm(h))
    return RunOutput(logits, cache)
