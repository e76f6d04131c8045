"""Sparse kernels for TopK SAE training: only the k selected latents cost anything past the encoder.

A dense TopK step does five [batch × width × d_in] matrix products (encoder
forward, decoder forward, and three in the backward). Here only the encoder's
forward is dense: the gradient of the pre-activations has k non-zeros per row,
so the encoder's weight gradient is a sparse-times-dense product, the decoder
is an embedding bag over the selected rows, and its gradients are a sparse
product and a sampled product (only the k needed dot products per row).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

_EMPTY = torch.empty(0)


def _rows(batch: int, k: int, device: torch.device) -> Tensor:
    return torch.arange(batch, device=device).repeat_interleave(k)


def _transpose_product(
    idx: Int[Tensor, "batch k"],
    values: Float[Tensor, "batch k"],
    dense: Float[Tensor, "batch d"],
    n: int,
) -> Float[Tensor, "n d"]:
    """Gᵀ · dense for the sparse G [batch, n] holding `values` at columns `idx` of each row."""
    batch, k = idx.shape
    with warnings.catch_warnings():  # "invariant checks are disabled": the indices are valid
        warnings.simplefilter("ignore", UserWarning)
        g = torch.sparse_coo_tensor(
            torch.stack([idx.reshape(-1), _rows(batch, k, idx.device)]),
            values.reshape(-1),
            (n, batch),
            check_invariants=False,
        )
    return torch.sparse.mm(g, dense)


class _TopKEncode(torch.autograd.Function):
    """(x, b_dec, W_enc, b_enc) → the k largest ReLU'd pre-activations per row and their indices.

    With a `dead` mask, also the `k_aux` largest pre-activations among dead latents
    (the AuxK loss of Gao et al. 2024). The gradient reaches only the selected latents.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        b_dec: Tensor,
        w_enc: Tensor,
        b_enc: Tensor,
        k: int,
        k_aux: int,
        dead: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        xc = x - b_dec
        pre = torch.addmm(b_enc, xc, w_enc)  # [batch, width]
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        vals = vals.relu()
        aux_vals, aux_idx = _EMPTY.to(x), _EMPTY.to(x.device, torch.long)
        if dead is not None and k_aux > 0:
            masked = pre.masked_fill_(~dead, float("-inf"))  # pre is not needed any more
            aux_vals, aux_idx = masked.topk(k_aux, dim=-1, sorted=False)
            aux_vals = aux_vals.relu()
        ctx.save_for_backward(xc, w_enc, idx, vals, aux_idx, aux_vals)
        ctx.mark_non_differentiable(idx, aux_idx)
        return vals, idx, aux_vals, aux_idx

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, g_vals: Tensor, _g_idx: Tensor, g_aux: Tensor, _g_aux_idx: Tensor
    ) -> tuple[Tensor | None, ...]:
        xc, w_enc, idx, vals, aux_idx, aux_vals = ctx.saved_tensors
        g = g_vals * (vals > 0)  # ReLU
        if aux_idx.numel():
            idx = torch.cat([idx, aux_idx], dim=1)
            g = torch.cat([g, g_aux * (aux_vals > 0)], dim=1)
        n = w_enc.shape[1]
        grad_w_enc = _transpose_product(idx, g, xc, n).t()  # [d_in, width]
        grad_b_enc = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(
            0, idx.reshape(-1), g.reshape(-1)
        )
        grad_b_dec = -(w_enc @ grad_b_enc)  # Σ_rows ∂/∂xc, as xc = x − b_dec
        return None, grad_b_dec, grad_w_enc, grad_b_enc, None, None, None


class _SparseDecode(torch.autograd.Function):
    """Σ_j vals[b, j] · W_dec[idx[b, j]] for each row b, without forming the dense latents."""

    @staticmethod
    def forward(ctx: Any, vals: Tensor, idx: Tensor, w_dec: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(vals, idx, w_dec)
        return F.embedding_bag(idx, w_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        vals, idx, w_dec = ctx.saved_tensors
        batch, k = idx.shape
        grad_w_dec = _transpose_product(idx, vals, grad_out, w_dec.shape[0])
        # only the batch·k dot products grad_out[b] · W_dec[idx[b, j]] are needed
        crow = torch.arange(0, batch * k + 1, k, device=idx.device)
        zeros = torch.zeros(batch * k, dtype=vals.dtype, device=idx.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is exact here
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(
                crow, idx.reshape(-1), zeros, (batch, w_dec.shape[0]), check_invariants=False
            )
        grad_vals = torch.sparse.sampled_addmm(pattern, grad_out, w_dec.t()).values().view(batch, k)
        return grad_vals, None, grad_w_dec


def topk_encode(
    x: Float[Tensor, "batch d_in"],
    b_dec: Tensor,
    w_enc: Tensor,
    b_enc: Tensor,
    k: int,
    k_aux: int = 0,
    dead: Tensor | None = None,
) -> tuple[Float[Tensor, "batch k"], Int[Tensor, "batch k"], Tensor, Tensor]:
    """Values and indices of the top-k latents (and of the top-`k_aux` dead ones, or empty).

    Example::

        vals, idx, _, _ = topk_encode(x, sae.b_dec, sae.W_enc, sae.b_enc, 32)  # [batch, 32] each
    """
    return _TopKEncode.apply(x, b_dec, w_enc, b_enc, k, k_aux, dead)  # type: ignore[no-any-return]


def sparse_decode(
    vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], w_dec: Float[Tensor, "width d_in"]
) -> Float[Tensor, "batch d_in"]:
    """The decoder's output without its bias, from the k selected latents of each row.

    Example: ``sparse_decode(vals, idx, sae.W_dec) + sae.b_dec`` → x̂ [batch, d_in], as
    ``sae.decode(sae.encode(x))``.
    """
    return _SparseDecode.apply(vals, idx, w_dec)  # type: ignore[no-any-return]


def dense_topk_encode(
    x: Float[Tensor, "batch d_in"],
    b_dec: Tensor,
    w_enc: Tensor,
    b_enc: Tensor,
    k: int,
    k_aux: int = 0,
    dead: Tensor | None = None,
) -> tuple[Float[Tensor, "batch k"], Int[Tensor, "batch k"], Tensor, Tensor]:
    """`topk_encode` with plain autograd (dense gradients), for checks and comparisons.

    Example: ``vals, idx, _, _ = dense_topk_encode(x, sae.b_dec, sae.W_enc, sae.b_enc, 32)``.
    """
    pre = torch.addmm(b_enc, x - b_dec, w_enc)
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    aux_vals, aux_idx = _EMPTY.to(x), _EMPTY.to(x.device, torch.long)
    if dead is not None and k_aux > 0:
        aux_vals, aux_idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        aux_vals = aux_vals.relu()
    return vals.relu(), idx, aux_vals, aux_idx


def dense_decode(
    vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], w_dec: Float[Tensor, "width d_in"]
) -> Float[Tensor, "batch d_in"]:
    """`sparse_decode` through dense latents and a dense product.

    Example: ``dense_decode(vals, idx, sae.W_dec)`` ≈ ``sparse_decode(vals, idx, sae.W_dec)``.
    """
    f = torch.zeros(vals.shape[0], w_dec.shape[0], dtype=vals.dtype, device=vals.device)
    return f.scatter(-1, idx, vals) @ w_dec
