"""Logit lens and direct logit attribution.

The logit lens reads each layer's residual stream through the real final norm
and unembedding. Direct logit attribution (DLA) splits the final residual
stream into the pieces written by the embedding, every head (``attn.z``
through its slice of the output projection), every attention bias and every
MLP (or MLP neuron), and scores each piece along a logit direction such as
logit(IO) − logit(S) with the final norm's scale frozen from the real final
residual: the pieces then sum to the model's own logit difference. Where a
norm sits between a sublayer and the residual add (Gemma 2/3), its scale is
frozen at the sublayer's real output in the same way. The norms are read as
the adapter declares them (`mechscope.core.weights.frozen_norm`: Gemma's
scale is 1 + w). This is the one DLA: the IOI head scores use
`head_logit_attribution` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .core.model import Inputs, Model
from .core.weights import (
    frozen_norm,
    has_post_norms,
    mlp_down_projection,
    norm_bias,
    norm_module,
    output_projection,
    resident,
    unembedding,
)
from .errors import InputError

FrozenMap = Callable[[Tensor], Tensor]


def _need_known_sites(model: Model) -> None:
    if model.adapter is None or model.dims is None:
        raise InputError("the lens needs a transformer with known sites")


def _frozen_post_norm(
    model: Model, layer: int, part: Literal["attn", "mlp"], out: Float[Tensor, "batch d_model"]
) -> FrozenMap:
    """What lies between a sublayer and the residual add, as a linear map frozen at `out`.

    The identity where the sublayer writes to the residual stream directly;
    Gemma 2/3's post-attention / post-feedforward norm frozen at `out`, the
    sublayer's real output, otherwise.
    """
    if not has_post_norms(model):
        return lambda x: x
    return frozen_norm(model, "attn_out" if part == "attn" else "mlp_out", out, layer)


def _per_row(f: FrozenMap, x: Float[Tensor, "batch k d_model"]) -> Float[Tensor, "batch k d_model"]:
    """Apply a map frozen per row (scale [batch, d_model]) to k vectors of each row."""
    return f(x.transpose(0, 1)).transpose(0, 1)


def _attention_scores(
    model: Model,
    layer: int,
    z: Float[Tensor, "batch head d_head"],
    final_norm: FrozenMap,
    direction: Float[Tensor, "batch d_model"],
) -> tuple[Float[Tensor, "batch head"], Float[Tensor, " batch"]]:
    """Per row: each head's direct score along `direction`, and the output bias's.

    A head writes z_h · W_O[h]; the projection's bias belongs to no head. On
    Gemma 2/3 the post-attention norm is frozen at the layer's total output.
    """
    w_o, b_o = output_projection(model, layer)  # [head, d_head, d_model]
    w_o = w_o.detach().float().to(z.device)
    bias = None if b_o is None else b_o.detach().float().to(z.device)
    per_head = torch.einsum("bhe,hed->bhd", z.float(), w_o)
    total = per_head.sum(1) + (0.0 if bias is None else bias)
    post = _frozen_post_norm(model, layer, "attn", total)
    heads = (_per_row(_compose(final_norm, post), per_head) * direction[:, None]).sum(-1)
    if bias is None:
        return heads, torch.zeros(z.shape[0], device=z.device)
    biased = final_norm(post(bias.expand(z.shape[0], -1)))
    return heads, (biased * direction).sum(-1)


def _rows_direction(direction: Tensor, final_resid: Tensor) -> Tensor:
    """`direction` as float [batch, d_model] on the residual's device."""
    d = direction.detach().float().to(final_resid.device)
    return d.expand(final_resid.shape[0], -1) if d.ndim == 1 else d


def head_logit_attribution(
    model: Model,
    cache_z_per_layer: Float[Tensor, "layer batch head d_head"]
    | Sequence[Float[Tensor, "batch head d_head"]],
    final_resid: Float[Tensor, "batch d_model"],
    direction: Float[Tensor, "batch d_model"] | Float[Tensor, " d_model"],
) -> Float[Tensor, "batch layer head"]:
    """Each head's direct contribution to the logit `direction`, at one position per row.

    `cache_z_per_layer` holds ``blocks.L.attn.z`` at that position for every
    layer L; `final_resid` the residual entering the final norm there
    (``blocks.{last}.resid_post``), whose scale is frozen; `direction` a
    vector in the unembedding's input space, e.g. W_U[IO] − W_U[S]. A head's
    output is z_h · W_O[h] (the output projection's bias belongs to no head;
    Gemma 2/3's post-attention norm is applied with its scale frozen at the
    layer's total). Final-logit softcapping is ignored.

    Example::

        dla = head_logit_attribution(model, [cache[f"blocks.{l}.attn.z"][:, -1] for l in ...],
                                     cache[f"blocks.{n - 1}.resid_post"][:, -1], w_u[io] - w_u[s])
    """
    _need_known_sites(model)
    resident(model, "direct logit attribution")
    assert model.dims is not None
    n_layers = model.dims.n_layers
    if len(cache_z_per_layer) != n_layers:
        raise InputError(
            f"cache_z_per_layer needs z for all {n_layers} layers, got {len(cache_z_per_layer)}"
        )
    final = final_resid.float()
    norm = frozen_norm(model, "final", final)
    d = _rows_direction(direction, final)
    with torch.no_grad():
        heads = [
            _attention_scores(model, layer, cache_z_per_layer[layer].to(final.device), norm, d)[0]
            for layer in range(n_layers)
        ]
    return torch.stack(heads, dim=1)


