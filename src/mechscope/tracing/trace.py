"""Causal tracing (Meng et al. 2022): corrupt the subject, restore one state, measure what comes back.

The subject's token embeddings get Gaussian noise (by default 3 × the
standard deviation of the embedding matrix, the paper's level); one state
from the clean run is then restored at one token: the hidden state
(``blocks.L.resid_post``), or the MLP or attention output over a window of
layers around L. The probability of the object's first token with that
restoration, against the corrupted run's, is the indirect effect of the
state. Every (kind, layer, token, noise sample) is one row of a batched
forward: one intervention per site, vectorised over rows, restores the
right token in the right rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..core.interventions import add, apply
from ..core.model import Model
from ..errors import InputError
from .facts import Fact, subject_span

KINDS: dict[str, str] = {"hidden": "resid_post", "mlp": "mlp.out", "attn": "attn.out"}


def noise_scale(model: Model, multiplier: float = 3.0) -> float:
    """`multiplier` × the standard deviation of the token embeddings (the paper's 3σ)."""
    embed = model.hf.get_input_embeddings().weight
    return multiplier * float(embed.detach().float().std())


@dataclass(frozen=True)
class CausalTrace:
    """P(object) after restoring each state: `scores[kind]` is [layer, pos], averaged over samples."""

    fact: Fact
    tokens: list[str]
    subject: tuple[int, int]
    clean: float  # P(object) on the clean prompt
    corrupted: float  # with the subject's embeddings noised, nothing restored
    scores: dict[str, Tensor] = field(repr=False)
    noise: float = 0.0
    samples: int = 0
    window: int = 10

    def indirect_effect(self, kind: str) -> Float[Tensor, "layer pos"]:
        """P(object | restored) − P(object | corrupted)."""
        return self.scores[kind] - self.corrupted

    def save(self, path: str | Path) -> Path:
        """One safetensors file: the score grids, with everything else as JSON metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "fact": self.fact.to_dict(), "tokens": self.tokens, "subject": list(self.subject),
            "clean": self.clean, "corrupted": self.corrupted, "noise": self.noise,
            "samples": self.samples, "window": self.window,
        }  # fmt: skip
        tensors = {k: v.contiguous() for k, v in self.scores.items()}
        save_file(tensors, str(path), metadata={"mechscope": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> CausalTrace:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("mechscope")
            if raw is None:
                raise InputError(f"{path} is not a saved causal trace")
            scores = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
        meta = json.loads(raw)
        return cls(
            fact=Fact(**meta["fact"]), tokens=meta["tokens"], subject=tuple(meta["subject"]),
            clean=meta["clean"], corrupted=meta["corrupted"], scores=scores, noise=meta["noise"],
            samples=meta["samples"], window=meta["window"],
        )  # fmt: skip

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """The paper's heatmaps, one per kind: P(object) after restoring each (token, layer)."""
        from ..figures import heatmap

        stem = Path(path)
        labels = [
            t + ("*" if self.subject[0] <= i < self.subject[1] else "")
            for i, t in enumerate(self.tokens)
        ]
        names = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}
        out = {}
        for kind, grid in self.scores.items():
            span = "" if kind == "hidden" else f" (window of {self.window} layers)"
            out[kind] = heatmap(
                grid.t(), stem.with_name(f"{stem.name}_{kind}"),
                title=f"restoring the {names[kind]}{span}: P({self.fact.object!r}); corrupted "
                f"{self.corrupted:.3f}, clean {self.clean:.3f}",
                x_labels=[str(i) for i in range(grid.shape[0])], y_labels=labels,
                x_title="layer", y_title="token (* subject)", value_title="P(object)", center=None,
                cmap="Purples" if kind == "hidden" else ("Greens" if kind == "mlp" else "Reds"),
            )  # fmt: skip
        return out

    def __repr__(self) -> str:
        return (
            f"CausalTrace({self.fact.prompt!r} → {self.fact.object!r}: clean {self.clean:.3f}, "
            f"corrupted {self.corrupted:.3f}, kinds {list(self.scores)}, {self.samples} noise samples)"
        )


