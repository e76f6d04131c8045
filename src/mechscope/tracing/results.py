"""The results of causal tracing and ROME, on the one `Result` contract, readable without torch.

`CausalTrace` is one fact's trace (P(object) after restoring each state),
`AverageTrace` the mean indirect effect by token kind over many facts, `Edit`
the rank-one update ROME writes (its runtime handle on the edited model is
not saved) and `EditReport` its held-out evaluation. Each saves as one
safetensors file and reopens with torch tensors or, for the viewer, numpy
arrays; the methods the viewer and the reprs use work on both.

Example::

    trace = CausalTrace.load("runs/trace-eiffel/trace.safetensors", arrays="numpy")
    trace.indirect_effect("mlp").max()
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..results import Result, as_numpy, result, unsaved
from .facts import Fact

if TYPE_CHECKING:
    from jaxtyping import Float
    from rich.console import RenderableType
    from torch import Tensor

    from ..core.model import Model

    Array = Tensor | np.ndarray

__all__ = [
    "KIND_NAMES",
    "TOKEN_KINDS",
    "AverageTrace",
    "CausalTrace",
    "Edit",
    "EditReport",
    "Fact",
    "ngram_entropy",
]

# the kinds of state a trace restores, as figures and pages name them
KIND_NAMES = {"hidden": "hidden state", "mlp": "MLP output", "attn": "attention output"}
# the kinds of token an average groups a prompt's positions into (`average.token_kinds`)
TOKEN_KINDS = (
    "first subject",
    "middle subject",
    "last subject",
    "first subsequent",
    "further",
    "last",
)


def _cmap(kind: str) -> str:
    return "Purples" if kind == "hidden" else ("Greens" if kind == "mlp" else "Reds")


# --- causal tracing ---------------------------------------------------------------------


def token_kinds(subject: tuple[int, int], n_pos: int) -> list[list[int]]:
    """The positions of each of `TOKEN_KINDS` in a prompt of `n_pos` tokens (some may be empty).

    Example: ``token_kinds((1, 4), 8)`` → ``[[1], [2], [3], [4], [5, 6], [7]]``.
    """
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


def _down(model: Model, layer: int) -> Any:
    """The MLP output projection of block `layer`: the module a ROME edit rewrites."""
    from ..core.weights import block_module, resident

    if model.adapter is None or model.dims is None:
        raise InputError("ROME needs a transformer language model with MLP blocks")
    resident(model, "ROME")
    return block_module(model, layer, model.adapter.mlp_down)


def _rank_one(module: Any, value: Tensor, key: Tensor) -> Tensor:
    """The update of `module.weight` that adds value·(key · x) to its output for input x."""
    import torch
    from torch import nn

    w = module.weight
    if isinstance(module, nn.Linear):  # weight [out, in]
        return torch.outer(value, key).to(w.dtype)
    if tuple(w.shape) == (key.numel(), value.numel()):  # GPT-2's Conv1D: weight [in, out]
        return torch.outer(key, value).to(w.dtype)
    raise InputError(f"cannot edit {type(module).__name__} with weight {tuple(w.shape)}")


@result
class CausalTrace(Result):
    """P(object) after restoring each state: `scores[kind]` is [layer, pos], averaged over samples.

    Example::

        tr = trace_fact(model, Fact("The Eiffel Tower", "{} is located in the city of", "Paris"))
        tr.indirect_effect("mlp").max()
    """

    format = "mechscope.causal_trace/1"

    fact: Fact
    tokens: list[str]
    subject: tuple[int, int]
    clean: float  # P(object) on the clean prompt
    corrupted: float  # with the subject's embeddings noised, nothing restored
    scores: dict[str, Array]
    noise: float = 0.0
    samples: int = 0
    window: int = 10

    def __post_init__(self) -> None:
        start, end = self.subject
        if not 0 <= start < end <= len(self.tokens):
            raise InputError(
                f"a causal trace's subject span {[start, end]} must lie within its "
                f"{len(self.tokens)} tokens"
            )
        if not self.scores:
            raise InputError("a causal trace needs at least one kind of score grid")
        for kind, grid in self.scores.items():
            if len(grid.shape) != 2 or grid.shape[1] != len(self.tokens):
                raise InputError(
                    f"a causal trace's {kind} grid is {list(grid.shape)}, not "
                    f"[layer, {len(self.tokens)} tokens]"
                )

    def indirect_effect(self, kind: str) -> Float[Array, "layer pos"]:
        """P(object | restored) − P(object | corrupted)."""
        return self.scores[kind] - self.corrupted

    def summary(self) -> str:
        return (
            f"{self.fact.prompt!r} → {self.fact.object!r}: clean {self.clean:.3f}, "
            f"corrupted {self.corrupted:.3f}, kinds {list(self.scores)}, "
            f"{self.samples} noise samples"
        )

    def __rich__(self) -> RenderableType:
        """The repr, then the largest indirect effect of each kind (token, layer)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title="largest indirect effect per kind")
        for col in ("kind", "token", "layer", "P(object) restored", "indirect effect"):
            table.add_column(col)
        for kind, grid in self.scores.items():
            ie = self.indirect_effect(kind)
            layer, pos = divmod(int(ie.argmax()), ie.shape[1])
            table.add_row(kind, repr(self.tokens[pos]), str(layer), f"{float(grid[layer, pos]):.3f}",
                          f"{float(ie[layer, pos]):.3f}")  # fmt: skip
        return Group(Text(repr(self)), table)

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """The paper's heatmaps, one per kind: P(object) after restoring each (token, layer)."""
        from ..figures import heatmap

        stem = Path(path)
        labels = [
            t + ("*" if self.subject[0] <= i < self.subject[1] else "")
            for i, t in enumerate(self.tokens)
        ]
        out = {}
        for kind, grid in self.scores.items():
            span = "" if kind == "hidden" else f" (window of {self.window} layers)"
            out[kind] = heatmap(
                as_numpy(grid).T, stem.with_name(f"{stem.name}_{kind}"),
                title=f"restoring the {KIND_NAMES[kind]}{span}: P({self.fact.object!r}); "
                f"corrupted {self.corrupted:.3f}, clean {self.clean:.3f}",
                x_labels=[str(i) for i in range(grid.shape[0])], y_labels=labels,
                x_title="layer", y_title="token (* subject)", value_title="P(object)", center=None,
                cmap=_cmap(kind),
            )  # fmt: skip
        return out