def logit_direction(model: Model, good: int | str, bad: int | str | None = None) -> Tensor:
    """W_U[good] − W_U[bad] (or W_U[good]): the residual direction of a logit (difference).

    Example: ``logit_direction(model, " Paris", " London")`` → [d_model], for
    `direct_logit_attribution`.
    """
    resident(model, "logit_direction")
    w_u = unembedding(model)  # [d_model, vocab]

    def tid(t: int | str) -> int:
        return model.to_single_token(t) if isinstance(t, str) else int(t)

    direction = w_u[:, tid(good)]
    if bad is not None:
        direction = direction - w_u[:, tid(bad)]
    return direction.detach()


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution along a direction, at one position, averaged over the batch.

    ``heads`` [layer, head], ``mlps`` [layer], ``neurons`` [layer, d_mlp],
    ``attn_bias`` [layer], ``embed``; ``total`` is the model's own value
    (logit difference) and ``norm_bias`` what the final norm's bias and
    unembedding bias add (zero for a logit difference without biases).

    Example::

        dla = direct_logit_attribution(model, prompt, logit_direction(model, " Paris", " London"))
        dla.top_heads(3), dla.explained - dla.total   # [("L29H0", -3.12), …] by |score|; ≈ 0
        dla.heatmap("figs/dla")
    """

    heads: Tensor
    mlps: Tensor
    neurons: Tensor
    attn_bias: Tensor
    embed: float
    total: float
    norm_bias: float

    @property
    def explained(self) -> float:
        """Sum of all pieces (equals `total` up to float error)."""
        return float(
            self.heads.sum() + self.mlps.sum() + self.attn_bias.sum() + self.embed + self.norm_bias
        )

    def top_heads(self, k: int = 10) -> list[tuple[str, float]]:
        flat = self.heads.flatten()
        idx = flat.abs().topk(min(k, flat.numel())).indices.tolist()
        n = self.heads.shape[1]
        return [(f"L{i // n}H{i % n}", float(flat[i])) for i in idx]

    def __repr__(self) -> str:
        tops = ", ".join(f"{name} {v:+.2f}" for name, v in self.top_heads(4))
        return (
            f"Attribution(total {self.total:+.3f} = embed {self.embed:+.2f} + heads "
            f"{self.heads.sum():+.2f} + MLPs {self.mlps.sum():+.2f} + biases "
            f"{self.attn_bias.sum() + self.norm_bias:+.2f}; top heads {tops})"
        )

    def heatmap(
        self, path: str | Path, title: str = "direct logit attribution per head"
    ) -> dict[str, Path]:
        from .figures import heatmap

        return heatmap(
            self.heads,
            path,
            title=title,
            x_title="head",
            y_title="layer",
            value_title="logit contribution",
        )


def direct_logit_attribution(
    model: Model,
    inputs: Inputs,
    direction: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
    *,
    position: int | Tensor = -1,
) -> Attribution:
    """Score every head, MLP and neuron's direct contribution along `direction` at `position`.

    `direction` may differ per prompt ([batch, d_model], e.g. each prompt's
    W_U[IO] − W_U[S]); `position` may be a per-prompt tensor of positions.
    On Gemma 2/3 a head's or neuron's write passes the post-attention /
    post-feedforward norm with its scale frozen at that sublayer's real
    output, so the pieces still sum.

    Example::

        d = logit_direction(model, " Mary", " John")
        dla = direct_logit_attribution(model, prompt, d)
    """
    _need_known_sites(model)
    resident(model, "direct logit attribution")
    assert model.dims is not None and model.adapter is not None
    n_layers = model.dims.n_layers
    sites = ["embed", "pos_embed"] if model.adapter.pos_embed else ["embed"]
    sites += [f"blocks.{layer}.attn.z" for layer in range(n_layers)]
    sites += [f"blocks.{layer}.mlp.post" for layer in range(n_layers)]
    sites += [f"blocks.{n_layers - 1}.resid_post"]
    logits, cache = model.run(inputs, save=sites)
    batch = logits.shape[0]
    rows = torch.arange(batch)
    pos = position if isinstance(position, Tensor) else torch.full((batch,), position)

    def at(t: Tensor) -> Tensor:  # [batch, pos, ...] -> [batch, ...] at each prompt's position
        return t[rows, pos]

    final = at(cache[f"blocks.{n_layers - 1}.resid_post"])  # [batch, d_model]
    norm = frozen_norm(model, "final", final.float())
    d = _rows_direction(direction, final)

    def score(component: Tensor) -> Tensor:  # [batch, d_model] -> [] (mean over batch)
        return (norm(component.float()) * d).sum(-1).mean(0)

    embed = at(cache["embed"]) + (
        at(cache["pos_embed"].expand(batch, -1, -1)) if "pos_embed" in cache else 0
    )
    heads, biases, mlps, neurons = [], [], [], []
    with torch.no_grad():
        for layer in range(n_layers):
            per_head, bias = _attention_scores(
                model, layer, at(cache[f"blocks.{layer}.attn.z"]), norm, d
            )
            heads.append(per_head.mean(0))
            biases.append(bias.mean(0))
            w_down, b_down = mlp_down_projection(model, layer)  # [d_mlp, d_model]
            w_down = w_down.detach().float()
            b_down = None if b_down is None else b_down.detach().float()
            post = at(cache[f"blocks.{layer}.mlp.post"]).float()  # [batch, d_mlp]
            mlp_total = post @ w_down + (b_down if b_down is not None else 0.0)
            mlp_post = _frozen_post_norm(model, layer, "mlp", mlp_total)
            # per neuron: post[n] · (norm(w_down[n]) · d) — linear, so no [batch, d_mlp, d_model] tensor
            read = torch.einsum("nd,bd->bn", w_down, _norm_rows(_compose(norm, mlp_post), d))
            neuron = (post * read).mean(0)
            neurons.append(neuron)
            mlp_bias = (
                score(mlp_post(b_down.expand(batch, -1)))
                if b_down is not None
                else torch.tensor(0.0)
            )
            mlps.append(neuron.sum() + mlp_bias)
        embed_score = float(score(embed))
        head_t, mlp_t, bias_t = torch.stack(heads), torch.stack(mlps), torch.stack(biases)
        actual = _actual_direction_value(model, final, d)
        b_norm = norm_bias(model, "final")
        bias_score = float((b_norm.to(d.device) * d).sum(-1).mean()) if b_norm is not None else 0.0
    return Attribution(
        heads=head_t,
        mlps=mlp_t,
        neurons=torch.stack(neurons),
        attn_bias=bias_t,
        embed=embed_score,
        total=actual,
        norm_bias=bias_score,
    )


def _compose(outer: FrozenMap, inner: FrozenMap) -> FrozenMap:
    """x ↦ outer(inner(x))."""
    return lambda x: outer(inner(x))


def _norm_rows(norm: FrozenMap, direction: Tensor) -> Tensor:
    """Fold the frozen norm into the direction: returns [batch, d_model] r with norm(x)·d = x·r."""
    # for x ↦ (x − mean x) * s * w (or x * s * w) the adjoint applied to d is computed by autograd
    probe = torch.zeros_like(direction, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad((norm(probe) * direction).sum(), probe)
    return g


def _actual_direction_value(model: Model, final: Tensor, direction: Tensor) -> float:
    """The model's own value along `direction`: final_norm(final) · direction, batch mean."""
    with torch.no_grad():
        normed = norm_module(model, "final")(final).float()
        return float((normed * direction).sum(-1).mean())


