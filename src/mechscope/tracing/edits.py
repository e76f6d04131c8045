"""The results of ROME editing, on the one `Result` contract, readable without torch.

`Edit` is the rank-one update ROME writes into one MLP's output projection
(its runtime handle on the edited model is not saved) and `EditReport` its
held-out evaluation (efficacy, paraphrase, neighbourhood, fluency). Each
saves as one safetensors file and reopens with torch tensors or, for the
viewer, numpy arrays; `ngram_entropy` is the fluency score the report uses.

Example::

    report = EditReport.load("runs/edit-japan-cairo/report.safetensors", arrays="numpy")
    report.scores()["efficacy"]
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result, unsaved
from .facts import Fact

if TYPE_CHECKING:
    from torch import Tensor

    from ..core.model import Model
    from ..figures import Figures

    Array = Tensor | np.ndarray

__all__ = ["Edit", "EditReport", "ngram_entropy"]


# --- the MLP's output projection ------------------------------------------------------


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


# --- the edit and its evaluation ----------------------------------------------------


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
        value = torch.as_tensor(self.value).to(down.weight)
        key_dir = torch.as_tensor(self.key_dir).to(down.weight)
        assert model.dims is not None  # _down checked it
        for name, t, size, what in (("value", value, model.dims.d_model, "d_model"),
                                    ("key_dir", key_dir, model.dims.d_mlp, "d_mlp")):  # fmt: skip
            if tuple(t.shape) != (size,):
                raise InputError(
                    f"this edit's {name} has shape {tuple(t.shape)}, {model.name} needs "
                    f"({size},) ({what}): it was made for another model"
                )
            if not bool(torch.isfinite(t).all()):
                raise InputError(f"this edit's {name} holds NaN or infinite entries")
        original = down.weight.detach().clone()
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

    def figure(self, path: str | Path) -> Figures:
        """P(true object) and P(new object) per held-out prompt, before and after (PNG/SVG/HTML).

        Example: ``report.figure("runs/edit-france/figures/edit")``
        → ``{"edit": {"png": …, "svg": …, "html": …}}``.
        """
        from ..figures import heatmap, named

        rows, labels = [], []
        short = {"edited": "edited", "paraphrase": "para", "paraphrase_bare": "bare",
                 "neighbourhood": "neighb"}  # fmt: skip
        for group in [g for g in short if g in self.prompts]:
            for i, prompt in enumerate(self.prompts[group]):
                b, a = self.before[group][i], self.after[group][i]
                rows.append([b[0], b[1], a[0], a[1]])
                labels.append(f"{short[group]}: {prompt[:48]}")
        probs = np.exp(np.asarray(rows, dtype=np.float32))  # mean per-token probability
        return named(path, heatmap(
            probs, path,
            title=f"{self.fact['subject']}: {self.fact['object']!r} → {self.new_object!r} "
            f"(layer {self.layer})",
            x_labels=["true, before", "new, before", "true, after", "new, after"], y_labels=labels,
            value_title="P per token", center=None, cmap="Blues",
        ))  # fmt: skip

    def summary(self) -> str:
        s = self.scores()
        return (
            f"{self.fact['subject']!r}: {self.fact['object']!r} → {self.new_object!r}, "
            f"layer {self.layer}; efficacy {s['efficacy']:.0%}, paraphrase {s['paraphrase']:.0%}, "
            f"neighbourhood {s['neighbourhood']:.0%} (top token kept {s['neighbourhood_kept']:.0%}), "
            f"fluency {s['fluency_before']:.2f} → {s['fluency_after']:.2f}"
        )