@result
class AverageTrace(Result):
    """Mean indirect effect by token kind: `effects[kind]` is [token kind, layer].

    Example::

        avg = AverageTrace.of(traces)
        avg.peak("mlp")   # ('last subject', 0, 0.18)
    """

    format = "mechscope.average_trace/1"

    effects: dict[str, Array]
    counts: list[int]  # facts contributing to each token kind
    n_facts: int
    clean: float  # mean P(object), clean
    corrupted: float  # mean P(object), subject corrupted
    noise: float
    samples: int
    window: int
    facts: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.counts) != len(TOKEN_KINDS) or not self.effects:
            raise InputError(
                f"an average trace needs {len(TOKEN_KINDS)} counts (one per token kind) and "
                f"at least one grid, got {len(self.counts)} counts and {len(self.effects)} grids"
            )
        for kind, grid in self.effects.items():
            if len(grid.shape) != 2 or grid.shape[0] != len(TOKEN_KINDS):
                raise InputError(
                    f"an average trace's {kind} grid is {list(grid.shape)}, not "
                    f"[{len(TOKEN_KINDS)} token kinds, layer]"
                )

    @classmethod
    def of(cls, traces: Sequence[CausalTrace]) -> AverageTrace:
        """Average per-fact traces (all with the same kinds and model)."""
        import torch

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
                    ie = torch.as_tensor(tr.indirect_effect(k))
                    sums[k][g] += ie[:, positions].mean(-1)
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
        grid = np.nan_to_num(as_numpy(self.effects[kind]), nan=-np.inf)
        g, layer = divmod(int(grid.argmax()), grid.shape[1])
        return TOKEN_KINDS[g], layer, float(grid[g, layer])

    def at(self, kind: str, token_kind: str) -> Float[Array, " layer"]:
        """The mean indirect effect of `kind` at one token kind, per layer."""
        if token_kind not in TOKEN_KINDS:
            raise InputError(f"unknown token kind {token_kind!r}; valid: {', '.join(TOKEN_KINDS)}")
        return self.effects[kind][TOKEN_KINDS.index(token_kind)]

    def summary(self) -> str:
        """Plain lines: the facts and probabilities, then each kind's peak."""
        lines = [
            f"{self.n_facts} facts, {self.samples} noise samples, noise {self.noise:.3f}: "
            f"P(object) clean {self.clean:.3f}, corrupted {self.corrupted:.3f}"
        ]
        for kind in self.effects:
            tk, layer, value = self.peak(kind)
            lines.append(
                f"{KIND_NAMES.get(kind, kind)}: peak AIE {value:.3f} at the {tk} token, "
                f"layer {layer}"
            )
        return "\n".join(lines)

    def __rich__(self) -> RenderableType:
        """The summary, then per kind the largest average indirect effect at each token kind."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        tables = []
        for kind, grid in self.effects.items():
            table = Table(title=f"{kind}: largest average indirect effect")
            table.add_column("token")
            table.add_column("facts", justify="right")
            table.add_column("max AIE", justify="right")
            table.add_column("at layer", justify="right")
            for i, name in enumerate(TOKEN_KINDS):
                if self.counts[i] == 0:
                    table.add_row(name, "0", "–", "–")
                    continue
                row = grid[i]
                table.add_row(
                    name, str(self.counts[i]), f"{float(row.max()):.3f}", str(int(row.argmax()))
                )
            tables.append(table)
        return Group(Text(self.summary()), *tables)

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """The paper's averaged heatmaps, one per kind: token kind × layer, PNG/SVG/HTML."""
        from ..figures import heatmap

        stem = Path(path)
        out = {}
        for kind, grid in self.effects.items():
            span = "" if kind == "hidden" else f", window {self.window}"
            labels = [f"{t} ({c})" for t, c in zip(TOKEN_KINDS, self.counts, strict=True)]
            out[kind] = heatmap(
                np.nan_to_num(as_numpy(grid), nan=0.0), stem.with_name(f"{stem.name}_{kind}"),
                title=f"average indirect effect of the {KIND_NAMES[kind]}{span} over "
                f"{self.n_facts} facts (clean {self.clean:.3f}, corrupted {self.corrupted:.3f})",
                x_labels=[str(i) for i in range(grid.shape[1])], y_labels=labels,
                x_title="layer", y_title="token (facts with it)", value_title="AIE", center=None,
                cmap=_cmap(kind),
            )  # fmt: skip
        return out


