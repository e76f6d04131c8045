"""Circuits in a language model's weights: OV and QK circuits, virtual weights.

Every component reads the residual stream through a norm and writes to it
directly, so the weight-based connection between two components is a
product of their matrices (Elhage et al. 2021): head h's OV circuit
``W_V[h] W_O[h]``, its QK circuit ``W_Q[h] W_K[h]ᵀ``, and the *virtual
weight* from neuron i (layer l) to neuron j (layer l' > l):
``W_out[l][i] · (g ⊙ W_in[l'][:, j])``. The reading norm's scale g is folded
in; its per-token division (and LayerNorm's centring) and RoPE's rotation
are not in the weights and are left out, as in the paper.

Shapes: W_Q, W_K, W_V [head d_model d_head] (grouped K/V heads repeated to
one per query head), W_O [head d_head d_model], MLP inputs [d_model d_mlp],
W_out [d_mlp d_model].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.model import Model
from ..core.weights import in_out, resident
from ..errors import InputError, MechscopeError
from .results import NeuronWiring

FAMILIES = ("llama", "gpt2", "gpt_neox")


def _need(model: Model) -> tuple[str, int]:
    if model.adapter is None or model.dims is None:
        raise InputError("weight circuits need a transformer with known sites")
    resident(model, "weight circuits")
    family = model.adapter.family
    if family not in FAMILIES:
        raise MechscopeError(
            f"weight circuits read {', '.join(FAMILIES)} layouts; {family} norms the sublayer "
            "outputs before the residual add, so its virtual weights are not a matrix product"
        )
    return family, model.dims.n_layers


def _layer(model: Model, layer: int) -> nn.Module:
    _, n = _need(model)
    if not 0 <= layer < n:
        raise InputError(f"layer {layer} is out of range; the model has layers 0–{n - 1}")
    assert model.adapter is not None
    return model.hf.get_submodule(f"{model.adapter.layers}.{layer}")


def _in_out(module: nn.Module) -> Tensor:
    """A projection's weight as [in, out], detached, in float32."""
    return in_out(module).detach().float()


@dataclass
class HeadWeights:
    """One layer's attention weights, split by (query) head."""

    q: Float[Tensor, "head d_model d_head"]
    k: Float[Tensor, "head d_model d_head"]
    v: Float[Tensor, "head d_model d_head"]
    o: Float[Tensor, "head d_head d_model"]


def norm_scale(model: Model, layer: int | None, which: str) -> Float[Tensor, " d_model"]:
    """The scale g of the norm in front of ``"attn"`` or ``"mlp"`` of `layer` (``layer=None``: final)."""
    family, _ = _need(model)
    assert model.adapter is not None
    if layer is None:
        norm = model.hf.get_submodule(model.adapter.final_norm)
    else:
        names = {"gpt2": ("ln_1", "ln_2")}.get(
            family, ("input_layernorm", "post_attention_layernorm")
        )
        if which not in ("attn", "mlp"):
            raise InputError(f"which must be 'attn' or 'mlp', got {which!r}")
        norm = _layer(model, layer).get_submodule(names[which == "mlp"])
    return norm.weight.detach().float()


def attention_weights(model: Model, layer: int) -> HeadWeights:
    """W_Q, W_K, W_V, W_O of `layer` by head (the reading norm's scale not yet folded in)."""
    family, _ = _need(model)
    assert model.dims is not None
    d = model.dims
    block = _layer(model, layer)
    if family == "llama":
        attn = block.get_submodule("self_attn")
        q, k, v = (_in_out(attn.get_submodule(f"{n}_proj")) for n in "qkv")
        o = _in_out(attn.get_submodule("o_proj"))
    elif family == "gpt2":
        attn = block.get_submodule("attn")
        q, k, v = _in_out(attn.get_submodule("c_attn")).split(d.d_model, dim=1)
        o = _in_out(attn.get_submodule("c_proj"))
    else:  # gpt_neox: fused [d_model, head·(q k v)·d_head]
        attn = block.get_submodule("attention")
        qkv = _in_out(attn.get_submodule("query_key_value")).reshape(
            d.d_model, d.n_heads, 3, d.d_head
        )
        q, k, v = (qkv[:, :, i].reshape(d.d_model, -1) for i in range(3))
        o = _in_out(attn.get_submodule("dense"))
    group = d.n_heads // d.n_kv_heads

    def heads(w: Tensor, n: int) -> Tensor:  # [d_model n·d_head] -> [head d_model d_head]
        per = w.reshape(d.d_model, n, d.d_head).permute(1, 0, 2)
        return per.repeat_interleave(group, dim=0) if n != d.n_heads else per

    return HeadWeights(heads(q, d.n_heads), heads(k, d.n_kv_heads), heads(v, d.n_kv_heads),
                       o.reshape(d.n_heads, d.d_head, d.d_model))  # fmt: skip


