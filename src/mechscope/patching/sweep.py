"""Activation patching sweeps: many patches, batched into few forwards.

One call patches a site at every layer × position (or every head, at all
positions or per position), from one run into another, and returns one tensor
with named axes. Denoising runs the corrupted input and restores clean
activations; noising runs the clean input and inserts corrupted ones. Both are
normalised the same way: 1 = clean behaviour, 0 = corrupted behaviour.

Speed: each batch row is one (experiment, prompt) pair carrying its own patch
(per-row interventions), rows are sorted by layer so a batch resumes the
forward from the cached residual stream at its lowest layer instead of
recomputing the blocks below, and only the last position's logits are
computed when the metric needs only those. A patch whose source value equals
what the patched run already has there (every position before the first
corrupted token, say) changes nothing and is not run. Batches are sized to a
memory budget.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core import interventions as iv
from ..core.model import Inputs, Model
from ..errors import InputError
from .results import PatchResult

Metric = Callable[[Tensor], Tensor]
"""logits [batch, pos, vocab] -> one value per prompt [batch] (a scalar is broadcast)."""

RESID_SITES = ("resid_pre", "resid_mid", "resid_post", "attn.out", "mlp.out")
HEAD_SITES = ("attn.z", "attn.q", "attn.pattern")


@dataclass(frozen=True)
class _Experiment:
    layer: int
    position: int | None  # None = all positions
    head: int | None  # None = all heads (or a non-head site)


def activation_patching(
    model: Model,
    clean: Inputs,
    corrupted: Inputs,
    metric: Metric,
    site: str = "resid_pre",
    *,
    direction: Literal["denoise", "noise"] = "denoise",
    per_position: bool = True,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    position_labels: Sequence[str] | None = None,
    last_only: bool = True,
    memory_budget: int = 1 << 30,
    max_rows: int = 128,
    progress: bool = True,
) -> PatchResult:
    """Patch `site` at every layer × position (or head), one tensor back.

    `site` is a block site without the ``blocks.L.`` prefix: one of
    ``resid_pre``, ``resid_mid``, ``resid_post``, ``attn.out``, ``mlp.out``
    (axes layer × pos, or layer with ``per_position=False``) or a head site
    ``attn.z`` / ``attn.q`` (axes layer × head, plus pos with
    ``per_position=True``). `metric` maps logits to one value per prompt;
    with `last_only` (default) it sees only the last position's logits,
    shape [batch, 1, vocab]. Clean and corrupted inputs must tokenise to the
    same shape.

    Example::

        result = activation_patching(model, clean_tokens, corrupted_tokens, metric, "resid_pre")
        result.values.shape   # [n_layers, pos]
    """
    if model.dims is None:
        raise InputError("activation patching needs a transformer with known sites")
    if site not in RESID_SITES + HEAD_SITES:
        raise InputError(f"cannot sweep {site!r}; valid: {', '.join(RESID_SITES + HEAD_SITES)}")
    heads = site in HEAD_SITES
    clean_x = _tokens(model, clean)
    corrupt_x = _tokens(model, corrupted)
    if clean_x.shape != corrupt_x.shape:
        raise InputError(
            f"clean and corrupted inputs must have the same shape, got {tuple(clean_x.shape)} "
            f"and {tuple(corrupt_x.shape)}"
        )
    base_x, source_x = (corrupt_x, clean_x) if direction == "denoise" else (clean_x, corrupt_x)
    if direction not in ("denoise", "noise"):
        raise InputError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    n_prompts, n_pos = base_x.shape
    n_layers = model.dims.n_layers
    layer_list = list(range(n_layers)) if layers is None else _indices(layers, n_layers, "layers")
    pos_list = list(range(n_pos))
    if positions is not None:
        pos_list = [p % n_pos for p in _indices(positions, n_pos, "positions", negative=True)]

    sites = [f"blocks.{layer}.{site}" for layer in layer_list]
    base, context = model.capture(base_x, save=sites)
    source = model.run(source_x, save=sites)
    view = (lambda lg: lg[:, -1:]) if last_only else (lambda lg: lg)
    m_base = _per_prompt(metric(view(base.logits)), n_prompts).mean().item()
    m_source = _per_prompt(metric(view(source.logits)), n_prompts).mean().item()
    m_clean, m_corrupt = (m_source, m_base) if direction == "denoise" else (m_base, m_source)
    if not (math.isfinite(m_clean) and math.isfinite(m_corrupt)):
        raise InputError(
            f"the metric must be finite on the clean and corrupted runs, got {m_clean} and "
            f"{m_corrupt}"
        )

    experiments: list[_Experiment] = []
    for layer in layer_list:
        head_list: list[int | None] = list(range(model.dims.n_heads)) if heads else [None]
        for head in head_list:
            for pos in pos_list if per_position else [None]:
                experiments.append(_Experiment(layer, pos, head))

    # a patch whose source equals what the base run already has there changes nothing
    # (e.g. every position before the first corrupted token): its value is the base metric
    m_base_t = torch.tensor(m_base)
    noop = [
        torch.equal(_region(base.cache, e, site), _region(source.cache, e, site))
        for e in experiments
    ]
    todo = [e for e, skip in zip(experiments, noop, strict=True) if not skip]

    size = model.dtype.itemsize  # the real element size: bf16 rows take half of fp32's
    per_row = n_pos * (10 * model.dims.d_model + 3 * model.dims.d_mlp) * size
    if not last_only:
        per_row += n_pos * model.dims.d_vocab * size
    rows = max(n_prompts, min(max_rows, memory_budget // per_row))
    per_chunk = max(1, rows // n_prompts)
    raw_todo = torch.empty(len(todo))
    bar = tqdm(
        total=len(todo),
        desc=f"patching {site}",
        unit="patch",
        disable=not progress,
        leave=False,
    )
    for start in range(0, len(todo), per_chunk):
        chunk = todo[start : start + per_chunk]
        low = min(e.layer for e in chunk)
        resid = base.cache[f"blocks.{low}.resid_pre"].repeat(len(chunk), 1, 1)
        ivs = _chunk_interventions(chunk, site, source.cache, n_prompts)
        out = model.resume(low, resid, context, ivs, logits_at=-1 if last_only else None)
        values = _per_prompt(metric(out.logits), len(chunk) * n_prompts)
        raw_todo[start : start + len(chunk)] = values.view(len(chunk), n_prompts).mean(1)
        bar.update(len(chunk))
    bar.close()
    raw = m_base_t.repeat(len(experiments))
    raw[torch.tensor([not skip for skip in noop], dtype=torch.bool)] = raw_todo

    shape: list[int] = [len(layer_list)]
    axes: list[str] = ["layer"]
    labels: dict[str, list[str]] = {"layer": [str(layer) for layer in layer_list]}
    if heads:
        shape.append(model.dims.n_heads)
        axes.append("head")
        labels["head"] = [str(h) for h in range(model.dims.n_heads)]
    if per_position:
        shape.append(len(pos_list))
        axes.append("pos")
        names = (
            list(position_labels) if position_labels is not None else _pos_labels(model, clean_x)
        )
        labels["pos"] = [names[p] if p < len(names) else str(p) for p in pos_list]
    raw = raw.view(*shape)
    denom = m_clean - m_corrupt
    values = (raw - m_corrupt) / denom if abs(denom) > 1e-12 else torch.full_like(raw, math.nan)
    return PatchResult(
        values,
        raw,
        tuple(axes),
        labels,
        site,
        direction,
        m_clean,
        m_corrupt,
        {"prompts": n_prompts, "positions": n_pos, "patches": len(experiments), "run": len(todo)},
    )


def _indices(values: Sequence[int], size: int, what: str, negative: bool = False) -> list[int]:
    """Integer indices into an axis of `size` entries (with `negative`, -1 is the last)."""
    out = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else None
    if out is None or any(isinstance(v, bool) or not hasattr(type(v), "__index__") for v in out):
        raise InputError(f"{what} must be a list of integers, got {values!r}")
    out = [operator.index(v) for v in out]
    low = -size if negative else 0
    bad = [v for v in out if not low <= v < size]
    if bad:
        also = f" (or -{size}…-1)" if negative else ""
        raise InputError(f"{what} {bad} out of range: valid 0…{size - 1}{also}")
    return out


def _tokens(model: Model, inputs: Inputs) -> Tensor:
    if isinstance(inputs, Tensor):
        if inputs.ndim not in (1, 2):
            raise InputError(
                f"token ids must be [batch, pos] (or [pos]), got shape {tuple(inputs.shape)}"
            )
        return inputs if inputs.ndim == 2 else inputs[None]
    if isinstance(inputs, str) or (isinstance(inputs, Sequence) and inputs):
        x = model.to_tokens(inputs)  # type: ignore[arg-type]
        return x
    raise InputError(f"inputs must be token ids or text, got {type(inputs).__name__}")


def _pos_labels(model: Model, tokens: Tensor) -> list[str]:
    if model.tokenizer is None:
        return [str(i) for i in range(tokens.shape[1])]
    return [f"{i}:{t}" for i, t in enumerate(model.to_str_tokens(tokens[0]))]


def _per_prompt(value: Tensor, n: int) -> Float[Tensor, " n"]:
    value = torch.as_tensor(value).detach().float().reshape(-1)
    if value.numel() == 1:
        return value.expand(n)
    if value.numel() != n:
        raise InputError(
            f"metric must return one value per prompt ({n}) or a scalar, got {value.numel()}"
        )
    return value


def _region(cache: dict[str, Tensor], e: _Experiment, site: str) -> Tensor:
    """The part of a site's cached value that experiment `e` patches (all prompts)."""
    t = cache[f"blocks.{e.layer}.{site}"]
    if site == "attn.pattern":  # [batch, head, q_pos, k_pos]
        t = t if e.head is None else t[:, e.head]
        return t if e.position is None else t[..., e.position, :]
    t = t if e.position is None else t[:, e.position]
    return t if e.head is None else t[..., e.head, :]


def _chunk_interventions(
    chunk: list[_Experiment], site: str, source: dict[str, Tensor], n_prompts: int
) -> list[iv.Intervention]:
    """One vectorised `apply` per site: row j·n + i takes prompt i's source value."""
    by_layer: dict[int, list[tuple[int, _Experiment]]] = {}
    for j, e in enumerate(chunk):
        by_layer.setdefault(e.layer, []).append((j, e))
    out = []
    prompts = torch.arange(n_prompts)
    for layer, items in by_layer.items():
        name = f"blocks.{layer}.{site}"
        src = source[name]
        rows = torch.cat([j * n_prompts + prompts for j, _ in items])
        which = torch.cat([prompts for _ in items])
        pos = [e.position for _, e in items]
        head = [e.head for _, e in items]
        # x[rows, pos(, head)] = src[which, pos(, head)], point by point: one intervention,
        # one copy of the site, inspectable (no closure)
        per = lambda values: torch.tensor(values).repeat_interleave(n_prompts)  # noqa: E731
        out.append(
            iv.replace(
                name,
                src,
                rows=rows,
                positions=None if pos[0] is None else per(pos),
                heads=None if head[0] is None else per(head),
                source_rows=which,
                paired=True,
            )
        )
    return out