# --- ROME -------------------------------------------------------------------------------


@result
class Edit(Result):
    """A rank-one edit of ``blocks.{layer}``'s MLP output projection; `undo` restores it exactly.

    ``W' = W + value ⊗ key_dir`` (``key_dir = C⁻¹k* / (k*ᵀC⁻¹k*)``), so the
    output for the key k* moves by exactly `value` (= δ). Works as a context
    manager: the edit is undone when the block ends. The saved part is the
    update; `model` and `original` (the weight before, for `undo`) are the
    runtime state of an applied edit.

    Example::

        Edit.load("runs/edit-japan-cairo/edit.safetensors").apply(model)
    """

    format = "mechscope.rome_edit/1"

    fact: Fact
    new_object: str
    layer: int
    value: Array  # δ [d_model]
    key_dir: Array  # [d_mlp]
    key: Array  # k* [d_mlp]
    history: list[dict[str, float]] = field(default_factory=list)
    value_norm: float = 0.0  # ‖v‖ at the subject
    seconds: float = 0.0
    model: Model | None = unsaved()
    original: Tensor | None = unsaved()

    @property
    def applied(self) -> bool:
        return self.original is not None

    def apply(self, model: Model) -> Edit:
        """Write the update into `model` (keeping the original weight for `undo`)."""
        import torch

        if self.applied:
            raise InputError("this edit is already applied; undo it first")
        down = _down(model, self.layer)
        original = down.weight.detach().clone()
        value = torch.as_tensor(self.value).to(down.weight)
        key_dir = torch.as_tensor(self.key_dir).to(down.weight)
        with torch.no_grad():
            down.weight.add_(_rank_one(down, value, key_dir))
        self._hold(model, original)
        return self

    def undo(self) -> None:
        """Restore the projection's original weight bit for bit."""
        import torch

        if self.original is None or self.model is None:
            raise InputError("this edit is not applied")
        with torch.no_grad():
            _down(self.model, self.layer).weight.copy_(self.original)
        self._hold(None, None)

    def _hold(self, model: Model | None, original: Tensor | None) -> None:
        # the runtime state of a frozen result: which model holds the edit, and the weight before
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "original", original)

    def __enter__(self) -> Edit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.applied:
            self.undo()

    def summary(self) -> str:
        state = "applied" if self.applied else "not applied"
        delta = float(np.linalg.norm(as_numpy(self.value).astype(np.float64)))
        return (
            f"{self.fact.prompt!r}: {self.fact.object!r} → {self.new_object!r}, layer "
            f"{self.layer}, ‖δ‖ {delta:.2f} (‖v‖ {self.value_norm:.2f}), {state}"
        )


def ngram_entropy(text: str) -> float:
    """Fluency as in ROME: (2/3·H₂ + 4/3·H₃) / 2 of the text's word bi- and trigrams, in bits.

    Example: ``ngram_entropy("the cat sat on the mat")`` → ``2.107…`` (bits).
    """
    words = text.split()
    hs = []
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        hs.append(weight * h)
    return sum(hs) / 2


def _mean(xs: Sequence[float | bool]) -> float:
    return sum(float(x) for x in xs) / len(xs) if xs else float("nan")


# the groups of held-out prompts scored before and after an edit
SCORED = ("edited", "paraphrase", "paraphrase_bare", "neighbourhood")


