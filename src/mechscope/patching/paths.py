"""Path patching (Wang et al. 2022): a sender head's effect through chosen receivers only.

Step 1 runs the clean input with the sender's output (``attn.z`` of that
head) taken from the corrupted input and every other head frozen at its clean
output, and records the receivers' query (or key, or value) input. Step 2 runs
the clean input again with only those receiver inputs replaced. The change of
the metric is the effect of the path sender → receivers. With the logits as
receiver, step 1's logits are the answer (the sender's direct path, through
the MLPs unless they are frozen too). Every sender is a group of batch rows,
so all senders are measured in a few batched, resumed forwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core import interventions as iv
from ..core.adapters import Dims
from ..core.model import Inputs, Model
from ..errors import InputError
from .sweep import Metric, PatchResult, _per_prompt, _tokens

Head = tuple[int, int]


def path_patching(
    model: Model,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    receivers: Sequence[Head] | Literal["logits"] = "logits",
    *,
    receiver_input: Literal["q", "k", "v"] = "q",
    senders: Sequence[Head] | None = None,
    freeze_mlps: bool = False,
    last_only: bool = True,
    max_rows: int = 128,
    progress: bool = True,
) -> PatchResult:
    """Effect of each sender head through `receivers` (heads' q/k/v input, or the logits).

    Returns a layer × head `PatchResult` over senders (NaN where a sender is
    not below every receiver), normalised as in noising sweeps: 1 = clean
    behaviour, 0 = corrupted. Key and value receivers are key/value heads
    under grouped-query attention (head h reads kv head h // group).

    Example::

        # which heads act on the name movers' queries (S-inhibition)?
        r = path_patching(model, clean, abc, metric, receivers=[(22, 4), (24, 1)], receiver_input="q")
    """
    if model.dims is None:
        raise InputError("path patching needs a transformer with known sites")
    dims = model.dims
    clean_x, corrupt_x = _tokens(model, clean), _tokens(model, corrupted)
    if clean_x.shape != corrupt_x.shape:
        raise InputError("clean and corrupted inputs must have the same shape")
    if receiver_input not in ("q", "k", "v"):
        raise InputError(f"receiver_input must be 'q', 'k' or 'v', got {receiver_input!r}")
    n = clean_x.shape[0]
    to_logits = receivers == "logits"
    receiver_list = [] if to_logits else _heads(receivers, dims, "receiver")  # type: ignore[arg-type]
    if not to_logits and not receiver_list:
        raise InputError("receivers must name at least one (layer, head), or be 'logits'")
    top = dims.n_layers if to_logits else min(layer for layer, _ in receiver_list)
    sender_list = (
        [(layer, h) for layer in range(dims.n_layers) for h in range(dims.n_heads)]
        if senders is None
        else _heads(senders, dims, "sender")
    )
    sender_list = [s for s in sender_list if s[0] < top]
    if not sender_list:
        raise InputError("no sender lies below the receivers")

    z_sites = [f"blocks.{layer}.attn.z" for layer in range(dims.n_layers)]
    mlp_sites = [f"blocks.{layer}.mlp.out" for layer in range(dims.n_layers)] if freeze_mlps else []
    base, context = model.capture(clean_x, save=z_sites + mlp_sites)
    corrupt = model.run(corrupt_x, save=z_sites)
    view = (lambda lg: lg[:, -1:]) if last_only else (lambda lg: lg)
    m_clean = _per_prompt(metric(view(base.logits)), n).mean().item()
    m_corrupt = _per_prompt(metric(view(corrupt.logits)), n).mean().item()

    group = dims.n_heads // dims.n_kv_heads
    by_receiver_layer: dict[int, list[int]] = {}
    for layer, head in receiver_list:
        unit = head if receiver_input == "q" else head // group
        by_receiver_layer.setdefault(layer, []).append(unit)
    record = [f"blocks.{layer}.attn.{receiver_input}" for layer in by_receiver_layer]

    order = sorted(range(len(sender_list)), key=lambda i: sender_list[i])
    per_chunk = max(1, max_rows // n)
    raw = torch.full((dims.n_layers, dims.n_heads), math.nan)
    bar = tqdm(
        total=len(order), desc="path patching", unit="sender", disable=not progress, leave=False
    )
    for start in range(0, len(order), per_chunk):
        chunk = [sender_list[i] for i in order[start : start + per_chunk]]
        e = len(chunk)
        low = min(layer for layer, _ in chunk)
        # step 1: sender corrupted, every other head frozen clean
        ivs = [
            one
            for layer in range(low, dims.n_layers)
            for one in _freeze_heads(
                z_sites[layer],
                base.cache[z_sites[layer]],
                corrupt.cache[z_sites[layer]],
                chunk,
                layer,
                n,
            )
        ]
        ivs += [iv.replace(s, base.cache[s].repeat(e, 1, 1)) for s in mlp_sites[low:]]
        resid = base.cache[f"blocks.{low}.resid_pre"].repeat(e, 1, 1)
        step1 = model.resume(
            low, resid, context, ivs, save=record, logits_at=-1 if last_only else None
        )
        if to_logits:
            logits = step1.logits
        else:
            # step 2: clean run, only the receivers' inputs from step 1
            step2 = [
                _take_units(
                    f"blocks.{layer}.attn.{receiver_input}",
                    step1.cache[f"blocks.{layer}.attn.{receiver_input}"],
                    units,
                )
                for layer, units in by_receiver_layer.items()
            ]
            resid = base.cache[f"blocks.{top}.resid_pre"].repeat(e, 1, 1)
            logits = model.resume(
                top, resid, context, step2, logits_at=-1 if last_only else None
            ).logits
        values = _per_prompt(metric(logits), e * n).view(e, n).mean(1)
        for (layer, head), value in zip(chunk, values.tolist(), strict=True):
            raw[layer, head] = value
        bar.update(e)
    bar.close()
    denom = m_clean - m_corrupt
    values = (raw - m_corrupt) / denom if abs(denom) > 1e-12 else torch.full_like(raw, math.nan)
    target = (
        "logits"
        if to_logits
        else f"{receiver_input} of " + ", ".join(f"L{a}H{b}" for a, b in receiver_list)
    )
    return PatchResult(
        values,
        raw,
        ("layer", "head"),
        {
            "layer": [str(i) for i in range(dims.n_layers)],
            "head": [str(i) for i in range(dims.n_heads)],
        },
        f"path → {target}",
        "noise",
        m_clean,
        m_corrupt,
        {"freeze_mlps": freeze_mlps, "senders": len(sender_list), "prompts": n},
    )


def _heads(items: Sequence[Head], dims: Dims, what: str) -> list[Head]:
    """(layer, head) pairs of the model, checked."""
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise InputError(f"{what}s must be a list of (layer, head) pairs, got {items!r}")
    out: list[Head] = []
    for item in items:
        pair = tuple(item) if isinstance(item, Sequence) and not isinstance(item, str) else ()
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
            raise InputError(f"a {what} is a (layer, head) pair of integers, got {item!r}")
        layer, head = pair
        if not (0 <= layer < dims.n_layers and 0 <= head < dims.n_heads):
            raise InputError(
                f"{what} ({layer}, {head}) is not a head of this model: layers "
                f"0…{dims.n_layers - 1}, heads 0…{dims.n_heads - 1}"
            )
        out.append((layer, head))
    return out


def _freeze_heads(
    site: str, clean_z: Tensor, corrupt_z: Tensor, chunk: list[Head], layer: int, n: int
) -> list[iv.Intervention]:
    """z of `layer` := clean for every row, except each sender's own head := corrupted in its rows.

    As data: the clean value everywhere, then the senders' (row, head) points from the
    corrupted run (written into the same copy).
    """
    e = len(chunk)
    ivs = [iv.replace(site, clean_z.repeat(e, 1, 1, 1))]
    senders = [(j, head) for j, (sl, head) in enumerate(chunk) if sl == layer]
    if senders:
        prompts = torch.arange(n)
        ivs.append(
            iv.replace(
                site,
                corrupt_z,
                rows=torch.cat([j * n + prompts for j, _ in senders]),
                heads=torch.tensor([head for _, head in senders]).repeat_interleave(n),
                source_rows=prompts.repeat(len(senders)),
                paired=True,
            )
        )
    return ivs


def _take_units(site: str, recorded: Tensor, units: list[int]) -> iv.Intervention:
    """Replace the listed heads (axis 2) by their recorded values, row by row."""
    return iv.replace(site, recorded, heads=sorted(set(units)))
