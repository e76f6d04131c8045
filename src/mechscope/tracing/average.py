"""Causal traces averaged over many facts, by token kind (Meng et al. 2022, figure 2).

Each fact's prompt is split into six kinds of token: the first, middle and
last subject tokens, the first token after the subject, the further tokens,
and the last token. A fact's indirect effect at each kind (the mean over its
positions of that kind) is averaged over the facts that have the kind: a
one-token subject is both first and last subject token and has no middle;
a prompt whose subject is followed by one token only has no further tokens.
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
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .facts import Fact
from .trace import CausalTrace, trace_fact

TOKEN_KINDS = (
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further",
    "last",
)
KIND_NAMES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}


def token_kinds(subject: tuple[int, int], n_pos: int) -> list[list[int]]:
    """The positions of each of `TOKEN_KINDS` in a prompt of `n_pos` tokens (some may be empty)."""
    start, end = subject
    last = n_pos - 1
    return [
        [start],
        list(range(start + 1, end - 1)),
        [end - 1],
        [end] if end < last else [],
        list(range(end + 1, last)),
        [last],
    ]


@dataclass(frozen=True)
class AverageTrace:
    """Mean indirect effect by token kind: `effects[kind]` is [token kind, layer]."""

    effects: dict[str, Tensor] = field(repr=False)
    counts: list[int]  # facts contributing to each token kind
    n_facts: int
    clean: float  # mean P(object), clean
    corrupted: float  # mean P(object), subject corrupted
    noise: float
    samples: int
    window: int
    facts: list[dict[str, str]] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, traces: Sequence[CausalTrace]) -> AverageTrace:
        """Average per-fact traces (all with the same kinds and model)."""
        if not traces:
            raise InputError("no traces to average: give at least one fact")
        kinds = list(traces[0].scores)
        n_layers = traces[0].scores[kinds[0]].shape[0]
        sums = {k: torch.zeros(len(TOKEN_KINDS), n_layers) for k in kinds}
        counts = [0] * len(TOKEN_KINDS)
        for tr in traces:
            groups = token_kinds(tr.subject, len(tr.tokens))
            for g, positions in enumerate(groups):
                if not positions:
                    continue
                counts[g] += 1
                for k in kinds:
                    sums[k][g] += tr.indirect_effect(k)[:, positions].mean(-1)
        effects = {
            k: s / torch.tensor(counts, dtype=s.dtype).clamp(min=1)[:, None]
            for k, s in sums.items()
        }
        for k in kinds:  # kinds no fact has are unknown, not zero
            effects[k][[c == 0 for c in counts]] = float("nan")
        n = len(traces)
        return cls(
            effects=effects,
            counts=counts,
            n_facts=n,
            clean=sum(t.clean for t in traces) / n,
            corrupted=sum(t.corrupted for t in traces) / n,
            noise=sum(t.noise for t in traces) / n,
            samples=traces[0].samples,
            window=traces[0].window,
            facts=[t.fact.to_dict() for t in traces],
        )

    def peak(self, kind: str) -> tuple[str, int, float]:
        """(token kind, layer, mean indirect effect) of the largest cell of `kind`."""
        grid = torch.nan_to_num(self.effects[kind], nan=float("-inf"))
        g, layer = divmod(int(grid.argmax()), grid.shape[1])
        return TOKEN_KINDS[g], layer, float(grid[g, layer])

    def at(self, kind: str, token_kind: str) -> Float[Tensor, " layer"]:
        """The mean indirect effect of `kind` at one token kind, per layer."""
        if token_kind not in TOKEN_KINDS:
            raise InputError(f"unknown token kind {token_kind!r}; valid: {', '.join(TOKEN_KINDS)}")
        return self.effects[kind][TOKEN_KINDS.index(token_kind)]

    def save(self, path: str | Path) -> Path:
        """One safetensors file: the effect grids, everything else as JSON metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "counts": self.counts, "n_facts": self.n_facts, "clean": self.clean,
            "corrupted": self.corrupted, "noise": self.noise, "samples": self.samples,
            "window": self.window, "facts": self.facts,
        }  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in self.effects.items()}, str(tmp),
                  metadata={"mechscope_average_trace": json.dumps(meta)})  # fmt: skip
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AverageTrace:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("mechscope_average_trace")
            if raw is None:
                raise InputError(f"{path} is not a saved average trace")
            effects = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return cls(effects=effects, **json.loads(raw))

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """The paper's averaged heatmaps, one per kind: token kind × layer, PNG/SVG/HTML."""
        from ..figures import heatmap

        stem = Path(path)
        out = {}
        for kind, grid in self.effects.items():
            span = "" if kind == "hidden" else f", window {self.window}"
            labels = [f"{t} ({c})" for t, c in zip(TOKEN_KINDS, self.counts, strict=True)]
            out[kind] = heatmap(
                torch.nan_to_num(grid, nan=0.0), stem.with_name(f"{stem.name}_{kind}"),
                title=f"average indirect effect of the {KIND_NAMES[kind]}{span} over "
                f"{self.n_facts} facts (clean {self.clean:.3f}, corrupted {self.corrupted:.3f})",
                x_labels=[str(i) for i in range(grid.shape[1])], y_labels=labels,
                x_title="layer", y_title="token (facts with it)", value_title="AIE", center=None,
                cmap="Purples" if kind == "hidden" else ("Greens" if kind == "mlp" else "Reds"),
            )  # fmt: skip
        return out

    def summary(self) -> str:
        """Plain lines: each kind's peak, and the MLP at the last subject token against the last token."""
        lines = [
            f"{self.n_facts} facts, {self.samples} noise samples, noise {self.noise:.3f}: "
            f"P(object) clean {self.clean:.3f}, corrupted {self.corrupted:.3f}"
        ]
        for kind in self.effects:
            tk, layer, value = self.peak(kind)
            lines.append(
                f"{KIND_NAMES[kind]}: peak AIE {value:.3f} at the {tk} token, layer {layer}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        peaks = {k: self.peak(k) for k in self.effects}
        text = ", ".join(f"{k} {v:.3f} at {t} L{layer}" for k, (t, layer, v) in peaks.items())
        return f"AverageTrace({self.n_facts} facts; peaks: {text})"


def trace_facts(
    model: Model,
    facts: Sequence[Fact],
    *,
    kinds: Sequence[str] = ("hidden", "mlp", "attn"),
    samples: int = 10,
    noise: float | None = None,
    window: int = 10,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
) -> tuple[AverageTrace, list[CausalTrace]]:
    """Trace each fact, then average by token kind; with `out`, every trace is saved as it ends.

    Tracing resumes: a fact whose trace is already in ``out/facts/`` is read back.
    ``engine="ray"`` spreads the facts over `workers` Ray tasks of `threads`
    torch threads (`mechscope.engine.tracing`); the traces are the local
    engine's at `threads` threads (fact i is traced with seed ``seed + i``
    wherever it runs). With the local engine, `threads` sets torch's threads.
    """
    from ..engine import check_engine, torch_threads

    check_engine(engine, address=address, workers=workers, threads=threads)
    if not facts:
        raise InputError("no facts to trace")
    folder = Path(out) / "facts" if out is not None else None
    args = {"kinds": kinds, "samples": samples, "noise": noise, "window": window, "seed": seed}
    if engine == "ray":
        from ..engine.tracing import trace_facts_on_ray

        traces = trace_facts_on_ray(
            model, facts, folder=folder, address=address, workers=workers, threads=threads or 1,
            progress=progress, **args,
        )  # fmt: skip
    else:
        bar = tqdm(facts, desc="facts", unit="fact", disable=not progress)
        with torch_threads(threads):
            traces = [trace_or_load(model, fact, i, folder, **args) for i, fact in enumerate(bar)]
    avg = AverageTrace.of(traces)
    if out is not None:
        avg.save(Path(out) / "average.safetensors")
    return avg, traces


def trace_or_load(
    model: Model,
    fact: Fact,
    i: int,
    folder: Path | None,
    *,
    kinds: Sequence[str],
    samples: int,
    noise: float | None,
    window: int,
    seed: int,
) -> CausalTrace:
    """Fact `i` of a set: read back from ``folder/<i>.safetensors`` if traced there, else traced
    (with seed ``seed + i``) and saved there atomically."""
    target = folder / f"{i:04d}.safetensors" if folder is not None else None
    if target is not None and target.exists():
        tr = CausalTrace.load(target)
        if tr.fact == fact:
            return tr
    tr = trace_fact(
        model, fact, kinds=kinds, samples=samples, noise=noise, window=window, seed=seed + i
    )
    if target is not None:
        tmp = tr.save(target.with_name(target.name + ".tmp"))
        tmp.replace(target)
    return tr
