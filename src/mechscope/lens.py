"""Logit lens and direct logit attribution.

The logit lens reads each layer's residual stream through the real final norm
and unembedding. Direct logit attribution (DLA) splits the final residual
stream into the pieces written by the embedding, every head (``attn.z``
through its slice of the output projection), every attention bias and every
MLP (or MLP neuron), and scores each piece along a logit direction such as
logit(IO) − logit(S) with the final norm's scale frozen from the real final
residual: the pieces then sum to the model's own logit difference. Where a
norm sits between a sublayer and the residual add (Gemma 2/3), its scale is
frozen at the sublayer's real output in the same way. RMSNorm weights count
as w or as Gemma's 1 + w, whichever reproduces the module's own output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .core.model import Inputs, Model
from .core.weights import mlp_down_projection, output_projection, resident
from .errors import InputError, MechscopeError


def _need_known_sites(model: Model) -> None:
    if model.adapter is None or model.dims is None:
        raise InputError("the lens needs a transformer with known sites")


def _rms_weight(norm: nn.Module, x: Tensor, eps: float) -> Tensor:
    """An RMSNorm's effective weight at input `x`: w, or 1 + w (Gemma), whichever it computes."""
    weight = norm.weight
    with torch.no_grad():
        y = norm(x).float()
        unit = x.float() * (x.float().pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        errors = [float((unit * w.float() - y).abs().max()) for w in (weight, 1.0 + weight)]
    return weight if errors[0] <= errors[1] else 1.0 + weight


def _frozen_post_norm(
    model: Model, layer: int, part: str, out: Tensor
) -> Callable[[Tensor], Tensor]:
    """The module between a sublayer and the residual add as a linear map frozen at `out`.

    The identity where the sublayer writes to the residual stream directly;
    for Gemma's post-attention / post-feedforward RMSNorm, x ↦ w ⊙ x / rms(out),
    `out` [batch, d_model] being the sublayer's real output.
    """
    assert model.adapter is not None
    path = getattr(model.adapter, f"{part}_out")
    if path == (model.adapter.attn if part == "attn" else "mlp"):
        return lambda x: x
    norm = model.hf.get_submodule(f"{model.adapter.layers}.{layer}.{path}")
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", None)
    if (
        eps is None
        or getattr(norm, "weight", None) is None
        or getattr(norm, "bias", None) is not None
    ):
        raise MechscopeError(
            f"{model.adapter.family} passes the {part} output through {type(norm).__name__} "
            "before the residual add; direct attribution can freeze an RMSNorm there, not this"
        )
    scale = (out.float().pow(2).mean(-1, keepdim=True) + eps).rsqrt().to(out.dtype)
    gain = scale * _rms_weight(norm, out, eps)  # [batch, d_model]
    return lambda x: x * gain


def frozen_final_norm(
    model: Model, final_resid: Float[Tensor, "*batch d_model"]
) -> Callable[[Tensor], Tensor]:
    """The final norm as a linear map, its scale frozen at `final_resid`'s (same leading shape).

    RMSNorm: x ↦ w ⊙ x / rms(final) (w is 1 + the weight on Gemma, whose
    RMSNorm computes that); LayerNorm: x ↦ w ⊙ (x − mean x) / std(final).
    The LayerNorm bias is a constant and is left out (it is `norm_bias`).
    """
    assert model.adapter is not None
    norm = model.hf.get_submodule(model.adapter.final_norm)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
    weight = norm.weight
    if isinstance(norm, nn.LayerNorm):
        centred = final_resid - final_resid.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        return lambda x: (x - x.mean(-1, keepdim=True)) * scale * weight
    scale = (final_resid.float().pow(2).mean(-1, keepdim=True) + eps).rsqrt().to(final_resid.dtype)
    weight = _rms_weight(norm, final_resid, eps)
    return lambda x: x * scale * weight


def logit_direction(model: Model, good: int | str, bad: int | str | None = None) -> Tensor:
    """W_U[good] − W_U[bad] (or W_U[good]): the residual direction of a logit (difference)."""
    assert model.adapter is not None
    resident(model, "logit_direction")
    w_u = model.hf.get_submodule(model.adapter.unembed).weight  # [vocab, d_model]

    def tid(t: int | str) -> int:
        return model.to_single_token(t) if isinstance(t, str) else int(t)

    direction = w_u[tid(good)]
    if bad is not None:
        direction = direction - w_u[tid(bad)]
    return direction.detach()


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution along a direction, at one position, averaged over the batch.

    ``heads`` [layer, head], ``mlps`` [layer], ``neurons`` [layer, d_mlp],
    ``attn_bias`` [layer], ``embed``; ``total`` is the model's own value
    (logit difference) and ``norm_bias`` what the final norm's bias and
    unembedding bias add (zero for a logit difference without biases).
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
    norm = frozen_final_norm(model, final)
    d = direction.expand(batch, -1) if direction.ndim == 1 else direction

    def score(component: Tensor) -> Tensor:  # [batch, ..., d_model] -> [...] (mean over batch)
        shape = (batch,) + (1,) * (component.ndim - 2) + (component.shape[-1],)
        normed = norm(component) if component.ndim == 2 else _norm_nd(norm, component, final.shape)
        return (normed * d.reshape(shape)).sum(-1).mean(0)

    embed = at(cache["embed"]) + (
        at(cache["pos_embed"].expand(batch, -1, -1)) if "pos_embed" in cache else 0
    )
    heads, biases, mlps, neurons = [], [], [], []
    with torch.no_grad():
        for layer in range(n_layers):
            w_o, b_o = output_projection(model, layer)  # [head, d_head, d_model]
            z = at(cache[f"blocks.{layer}.attn.z"])  # [batch, head, d_head]
            per_head = torch.einsum("bhe,hed->bhd", z, w_o)
            attn_total = per_head.sum(1) + (b_o if b_o is not None else 0.0)
            attn_post = _frozen_post_norm(model, layer, "attn", attn_total)
            heads.append(score(attn_post(per_head.transpose(0, 1)).transpose(0, 1)))
            biases.append(
                score(attn_post(b_o.expand(batch, -1))) if b_o is not None else torch.tensor(0.0)
            )
            w_down, b_down = mlp_down_projection(model, layer)  # [d_mlp, d_model]
            post = at(cache[f"blocks.{layer}.mlp.post"])  # [batch, d_mlp]
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
        norm_bias = getattr(model.hf.get_submodule(model.adapter.final_norm), "bias", None)
        bias_score = float((norm_bias * d).sum(-1).mean()) if norm_bias is not None else 0.0
    return Attribution(
        heads=head_t,
        mlps=mlp_t,
        neurons=torch.stack(neurons),
        attn_bias=bias_t,
        embed=embed_score,
        total=actual,
        norm_bias=bias_score,
    )


def _compose(
    outer: Callable[[Tensor], Tensor], inner: Callable[[Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    """x ↦ outer(inner(x))."""
    return lambda x: outer(inner(x))


def _norm_nd(
    norm: Callable[[Tensor], Tensor], component: Tensor, batch_shape: torch.Size
) -> Tensor:
    """Apply a frozen norm whose scale has shape [batch, 1] to [batch, k, d_model]."""
    flat = component.transpose(0, 1)  # [k, batch, d_model]
    return norm(flat).transpose(0, 1)


def _norm_rows(norm: Callable[[Tensor], Tensor], direction: Tensor) -> Tensor:
    """Fold the frozen norm into the direction: returns [batch, d_model] r with norm(x)·d = x·r."""
    # for x ↦ (x − mean x) * s * w (or x * s * w) the adjoint applied to d is computed by autograd
    probe = torch.zeros_like(direction, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad((norm(probe) * direction).sum(), probe)
    return g


def _actual_final(model: Model, final: Tensor) -> Tensor:
    assert model.adapter is not None
    return model.hf.get_submodule(model.adapter.final_norm)(final)


def _actual_direction_value(model: Model, final: Tensor, direction: Tensor) -> float:
    """The model's own value along `direction`: final_norm(final) · direction, batch mean."""
    with torch.no_grad():
        return float((_actual_final(model, final) * direction).sum(-1).mean())


@dataclass(frozen=True)
class LogitLens:
    """Per layer (resid_pre of each block, then the final residual) × position: the lens logits' summary.

    ``top_tokens[layer][pos]`` is the top token's text, ``top_probs`` its
    probability [layer, pos], ``target_probs`` the probability of `target`
    [layer, pos] (None when no target was given).
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
    norm = model.hf.get_submodule(model.adapter.final_norm)
    unembed = model.hf.get_submodule(model.adapter.unembed)
    target_id = model.to_single_token(target) if target is not None else None
    tops, top_p, tgt = [], [], []
    with torch.no_grad():
        for site in sites:
            probs = unembed(norm(cache[site][0])).float().softmax(-1)  # [pos, vocab]
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
    """``blocks.L.resid_pre`` for every block, then the last block's resid_post, stacked."""
    assert model.dims is not None
    n = model.dims.n_layers
    return torch.stack(
        [cache[f"blocks.{layer}.resid_pre"] for layer in range(n)]
        + [cache[f"blocks.{n - 1}.resid_post"]]
    )


def decomposed_resid(
    model: Model, cache: dict[str, Tensor]
) -> tuple[Float[Tensor, "component batch pos d_model"], list[str]]:
    """The final residual as a sum: embed (+ pos_embed), then attn.out and mlp.out of every block."""
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
    """The sites `accumulated_resid` and `decomposed_resid` need, to pass as ``save=``."""
    assert model.dims is not None and model.adapter is not None
    n = model.dims.n_layers
    out = ["embed"] + (["pos_embed"] if model.adapter.pos_embed else [])
    out += [
        f"blocks.{layer}.{s}" for layer in range(n) for s in ("resid_pre", "attn.out", "mlp.out")
    ]
    return out + [f"blocks.{n - 1}.resid_post"]
