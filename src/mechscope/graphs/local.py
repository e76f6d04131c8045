"""The local replacement model of one prompt: the model made linear around its own run.

For one prompt, every MLP is replaced by its transcoder with the latents fixed
at their values on the prompt and the error term (MLP output − transcoder
output) added back as a constant; attention patterns and every norm's
denominator are frozen at their values on the prompt. The forward's numbers
are the model's own (each frozen part equals what it replaces); only the
gradient changes: it flows through the residual stream, the attention value
and output paths, the frozen norms and the transcoders' skip connections,
never through a latent or a softmax. A latent's pre-activation, a logit, is
then an affine function of the writes into the residual stream of the
earlier nodes (token embeddings, latents, error terms), and the direct effect
of one node on another is one product of a gradient with a write vector.

`LocalReplacement` runs that forward on a batch of copies of the prompt with a
zero "write" tensor per layer (and one at the embeddings) to read gradients
at, so one backward gives the rows of as many target nodes as the batch has
copies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.interventions import Intervention, apply, observe
from ..core.placement import memory_room
from ..core.weights import frozen_norm
from ..errors import InputError
from ..transcoders.model import TranscoderSet, mlp_sites

if TYPE_CHECKING:
    from ..core.model import Model


class GraphError(InputError):
    """A model, transcoder set or prompt an attribution graph cannot be built for.

    Example: ``attribution_graph(gemma, tcs, "…")`` raises it: Gemma's post-norms are not
    frozen yet.
    """


@dataclass(frozen=True)
class CleanRun:
    """What one prompt's clean run fixes: each layer's MLP input, latents and error term.

    Shapes (one prompt, T tokens): ``mlp_in[L]`` [T, d_model], ``latents[L]``
    [T, width] (dense, mostly zero), ``errors[L]`` [T, d_model] (the MLP output minus
    the transcoder's output; the whole MLP output for a layer without transcoder),
    ``resid0`` [T, d_model] (the embeddings as they enter block 0), ``logits`` [T, vocab].

    Example: ``clean = clean_run(model, tcs, ids)``; ``clean.latents[3].count_nonzero(-1)``.
    """

    ids: Tensor
    resid0: Float[Tensor, "pos d_model"]
    mlp_in: dict[int, Tensor]
    latents: dict[int, Tensor]
    errors: dict[int, Tensor]
    logits: Float[Tensor, "pos vocab"]


def check_model(model: Model, transcoders: TranscoderSet) -> None:
    """Refuse models whose local replacement is not built here (and sets not of `model`).

    Example: ``check_model(tiny_model("gemma3"), tcs)`` raises GraphError.
    """
    if not isinstance(transcoders, TranscoderSet):
        raise GraphError(
            "transcoders must be a TranscoderSet (mechscope.transcoders), got "
            f"{type(transcoders).__name__}"
        )
    if model.adapter is None or model.dims is None:
        raise GraphError(f"{model.name} is not a transformer language model mechscope knows")
    if model.adapter.post_norms:
        raise GraphError(
            f"attribution graphs freeze pre-norms only; {model.adapter.family} also norms the "
            "attention and MLP outputs (post-norms), which are not frozen yet: use a Llama, "
            "Mistral, Qwen, GPT-2 or GPT-NeoX family model"
        )
    if model.offloaded:
        raise GraphError("attribution graphs need every weight on a device (no disk offload)")
    transcoders.check(model)


def check_batch(model: Model, batch: int, tokens: int) -> None:
    """Refuse a `batch` of prompt copies whose kept forward cannot fit in memory (a rough
    bound: some float32 tensors of the MLP's width per layer and token, kept for backwards).

    Example: ``check_batch(model, 10**12, 12)`` raises GraphError naming the batch.
    """
    assert model.dims is not None
    width = max(model.dims.d_model, model.dims.d_mlp)
    need = 4 * 16 * batch * tokens * model.dims.n_layers * width
    room = memory_room(model.device)
    if room is None:  # not known here: no guard
        return
    if need > room:
        raise GraphError(
            f"batch {batch} keeps about {need / 2**30:,.0f} GiB of activations for {tokens} "
            f"tokens, more than the {room / 2**30:,.1f} GiB of {model.device}; give a smaller batch"
        )


def _parallel(model: Model) -> bool:
    return bool(getattr(model.hf.config, "use_parallel_residual", False))


@torch.no_grad()
def clean_run(
    model: Model, transcoders: TranscoderSet, ids: Tensor, *, first_as_error: bool = False
) -> CleanRun:
    """The prompt's clean run (ids [1, T]) and the quantities the local replacement fixes.

    With `first_as_error`, the latents of position 0 are left out (zero) and their part of
    each MLP output goes to that position's error term: position 0 is the attention sink
    of most language models (the BOS token where there is one), whose large, prompt-
    independent latents circuit-tracer leaves out of its graphs the same way.

    Example: ``clean_run(model, tcs, model.to_tokens("The capital of France is"))``.
    """
    assert model.dims is not None
    n = model.dims.n_layers
    sites = {layer: mlp_sites(model, layer) for layer in range(n)}
    names = ["blocks.0.resid_pre", *(s for pair in sites.values() for s in pair)]
    out = model.run(ids, save=names)
    mlp_in, latents, errors = {}, {}, {}
    for layer, (site_in, site_out) in sites.items():
        x, y = out.cache[site_in][0].float(), out.cache[site_out][0].float()
        mlp_in[layer] = x
        if layer in transcoders.layers:
            tc = transcoders[layer]
            f = tc.encode(x.to(tc.W_enc.dtype)).float()
            if first_as_error:
                f[0] = 0.0
            latents[layer] = f
            errors[layer] = y - tc.decode(f.to(tc.W_enc.dtype), x.to(tc.W_enc.dtype)).float()
        else:
            errors[layer] = y
    assert out.logits is not None
    resid0 = out.cache["blocks.0.resid_pre"][0].float()
    return CleanRun(ids, resid0, mlp_in, latents, errors, out.logits[0].float())


@dataclass
class Forward:
    """One local-replacement forward on B copies of the prompt, its graph kept for backwards.

    ``writes[0]`` is the zero tensor added at the embeddings, ``writes[L + 1]`` the one
    added to layer L's MLP output (each [B, T, d_model], requiring grad);
    ``mlp_in[L]`` the MLP inputs [B, T, d_model] and ``logits`` [B, T, vocab], all in
    the graph.

    Example: ``fwd = LocalReplacement(model, tcs, clean).forward(64)``.
    """

    writes: list[Tensor]
    mlp_in: dict[int, Tensor]
    logits: Tensor


class LocalReplacement:
    """The interventions that make `model` its local replacement around `clean`.

    Example::

        local = LocalReplacement(model, tcs, clean_run(model, tcs, ids))
        fwd = local.forward(batch=32, writes={3: delta})   # delta [T, d_model] into MLP 3's output
    """

    def __init__(self, model: Model, transcoders: TranscoderSet, clean: CleanRun) -> None:
        check_model(model, transcoders)
        self.model, self.transcoders, self.clean = model, transcoders, clean

    def forward(
        self,
        batch: int,
        writes: dict[int, Tensor] | None = None,
        blocked: Sequence[tuple[int, int, int]] = (),
    ) -> Forward:
        """Run the local replacement on `batch` copies; `writes` (layer, or -1 for the
        embeddings → [T, d_model]) are added where the nodes write, for finite differences;
        `blocked` (row, layer, head) stops the gradient through one head in one row (its
        value unchanged), so that row's edges leave out the paths through that head.

        Example: ``local.forward(1, writes={-1: eps * e_0})`` moves token 0's embedding.
        """
        model, clean = self.model, self.clean
        assert model.dims is not None and model.adapter is not None
        n, d = model.dims.n_layers, model.dims.d_model
        t = clean.ids.shape[1]
        device = model.device
        zeros = [torch.zeros(batch, t, d, device=device, requires_grad=True) for _ in range(n + 1)]
        extra = writes or {}
        live: dict[str, Tensor] = {}
        mlp_in: dict[int, Tensor] = {}
        ivs: list[Intervention] = []

        def start(x: Tensor) -> Tensor:
            base = x.detach() + zeros[0].to(x.dtype)
            if -1 in extra:
                base = base + extra[-1].to(base)
            live["pre.0"] = base
            return base

        ivs.append(apply("blocks.0.resid_pre", start))
        a = model.adapter
        for layer in range(n):
            site_in, site_out = mlp_sites(model, layer)
            if layer:
                ivs.append(observe(f"blocks.{layer}.resid_pre", _keep(live, f"pre.{layer}")))
            ivs.append(
                apply(f"{a.layers}.{layer}.{a.attn_norm}", self._norm("attn", layer, f"pre.{layer}", live))
            )  # fmt: skip
            ivs.append(apply(f"blocks.{layer}.attn.pattern", lambda p: p.detach()))
            heads = [(r, h) for r, lay, h in blocked if lay == layer]
            if heads:
                ivs.append(apply(f"blocks.{layer}.attn.z", _blocker(heads)))
            mlp_from = f"pre.{layer}" if _parallel(model) else f"mid.{layer}"
            if not _parallel(model):
                ivs.append(observe(f"blocks.{layer}.resid_mid", _keep(live, f"mid.{layer}")))
            norm = self._norm("mlp", layer, mlp_from, live)

            def mlp_input(y: Tensor, layer: int = layer, norm: Callable = norm) -> Tensor:
                x = norm(y)
                mlp_in[layer] = x
                return x

            ivs.append(apply(site_in, mlp_input))
            ivs.append(apply(site_out, self._mlp(layer, mlp_in, zeros[layer + 1], extra)))
        ivs.append(observe(f"blocks.{n - 1}.resid_post", _keep(live, "final")))
        ivs.append(apply("final_norm", self._norm("final", None, "final", live)))
        ids = clean.ids.to(device).expand(batch, t)
        out = model.run(ids, interventions=ivs, keep_graph=True)
        assert out.logits is not None
        return Forward(zeros, mlp_in, out.logits)

    def _norm(
        self, which: str, layer: int | None, source: str, live: dict[str, Tensor]
    ) -> Callable[[Tensor], Tensor]:
        model = self.model

        def frozen(y: Tensor) -> Tensor:
            x = live[source]
            f = frozen_norm(model, which, x.detach(), layer)  # type: ignore[arg-type]
            linear = f(x)
            return y.detach() + (linear - linear.detach()).to(y.dtype)

        return frozen

    def _mlp(
        self, layer: int, mlp_in: dict[int, Tensor], zero: Tensor, extra: dict[int, Tensor]
    ) -> Callable[[Tensor], Tensor]:
        clean = self.clean
        tc = self.transcoders[layer] if layer in self.transcoders.layers else None

        def replaced(y: Tensor) -> Tensor:
            if tc is None:
                base = clean.errors[layer][None]
            else:
                x = mlp_in[layer]
                dt = tc.W_enc.dtype
                f = clean.latents[layer].to(dt)
                base = (f @ tc.W_dec + tc.b_dec).float()[None] + clean.errors[layer][None]
                if tc.cfg.skip:
                    base = base + (x.to(dt) @ tc.W_skip).float()
            out = base + zero
            if layer in extra:
                out = out + extra[layer].to(out)
            return out.to(y.dtype)

        return replaced


def _blocker(heads: list[tuple[int, int]]) -> Callable[[Tensor], Tensor]:
    """z [batch, pos, head, d_head] with the gradient stopped at (row, head) for `heads`."""

    def block(z: Tensor) -> Tensor:
        mask = torch.zeros(z.shape[0], 1, z.shape[2], 1, dtype=torch.bool, device=z.device)
        for r, h in heads:
            mask[r, 0, h, 0] = True
        return torch.where(mask, z.detach(), z)

    return block


def _keep(live: dict[str, Tensor], key: str) -> Callable[[Tensor], None]:
    def keep(x: Tensor) -> None:
        live[key] = x

    return keep