@result
class EditReport(Result):
    """Held-out evaluation of one edit, before and after (Meng et al.'s scores).

    Example::

        report, e = evaluate_edit(model, fact, "Cairo", neighbours)
        report.scores()["efficacy"]
    """

    format = "mechscope.edit_report/1"

    fact: dict[str, str]
    new_object: str
    layer: int
    prompts: dict[str, list[str]]  # edited / paraphrase / neighbourhood / generation
    neighbour_objects: list[str]
    # per prompt: mean log-probability of the true and the new object, before and after
    before: dict[str, list[list[float]]]
    after: dict[str, list[list[float]]]
    top_before: dict[str, list[str]]  # the next token the model predicts
    top_after: dict[str, list[str]]
    generations_before: list[str]
    generations_after: list[str]
    seconds: float = 0.0

    def __post_init__(self) -> None:
        for group in [g for g in SCORED if g in self.prompts]:
            sizes = {
                len(self.prompts[group]),
                len(self.before.get(group, ())),
                len(self.after.get(group, ())),
                len(self.top_before.get(group, ())),
                len(self.top_after.get(group, ())),
            }
            if len(sizes) != 1:
                raise InputError(
                    f"an edit report's {group} prompts, scores and top tokens differ in number "
                    f"({sorted(sizes)}); each prompt needs one of each"
                )
        if len(self.neighbour_objects) != len(self.prompts.get("neighbourhood", ())):
            raise InputError("an edit report needs one neighbour object per neighbourhood prompt")
        n = len(self.prompts.get("generation", ()))
        if not len(self.generations_before) == len(self.generations_after) == n:
            raise InputError("an edit report needs one generation before and after per prompt")

    def _wins(self, group: str, new_over_true: bool, when: str = "after") -> list[bool]:
        rows = (self.after if when == "after" else self.before)[group]
        return [(r[1] > r[0]) == new_over_true for r in rows]

    @property
    def efficacy(self) -> float:
        """Share of edited prompts where P(new) > P(true) after the edit."""
        return _mean(self._wins("edited", True))

    @property
    def paraphrase(self) -> float:
        """Share of held-out paraphrases (each after an unrelated sentence) where P(new) > P(true)."""
        return _mean(self._wins("paraphrase", True))

    @property
    def paraphrase_bare(self) -> float:
        """The same on the paraphrase templates alone (no sentence before them)."""
        return (
            _mean(self._wins("paraphrase_bare", True))
            if "paraphrase_bare" in self.after
            else float("nan")
        )

    @property
    def neighbourhood(self) -> float:
        """Share of neighbour prompts where the neighbour's own object still beats the new one."""
        return _mean(self._wins("neighbourhood", False))

    @property
    def neighbourhood_kept(self) -> float:
        """Share of neighbour prompts whose predicted next token did not change."""
        b, a = self.top_before["neighbourhood"], self.top_after["neighbourhood"]
        return _mean([x == y for x, y in zip(b, a, strict=True)])

    @property
    def fluency(self) -> tuple[float, float]:
        """Mean n-gram entropy of the generations, before and after."""
        before = _mean([ngram_entropy(t) for t in self.generations_before])
        after = _mean([ngram_entropy(t) for t in self.generations_after])
        return before, after

    @property
    def mentions_new(self) -> float:
        """Share of generations after the edit that mention the new object."""
        return _mean([self.new_object.lower() in t.lower() for t in self.generations_after])

    def scores(self) -> dict[str, float]:
        """The scores after the edit, with efficacy, paraphrase and neighbourhood before it."""
        fb, fa = self.fluency
        return {
            "efficacy": self.efficacy,
            "paraphrase": self.paraphrase,
            "paraphrase_bare": self.paraphrase_bare,
            "neighbourhood": self.neighbourhood,
            "efficacy_before": _mean(self._wins("edited", True, "before")),
            "paraphrase_before": _mean(self._wins("paraphrase", True, "before")),
            "neighbourhood_before": _mean(self._wins("neighbourhood", False, "before")),
            "neighbourhood_kept": self.neighbourhood_kept,
            "fluency_before": fb,
            "fluency_after": fa,
            "mentions_new": self.mentions_new,
        }

    def summary(self) -> str:
        s = self.scores()
        return (
            f"{self.fact['subject']!r}: {self.fact['object']!r} → {self.new_object!r}, "
            f"layer {self.layer}; efficacy {s['efficacy']:.0%}, paraphrase {s['paraphrase']:.0%}, "
            f"neighbourhood {s['neighbourhood']:.0%} (top token kept {s['neighbourhood_kept']:.0%}), "
            f"fluency {s['fluency_before']:.2f} → {s['fluency_after']:.2f}"
        )