def _rows(
    kinds: Sequence[str], n_layers: int, n_pos: int, samples: int
) -> list[tuple[str, int, int, int]]:
    return [
        (k, layer, t, s)
        for k in kinds
        for layer in range(n_layers)
        for t in range(n_pos)
        for s in range(samples)
    ]


@torch.no_grad()
def trace_fact(
    model: Model,
    fact: Fact,
    *,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    samples: int = 10,
    noise: float | None = None,
    window: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> CausalTrace:
    """Trace every (kind, layer, token) of `fact` with `samples` noise draws, batched.

    Example::

        tr = trace_fact(model, Fact("The Eiffel Tower", "{} is located in the city of", "Paris"))
        tr.indirect_effect("mlp").amax()
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise InputError(f"unknown trace kinds {bad}; valid: {', '.join(KINDS)}")
    if samples < 1 or window < 1:
        raise InputError(f"samples and window must be at least 1, got {samples} and {window}")
    if model.dims is None:
        raise InputError("causal tracing needs a transformer with blocks (a supported LM)")
    n_layers = model.dims.n_layers
    ids = model.to_tokens(fact.prompt)
    n_pos = ids.shape[1]
    start, end = subject_span(model, fact)
    target = model.to_tokens(" " + fact.object, prepend_bos=False)[0, 0]
    noise = noise_scale(model) if noise is None else noise
    sites = [f"blocks.{layer}.{KINDS[k]}" for k in kinds for layer in range(n_layers)]
    clean_out = model.run(ids, save=sorted(set(sites)))
    clean = clean_out.cache
    p_clean = float(clean_out.logits[0, -1].float().softmax(-1)[target])
    g = torch.Generator().manual_seed(seed)
    d_model = model.dims.d_model
    draws = torch.randn(samples, end - start, d_model, generator=g) * noise  # one per sample
    placed = _place(draws, start, end, n_pos).to(model.device, clean_out.logits.dtype)

    def run_rows(rows: list[tuple[str, int, int, int]]) -> Tensor:
        n = len(rows)
        restore: dict[str, Tensor] = {}  # site -> [rows, pos] mask of where to put the clean value
        for r, (kind, layer, t, _) in enumerate(rows):
            if kind == "hidden":
                layers = [layer]
            else:  # a window of layers centred on `layer`, clipped at the ends
                lo = max(0, min(layer - window // 2, n_layers - window))
                layers = list(range(lo, min(n_layers, lo + window)))
            for lay in layers:
                site = f"blocks.{lay}.{KINDS[kind]}"
                restore.setdefault(site, torch.zeros(n, n_pos, dtype=torch.bool))[r, t] = True
        ivs = [add("embed", placed[[s for *_, s in rows]])]
        for site, mask in restore.items():
            value, where = clean[site], mask.to(model.device)[..., None]
            ivs.append(apply(site, lambda x, v=value, w=where: torch.where(w, v.expand_as(x), x)))
        logits = model.run(ids.expand(n, -1), interventions=ivs).logits[:, -1]
        return logits.float().softmax(-1)[:, target].cpu()

    corrupted = model.run(ids.expand(samples, -1), interventions=[add("embed", placed)]).logits[
        :, -1
    ]
    p_corrupt = float(corrupted.float().softmax(-1)[:, target].mean())
    rows = _rows(kinds, n_layers, n_pos, samples)
    probs = torch.cat([run_rows(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)])
    grid = probs.view(len(kinds), n_layers, n_pos, samples).mean(-1)
    return CausalTrace(
        fact=fact,
        tokens=model.to_str_tokens(fact.prompt),
        subject=(start, end),
        clean=p_clean,
        corrupted=p_corrupt,
        scores={k: grid[i] for i, k in enumerate(kinds)},
        noise=noise,
        samples=samples,
        window=window,
    )


def _place(draws: Tensor, start: int, end: int, n_pos: int) -> Tensor:
    """[samples, pos, d] noise: the draws at the subject's positions, zero elsewhere."""
    out = torch.zeros(draws.shape[0], n_pos, draws.shape[-1])
    out[:, start:end] = draws
    return out
