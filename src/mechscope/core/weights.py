"""Reading a transformer's weights in one convention, whatever the family stores.

``nn.Linear`` keeps its weight as [out, in]; GPT-2's ``Conv1D`` as [in, out].
Everything here returns [in, out], so ``x @ W`` is the layer's map, and splits
the attention projections by head. Norms are read as the adapter declares them
(RMS or Layer norm; Gemma's scale is 1 + weight), never guessed from outputs:
`frozen_norm` is a norm as a linear map with its denominator frozen at one
input, which is what direct logit attribution and attribution graphs need.
The lens, circuit discovery and the weight-based circuits all read weights
through these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..errors import InputError
from .adapters import Adapter
from .model import Model


def resident(model: Model, what: str) -> None:
    """Fail in one line when `what` would read weights that a dispatched model keeps offloaded.

    With accelerate's disk or CPU offload the parameters are ``meta`` tensors
    until a forward needs them: forwards, interventions and gradients work,
    but a technique that reads the weight matrices themselves cannot.

    Example: ``resident(model, "the OV circuit")`` → None, or InputError for a model loaded with
    ``device_map`` offloading to disk.
    """
    if model.offloaded:
        raise InputError(
            f"{what} reads the weight matrices, and {model.name} keeps some offloaded "
            "(device_map with 'disk' or CPU offload: they exist only inside a forward); "
            "load it onto devices that hold every weight (device= or a device_map without 'disk')"
        )


def in_out(module: nn.Module) -> Float[Tensor, "d_in d_out"]:
    """A projection's weight as [in, out] (a view: still attached to the module's parameter).

    Example: ``in_out(model.hf.lm_head).shape`` → [d_model, vocab] (an nn.Linear's weight,
    transposed).
    """
    weight = module.weight
    if not isinstance(weight, Tensor):
        raise InputError(f"{type(module).__name__} has no weight matrix")
    return weight.T if isinstance(module, nn.Linear) else weight


def _adapter(model: Model) -> Adapter:
    if model.adapter is None or model.dims is None:
        raise InputError("reading weights needs a transformer language model of a known family")
    return model.adapter


def block_module(model: Model, layer: int, path: str) -> nn.Module:
    """The module at block-relative `path` (``"self_attn.o_proj"``) of block `layer`.

    Example: ``block_module(model, 3, "self_attn.o_proj")`` → block 3's output projection (an
    nn.Linear on Llama-family models).
    """
    adapter = _adapter(model)
    assert model.dims is not None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InputError(f"layer must be an integer, got {layer!r}")
    if not 0 <= layer < model.dims.n_layers:
        raise InputError(f"layer {layer} out of range: the model has {model.dims.n_layers} blocks")
    return model.hf.get_submodule(f"{adapter.layers}.{layer}.{path}")


def _layer_module(model: Model, layer: int, part: str) -> nn.Module:
    """The module at adapter path `part` (``attn_proj``, ``mlp_down``) of block `layer`."""
    return block_module(model, layer, getattr(_adapter(model), part))


# --- embedding, unembedding, final norm ----------------------------------------------


def embedding(model: Model) -> Float[Tensor, "vocab d_model"]:
    """W_E, the token embedding matrix (a view of the parameter).

    Example::

        embedding(model)[model.to_single_token(" Paris")]   # [d_model]
    """
    return model.hf.get_submodule(_adapter(model).embed).weight


def unembedding(model: Model) -> Float[Tensor, "d_model vocab"]:
    """W_U as [d_model, vocab] (a view): ``final_norm(x) @ W_U`` are the logits (plus any bias).

    Example: ``unembedding(model)[:, model.to_single_token(" Paris")]`` → [d_model], the " Paris"
    logit's direction.
    """
    return in_out(model.hf.get_submodule(_adapter(model).unembed))


def unembedding_bias(model: Model) -> Float[Tensor, " vocab"] | None:
    """The unembedding's bias, or None (most families have none).

    Example: ``unembedding_bias(model)`` → None for SmolLM2 (a Llama-family model).
    """
    return getattr(model.hf.get_submodule(_adapter(model).unembed), "bias", None)


NormName = Literal["attn", "mlp", "attn_out", "mlp_out", "final"]


def has_post_norms(model: Model) -> bool:
    """Whether the attention and MLP outputs pass a norm before the residual add (Gemma 2/3).

    Those norms are ``norm_module(model, "attn_out", layer)`` and ``"mlp_out"``;
    their outputs are the ``attn.out`` and ``mlp.out`` sites.

    Example: ``has_post_norms(model)`` → False for SmolLM2; True for Gemma 3
    (``tiny_model("gemma3")``).
    """
    return _adapter(model).post_norms


def norm_module(model: Model, which: NormName, layer: int | None = None) -> nn.Module:
    """A norm of block `layer`, or the ``"final"`` norm.

    ``"attn"`` and ``"mlp"`` are the pre-norms reading the residual stream;
    ``"attn_out"`` and ``"mlp_out"`` the post-norms on the sublayer outputs,
    on families that have them (`has_post_norms`).

    Example::

        norm_module(model, "final")(resid)          # the final norm's output
    """
    adapter = _adapter(model)
    if which == "final":
        return model.hf.get_submodule(adapter.final_norm)
    paths = {
        "attn": adapter.attn_norm,
        "mlp": adapter.mlp_norm,
        "attn_out": adapter.attn_out,
        "mlp_out": adapter.mlp_out,
    }
    if which not in paths or layer is None:
        raise InputError(
            f"norm must be 'final', or 'attn'/'mlp'/'attn_out'/'mlp_out' with a layer; got {which!r}"
        )
    if which in ("attn_out", "mlp_out") and not adapter.post_norms:
        raise InputError(
            f"{adapter.family} adds the attention and MLP outputs to the residual stream "
            f"directly: it has no {which!r} norm"
        )
    return block_module(model, layer, paths[which])


def norm_scale(
    model: Model, which: NormName, layer: int | None = None
) -> Float[Tensor, " d_model"]:
    """The scale a norm multiplies by: its weight (plus 1 on Gemma), detached, float32.

    Example::

        norm_scale(model, "final")            # [d_model]
        norm_scale(model, "mlp", layer=3)
    """
    module = norm_module(model, which, layer)
    weight = getattr(module, "weight", None)
    assert model.dims is not None
    if weight is None:  # a norm without a learned scale
        return torch.ones(model.dims.d_model)
    return weight.detach().float() + _adapter(model).norm_offset


def norm_bias(model: Model, which: NormName, layer: int | None = None) -> Tensor | None:
    """A LayerNorm's bias (detached, float32), or None.

    Example: ``norm_bias(model, "final")`` → None for an RMS norm (SmolLM2); [d_model] for GPT-2's
    ``ln_f``.
    """
    bias = getattr(norm_module(model, which, layer), "bias", None)
    return None if bias is None else bias.detach().float()


def _eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, float):
            return value
    return 1e-6


def frozen_norm(
    model: Model,
    which: NormName,
    at: Float[Tensor, "*batch d_model"],
    layer: int | None = None,
) -> Callable[[Tensor], Tensor]:
    """The norm as a linear map, its denominator frozen at `at` (same leading shape).

    RMS norm: x ↦ x · scale / rms(at); Layer norm: x ↦ (x − mean x) · scale / std(at).
    The Layer norm's bias is a constant and left out (`norm_bias`). Applied to
    `at` itself (plus the bias) it gives the module's own output.

    Example::

        f = frozen_norm(model, "final", resid[:, -1])
        dla = f(head_out) @ unembedding(model)       # each head's direct effect on the logits
    """
    adapter = _adapter(model)
    module = norm_module(model, which, layer)
    scale = norm_scale(model, which, layer).to(at.device)
    eps = _eps(module)
    x = at.float()
    if adapter.norm == "layer":
        centred = x - x.mean(-1, keepdim=True)
        gain = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * scale
        return lambda v: ((v.float() - v.float().mean(-1, keepdim=True)) * gain).to(v.dtype)
    gain = (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt() * scale
    return lambda v: (v.float() * gain).to(v.dtype)


# --- attention and MLP matrices ------------------------------------------------------


@dataclass(frozen=True)
class HeadWeights:
    """One layer's attention weights, split by (query) head, as [in, out] per head.

    Key and value heads shared by several query heads (grouped-query attention)
    are repeated, so index h is query head h's.

    Example: ``attention_weights(model, 3).q[1]`` → [d_model, d_head], head L3H1's W_Q.
    """

    q: Float[Tensor, "head d_model d_head"]
    k: Float[Tensor, "head d_model d_head"]
    v: Float[Tensor, "head d_model d_head"]
    o: Float[Tensor, "head d_head d_model"]


def attention_weights(model: Model, layer: int) -> HeadWeights:
    """W_Q, W_K, W_V, W_O of `layer` by head, detached, float32 (no norm scale folded in).

    Example::

        w = attention_weights(model, 3)
        ov = w.v[1] @ w.o[1]                  # head L3H1's OV circuit [d_model d_model]
    """
    adapter = _adapter(model)
    d = model.dims
    assert d is not None
    mats = [in_out(block_module(model, layer, p)).detach().float() for p in adapter.qkv]
    if adapter.qkv_layout == "separate":
        q, k, v = mats
    elif adapter.qkv_layout == "concat":  # [d_model, q | k | v]
        q, k, v = mats[0].split([d.n_heads * d.d_head, *(2 * [d.n_kv_heads * d.d_head])], dim=1)
    else:  # per_head: [d_model, head · (q k v) · d_head]
        qkv = mats[0].reshape(d.d_model, d.n_heads, 3, d.d_head)
        q, k, v = (qkv[:, :, i].reshape(d.d_model, -1) for i in range(3))
    o, _ = output_projection(model, layer)
    group = d.n_heads // d.n_kv_heads

    def heads(w: Tensor, n: int) -> Tensor:  # [d_model n·d_head] -> [head d_model d_head]
        per = w.reshape(d.d_model, n, d.d_head).permute(1, 0, 2)
        return per.repeat_interleave(group, dim=0) if n != d.n_heads else per

    return HeadWeights(
        heads(q, d.n_heads),
        heads(k, d.n_kv_heads),
        heads(v, d.n_kv_heads),
        o.detach().float(),
    )


def mlp_weights(
    model: Model, layer: int
) -> tuple[dict[str, Float[Tensor, "d_model d_mlp"]], Float[Tensor, "d_mlp d_model"]]:
    """The MLP's input matrices ({"gate", "up"} for gated MLPs, else {"in"}) and W_out,
    detached, float32.

    Example::

        ins, w_out = mlp_weights(model, 3)
    """
    adapter = _adapter(model)
    mats = [in_out(block_module(model, layer, p)).detach().float() for p in adapter.mlp_in]
    ins = dict(zip(("gate", "up"), mats, strict=True)) if adapter.mlp_gated else {"in": mats[0]}
    w_out, _ = mlp_down_projection(model, layer)
    return ins, w_out.detach().float()


def output_projection(
    model: Model, layer: int
) -> tuple[Float[Tensor, "head d_head d_model"], Float[Tensor, " d_model"] | None]:
    """W_O split by head, and its bias (or None): ``z[..., h, :] @ W_O[h]`` is head h's write.

    Example::

        w_o, b_o = output_projection(model, 3)         # [head, d_head, d_model], None on Llama
        cache["blocks.3.attn.z"][:, -1, 1] @ w_o[1]    # head L3H1's write at the last position
    """
    proj = _layer_module(model, layer, "attn_proj")
    d = model.dims
    assert d is not None
    w = in_out(proj)
    if tuple(w.shape) != (d.n_heads * d.d_head, d.d_model):
        raise InputError(
            f"cannot split the output projection {type(proj).__name__} of layer {layer} by head: "
            f"its weight is {tuple(w.shape)} as [in, out], not ({d.n_heads * d.d_head}, {d.d_model})"
        )
    return w.reshape(d.n_heads, d.d_head, d.d_model), getattr(proj, "bias", None)


def mlp_down_projection(
    model: Model, layer: int
) -> tuple[Float[Tensor, "d_mlp d_model"], Float[Tensor, " d_model"] | None]:
    """The MLP's output projection as [d_mlp, d_model], and its bias (or None).

    Example::

        w, b = mlp_down_projection(model, 3)            # [d_mlp, d_model], None on Llama
        cache["blocks.3.mlp.post"] @ w                  # == cache["blocks.3.mlp.out"] there
    """
    proj = _layer_module(model, layer, "mlp_down")
    return in_out(proj), getattr(proj, "bias", None)