@dataclass(frozen=True)
class LogitLens:
    """Per layer (resid_pre of each block, then the final residual) × position: the lens logits' summary.

    ``top_tokens[layer][pos]`` is the top token's text, ``top_probs`` its
    probability [layer, pos], ``target_probs`` the probability of `target`
    [layer, pos] (None when no target was given).

    Example::

        lens = logit_lens(model, "The Eiffel Tower is located in the city of", target=" Paris")
        lens.top_tokens[-1][-1], lens.target_probs[:, -1]     # " Paris", p(" Paris") by layer
        lens.heatmap("figs/lens")
    """

    top_tokens: list[list[str]]
    top_probs: Tensor
    target_probs: Tensor | None
    layer_labels: list[str]
    position_labels: list[str]
    target: str | None

    def heatmap(self, path: str | Path) -> dict[str, Path]:
        from .figures import heatmap

        values = self.target_probs if self.target_probs is not None else self.top_probs
        what = f"p({self.target!r})" if self.target is not None else "top-1 probability"
        return heatmap(
            values,
            path,
            title=f"logit lens: {what}",
            x_labels=self.position_labels,
            y_labels=self.layer_labels,
            x_title="position",
            y_title="layer",
            value_title=what,
            center=None,
            cmap="Blues",
        )

    def __repr__(self) -> str:
        last = [row[-1] for row in self.top_tokens]
        return f"LogitLens({len(last)} layers; top token at the last position by layer: {last})"


