"""Per-head diagnostics for the IOI circuit: attention scores, direct logit attribution, classes.

Every score is a [n_layers, n_heads] tensor from one batched `Model.run` (in
chunks of rows). On repeated random tokens (BOS, r_1..r_T, r_1..r_T):
induction heads attend from the second copy of a token to the token after
its first copy, duplicate-token heads to the first copy itself,
previous-token heads to the position before. On an `IOIDataset`: where END
attends (IO, S1, S2), and each head's direct logit attribution to
logit(IO) − logit(S) (`copying_scores`; name movers are positive, negative
name movers negative). `classify_heads` turns the scores into a short list of
(layer, head, class, score), using thresholds relative to each score's
distribution over heads.

Example::

    ind = induction_scores(model)
    ind.top(3)                       # [(layer, head, score), ...]
    ds = ioi_dataset(model, 100)
    classes = classify_heads(induction=ind, ioi_attention=ioi_attention_scores(model, ds),
                             copying=copying_scores(model, ds))

The direct logit attribution is the lens's (`mechscope.lens.head_logit_attribution`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..core.interventions import Intervention
from ..core.model import Model
from ..core.weights import resident, unembedding
from ..errors import InputError
from ..lens import head_logit_attribution as head_logit_attribution
from .results import HEAD_CLASSES as HEAD_CLASSES
from .results import (
    HeadClassification,
    HeadLabel,
    HeadScores,
    IOIAttentionScores,
    IOIDataset,
)
from .results import top_heads as _top

# --- running the model -----------------------------------------------------------------


def _dims(model: Model) -> tuple[int, int]:
    if model.dims is None or model.adapter is None:
        raise InputError(
            f"{model.name} is not a transformer LM mechscope knows: no attention heads"
        )
    resident(model, "the IOI head scores")
    return model.dims.n_layers, model.dims.n_heads


def _per_head_mean(
    model: Model,
    tokens: Tensor,
    reduce: Callable[[Tensor, slice], Tensor],
    interventions: Sequence[Intervention],
    chunk_size: int,
) -> Tensor:
    """Mean over rows of reduce(patterns [layer, batch, head, q, k], rows) -> summed [layer, head]."""
    n_layers, _ = _dims(model)
    if chunk_size < 1:
        raise InputError(f"chunk_size must be at least 1, got {chunk_size}")
    total: Tensor | None = None
    sites = [f"blocks.{layer}.attn.pattern" for layer in range(n_layers)]
    for start in range(0, tokens.shape[0], chunk_size):
        rows = slice(start, min(start + chunk_size, tokens.shape[0]))
        out = model.run(tokens[rows], save=sites, interventions=interventions)
        patterns = torch.stack([out.cache[s].float() for s in sites]).cpu()
        part = reduce(patterns, rows)
        total = part if total is None else total + part
    assert total is not None
    return total / tokens.shape[0]


def repeated_random_tokens(
    model: Model, n_prompts: int = 20, seq_len: int = 20, seed: int = 0
) -> Int[Tensor, "batch pos"]:
    """[n_prompts, 1 + 2·seq_len]: BOS, then seq_len random tokens, then the same again.

    Special tokens are never drawn. BOS is the tokenizer's BOS token, else its EOS.

    Example: ``repeated_random_tokens(model, n_prompts=4, seq_len=10).shape`` → ``(4, 21)``.
    """
    if seq_len < 2 or n_prompts < 1:
        raise InputError(f"need seq_len >= 2 and n_prompts >= 1, got {seq_len}, {n_prompts}")
    assert model.dims is not None
    bos = model.bos_token_id
    if bos is None:
        raise InputError(f"{model.name}'s tokenizer has neither a BOS nor an EOS token")
    vocab = min(model.dims.d_vocab, len(model.tokenizer))
    special = set(model.tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    half = allowed[torch.randint(len(allowed), (n_prompts, seq_len), generator=gen)]
    first = torch.full((n_prompts, 1), bos, dtype=torch.long)
    return torch.cat([first, half, half], dim=1)


def _offset_scores(
    model: Model,
    n_prompts: int,
    seq_len: int,
    seed: int,
    offset: int,
    second_half_only: bool,
    name: str,
    interventions: Sequence[Intervention],
    chunk_size: int,
) -> HeadScores:
    """Mean attention from query i to key i − offset over the chosen query positions."""
    tokens = repeated_random_tokens(model, n_prompts, seq_len, seed)
    first_q = seq_len + 1 if second_half_only else max(offset, 1)
    q = torch.arange(first_q, 2 * seq_len + 1)
    k = q - offset

    def reduce(patterns: Tensor, rows: slice) -> Tensor:
        return patterns[:, :, :, q, k].mean(-1).sum(1)

    scores = _per_head_mean(model, tokens.to(model.device), reduce, interventions, chunk_size)
    meta = {"n_prompts": n_prompts, "seq_len": seq_len, "seed": seed, "data": "repeated_random"}
    return HeadScores(name, scores, model.name, meta)


def induction_scores(
    model: Model,
    n_prompts: int = 20,
    seq_len: int = 20,
    seed: int = 0,
    *,
    interventions: Sequence[Intervention] = (),
    chunk_size: int = 32,
) -> HeadScores:
    """Mean attention from each second-copy position i to i − seq_len + 1, per head.

    That key is the token after the earlier copy of token i: what an
    induction head attends to. `interventions` are applied to every chunk.

    Example::

        induction_scores(model).top(3)
    """
    return _offset_scores(
        model, n_prompts, seq_len, seed, seq_len - 1, True, "induction", interventions, chunk_size
    )


def duplicate_token_scores(
    model: Model,
    n_prompts: int = 20,
    seq_len: int = 20,
    seed: int = 0,
    *,
    interventions: Sequence[Intervention] = (),
    chunk_size: int = 32,
) -> HeadScores:
    """Mean attention from each second-copy position i to i − seq_len (the earlier copy).

    Example: ``duplicate_token_scores(model).top(3)`` → ``[(layer, head, score), …]``.
    """
    return _offset_scores(
        model, n_prompts, seq_len, seed, seq_len, True, "duplicate_token", interventions, chunk_size
    )


def previous_token_scores(
    model: Model,
    n_prompts: int = 20,
    seq_len: int = 20,
    seed: int = 0,
    *,
    interventions: Sequence[Intervention] = (),
    chunk_size: int = 32,
) -> HeadScores:
    """Mean attention from each position i ≥ 1 to i − 1, on the same repeated random tokens.

    Example: ``previous_token_scores(model).top(3)`` → ``[(layer, head, score), …]``.
    """
    return _offset_scores(
        model, n_prompts, seq_len, seed, 1, False, "previous_token", interventions, chunk_size
    )


def ioi_attention_scores(
    model: Model,
    ds: IOIDataset,
    *,
    interventions: Sequence[Intervention] = (),
    chunk_size: int = 32,
) -> IOIAttentionScores:
    """Mean attention from END to the IO, S1 and S2 tokens, per head.

    Example::

        att = ioi_attention_scores(model, ds)
        att["IO"].shape   # [n_layers, n_heads]
    """
    pos = {k: ds.positions[k].cpu() for k in ("END", "IO", "S1", "S2")}

    def reduce(patterns: Tensor, rows: slice) -> Tensor:
        b = torch.arange(patterns.shape[1])
        end = pos["END"][rows]
        keys = torch.stack([pos[k][rows] for k in ("IO", "S1", "S2")], dim=-1)  # [batch, 3]
        # advanced indices on axes 1, 3, 4 come first: [batch, 3, layer, head]
        picked = patterns[:, b[:, None], :, end[:, None], keys]
        return picked.sum(0).permute(1, 2, 0)

    total = _per_head_mean(model, ds.tokens.to(model.device), reduce, interventions, chunk_size)
    meta = {"n_prompts": len(ds), "seed": ds.seed, "corruption": ds.corruption}
    return IOIAttentionScores(total[..., 0], total[..., 1], total[..., 2], model.name, meta)


# --- direct logit attribution ----------------------------------------------------------


def copying_scores(
    model: Model,
    ds: IOIDataset,
    *,
    interventions: Sequence[Intervention] = (),
    chunk_size: int = 32,
) -> HeadScores:
    """Mean direct logit attribution of each head at END to logit(IO) − logit(S).

    Positive for heads that push the IO name (name movers), negative for
    those that push against it (negative name movers).

    Example::

        copying_scores(model, ds).top(3)
    """
    n_layers, _ = _dims(model)
    w_u = unembedding(model).detach().float().T  # [vocab, d_model]
    z_sites = [f"blocks.{layer}.attn.z" for layer in range(n_layers)]
    resid_site = f"blocks.{n_layers - 1}.resid_post"
    total: Tensor | None = None
    tokens = ds.tokens.to(model.device)
    for start in range(0, len(ds), chunk_size):
        rows = slice(start, min(start + chunk_size, len(ds)))
        out = model.run(tokens[rows], save=[*z_sites, resid_site], interventions=interventions)
        b = torch.arange(rows.stop - rows.start, device=tokens.device)
        end = ds.positions["END"][rows].to(tokens.device)
        zs = [out.cache[s][b, end] for s in z_sites]
        final = out.cache[resid_site][b, end]
        io, s = ds.io_ids[rows].to(w_u.device), ds.s_ids[rows].to(w_u.device)
        direction = w_u[io] - w_u[s]
        part = head_logit_attribution(model, zs, final, direction).sum(0).cpu()
        total = part if total is None else total + part
    assert total is not None
    meta = {"n_prompts": len(ds), "seed": ds.seed, "corruption": ds.corruption, "position": "END"}
    return HeadScores("copying", total / len(ds), model.name, meta)


# --- classification --------------------------------------------------------------------


def _zscore(x: Tensor) -> Tensor:
    x = x.float()
    return (x - x.mean()) / x.std().clamp_min(1e-12)


def _select(
    scores: Tensor, z_threshold: float, top: int, largest: bool = True
) -> list[tuple[int, int, float]]:
    """Up to `top` heads whose score is `z_threshold` standard deviations beyond the mean."""
    z = _zscore(scores) if largest else -_zscore(scores)
    return [
        (layer, head, s)
        for layer, head, s in _top(scores, top, largest)
        if z[layer, head] >= z_threshold
    ]


def classify_heads(
    *,
    induction: HeadScores | None = None,
    duplicate_token: HeadScores | None = None,
    previous_token: HeadScores | None = None,
    ioi_attention: IOIAttentionScores | None = None,
    copying: HeadScores | None = None,
    s_inhibition_effect: Float[Tensor, "layer head"] | None = None,
    top: int = 5,
    z_threshold: float = 3.0,
    copying_z: float = 1.0,
) -> HeadClassification:
    """Label heads from their scores; each class takes at most `top` heads.

    A head is "high" on a score when it is among the `top` highest and at
    least `z_threshold` standard deviations above the mean over all heads
    (a head stands out from the rest of the model, whatever the score's
    scale). Classes:

    - ``duplicate_token`` / ``induction`` / ``previous_token``: high on that score.
    - ``name_mover``: high END→IO attention (here among the 2·`top`
      highest, since name movers and negative name movers share the list)
      and copying at least `copying_z` root-mean-squares of all copying
      scores above zero; score = its copying score. ``negative_name_mover``:
      the same with copying below −`copying_z` RMS.
    - ``s_inhibition_candidate``: high END→S2 attention; score = that attention.
      True S-inhibition heads act through the name movers' queries, which only
      path patching shows: pass its result as `s_inhibition_effect` ([layer,
      head]: change of the logit difference when the head's path to the
      name movers' queries is corrupted; S-inhibition heads are negative).
      Candidates whose effect is `z_threshold` standard deviations below the
      mean become ``s_inhibition``, score = the effect.

    Scores not given are skipped. Example::

        classify_heads(induction=ind, ioi_attention=att, copying=cp).of("name_mover")
    """
    labels: list[HeadLabel] = []

    def add(cls: str, picked: list[tuple[int, int, float]]) -> None:
        labels.extend(HeadLabel(layer, head, cls, float(s)) for layer, head, s in picked)

    for cls, result in (
        ("duplicate_token", duplicate_token),
        ("induction", induction),
        ("previous_token", previous_token),
    ):
        if result is not None:
            add(cls, _select(result.scores, z_threshold, top))
    if ioi_attention is not None and copying is not None:
        cp = copying.scores.float()
        spread = cp.pow(2).mean().sqrt().clamp_min(1e-12)  # spread around 0, not around the mean
        to_io = _select(ioi_attention.io, z_threshold, 2 * top)
        movers = [
            (la, h, float(cp[la, h])) for la, h, _ in to_io if cp[la, h] >= copying_z * spread
        ]
        negative = [
            (la, h, float(cp[la, h])) for la, h, _ in to_io if cp[la, h] <= -copying_z * spread
        ]
        add("name_mover", sorted(movers, key=lambda m: -m[2])[:top])
        add("negative_name_mover", sorted(negative, key=lambda m: m[2])[:top])
    if ioi_attention is not None:
        candidates = _select(ioi_attention.s2, z_threshold, top)
        if s_inhibition_effect is None:
            add("s_inhibition_candidate", candidates)
        else:
            effect = s_inhibition_effect.detach().float().cpu()
            ez = _zscore(effect)
            strong = [
                (la, h, float(effect[la, h]))
                for la, h, _ in candidates
                if ez[la, h] <= -z_threshold
            ]
            add("s_inhibition", strong)
            strong_heads = {(la, h) for la, h, _ in strong}
            add(
                "s_inhibition_candidate",
                [c for c in candidates if (c[0], c[1]) not in strong_heads],
            )
    settings = {"top": top, "z_threshold": z_threshold, "copying_z": copying_z}
    settings["with_s_inhibition_effect"] = s_inhibition_effect is not None
    return HeadClassification(labels, settings)
