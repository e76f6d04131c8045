"""What one training step asks of one layer's transcoder: its loss, and reviving dead latents.

The loss is the fraction of the MLP output's variance left unexplained on the
batch, FVU = Σ‖y − ŷ‖² / Σ‖y − ȳ‖², plus for TopK the AuxK loss (the top
`k_aux` dead latents predict the residual error; Gao et al. 2024) and for
JumpReLU an L0 penalty through the rectangle pseudo-derivative
(Rajamanoharan et al. 2024). The TopK kernels and the JumpReLU functions are
the SAE module's; JumpReLU's dead latents are resampled as the SAE's are,
with the encoder pointed at the input and the decoder at the residual error.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..sae.sparse import dense_decode, dense_topk_encode, sparse_decode, topk_encode
from ..sae.train import _JumpReLU, _Step
from .model import Transcoder


def fvu(y: Float[Tensor, "n d"], y_hat: Float[Tensor, "n d"]) -> Tensor:
    """Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over the rows: 0 perfect, 1 no better than the mean.

    Example: ``fvu(y, y.mean(0).expand_as(y))`` → 1.0.
    """
    return (y_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)


def transcoder_loss(
    tc: Transcoder,
    x: Float[Tensor, "n d_in"],
    y: Float[Tensor, "n d_out"],
    *,
    l0_coef: float = 0.0,
    aux_coef: float = 1 / 32,
    k_aux: int | None = None,
    dead: Tensor | None = None,
    kernels: str = "sparse",
) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """(loss, its parts, ŷ, how often each latent fired [width]) on one batch.

    `dead` [width] marks latents the AuxK term may use (TopK); `k_aux` defaults to d_out / 2.

    Example::

        loss, parts, y_hat, fired = transcoder_loss(tc, x, y)   # parts["fvu"]
        loss.backward()
    """
    width = tc.cfg.width
    if tc.cfg.kind == "topk":
        n_aux = 0
        if dead is not None and bool(dead.any()):
            n_aux = min(k_aux or y.shape[1] // 2, int(dead.sum()))
        sparse = kernels == "sparse"
        encode, decode = (
            (topk_encode, sparse_decode) if sparse else (dense_topk_encode, dense_decode)
        )
        no_centre = x.new_zeros(x.shape[1])  # the kernels' b_dec: a transcoder has none in x
        vals, idx, aux_vals, aux_idx = encode(
            x, no_centre, tc.W_enc, tc.b_enc, tc.cfg.k, n_aux, dead if n_aux else None
        )
        y_hat = decode(vals, idx, tc.W_dec) + tc.b_dec
        if tc.cfg.skip:
            y_hat = y_hat + x @ tc.W_skip
        unexplained = fvu(y, y_hat)
        parts, loss = {"fvu": unexplained}, unexplained
        if n_aux:
            err = (y - y_hat).detach()
            err_hat = decode(aux_vals, aux_idx, tc.W_dec)
            aux = (err_hat - err).pow(2).sum() / err.pow(2).sum().clamp_min(1e-12)
            parts["aux"] = aux
            loss = loss + aux_coef * aux
        hits = torch.bincount(idx.reshape(-1), (vals > 0).reshape(-1).to(x.dtype), minlength=width)
        return loss, parts, y_hat, hits
    pre = tc.pre_activation(x)
    f = _JumpReLU.apply(pre, tc.log_threshold, tc.cfg.jump_bandwidth)
    l0 = _Step.apply(pre, tc.log_threshold, tc.cfg.jump_bandwidth).sum(-1).mean()
    y_hat = tc.decode(f, x)
    unexplained = fvu(y, y_hat)
    parts = {"fvu": unexplained, "l0_penalty": l0}
    return unexplained + l0_coef * l0, parts, y_hat, (f > 0).sum(0).float()


@torch.no_grad()
def resample_dead(
    tc: Transcoder,
    dead: Tensor,
    x: Float[Tensor, "n d_in"],
    y: Float[Tensor, "n d_out"],
    y_hat: Float[Tensor, "n d_out"],
    opt: torch.optim.Optimizer,
    seed: int,
) -> int:
    """Point the `dead` latents at rows predicted worst (drawn ∝ loss²): encoder columns at
    their input, decoder rows at their residual error; reset their Adam moments. Returns
    how many were revived.

    Example: ``resample_dead(tc, dead, x, y, y_hat.detach(), opt, seed=step)`` → e.g. 12.
    """
    n = int(dead.sum())
    if n == 0:
        return 0
    resid = y - y_hat
    err = resid.pow(2).sum(-1)
    g = torch.Generator().manual_seed(seed)
    weights = (err.pow(2) + 1e-12).cpu()
    rows = torch.multinomial(weights, n, replacement=n > len(err), generator=g).to(x.device)
    out_dir = resid[rows] / resid[rows].norm(dim=1, keepdim=True).clamp_min(1e-8)
    in_dir = x[rows] / x[rows].norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = tc.W_enc[:, alive].norm(dim=0).mean() if alive.any() else 1.0
    which = dead.nonzero().squeeze(1)
    tc.W_dec[which] = out_dir
    tc.W_enc[:, which] = in_dir.t() * enc_norm * 0.2
    tc.b_enc[which] = 0.0
    params = [tc.W_dec, tc.W_enc, tc.b_enc]
    if tc.cfg.kind == "jumprelu":
        params.append(tc.log_threshold)
    for p in params:
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                view = state[key] if p is not tc.W_enc else state[key].t()
                view[which] = 0.0
    return n