def logit_lens(model: Model, text: str | Tensor, target: str | None = None) -> LogitLens:
    """Read ``blocks.L.resid_pre`` of every block and the final residual through the real final norm and unembedding.

    Example::

        lens = logit_lens(model, "The Eiffel Tower is located in the city of", target=" Paris")
    """
    if model.adapter is None or model.dims is None:
        raise InputError("the logit lens needs a transformer with known sites")
    n = model.dims.n_layers
    sites = [f"blocks.{layer}.resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.resid_post"]
    logits, cache = model.run(text, save=sites)
    norm = norm_module(model, "final")
    target_id = model.to_single_token(target) if target is not None else None
    tops, top_p, tgt = [], [], []
    with torch.no_grad():
        for site in sites:
            probs = model.unembed(norm(cache[site][0])).float().softmax(-1)  # [pos, vocab]
            p, i = probs.max(-1)
            tops.append(
                [model.tokenizer.decode([t]) if model.tokenizer else str(t) for t in i.tolist()]
            )
            top_p.append(p)
            if target_id is not None:
                tgt.append(probs[:, target_id])
    ids = text[0] if isinstance(text, Tensor) and text.ndim == 2 else text
    pos_labels = (
        [f"{i}:{t}" for i, t in enumerate(model.to_str_tokens(ids))] if model.tokenizer else []
    )
    return LogitLens(
        tops,
        torch.stack(top_p),
        torch.stack(tgt) if tgt else None,
        [f"resid_pre {layer}" for layer in range(n)] + ["final"],
        pos_labels,
        target,
    )


def accumulated_resid(
    model: Model, cache: dict[str, Tensor]
) -> Float[Tensor, "layer batch pos d_model"]:
    """``blocks.L.resid_pre`` for every block, then the last block's resid_post, stacked.

    Example::

        _, cache = model.run(text, save=resid_sites(model))
        accumulated_resid(model, cache).shape       # [n_layers + 1, batch, pos, d_model]
    """
    assert model.dims is not None
    n = model.dims.n_layers
    return torch.stack(
        [cache[f"blocks.{layer}.resid_pre"] for layer in range(n)]
        + [cache[f"blocks.{n - 1}.resid_post"]]
    )


def decomposed_resid(
    model: Model, cache: dict[str, Tensor]
) -> tuple[Float[Tensor, "component batch pos d_model"], list[str]]:
    """The final residual as a sum: embed (+ pos_embed), then attn.out and mlp.out of every block.

    Example::

        _, cache = model.run(text, save=resid_sites(model))
        parts, names = decomposed_resid(model, cache)    # names: ["embed", "0.attn.out", …]
        parts.sum(0)     # ≈ cache[f"blocks.{model.dims.n_layers - 1}.resid_post"]
    """
    assert model.dims is not None and model.adapter is not None
    parts, names = [cache["embed"]], ["embed"]
    if model.adapter.pos_embed:
        parts.append(cache["pos_embed"].expand_as(cache["embed"]))
        names.append("pos_embed")
    for layer in range(model.dims.n_layers):
        for site in ("attn.out", "mlp.out"):
            parts.append(cache[f"blocks.{layer}.{site}"])
            names.append(f"{layer}.{site}")
    return torch.stack(parts), names


def resid_sites(model: Model) -> Sequence[str]:
    """The sites `accumulated_resid` and `decomposed_resid` need, to pass as ``save=``.

    Example: ``_, cache = model.run(text, save=resid_sites(model))``.
    """
    assert model.dims is not None and model.adapter is not None
    n = model.dims.n_layers
    out = ["embed"] + (["pos_embed"] if model.adapter.pos_embed else [])
    out += [
        f"blocks.{layer}.{s}" for layer in range(n) for s in ("resid_pre", "attn.out", "mlp.out")
    ]
    return out + [f"blocks.{n - 1}.resid_post"]
