"""Splicing transcoders into the forward, and how good a transcoder set is.

`replacement_interventions` makes every chosen MLP's output the output of
its transcoder (read from the MLP input of the same forward, so that the
replacement model's errors compound across layers as they would), optionally
plus a fixed `ErrorTerm` per layer; `splice_transcoders` runs a forward so,
with ``error_terms=True`` adding the clean run's error terms (clean MLP output
minus the transcoder's output on the clean input), which makes the spliced
model the clean model again: the local replacement model of attribution
graphs. `evaluate_transcoders` measures each layer and the whole replacement
over held-out corpus windows (`mechscope.transcoders.results` defines the
metrics).

Positions holding a window's first token or a document separator keep the
MLP's own output by default: transcoders are never trained there (their
residual norms are those of attention sinks, orders of magnitude above the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import Intervention, apply, observe
from ..core.model import Inputs, Model, RunOutput
from ..corpus import Corpus, boundary_tokens, open_corpus, window_batches
from .model import TranscoderError, TranscoderSet, mlp_sites
from .results import TranscoderEval


class ErrorTerm(NamedTuple):
    """One layer's error term, kept as the clean MLP output y and the transcoder's ŷ on the
    clean input: e = y − ŷ.

    Spliced as y + (ŷ(x) − ŷ) rather than ŷ(x) + e: the same number, but exactly y wherever
    the input x is the clean input bit for bit, so that no rounding (nor a TopK choice it
    could flip) separates the local replacement model from the model.

    Example: ``clean, errors = transcoder_errors(model, tcs, ids)``; ``errors[3].error``
    → [batch, pos, d_model].
    """

    y: Float[Tensor, "batch pos d_out"]
    y_hat: Float[Tensor, "batch pos d_out"]

    @property
    def error(self) -> Tensor:
        return self.y - self.y_hat


def boundary_mask(model: Model, ids: Tensor) -> Bool[Tensor, "batch pos"]:
    """Where transcoders are spliced by default: not at position 0, nor on the window-first
    and separator tokens that training leaves out.

    Example: ``boundary_mask(model, ids)[:, 0]`` → all False.
    """
    skip = torch.tensor([t for t in boundary_tokens(model) if t is not None], device=ids.device)
    keep = ~torch.isin(ids, skip)
    keep[:, 0] = False
    return keep


def replacement_interventions(
    model: Model,
    transcoders: TranscoderSet,
    *,
    errors: Mapping[int, ErrorTerm] | None = None,
    keep: Bool[Tensor, "batch pos"] | None = None,
) -> list[Intervention]:
    """Interventions that replace each layer's MLP output by its transcoder's output.

    `errors` (layer → `ErrorTerm`) are added to the transcoders' outputs; `keep`
    restricts the replacement to those positions (the MLP's own output elsewhere;
    None: every position).

    Example::

        ivs = replacement_interventions(model, tcs, keep=boundary_mask(model, ids))
        replaced = model.run(ids, interventions=ivs).logits    # the replacement model
    """
    transcoders.check(model)
    inputs: dict[int, Tensor] = {}
    out: list[Intervention] = []
    for layer, tc in transcoders.items():
        site_in, site_out = mlp_sites(model, layer)

        def grab(x: Tensor, layer: int = layer) -> None:
            inputs[layer] = x

        def replace(y: Tensor, layer: int = layer, tc: Any = tc) -> Tensor:
            y_hat = tc(inputs.pop(layer).to(tc.W_enc.dtype))
            if keep is not None and tuple(keep.shape) != tuple(y.shape[:2]):
                raise TranscoderError(
                    f"keep is {list(keep.shape)} but the MLP output of layer {layer} is "
                    f"[batch, pos] = {list(y.shape[:2])}"
                )
            if errors is not None and layer in errors:
                term = errors[layer]
                if term.y.shape != y.shape or term.y_hat.shape != y.shape:
                    raise TranscoderError(
                        f"the error term of layer {layer} is {list(term.y.shape)}, the MLP "
                        f"output {list(y.shape)}: error terms are for the inputs they came from"
                    )
                y_hat = term.y.to(y_hat) + (y_hat - term.y_hat.to(y_hat))
            y_hat = y_hat.to(y.dtype)
            return y_hat if keep is None else torch.where(keep[..., None].to(y.device), y_hat, y)

        out += [observe(site_in, grab), apply(site_out, replace)]
    return out


@torch.no_grad()
def transcoder_errors(
    model: Model, transcoders: TranscoderSet, inputs: Inputs
) -> tuple[RunOutput, dict[int, ErrorTerm]]:
    """The clean run on `inputs` and each layer's error term (clean MLP output − ŷ(clean input)).

    Example: ``clean, errors = transcoder_errors(model, tcs, "The capital of France is")``;
    ``errors[3].error.shape`` → [1, pos, d_model].
    """
    transcoders.check(model)
    sites = {layer: mlp_sites(model, layer) for layer in transcoders.layers}
    clean = model.run(inputs, save=[s for pair in sites.values() for s in pair])
    errors = {}
    for layer, tc in transcoders.items():
        x, y = (clean.cache[s].to(tc.W_enc.dtype) for s in sites[layer])
        errors[layer] = ErrorTerm(y, tc(x))
    return clean, errors


@torch.no_grad()
def splice_transcoders(
    model: Model,
    transcoders: TranscoderSet,
    inputs: Inputs,
    *,
    error_terms: bool = False,
    save: str | Sequence[str] = (),
    keep: Bool[Tensor, "batch pos"] | None = None,
) -> RunOutput:
    """One forward with every MLP of `transcoders` replaced at the `keep` positions (default
    `boundary_mask`); with `error_terms`, the clean run's error terms added back, which
    gives the model's own logits.

    Example::

        replaced = splice_transcoders(model, tcs, ids).logits
        exact = splice_transcoders(model, tcs, ids, error_terms=True).logits  # = model.run(ids)
    """
    transcoders = transcoders.to(model.device)
    errors = transcoder_errors(model, transcoders, inputs)[1] if error_terms else None
    if keep is None:
        keep = boundary_mask(model, _token_ids(model, inputs))
    ivs = replacement_interventions(model, transcoders, errors=errors, keep=keep)
    return model.run(inputs, save=save, interventions=ivs)


def _token_ids(model: Model, inputs: Inputs) -> Tensor:
    """The token ids `model.run` reads from `inputs` (for the default splice positions)."""
    if isinstance(inputs, dict):
        ids = inputs["input_ids"]
    elif isinstance(inputs, Tensor):
        ids = inputs if inputs.ndim == 2 else inputs[None]
    else:
        ids = model.to_tokens(inputs)
    return ids.to(model.device)


@torch.no_grad()
def evaluate_transcoders(
    model: Model,
    transcoders: TranscoderSet,
    corpus: Corpus | str = "default",
    *,
    tokens: int = 16_384,
    window: int = 64,
    batch_windows: int = 8,
    start_window: int = 0,
    progress: bool = True,
) -> TranscoderEval:
    """Score every transcoder and the spliced model over `tokens` corpus tokens.

    Each batch is one forward of four copies of the windows: clean, replaced,
    replaced with error terms, and every chosen MLP zero-ablated. Splices and
    per-layer metrics skip window-first and separator tokens, as training does.

    Example::

        ev = evaluate_transcoders(model, tcs, tokens=4096)   # TranscoderEval(…)
        ev.ce_recovered, ev.rows()
    """
    for name, value, low in (("tokens", tokens, 1), ("window", window, 2),
                             ("batch_windows", batch_windows, 1), ("start_window", start_window, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TranscoderError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if model.context is not None and window > model.context:
        raise TranscoderError(
            f"window={window} is longer than {model.name}'s context of {model.context} tokens; "
            f"give a window of at most {model.context}"
        )
    transcoders.check(model)
    layers = transcoders.layers
    corpus = open_corpus(corpus) if isinstance(corpus, (str, Path)) else corpus
    transcoders = transcoders.to(model.device)
    acc = {
        layer: _LayerTotals(tc.cfg.width, tc.cfg.d_out or 0) for layer, tc in transcoders.items()
    }
    totals = dict.fromkeys(("clean", "replaced", "errors", "zero", "kl", "top1", "preds"), 0.0)
    max_diff = 0.0
    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc="evaluate", disable=not progress)
    limit = max(1, tokens // window)
    for ids in window_batches(
        model, corpus, window, batch_windows, start=start_window, limit=limit
    ):
        ids = ids.to(model.device)
        n = len(ids)
        keep = boundary_mask(model, ids)  # [n, pos]
        ivs = _four_way(model, transcoders, n, keep, acc)
        logits = model.run(ids.repeat(4, 1), interventions=ivs).logits
        targets = ids[:, 1:, None]
        lps = F.log_softmax(logits[:, :-1].float(), -1).split(n)
        for name, lp in zip(("clean", "replaced", "errors", "zero"), lps, strict=True):
            totals[name] += float(-lp.gather(-1, targets).sum())
        clean, replaced = lps[0], lps[1]
        totals["kl"] += float((clean.exp() * (clean - replaced)).sum())
        totals["top1"] += float((clean.argmax(-1) == replaced.argmax(-1)).sum())
        totals["preds"] += targets.numel()
        clean_logits, _, with_errors, _ = logits.split(n)
        max_diff = max(max_diff, float((with_errors - clean_logits).abs().max()))
        bar.update(ids.numel())
    bar.close()
    preds = totals["preds"]
    if not preds or not all(a.n for a in acc.values()):
        raise TranscoderError(
            f"no tokens to evaluate on in corpus {corpus.spec!r} from window {start_window} on "
            f"(tokens={tokens}, window={window}); give a smaller start_window or a larger corpus"
        )
    per_layer = [acc[layer].metrics() for layer in layers]
    return TranscoderEval(
        model=model.name,
        layers=layers,
        tokens=int(acc[layers[0]].n),
        predictions=int(preds),
        fvu=torch.tensor([m["fvu"] for m in per_layer]),
        mse=torch.tensor([m["mse"] for m in per_layer]),
        l0=torch.tensor([m["l0"] for m in per_layer]),
        cosine=torch.tensor([m["cosine"] for m in per_layer]),
        frequencies=[acc[layer].fired / acc[layer].n for layer in layers],
        ce_clean=totals["clean"] / preds,
        ce_replaced=totals["replaced"] / preds,
        ce_with_errors=totals["errors"] / preds,
        ce_zero=totals["zero"] / preds,
        kl_replaced=totals["kl"] / preds,
        top1_agreement=totals["top1"] / preds,
        max_logit_diff_with_errors=max_diff,
        config={"corpus": corpus.record(), "window": window, "start_window": start_window},
    )


class _LayerTotals:
    """Running sums for one layer's FVU, MSE, L0, cosine and firing counts."""

    def __init__(self, width: int, d_out: int) -> None:
        self.n, self.err, self.sq, self.l0, self.cos = 0, 0.0, 0.0, 0.0, 0.0
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.fired = torch.zeros(width)

    def add(self, y: Tensor, y_hat: Tensor, f: Tensor) -> None:
        """Rows [n, d] of kept positions: MLP output, its prediction, the latents."""
        self.n += len(y)
        self.err += float((y - y_hat).pow(2).sum())
        self.sq += float(y.double().pow(2).sum())
        self.sum_y += y.double().sum(0).cpu()
        self.l0 += float((f > 0).sum())
        self.cos += float(F.cosine_similarity(y, y_hat, dim=-1).sum())
        self.fired += (f > 0).sum(0).float().cpu()

    def metrics(self) -> dict[str, float]:
        var = self.sq - float(self.sum_y.pow(2).sum()) / self.n  # Σ‖y − ȳ‖²
        return {
            "fvu": self.err / var if var > 0 else float("nan"),
            "mse": self.err / self.n,
            "l0": self.l0 / self.n,
            "cosine": self.cos / self.n,
        }


