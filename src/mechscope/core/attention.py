"""mechscope's attention function, registered with transformers' attention interface.

HF attention modules compute q, k, v and the output projection themselves and
hand the middle (scores, softmax, weighted sum) to a pluggable function. When
a run asks for ``attn.q/k/v/pattern/z``, the run switches the model's
``_attn_implementation`` to ``"mechscope"`` for its duration, remembering the
one it replaced (``_mechscope_previous`` on the config). Layers without
attention sites then still run that previous kernel, with its own mask; a
layer whose sites are only ``q/k/v/z`` runs SDPA between its hook points
(so saving ``z`` changes no bit of the logits); only a layer that reads or
changes ``pattern`` computes attention eagerly, since SDPA never forms the
pattern. Without attention sites, HF's kernel runs untouched. No weights are
converted and the modules are unmodified.

Hooks are found on the attention module itself, in the attribute
``_mechscope_attn`` (a dict from "q", "k", "v", "pattern", "z" to a callable
taking and returning the tensor in site layout), set and removed by
`core.hooks.HookSession`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import (
    ALL_MASK_ATTENTION_FUNCTIONS,
    AttentionMaskInterface,
    eager_mask,
)

NAME = "mechscope"
HOOK_ATTR = "_mechscope_attn"
PREVIOUS_ATTR = "_mechscope_previous"  # on a config: the implementation a session replaced
# previous implementations whose masks mechscope's attention reads (flash kernels take another form)
_DELEGATED = ("sdpa", "eager")


def previous_of(config: object) -> str | None:
    """The attention implementation a session switched away from, when mechscope can keep it.

    Example: ``previous_of(model.hf.config)`` → None outside a run; ``"sdpa"`` during a run that
    saves ``attn.*`` sites of a model loaded with SDPA.
    """
    previous = getattr(config, PREVIOUS_ATTR, None)
    return previous if previous in _DELEGATED else None


def _repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """[batch, kv_head, pos, d_head] -> [batch, kv_head * n_rep, pos, d_head]."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def mechscope_attention(
    module: nn.Module,
    query: Float[Tensor, "batch head q_pos d_head"],
    key: Float[Tensor, "batch kv_head k_pos d_head"],
    value: Float[Tensor, "batch kv_head k_pos d_head"],
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: object,
) -> tuple[
    Float[Tensor, "batch q_pos head d_head"], Float[Tensor, "batch head q_pos k_pos"] | None
]:
    """Attention with hook points; returns (z [batch, q_pos, head, d_head], pattern or None).

    HF's attention modules call it once ``_attn_implementation`` is ``"mechscope"``.

    Example::

        q = k = v = torch.randn(1, 4, 5, 8)                  # [batch head pos d_head]
        z, pattern = mechscope_attention(model.hf.model.layers[0].self_attn, q, k, v, None)
        z.shape, pattern.shape                               # [1, 5, 4, 8], [1, 4, 5, 5]
    """
    hooks: dict[str, Callable[[Tensor], Tensor]] = getattr(module, HOOK_ATTR, None) or {}
    previous = previous_of(getattr(module, "config", None))
    sdpa_ok = previous == "sdpa" and softcap is None and "pattern" not in hooks
    if sdpa_ok and not hooks:  # a layer without sites: exactly what the model ran before
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError(
            "attention sinks (s_aux) are not supported by mechscope's attention"
        )
    # site layout puts positions before heads: [batch, pos, head, d_head]
    if "q" in hooks:
        query = hooks["q"](query.transpose(1, 2)).transpose(1, 2)
    if "k" in hooks:
        key = hooks["k"](key.transpose(1, 2)).transpose(1, 2)
    if "v" in hooks:
        value = hooks["v"](value.transpose(1, 2)).transpose(1, 2)
    if sdpa_ok:  # q/k/v/z only: the fast kernel between the hook points
        z, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
        return (hooks["z"](z) if "z" in hooks else z), None
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_rep = query.shape[1] // key.shape[1]
    key_states = _repeat_kv(key, n_rep)
    value_states = _repeat_kv(value, n_rep)

    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # [b, h, q, k]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None and getattr(module, "is_causal", True) and query.shape[2] > 1:
        # SDPA-style callers pass no mask and rely on causality: build it (queries are the last positions)
        q_len, k_len = query.shape[2], key_states.shape[2]
        future = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).triu(
            k_len - q_len + 1
        )
        scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        mask = attention_mask[:, :, :, : key_states.shape[-2]]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    pattern = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if "pattern" in hooks:
        pattern = hooks["pattern"](pattern)
    pattern_used = nn.functional.dropout(pattern, p=dropout, training=module.training)
    z = torch.matmul(pattern_used, value_states).transpose(1, 2)  # [b, q, h, d]
    if "z" in hooks:
        z = hooks["z"](z)
    return z.contiguous(), pattern


def mechscope_mask(*args: object, config: object = None, **kwargs: object) -> Tensor | None:
    """The mask of the implementation a session replaced (SDPA's or eager's), else eager's.

    Example: ``ALL_MASK_ATTENTION_FUNCTIONS["mechscope"] is mechscope_mask`` → True (from
    ``transformers.masking_utils``, once `register` ran).
    """
    previous = previous_of(config)
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS[previous] if previous else eager_mask
    return mask_fn(*args, config=config, **kwargs)


def register() -> None:
    """Make ``"mechscope"`` a valid ``_attn_implementation`` (attention and its mask).

    Example: ``register(); AttentionInterface()["mechscope"] is mechscope_attention`` → True
    (importing this module already registers it).
    """
    AttentionInterface.register(NAME, mechscope_attention)
    AttentionMaskInterface.register(NAME, mechscope_mask)


register()
