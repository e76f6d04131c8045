"""Causal tracing (Meng et al. 2022): corrupt the subject, restore one state, measure what comes back.

The subject's token embeddings get Gaussian noise (by default 3 × the
standard deviation of the embedding matrix, the paper's level, times the
scale a model applies to its embeddings: √d_model on Gemma); one state
from the clean run is then restored at one token: the hidden state
(``blocks.L.resid_post``), or the MLP or attention output over a window of
layers around L. The probability of the object's first token with that
restoration, against the corrupted run's, is the indirect effect of the
state. Every (kind, layer, token, noise sample) is one row of a batched
forward: one intervention per site, vectorised over rows, restores the
right token in the right rows. The result, `CausalTrace`, lives in
`tracing.results` (no torch) and is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import add, replace
from ..core.model import Model
from ..core.suffix import SuffixRunner
from ..errors import InputError
from .facts import Fact, subject_span
from .results import CausalTrace

__all__ = ["KINDS", "CausalTrace", "noise_scale", "trace_fact"]

KINDS: dict[str, str] = {"hidden": "resid_post", "mlp": "mlp.out", "attn": "attn.out"}


def noise_scale(model: Model, multiplier: float = 3.0) -> float:
    """`multiplier` × the standard deviation of the token embeddings as `embed` holds them (3σ).

    The noise is added to the embedding module's output, so a model that
    scales its embeddings (Gemma: × √d_model) gets the scale in its noise too.

    Example: ``noise_scale(model)`` → ``0.41`` on SmolLM2 (3σ of its embeddings).
    """
    module = model.hf.get_input_embeddings()
    weight = module.weight.detach().float()
    ids = torch.arange(min(weight.shape[0], 1024), device=weight.device)
    with torch.no_grad():
        scale = float(module(ids).float().norm() / weight[ids].norm())
    return multiplier * float(weight.std()) * scale


def _window(kind: str, layer: int, n_layers: int, window: int) -> range:
    """The layers a restoration at `layer` covers: itself for hidden states, else a centred window."""
    if kind == "hidden":
        return range(layer, layer + 1)
    lo = max(0, min(layer - window // 2, n_layers - window))
    return range(lo, min(n_layers, lo + window))


@torch.no_grad()
def trace_fact(
    model: Model,
    fact: Fact,
    *,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    samples: int = 10,
    noise: float | None = None,
    replace_with: Sequence[str] | None = None,
    window: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = False,
) -> CausalTrace:
    """Trace every (kind, layer, token) of `fact` over `samples` corruptions, batched.

    The corruption is Gaussian noise on the subject's embeddings (`noise` is
    its standard deviation, by default 3σ of the embedding matrix), or, with
    `replace_with`, other subjects of the same token length in the subject's
    place (up to `samples` of them). The corrupted run is captured once; each
    restoration resumes from the first block it changes, and only the last
    position is unembedded. Tokens before the subject are identical in both
    runs, so their cells are the corrupted run by construction.

    Example::

        tr = trace_fact(model, Fact("The Eiffel Tower", "{} is located in the city of", "Paris"))
        tr.indirect_effect("mlp").amax()
    """
    if isinstance(kinds, str):
        raise InputError(f"kinds is a list of kinds, e.g. [{kinds!r}]; valid: {', '.join(KINDS)}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"unknown trace kinds {bad}; valid: {', '.join(KINDS)}")
    for name, value in (("samples", samples), ("window", window), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer of at least 1, got {value!r}")
    if noise is not None and not (isinstance(noise, (int, float)) and 0 <= noise < math.inf):
        raise InputError(f"noise is a standard deviation: a finite number ≥ 0, got {noise!r}")
    if not fact.object.strip():
        raise InputError("the fact's object (the answer to trace) is empty")
    if model.dims is None:
        raise InputError("causal tracing needs a transformer with blocks (a supported LM)")
    n_layers = model.dims.n_layers
    ids = model.to_tokens(fact.prompt)
    n_pos = ids.shape[1]
    start, end = subject_span(model, fact)
    target = model.to_tokens(" " + fact.object, prepend_bos=False)[0, 0]
    sites = sorted({f"blocks.{layer}.{KINDS[k]}" for k in kinds for layer in range(n_layers)})
    clean_out = model.run(ids, save=sites)
    clean = clean_out.cache
    p_clean = float(clean_out.logits[0, -1].float().softmax(-1)[target])
    if replace_with is not None:
        corrupt_ids = _replacements(model, fact, ids, (start, end), replace_with, samples)
        samples, noise, ivs = corrupt_ids.shape[0], 0.0, []
    else:
        noise = noise_scale(model) if noise is None else noise
        g = torch.Generator().manual_seed(seed)
        draws = torch.randn(samples, end - start, model.dims.d_model, generator=g) * noise
        placed = _place(draws, start, end, n_pos).to(model.device, clean_out.logits.dtype)
        corrupt_ids, ivs = ids.expand(samples, -1), [add("embed", placed)]
    base, context = model.capture(corrupt_ids, interventions=ivs)
    p_base = base.logits[:, -1].float().softmax(-1)[:, target].cpu()  # [samples]
    suffix = SuffixRunner.of(model, context, corrupt_ids, ivs)
    # distinct restorations (kind, layers, token): a window clipped at either end repeats,
    # and tokens before the subject equal the corrupted run, so neither is computed
    cells: dict[tuple[int, range, int], list[tuple[int, int]]] = {}
    for k, kind in enumerate(kinds):
        for layer in range(n_layers):
            for t in range(start, n_pos):
                key = (k, _window(kind, layer, n_layers, window), t)
                cells.setdefault(key, []).append((layer, t))
    # a batch resumes from its earliest restored block and, where the model allows, from
    # its token on, reading the corrupted run's keys and values before it (rows that
    # restore later blocks recompute a few corrupted blocks: larger batches pay for it)
    by_token: dict[int, list[tuple[int, range, int]]] = {}
    for k, layers, t in cells:
        by_token.setdefault(t if suffix else 0, []).append((k, layers, t))
    probs = p_base.repeat(len(kinds), n_layers, n_pos, 1)  # [kind, layer, pos, sample]
    chunks = []
    for t0, group in sorted(by_token.items()):
        group.sort(key=lambda c: c[1].start)
        # `batch_size` rows of the full prompt's length: shorter suffixes take more rows
        per_chunk = max(1, batch_size * n_pos // ((n_pos - t0) * samples))
        for i in range(0, len(group), per_chunk):
            chunks.append((group[i][1].start, t0, group[i : i + per_chunk]))
    for first, t0, chunk in tqdm(chunks, desc="trace", unit="batch", disable=not progress):
        rows = len(chunk) * samples  # row e·samples + s: restoration e with corruption s
        restore: dict[str, Tensor] = {}  # site -> [rows, pos from t0] where the clean value goes
        for e, (k, layers, t) in enumerate(chunk):
            for lay in layers:
                mask = restore.setdefault(
                    f"blocks.{lay}.{KINDS[kinds[k]]}",
                    torch.zeros(rows, n_pos - t0, dtype=torch.bool),
                )
                mask[e * samples : (e + 1) * samples, t - t0] = True
        ivs_r = []
        for site, mask in restore.items():
            value, where = clean[site][:, t0:], mask.to(model.device)[..., None]
            ivs_r.append(replace(site, value, mask=where))
        resid = base.cache[f"blocks.{first}.resid_pre"][:, t0:].repeat(len(chunk), 1, 1)
        if suffix:
            logits = suffix.run(first, t0, resid, ivs_r)
        else:
            logits = model.resume(first, resid, context, ivs_r, logits_at=-1).logits[:, -1]
        p = logits.float().softmax(-1)[:, target].cpu().view(len(chunk), samples)
        for e, key in enumerate(chunk):
            for layer, t in cells[key]:
                probs[key[0], layer, t] = p[e]
    grid = probs.mean(-1)
    return CausalTrace(
        fact=fact,
        tokens=model.to_str_tokens(fact.prompt),
        subject=(start, end),
        clean=p_clean,
        corrupted=float(p_base.mean()),
        scores={k: grid[i] for i, k in enumerate(kinds)},
        noise=noise,
        samples=samples,
        window=window,
    )


def _replacements(
    model: Model,
    fact: Fact,
    ids: Tensor,
    span: tuple[int, int],
    subjects: Sequence[str],
    samples: int,
) -> Tensor:
    """[n, pos] prompts with other subjects of the same token length in the subject's place."""
    rows = []
    for other in subjects:
        if other == fact.subject:
            continue
        alt = Fact(other, fact.template, fact.object, fact.relation)
        alt_ids = model.to_tokens(alt.prompt)
        if alt_ids.shape[1] == ids.shape[1] and subject_span(model, alt) == span:
            rows.append(alt_ids[0])
        if len(rows) == samples:
            break
    if not rows:
        n = span[1] - span[0]
        raise InputError(
            f"none of the {len(subjects)} replacement subjects is {n} token(s) long like "
            f"{fact.subject!r}; give subjects of the same token length"
        )
    return torch.stack(rows).to(ids.device)


def _place(draws: Tensor, start: int, end: int, n_pos: int) -> Tensor:
    """[samples, pos, d] noise: the draws at the subject's positions, zero elsewhere."""
    out = torch.zeros(draws.shape[0], n_pos, draws.shape[-1])
    out[:, start:end] = draws
    return out
