"""Circuits in a language model's weights: OV and QK circuits, virtual weights.

Every component reads the residual stream through a norm and writes to it
directly, so the weight-based connection between two components is a
product of their matrices (Elhage et al. 2021): head h's OV circuit
``W_V[h] W_O[h]``, its QK circuit ``W_Q[h] W_K[h]ᵀ``, and the *virtual
weight* from neuron i (layer l) to neuron j (layer l' > l):
``W_out[l][i] · (g ⊙ W_in[l'][:, j])``. The reading norm's scale g is folded
in; its per-token division (and LayerNorm's centring) and RoPE's rotation
are not in the weights and are left out, as in the paper. The matrices and
norm scales come from `mechscope.core.weights` (Gemma's scale is 1 + w).

Shapes: W_Q, W_K, W_V [head d_model d_head] (grouped K/V heads repeated to
one per query head), W_O [head d_head d_model], MLP inputs [d_model d_mlp],
W_out [d_mlp d_model].
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.model import Model
from ..core.weights import (
    attention_weights,
    embedding,
    has_post_norms,
    mlp_weights,
    norm_scale,
    resident,
    unembedding,
)
from ..errors import InputError, MechscopeError
from .results import NeuronWiring


def _need(model: Model) -> int:
    """The number of layers, once the model is one whose weights compose as matrix products."""
    if model.adapter is None or model.dims is None:
        raise InputError("weight circuits need a transformer with known sites")
    resident(model, "weight circuits")
    if has_post_norms(model):
        raise MechscopeError(
            f"weight circuits read models whose sublayers write to the residual stream directly; "
            f"{model.adapter.family} norms the sublayer outputs before the residual add, so its "
            "virtual weights are not a matrix product"
        )
    return model.dims.n_layers


def _layer(model: Model, layer: int) -> None:
    n = _need(model)
    if not 0 <= layer < n:
        raise InputError(f"layer {layer} is out of range; the model has layers 0–{n - 1}")


def _head(model: Model, layer: int, head: int) -> None:
    _layer(model, layer)
    assert model.dims is not None
    if not 0 <= head < model.dims.n_heads:
        raise InputError(
            f"head {head} is out of range; layers have heads 0–{model.dims.n_heads - 1}"
        )


def ov_circuit(model: Model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """x ↦ x·OV is what head `head` writes for a (normed) source vector x it fully attends to.

    Example: ``x @ ov_circuit(model, 3, 1)`` → [d_model], what head L3H1 writes for x.
    """
    _head(model, layer, head)
    w = attention_weights(model, layer)
    g = norm_scale(model, "attn", layer)
    return (g[:, None] * w.v[head]) @ w.o[head]


def qk_circuit(model: Model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """The bilinear form of the attention score: x_q · QK · x_kᵀ (before RoPE and 1/√d_head).

    Example: ``x_q @ qk_circuit(model, 3, 1) @ x_k`` → L3H1's score of key x_k for query x_q.
    """
    _head(model, layer, head)
    w = attention_weights(model, layer)
    g = norm_scale(model, "attn", layer)
    return (g[:, None] * w.q[head]) @ (g[:, None] * w.k[head]).T


# ---------------------------------------------------------------------------- tokens


def _embed_unembed(model: Model) -> tuple[Tensor, Tensor]:
    """Token embeddings centred and scaled to unit RMS, as a norm sees them [vocab d_model],
    and the unembedding with the final norm's scale folded in [d_model vocab].

    The mean embedding is removed first: it is common to every token, and
    through a late head's OV it lifts the same few junk tokens for every
    source (in SmolLM2 " setattr", " cfg"), hiding what the head does per token.
    """
    _need(model)
    e = embedding(model).detach().float()
    e = e - e.mean(0)
    e = e / e.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-6)
    u = unembedding(model).detach().float()  # [d_model vocab]
    return e, norm_scale(model, "final")[:, None] * u


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
    attends to that token (embedding → OV → unembedding).

    Example: ``token_ov(model, 3, 1, [" Paris", " cat"], k=5)[" Paris"]`` → [(token, logit), …].
    """
    e, u = _embed_unembed(model)
    ov = ov_circuit(model, layer, head)
    ids = _ids(model, tokens)
    logits = e[ids] @ ov @ u  # [n vocab]
    return {_token(model, i): _top(model, row, k) for i, row in zip(ids, logits, strict=True)}


def token_qk(
    model: Model, layer: int, head: int, tokens: list[str] | list[int], k: int = 8
) -> dict[str, list[tuple[str, float]]]:
    """For each query token, the key tokens head `head` attends to most (embeddings only).

    Example: ``token_qk(model, 3, 1, [" Paris", " cat"], k=5)[" cat"]`` → [(key, score), …].
    """
    e, _ = _embed_unembed(model)
    qk = qk_circuit(model, layer, head)
    ids = _ids(model, tokens)
    scores = e[ids] @ qk @ e.T  # [n vocab]
    return {_token(model, i): _top(model, row, k) for i, row in zip(ids, scores, strict=True)}


def copying_scores(model: Model) -> Float[Tensor, "layer head"]:
    """Elhage et al.'s copying score of every head: Σ positive eigenvalues / Σ |eigenvalues| of
    the full OV circuit embedding → OV → unembedding (1: the head copies the tokens it reads).

    The nonzero eigenvalues of E·V·O·U (vocab × vocab) are those of O·(U·E)·V (d_head × d_head).

    Example: ``copying_scores(model)`` → [layer head] in [0, 1]; 1 for a head that copies.
    """
    n = _need(model)
    e, u = _embed_unembed(model)
    ue = u @ e  # [d_model d_model]
    assert model.dims is not None
    out = torch.zeros(n, model.dims.n_heads)
    for layer in range(n):
        w = attention_weights(model, layer)
        g = norm_scale(model, "attn", layer)
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
    key or value side (Elhage et al. 2021). Heads of `layer` and later score 0.

    Example: ``composition_scores(model, 5, 1)["k"]`` → [layer head], K-composition into L5H1.
    """
    _head(model, layer, head)
    assert model.dims is not None
    g = norm_scale(model, "attn", layer)
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
        v2 = norm_scale(model, "attn", earlier)[None, :, None] * p.v  # [head d_model r]
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

    Example: ``neuron_wiring(model, 3, 100, k=5).logits_up`` → the 5 tokens L3N100 raises most.
    """
    _layer(model, layer)
    ins, w_out = mlp_weights(model, layer)
    via = via or next(iter(ins))
    if via not in ins:
        raise InputError(f"via must be one of {', '.join(ins)} for this model, got {via!r}")
    if not 0 <= neuron < w_out.shape[0]:
        raise InputError(
            f"neuron {neuron} is out of range; layers have neurons 0–{w_out.shape[0] - 1}"
        )
    assert model.dims is not None
    read = norm_scale(model, "mlp", layer) * ins[via][:, neuron]  # [d_model]
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