def _four_way(
    model: Model,
    transcoders: TranscoderSet,
    n: int,
    keep: Bool[Tensor, "n pos"],
    acc: dict[int, _LayerTotals],
) -> list[Intervention]:
    """Interventions on a batch of 4n rows: clean, replaced, replaced + clean errors, zero.

    The clean rows come first in every MLP's batch, so each layer's error term is read off
    them in the same forward; their per-layer metrics go into `acc`.
    """
    inputs: dict[int, Tensor] = {}
    ivs: list[Intervention] = []
    mask = keep[..., None]
    for layer, tc in transcoders.items():
        site_in, site_out = mlp_sites(model, layer)

        def grab(x: Tensor, layer: int = layer) -> None:
            inputs[layer] = x

        def splice(y: Tensor, layer: int = layer, tc: Any = tc) -> Tensor:
            x = inputs.pop(layer).to(tc.W_enc.dtype)
            f = tc.encode(x[:n])
            clean_hat = tc.decode(f, x[:n])
            clean = y[:n].to(clean_hat.dtype)
            acc[layer].add(clean[keep], clean_hat[keep], f[keep])
            replaced = tc(x[n : 2 * n])
            with_errors = clean + (tc(x[2 * n : 3 * n]) - clean_hat)  # as ErrorTerm splices
            out = y.clone()
            out[n : 2 * n] = torch.where(mask, replaced.to(y.dtype), y[n : 2 * n])
            out[2 * n : 3 * n] = torch.where(mask, with_errors.to(y.dtype), y[2 * n : 3 * n])
            out[3 * n :] = torch.where(mask, 0.0, y[3 * n :])
            return out

        ivs += [observe(site_in, grab), apply(site_out, splice)]
    return ivs
