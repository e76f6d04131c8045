"""The IOI data set's prompt-level measures, block by block: logit differences, DLA, head scores.

The prompts go in blocks of `PROMPT_BLOCK`; `prompt_block` measures one
block (the unit of work the Ray engine, `mechscope.engine.ioi`, ships to its
tasks) and the blocks' means are merged in block order, so every engine
gives the same sums. `mechscope.ioi.reproduce` writes the measures into its
run folder.

Example::

    ds = ioi_dataset(model, 100)
    m = prompt_measures(model, ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))
    m.diffs["clean"].mean(), m.dla.total, m.copying.top(3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.model import Model
from ..core.weights import unembedding
from ..errors import InputError
from ..lens import Attribution, direct_logit_attribution
from .dataset import IOIDataset, logit_diff
from .heads import HeadScores, IOIAttentionScores, copying_scores, ioi_attention_scores

PROMPT_BLOCK = 32  # prompts per block of the prompt-level measures: the unit Ray shards


@dataclass(frozen=True)
class PromptMeasures:
    """The IOI data set's prompt-level measures: sums over its prompts, block by block.

    ``diffs`` maps "clean", "ABC" and "S2_IO" to each prompt's logit(IO) −
    logit(S) [n]; ``dla`` is direct logit attribution along W_U[IO] − W_U[S]
    at END, ``copying`` and ``attention`` the heads' scores, all means over
    the prompts. ``engine`` records where the blocks ran.

    Example::

        m = prompt_measures(model, ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))
        m.diffs["clean"].mean(), m.copying.top(3)
    """

    diffs: dict[str, Tensor]
    dla: Attribution
    copying: HeadScores
    attention: IOIAttentionScores
    engine: dict[str, Any]


def prompt_measures(
    model: Model,
    ds: IOIDataset,
    abc: IOIDataset,
    swap: IOIDataset,
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> PromptMeasures:
    """Every prompt's logit differences, and DLA and head scores over all of them.

    The prompts go in blocks of `PROMPT_BLOCK` (a block's forwards never
    hold more); the blocks' results are merged in order. ``engine="ray"``
    runs contiguous runs of blocks as Ray tasks (`workers` of `threads`
    torch threads): the same blocks, merged the same way, so the measures
    equal the local engine's at the same threads.

    >>> m = prompt_measures(model, ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))  # doctest: +SKIP
    >>> m.diffs["clean"].mean()
    """
    if len(ds) != len(abc) or len(ds) != len(swap):
        raise InputError(
            f"the clean, ABC and S2_IO sets need as many prompts: {len(ds)}, {len(abc)}, {len(swap)}"
        )
    blocks = [(lo, min(lo + PROMPT_BLOCK, len(ds))) for lo in range(0, len(ds), PROMPT_BLOCK)]
    record: dict[str, Any] = {"name": engine, "blocks": len(blocks), "block_prompts": PROMPT_BLOCK}
    if engine == "ray":
        from ..engine.ioi import prompt_blocks_on_ray

        parts, used = prompt_blocks_on_ray(
            model, (ds, abc, swap), blocks, address=address, workers=workers,
            threads=threads or 1, progress=progress,
        )  # fmt: skip
        record |= {"address": address, "workers": used, "threads": threads or 1}
    else:
        parts = [prompt_block(model, (ds, abc, swap), lo, hi) for lo, hi in blocks]
    return _merge_blocks(model, ds, parts, record)


def prompt_block(
    model: Model, sets: tuple[IOIDataset, IOIDataset, IOIDataset], lo: int, hi: int
) -> dict[str, Any]:
    """Prompts ``lo … hi`` of the clean, ABC and S2_IO sets: their measures, as block means.

    Example::

        sets = (ds, ds.corrupt("ABC"), ds.corrupt("S2_IO"))  # ds = ioi_dataset(model, 100)
        prompt_block(model, sets, 0, 32)["diffs"]["clean"]  # [32] logit differences
    """
    ds, abc, swap = (_rows(d, lo, hi) for d in sets)
    with torch.no_grad():
        diffs = {
            name: logit_diff(model.run(d.tokens).logits, ds, per_prompt=True).cpu()
            for name, d in (("clean", ds), ("ABC", abc), ("S2_IO", swap))
        }
    direction = _io_s_direction(model, ds)
    dla = direct_logit_attribution(model, ds.tokens, direction, position=ds.positions["END"])
    attention = ioi_attention_scores(model, ds)
    return {
        "prompts": hi - lo,
        "diffs": diffs,
        "dla": dla,
        "copying": copying_scores(model, ds).scores,
        "attention": (attention.io, attention.s1, attention.s2),
    }


def _merge_blocks(
    model: Model, ds: IOIDataset, parts: list[dict[str, Any]], record: dict[str, Any]
) -> PromptMeasures:
    """Block means weighted by their prompts, in block order (the same sums on every engine)."""
    n = sum(p["prompts"] for p in parts)
    weights = [p["prompts"] / n for p in parts]

    def mean(get: Callable[[dict[str, Any]], Any]) -> Any:
        total = get(parts[0]) * weights[0]
        for p, w in zip(parts[1:], weights[1:], strict=True):
            total = total + get(p) * w
        return total

    dla = Attribution(
        heads=mean(lambda p: p["dla"].heads),
        mlps=mean(lambda p: p["dla"].mlps),
        neurons=mean(lambda p: p["dla"].neurons),
        attn_bias=mean(lambda p: p["dla"].attn_bias),
        embed=float(mean(lambda p: p["dla"].embed)),
        total=float(mean(lambda p: p["dla"].total)),
        norm_bias=float(mean(lambda p: p["dla"].norm_bias)),
    )
    meta = {"n_prompts": n, "seed": ds.seed, "corruption": ds.corruption}
    copying = HeadScores(
        "copying", mean(lambda p: p["copying"]), model.name, {**meta, "position": "END"}
    )
    io, s1, s2 = (mean(lambda p, i=i: p["attention"][i]) for i in range(3))
    return PromptMeasures(
        diffs={k: torch.cat([p["diffs"][k] for p in parts]) for k in parts[0]["diffs"]},
        dla=dla,
        copying=copying,
        attention=IOIAttentionScores(io, s1, s2, model.name, meta),
        engine=record,
    )


def _rows(ds: IOIDataset, lo: int, hi: int) -> IOIDataset:
    """Prompts ``lo … hi`` of a data set (its token width unchanged)."""
    from dataclasses import replace

    return replace(
        ds,
        prompts=ds.prompts[lo:hi],
        tokens=ds.tokens[lo:hi],
        io_ids=ds.io_ids[lo:hi],
        s_ids=ds.s_ids[lo:hi],
        positions={k: v[lo:hi] for k, v in ds.positions.items()},
        template_ids=ds.template_ids[lo:hi],
        fillers=ds.fillers[lo:hi],
    )


def _io_s_direction(model: Model, ds: IOIDataset) -> Tensor:
    """W_U[IO] − W_U[S] of each prompt [batch, d_model]."""
    w_u = unembedding(model).detach().T  # [vocab, d_model]
    return w_u[ds.io_ids] - w_u[ds.s_ids]
