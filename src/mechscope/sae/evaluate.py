"""How good an SAE is: sparsity, reconstruction, and what the model loses when it reads x̂.

On held-out corpus windows: L0 (active latents per token), the fraction of
variance unexplained FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖², and the next-token
cross-entropy with x̂ spliced into the forward in place of x, against the
clean loss and the zero-ablated one:

    CE loss recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean)

(1 = the model loses nothing, 0 = as bad as deleting the site). Splicing
and ablation skip window-first and separator tokens, as training does. Each
latent's firing frequency gives the dead (never fired) and dense (fires on
more than 10% of tokens) fractions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import apply
from ..core.model import Model
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from ..errors import InputError
from .model import SparseAutoencoder
from .results import DENSE_FREQUENCY, SAEEval  # noqa: F401 (re-exported)


@torch.no_grad()
def evaluate_sae(
    model: Model,
    sae: SparseAutoencoder,
    corpus: Corpus | str = "default",
    *,
    site: str | None = None,
    tokens: int = 16_384,
    window: int = 64,
    batch_windows: int = 16,
    start_window: int = 0,
    progress: bool = True,
) -> SAEEval:
    """Score `sae` at `site` (default: the site it was trained on) over `tokens` corpus tokens.

    Example::

        ev = evaluate_sae(model, sae)     # SAEEval(blocks.15.resid_post: L0=32.0, …)
        ev.ce_recovered
    """
    if site is not None and not site.strip():
        raise InputError(
            "site is empty; give a site such as blocks.15.resid_post (None: the SAE's)"
        )
    if tokens < 1:
        raise InputError(f"tokens must be at least 1, got {tokens}")
    if start_window < 0:
        raise InputError(f"start_window must be >= 0 (the first corpus window), got {start_window}")
    site = site or sae.cfg.site
    if not site:
        raise InputError("the SAE records no site; pass site=… to say where it reads")
    info = model.table[site]
    if info.sizes and info.sizes[-1] not in (None, sae.cfg.d_in):
        raise InputError(
            f"site {site!r} has {info.sizes[-1]} dimensions but the SAE reads {sae.cfg.d_in}"
        )
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    skip = torch.tensor([t for t in boundary_tokens(model) if t is not None])
    sae = sae.to(model.device)
    totals = dict.fromkeys(
        ("err", "cos", "l0", "n", "ce_clean", "ce_sae", "ce_zero", "kl", "preds"), 0.0
    )
    sum_x: Tensor | None = None
    sum_sq = 0.0
    fired = torch.zeros(sae.cfg.width)
    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc="evaluate", disable=not progress)
    limit = max(1, tokens // window)
    for ids in window_batches(
        model, corpus, window, batch_windows, start=start_window, limit=limit
    ):
        ids = ids.to(model.device)
        n = len(ids)
        keep = ~torch.isin(ids, skip.to(ids.device))  # [n, pos]

        seen: dict[str, Tensor] = {}

        def splice(x: Tensor, keep: Tensor = keep, n: int = n, seen: dict = seen) -> Tensor:
            # rows n..2n-1 read x̂ in place of x, rows 2n..3n-1 read zero; rows 0..n-1 stay clean.
            # The site's input is the same in every row, so rows n..2n-1 are also the clean x.
            clean = x[n : 2 * n]
            seen["x"], seen["f"] = clean, sae.encode(clean)
            seen["x_hat"] = sae.decode(seen["f"])
            out = x.clone()
            out[n : 2 * n] = torch.where(keep[..., None], seen["x_hat"].to(x.dtype), clean)
            out[2 * n :] = torch.where(keep[..., None], 0.0, x[2 * n :])
            return out

        logits = model.run(ids.repeat(3, 1), interventions=[apply(site, splice)]).logits
        x, f, x_hat = (seen[k][keep].float() for k in ("x", "f", "x_hat"))
        totals["err"] += float((x - x_hat).pow(2).sum())
        totals["l0"] += float((f > 0).sum())
        totals["cos"] += float(F.cosine_similarity(x, x_hat, dim=-1).sum())
        totals["n"] += len(x)
        fired += (f > 0).sum(0).float().cpu()
        sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
        sum_sq += float(x.pow(2).sum())
        targets = ids[:, 1:]
        lp_clean, lp_sae, lp_zero = F.log_softmax(logits[:, :-1].float(), -1).split(n)
        for name, lp in (("ce_clean", lp_clean), ("ce_sae", lp_sae), ("ce_zero", lp_zero)):
            totals[name] += float(-lp.gather(-1, targets[..., None]).sum())
        totals["kl"] += float((lp_clean.exp() * (lp_clean - lp_sae)).sum())
        totals["preds"] += targets.numel()
        bar.update(ids.numel())
    bar.close()
    if not totals["n"] or sum_x is None:
        raise InputError(f"no tokens to evaluate on (tokens={tokens}, window={window})")
    count = totals["n"]
    var = sum_sq - float(sum_x.pow(2).sum()) / count  # Σ‖x − x̄‖²
    preds = totals["preds"]
    return SAEEval(
        site=site,
        tokens=int(count),
        l0=totals["l0"] / count,
        fvu=totals["err"] / var,
        mse=totals["err"] / count,
        ce_clean=totals["ce_clean"] / preds,
        ce_sae=totals["ce_sae"] / preds,
        ce_zero=totals["ce_zero"] / preds,
        kl_sae=totals["kl"] / preds,
        frequencies=fired / count,
        cosine=totals["cos"] / count,
    )


def frequency_histogram(ev: SAEEval) -> dict[str, Any]:
    """log10 firing frequencies of live latents, for the density figure.

    Example: ``frequency_histogram(evaluate_sae(model, sae))["dead"]`` → how many never fired.
    """
    live = ev.frequencies[ev.frequencies > 0]
    return {"log10_frequency": live.log10().tolist(), "dead": int((ev.frequencies == 0).sum())}
