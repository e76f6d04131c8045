"""The graph of attention heads and MLPs that circuit discovery works on.

Senders are the input embedding (``embed``; also ``pos_embed`` on GPT-2),
every head ``L{L}H{h}`` (its ``z`` pushed through its slice of the output
projection) and every MLP ``MLP{L}``; receivers are each head's query input
``L{L}H{h}.q``, each key/value head's inputs ``L{L}H{g}.k`` / ``L{L}H{g}.v``
(shared by its query heads under grouped-query attention), each MLP's input
``MLP{L}`` and the ``logits``. An edge joins a sender to every receiver that
reads the residual stream after it: a head at layer l feeds layers > l and
the MLP of layer l (not under GPT-NeoX's parallel residual). Everything here
is private to `mechscope.patching.eap`, `.ablation` and `.circuit`.

Example::

    graph = _graph(model)
    graph.senders[:3], graph.receivers[-1]   # ['embed', 'L0H0', 'L0H1'], 'logits'
    graph.valid().sum()                      # how many edges the graph has
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.model import Inputs, Model
from ..errors import InputError, MechscopeError
from .nodes import head_node, mlp_node
from .sweep import Metric, _per_prompt, _tokens


@dataclass(frozen=True)
class _Graph:
    """Senders and receivers of one model, in forward order, and which edges exist."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    parallel: bool  # attention and MLP read the same resid_pre (GPT-NeoX / Pythia)
    embeds: tuple[str, ...]  # ("embed",) or ("embed", "pos_embed")

    @property
    def senders(self) -> list[str]:
        out = list(self.embeds)
        for layer in range(self.n_layers):
            out += [head_node(layer, h) for h in range(self.n_heads)] + [mlp_node(layer)]
        return out

    def layer_receivers(self, layer: int) -> list[str]:
        return (
            [head_node(layer, h, "q") for h in range(self.n_heads)]
            + [head_node(layer, g, "k") for g in range(self.n_kv_heads)]
            + [head_node(layer, g, "v") for g in range(self.n_kv_heads)]
            + [mlp_node(layer)]
        )

    @property
    def receivers(self) -> list[str]:
        return [r for layer in range(self.n_layers) for r in self.layer_receivers(layer)] + [
            "logits"
        ]

    def first_sender(self, layer: int) -> int:
        """Index of the first sender of `layer` (= how many senders precede it)."""
        return len(self.embeds) + layer * (self.n_heads + 1)

    def n_valid(self, layer: int, mlp: bool) -> int:
        """How many senders (a prefix in forward order) reach an input of `layer`."""
        start = self.first_sender(layer)
        return start + (self.n_heads if mlp and not self.parallel else 0)

    def valid(self) -> Tensor:
        """[senders, receivers] bool: the edges of the graph."""
        mask = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        col = 0
        for layer in range(self.n_layers):
            n = len(self.layer_receivers(layer))
            mask[: self.n_valid(layer, False), col : col + n - 1] = True
            mask[: self.n_valid(layer, True), col + n - 1] = True
            col += n
        mask[:, -1] = True
        return mask

    def nodes(self) -> list[str]:
        return [*self.senders, "logits"]


def _graph(model: Model) -> _Graph:
    if model.dims is None or model.adapter is None:
        raise InputError(f"{model.name} is not a transformer with known sites: no head graph")
    a = model.adapter
    if a.attn_out != a.attn or not a.mlp_down.startswith(a.mlp_out + "."):
        raise MechscopeError(
            f"circuit discovery needs the attention and MLP outputs to be added to the residual "
            f"stream as they are; the {a.family} family norms them first (post-norm, as in "
            f"Gemma 2/3), so a head's contribution is not its slice of the output projection. "
            f"Supported: Llama-style (Llama, Mistral, Qwen, SmolLM), GPT-2, GPT-NeoX"
        )
    d = model.dims
    parallel = bool(getattr(model.hf.config, "use_parallel_residual", False))
    embeds = ("embed", "pos_embed") if a.pos_embed is not None else ("embed",)
    return _Graph(d.n_layers, d.n_heads, d.n_kv_heads, parallel, embeds)


def _pair(model: Model, clean: Inputs, corrupted: Inputs) -> tuple[Tensor, Tensor]:
    clean_x, corrupt_x = _tokens(model, clean), _tokens(model, corrupted)
    if clean_x.shape != corrupt_x.shape:
        raise InputError(
            f"clean and corrupted inputs must have the same shape, got {tuple(clean_x.shape)} "
            f"and {tuple(corrupt_x.shape)}"
        )
    return clean_x, corrupt_x


def _mean_metric(metric: Metric, logits: Tensor, n: int) -> float:
    return float(_per_prompt(metric(logits), n).mean())
