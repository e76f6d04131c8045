"""Resuming a forward from one block and one token on, with the keys and values before it.

A captured run (`Model.capture`) records what each block received; `SuffixRunner`
also keeps that run's attention keys and values, so a forward can restart at
block L *and* token t: only positions t… are computed, attending to the
recorded keys and values before t. Causal tracing uses it for restorations
(nothing before the restored token changes). Only decoders whose blocks take
rotary ``position_embeddings`` and a ``cache`` qualify (Llama, Mistral, Qwen,
Gemma in transformers 5); `SuffixRunner.of` returns None for others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .interventions import Intervention
from .model import Model
from .resume import ForwardContext, _tile_batch
from .weights import norm_module


class SuffixRunner:
    """Runs blocks on the positions from t on, with the captured run's keys and values before t.

    Example::

        out, ctx = model.capture(ids)
        runner = SuffixRunner.of(model, ctx, ids, [])    # None if the blocks do not qualify
        runner.run(4, 2, out.cache["blocks.4.resid_pre"][:, 2:], [])   # [batch, vocab]
    """

    def __init__(self, model: Model, context: ForwardContext, kv: list[tuple[Tensor, Tensor]]):
        self.model, self.context, self.kv = model, context, kv

    @classmethod
    def of(
        cls, model: Model, context: ForwardContext, ids: Tensor, ivs: Sequence[Intervention]
    ) -> SuffixRunner | None:
        """Record the keys and values of `ids` run with `ivs` (the run `context` captured).

        None when the model's blocks do not qualify; callers then resume every position.
        """
        kw = context.kwargs[0] if context.kwargs else {}
        known = {"attention_mask", "position_embeddings", "position_ids", "cache", "use_cache"}
        impl = getattr(model.hf.config, "_attn_implementation", None)
        if (
            any(context.args)
            or not set(kw) <= known
            or "position_embeddings" not in kw
            or kw.get("attention_mask") is not None
            or impl not in ("sdpa", "eager")
        ):
            return None
        with model.hooks(ivs), torch.no_grad():
            out = model.hf(ids, use_cache=True)
        cache = out.get("cache") or out.get("past_key_values")
        layers = getattr(cache, "layers", None)
        if layers is None or len(layers) != len(context.kwargs):
            return None
        return cls(model, context, [(lay.keys, lay.values) for lay in layers])

    def run(
        self, first: int, t: int, resid: Float[Tensor, "rows pos d"], ivs: Sequence[Intervention]
    ) -> Float[Tensor, "rows vocab"]:
        """Blocks `first`… on positions t… of `resid`, then the last position's logits."""
        model, batch = self.model, self.context.batch
        tile = resid.shape[0] // batch
        blocks = model._blocks()
        q, kv = resid.shape[1], t + resid.shape[1]
        allowed = torch.ones(q, kv, dtype=torch.bool, device=resid.device).tril(t)
        if model.hf.config._attn_implementation == "eager":
            mask = torch.zeros(q, kv, dtype=resid.dtype, device=resid.device)
            mask = mask.masked_fill(~allowed, torch.finfo(resid.dtype).min)[None, None]
        else:
            mask = allowed[None, None]
        prefix = PrefixCache(
            {
                i: (k[:, :, :t].repeat(tile, 1, 1, 1), v[:, :, :t].repeat(tile, 1, 1, 1))
                for i, (k, v) in enumerate(self.kv)
                if i >= first
            }
        )
        final_norm = norm_module(model, "final")
        with model.hooks(ivs), torch.no_grad():
            h = resid
            for i in range(first, len(blocks)):
                kw = dict(self.context.kwargs[i])
                cos, sin = kw["position_embeddings"]
                kw["position_embeddings"] = (cos[:, t:], sin[:, t:])
                if kw.get("position_ids") is not None:
                    kw["position_ids"] = kw["position_ids"][:, t:]
                kw.update(attention_mask=mask, cache=prefix, use_cache=False)
                out = blocks[i](h, **_tile_batch(kw, batch, tile))
                h = out[0] if isinstance(out, tuple) else out
            return model.unembed(final_norm(h[:, -1:]))[:, -1]


class PrefixCache:
    """The one method of a transformers cache that attention calls: keys and values before t.

    Example: ``PrefixCache({0: (k, v)}).update(k_new, v_new, 0)`` → `k` then `k_new` and `v` then
    `v_new`, joined along positions ([batch, kv_head, pos, d_head]).
    """

    def __init__(self, kv: dict[int, tuple[Tensor, Tensor]]) -> None:
        self.kv = kv

    def update(
        self, key: Tensor, value: Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[Tensor, Tensor]:
        k, v = self.kv[layer_idx]
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)