def mlp_weights(model: Model, layer: int) -> tuple[dict[str, Tensor], Tensor]:
    """The MLP's input matrices ({"gate", "up"} for gated MLPs, else {"in"}: each [d_model d_mlp])
    and its output matrix W_out [d_mlp d_model]."""
    family, _ = _need(model)
    mlp = _layer(model, layer).get_submodule("mlp")
    if family == "llama":
        ins = {
            "gate": _in_out(mlp.get_submodule("gate_proj")),
            "up": _in_out(mlp.get_submodule("up_proj")),
        }
        return ins, _in_out(mlp.get_submodule("down_proj"))
    if family == "gpt2":
        return {"in": _in_out(mlp.get_submodule("c_fc"))}, _in_out(mlp.get_submodule("c_proj"))
    return {"in": _in_out(mlp.get_submodule("dense_h_to_4h"))}, _in_out(
        mlp.get_submodule("dense_4h_to_h")
    )


def _head(model: Model, layer: int, head: int) -> None:
    assert model.dims is not None
    if not 0 <= head < model.dims.n_heads:
        raise InputError(
            f"head {head} is out of range; layers have heads 0–{model.dims.n_heads - 1}"
        )


def ov_circuit(model: Model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """x ↦ x·OV is what head `head` writes for a (normed) source vector x it fully attends to."""
    _head(model, layer, head)
    w = attention_weights(model, layer)
    g = norm_scale(model, layer, "attn")
    return (g[:, None] * w.v[head]) @ w.o[head]


def qk_circuit(model: Model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """The bilinear form of the attention score: x_q · QK · x_kᵀ (before RoPE and 1/√d_head)."""
    _head(model, layer, head)
    w = attention_weights(model, layer)
    g = norm_scale(model, layer, "attn")
    return (g[:, None] * w.q[head]) @ (g[:, None] * w.k[head]).T


# ---------------------------------------------------------------------------- tokens


def _embed_unembed(model: Model) -> tuple[Tensor, Tensor]:
    """Token embeddings centred and scaled to unit RMS, as a norm sees them [vocab d_model],
    and the unembedding with the final norm's scale folded in [d_model vocab].

    The mean embedding is removed first: it is common to every token, and
    through a late head's OV it lifts the same few junk tokens for every
    source (in SmolLM2 " setattr", " cfg"), hiding what the head does per token.
    """
    assert model.adapter is not None
    e = model.hf.get_submodule(model.adapter.embed).weight.detach().float()
    e = e - e.mean(0)
    e = e / e.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
    u = _in_out(model.hf.get_submodule(model.adapter.unembed))  # [d_model vocab]
    return e, norm_scale(model, None, "final")[:, None] * u


def _ids(model: Model, tokens: list[str] | list[int]) -> list[int]:
    ids = []
    for t in tokens:
        ids.append(t if isinstance(t, int) else model.to_single_token(t))
    return ids


def _token(model: Model, i: int) -> str:
    return model.tokenizer.decode([i]) if model.tokenizer is not None else str(i)


def _top(model: Model, scores: Tensor, k: int) -> list[tuple[str, float]]:
    values, idx = scores.topk(k)
    return [(_token(model, int(i)), float(v)) for v, i in zip(values, idx, strict=True)]


def token_ov(
    model: Model, layer: int, head: int, tokens: list[str] | list[int], k: int = 8
) -> dict[str, list[tuple[str, float]]]:
    """For each source token, the output tokens whose logits head `head` raises most when it
    attends to that token (embedding → OV → unembedding)."""
    e, u = _embed_unembed(model)
    ov = ov_circuit(model, layer, head)
    ids = _ids(model, tokens)
    logits = e[ids] @ ov @ u  # [n vocab]
    return {_token(model, i): _top(model, row, k) for i, row in zip(ids, logits, strict=True)}


def token_qk(
    model: Model, layer: int, head: int, tokens: list[str] | list[int], k: int = 8
) -> dict[str, list[tuple[str, float]]]:
    """For each query token, the key tokens head `head` attends to most (embeddings only)."""
    e, _ = _embed_unembed(model)
    qk = qk_circuit(model, layer, head)
    ids = _ids(model, tokens)
    scores = e[ids] @ qk @ e.T  # [n vocab]
    return {_token(model, i): _top(model, row, k) for i, row in zip(ids, scores, strict=True)}


def copying_scores(model: Model) -> Float[Tensor, "layer head"]:
    """Elhage et al.'s copying score of every head: Σ positive eigenvalues / Σ |eigenvalues| of
    the full OV circuit embedding → OV → unembedding (1: the head copies the tokens it reads).

    The nonzero eigenvalues of E·V·O·U (vocab × vocab) are those of O·(U·E)·V (d_head × d_head).
    """
    family, n = _need(model)
    e, u = _embed_unembed(model)
    ue = u @ e  # [d_model d_model]
    assert model.dims is not None
    out = torch.zeros(n, model.dims.n_heads)
    for layer in range(n):
        w = attention_weights(model, layer)
        g = norm_scale(model, layer, "attn")
        small = w.o @ ue @ (g[:, None] * w.v)  # [head d_head d_head]
        eig = torch.linalg.eigvals(small.double())
        out[layer] = (eig.real.clamp(min=0).sum(-1) / eig.abs().sum(-1).clamp(min=1e-12)).float()
    return out


# ---------------------------------------------------------------------------- composition


def _fro(a: Tensor, c: Tensor, b: Tensor) -> Tensor:
    """‖A·C·Bᵀ‖_F for thin A [.. d r1], C [.. r1 r2], B [.. d r2], through r×r Gram matrices."""
    ga, gb = a.transpose(-1, -2) @ a, b.transpose(-1, -2) @ b
    return torch.einsum("...ij,...ik,...kl,...jl->...", c, ga, c, gb).clamp(min=0).sqrt()


def composition_scores(
    model: Model, layer: int, head: int
) -> dict[str, Float[Tensor, "layer head"]]:
    """Q-, K- and V-composition of every earlier head into head (`layer`, `head`):
    ‖M₁M₂‖_F / (‖M₁‖_F ‖M₂‖_F) with the earlier head's OV circuit feeding this head's query,
    key or value side (Elhage et al. 2021). Heads of `layer` and later score 0."""
    _head(model, layer, head)
    assert model.dims is not None
    g = norm_scale(model, layer, "attn")
    w = attention_weights(model, layer)
    wq, wk, wv = (g[:, None] * m[head] for m in (w.q, w.k, w.v))  # [d_model d_head]
    wo = w.o[head]
    out = {s: torch.zeros(model.dims.n_layers, model.dims.n_heads) for s in "qkv"}
    r = wq.shape[1]
    eye = torch.eye(r, dtype=wq.dtype, device=wq.device)
    qk_norm, ov_norm = _fro(wq, eye, wk), _fro(wv, eye, wo.T)
    n_heads = model.dims.n_heads

    def each(m: Tensor) -> Tensor:  # one copy per earlier head
        return m.expand(n_heads, *m.shape)

    for earlier in range(layer):
        p = attention_weights(model, earlier)
        v2 = norm_scale(model, earlier, "attn")[None, :, None] * p.v  # [head d_model r]
        o2t = p.o.transpose(-1, -2)  # [head d_model r]: the earlier OV is v2 · o2tᵀ
        earlier_norm = _fro(v2, each(eye), o2t)

        # Q: (V'O')(W_Q W_Kᵀ) = V'(O'W_Q)W_Kᵀ   K: (W_Q W_Kᵀ)(V'O')ᵀ = W_Q(W_Kᵀ O'ᵀ)V'ᵀ
        # V: (V'O')(W_V W_O) = V'(O'W_V)W_O
        q = _fro(v2, o2t.transpose(-1, -2) @ wq, each(wk))
        k = _fro(each(wq), wk.T @ o2t, v2)
        v = _fro(v2, o2t.transpose(-1, -2) @ wv, each(wo.T))
        out["q"][earlier] = q / (earlier_norm * qk_norm)
        out["k"][earlier] = k / (earlier_norm * qk_norm)
        out["v"][earlier] = v / (earlier_norm * ov_norm)
    return out


# ---------------------------------------------------------------------------- neurons


def neuron_wiring(
    model: Model, layer: int, neuron: int, *, via: str | None = None, k: int = 10
) -> NeuronWiring:
    """Virtual weights into MLP neuron (`layer`, `neuron`) from every earlier neuron and head,
    the tokens it reads from the embedding, and the logits it writes.

    `via` picks the input matrix of gated MLPs: ``"gate"`` (default: whether the
    neuron fires) or ``"up"``; plain MLPs have ``"in"``.
    """
    ins, w_out = mlp_weights(model, layer)
    via = via or next(iter(ins))
    if via not in ins:
        raise InputError(f"via must be one of {', '.join(ins)} for this model, got {via!r}")
    if not 0 <= neuron < w_out.shape[0]:
        raise InputError(
            f"neuron {neuron} is out of range; layers have neurons 0–{w_out.shape[0] - 1}"
        )
    assert model.dims is not None
    read = norm_scale(model, layer, "mlp") * ins[via][:, neuron]  # [d_model]
    neurons = torch.zeros(model.dims.n_layers, model.dims.d_mlp)
    heads = torch.zeros(model.dims.n_layers, model.dims.n_heads)
    for earlier in range(layer + 1):
        heads[earlier] = (attention_weights(model, earlier).o @ read).norm(dim=-1)
        if earlier < layer:
            neurons[earlier] = mlp_weights(model, earlier)[1] @ read
    e, u = _embed_unembed(model)
    writes = w_out[neuron] @ u  # [vocab]
    return NeuronWiring(layer, neuron, via, neurons, heads, embed=_top(model, e @ read, k),
                        logits_up=_top(model, writes, k), logits_down=_top(model, -writes, k))  # fmt: skip
