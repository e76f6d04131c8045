"""Applying a steering vector: the interventions, steered generation, and what steering costs.

`steer` turns a vector and a coefficient into ``ms.add`` interventions on
``blocks.{layer}.resid_pre``: a one-row vector at every position (generated
tokens too), a k-row vector at the first k tokens of each prompt (activation
addition). They work in any `model.run` or `model.generate`.

`perplexity` measures the cost on a corpus (the same steering applied to each
window) and `next_token_kl` the change of the next-token distributions on
neutral prompts, KL(unsteered ‖ steered) averaged over their positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import interventions as iv_lib
from ..core.interventions import Index, Intervention
from ..core.model import Model
from ..errors import InputError
from .vectors import SteeringVector, check_layer


def steer(
    vector: SteeringVector,
    coef: float,
    *,
    starts: Sequence[int] | None = None,
    lengths: Sequence[int] | None = None,
    positions: Index = None,
) -> list[Intervention]:
    """The interventions adding ``coef · vector`` to its layer's residual stream.

    A one-row vector goes at every position, or at `positions` (absolute, as
    in `model.generate`: ``slice(n, None)`` steers only what follows the
    first n tokens). A k-row vector goes at positions start … start+k−1 of
    each row: `starts` gives each row's first prompt position (left padding,
    default 0) and `lengths` each prompt's length; a prompt shorter than k
    gets the vector's first rows only.

    Example::

        ivs = steer(v, 4.0)  # v: a SteeringVector
        model.generate("I went up to my friend and said", 30, ivs)
    """
    _check_coef(coef)
    value = coef * vector.vector
    if not vector.front:
        return [iv_lib.add(vector.site, value[0], positions=positions)]
    if positions is not None:
        raise InputError("positions apply to one-row vectors; a k-row vector sits at the front")
    k = value.shape[0]
    if starts is None and (lengths is None or min(lengths) >= k):
        return [iv_lib.add(vector.site, value, positions=list(range(k)))]
    n = len(starts if starts is not None else lengths)  # type: ignore[arg-type]
    starts = list(starts) if starts is not None else [0] * n
    ks = [min(k, length) for length in lengths] if lengths is not None else [k] * n
    return [
        iv_lib.add(vector.site, value[:ki], rows=[row], positions=list(range(s, s + ki)))
        for row, (s, ki) in enumerate(zip(starts, ks, strict=True))
    ]


def _check_coef(coef: object) -> None:
    try:
        number = not isinstance(coef, (bool, str, bytes))
        finite = number and math.isfinite(float(coef))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not a number (a tensor of several values, None…)
        finite = False
    if not finite:
        raise InputError(f"the steering coefficient must be a finite number, got {coef!r}")


def _check_fits(model: Model, vector: SteeringVector) -> None:
    check_layer(model, vector.layer)
    if model.dims is not None and vector.vector.shape[-1] != model.dims.d_model:
        raise InputError(
            f"the vector has width {vector.vector.shape[-1]}, the model's residual stream "
            f"{model.dims.d_model}"
        )


def generate(
    model: Model,
    prompt: str | Sequence[str],
    vector: SteeringVector | None,
    coef: float = 1.0,
    *,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    positions: Index = None,
) -> str | list[str]:
    """`model.generate` with ``coef · vector`` added (no vector or coef 0: unsteered).

    `positions` (one-row vectors) are absolute positions of the left-padded
    batch, as in `model.generate`.

    Example: ``generate(model, "I went up to my friend and said", v, coef=4)`` → a str.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    ivs: list[Intervention] = []
    if vector is not None and coef != 0:
        _check_fits(model, vector)
        lengths = model.lengths(prompts).tolist()
        width = max(lengths)
        starts = [width - n for n in lengths]  # generate pads on the left
        if vector.front:
            ivs = steer(vector, coef, starts=starts, lengths=lengths)
        else:
            ivs = steer(vector, coef, positions=positions)
    out = model.generate(
        prompts, max_new_tokens, ivs, do_sample=do_sample, temperature=temperature, seed=seed
    )
    return out[0] if isinstance(prompt, str) else out


@torch.no_grad()
def _log_probs(
    model: Model,
    inputs: Tensor | list[str],
    vector: SteeringVector | None,
    coef: float,
    lengths: Sequence[int] | None = None,
) -> Tensor:  # [batch pos vocab]
    ivs = steer(vector, coef, lengths=lengths) if vector is not None and coef != 0 else []
    return F.log_softmax(model.run(inputs, interventions=ivs).logits.float(), dim=-1)


@torch.no_grad()
def perplexity(
    model: Model,
    windows: Tensor,  # [n pos] token ids, no padding
    vector: SteeringVector | None = None,
    coef: float = 0.0,
    *,
    batch_size: int = 8,
) -> float:
    """exp(mean next-token loss) over the windows, with the steering applied to each.

    Example::

        windows = corpus_windows(model)
        perplexity(model, windows), perplexity(model, windows, v, coef=4)  # unsteered, steered
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise InputError("perplexity needs token windows of shape [n, pos] with pos ≥ 2")
    if vector is not None:
        _check_fits(model, vector)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        ids = windows[i : i + batch_size].to(model.device)
        logp = _log_probs(model, ids, vector, coef, [ids.shape[1]] * len(ids))[:, :-1]
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    return float(torch.exp(torch.tensor(total / count)))


@torch.no_grad()
def next_token_kl(
    model: Model, prompts: Sequence[str], vector: SteeringVector, coef: float
) -> float:
    """KL(unsteered ‖ steered) of the next-token distributions, averaged over prompt positions.

    Example: ``next_token_kl(model, NEUTRAL_PROMPTS, v, 4.0)`` → a float (nats, ≥ 0).
    """
    if not prompts:
        raise InputError("next_token_kl needs at least one prompt")
    _check_fits(model, vector)
    lengths = model.lengths(prompts)
    base = _log_probs(model, list(prompts), None, 0.0)
    steered = _log_probs(model, list(prompts), vector, coef, lengths.tolist())
    kl = (base.exp() * (base - steered)).sum(-1).cpu()  # [batch pos]
    mask = torch.arange(kl.shape[1])[None] < lengths[:, None]
    return float(kl[mask].mean())
