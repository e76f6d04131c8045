"""The results of the IOI package: the data set, per-head scores and head classes.

`IOIDataset` (prompts with the positions and token ids of their names),
`HeadScores` (one score per head), `IOIAttentionScores` (where END attends)
and `HeadClassification` (a list of `HeadLabel`) are frozen `Result`
dataclasses: one safetensors file each, reopened with torch tensors or,
without torch, numpy arrays. This module imports no torch; the methods a
repr or a page uses (`top`, `of`, `summary`) work on both kinds of array.

Example::

    ind = induction_scores(model)
    ind.save("runs/ioi/scores_induction")        # runs/ioi/scores_induction.safetensors
    HeadScores.load("runs/ioi/scores_induction.safetensors", arrays="numpy").top(3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .._arrays import as_numpy
from ..errors import InputError
from ..results import Result, result

if TYPE_CHECKING:
    from jaxtyping import Float, Int
    from torch import Tensor

POSITION_KEYS = ("IO", "S1", "S2", "END")
CORRUPTIONS: tuple[str, ...] = ("ABC", "S2_IO")
HEAD_CLASSES = (
    "duplicate_token",
    "induction",
    "previous_token",
    "name_mover",
    "negative_name_mover",
    "s_inhibition",
    "s_inhibition_candidate",
)


def render(template: str, fillers: dict[str, str]) -> str:
    """Fill a template; its first {S} takes fillers["S1"] and its second fillers["S2"].

    Example: ``render("{IO} and {S} saw {S}", {"IO": "Mary", "S1": "John", "S2": "Bob"})``.
    """
    numbered = template.replace("{S}", "{S1}", 1).replace("{S}", "{S2}", 1)
    return numbered.format(**fillers)


def top_heads(scores: Any, k: int, largest: bool = True) -> list[tuple[int, int, float]]:
    """The k highest (or lowest) entries of a [layer, head] array as (layer, head, score).

    Ties go in (layer, head) order; NaN comes last.

    Example: ``top_heads(np.array([[0.25, 0.75], [0.5, 0.0]]), 2)``
    → ``[(0, 1, 0.75), (1, 0, 0.5)]``.
    """
    values = as_numpy(scores)
    n_heads, flat = values.shape[1], values.ravel().astype(np.float64)
    order = np.argsort(-flat if largest else flat, kind="stable")[: min(k, flat.size)]
    return [(i // n_heads, i % n_heads, float(values.ravel()[i])) for i in order.tolist()]


def _fmt_top(scores: Any, k: int = 3) -> str:
    return ", ".join(f"L{layer}H{head} {s:+.2f}" for layer, head, s in top_heads(scores, k))


# --- the data set ----------------------------------------------------------------------


@result
class IOIDataset(Result):
    """IOI prompts of one token length, with the positions and token ids of their names.

    ``positions`` maps "IO", "S1", "S2", "END" to a [batch] tensor of token
    positions in ``tokens``. ``io_ids`` / ``s_ids`` are the tokens of the
    names standing at IO and S1 (in a clean prompt S1 and S2 hold the same
    name). ``fillers`` holds each prompt's words by slot (IO, S1, S2, PLACE,
    OBJECT) and ``name_ids`` the pool of single-token names, so that
    corruptions need no tokenizer. ``template_ids`` index ``templates``.

    Example: ``ioi_dataset(model, 100).corrupt("ABC").prompts[0]``.
    """

    format = "mechscope.ioi_dataset/1"

    prompts: list[str]
    tokens: Int[Tensor, "batch pos"]
    io_ids: Int[Tensor, " batch"]
    s_ids: Int[Tensor, " batch"]
    positions: dict[str, Int[Tensor, " batch"]]
    template_ids: Int[Tensor, " batch"]
    templates: tuple[str, ...]
    fillers: list[dict[str, str]]
    name_ids: dict[str, int]
    corruption: str | None = None
    seed: int = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if set(self.positions) != set(POSITION_KEYS):
            raise InputError(
                f"positions need the keys {POSITION_KEYS}, got {tuple(self.positions)}"
            )
        sizes = {len(self.prompts), len(self.fillers), *(len(v) for v in self.positions.values())}
        if sizes != {n}:
            raise InputError(f"an IOIDataset of {n} token rows has fields of lengths {sizes}")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def orders(self) -> list[str]:
        """Per prompt, "ABBA" (IO named before S1) or "BABA" (S1 first)."""
        return ["ABBA" if io < s1 else "BABA" for io, s1 in zip(
            self.positions["IO"].tolist(), self.positions["S1"].tolist(), strict=True
        )]  # fmt: skip

    def summary(self) -> str:
        kind = f", corruption={self.corruption}" if self.corruption else ""
        used = len(set(self.template_ids.tolist()))
        example = self.prompts[0] if self.prompts else ""
        return (
            f"{len(self)} prompts × {self.tokens.shape[1]} tokens, {used} templates, "
            f"{len(self.name_ids)} names{kind}; e.g. {example!r}"
        )

    def corrupt(self, kind: str, seed: int | None = None) -> IOIDataset:
        """A corrupted twin with the same templates, places, objects and positions.

        ``"ABC"``: IO, S1 and S2 become three fresh names, all different (and
        different from the clean IO and S). ``"S2_IO"``: S2 becomes the IO
        name (ABB → ABA), so the correct answer flips to S. ``io_ids`` /
        ``s_ids`` of the twin are the names now at IO and S1; to score a
        corrupted run against the clean answer, pass the clean data set to
        `logit_diff`.
        """
        import random

        import torch

        if kind not in CORRUPTIONS:
            raise InputError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
        rng = random.Random(self.seed + 1 if seed is None else seed)
        pool = list(self.name_ids)
        fillers: list[dict[str, str]] = []
        for f in self.fillers:
            new = dict(f)
            if kind == "S2_IO":
                new["S2"] = f["IO"]
            else:
                fresh = [p for p in pool if p not in (f["IO"], f["S1"], f["S2"])]
                if len(fresh) < 3:
                    raise InputError(
                        f"ABC needs 3 names besides IO and S, but the pool has {len(pool)}: "
                        "pass at least 5 single-token names"
                    )
                new["IO"], new["S1"], new["S2"] = rng.sample(fresh, 3)
            fillers.append(new)
        tokens = torch.as_tensor(self.tokens).clone()
        positions = {k: torch.as_tensor(v) for k, v in self.positions.items()}
        rows = torch.arange(len(self))
        for key in ("IO", "S1", "S2"):
            ids = torch.tensor([self.name_ids[f[key]] for f in fillers], dtype=torch.long)
            tokens[rows, positions[key]] = ids.to(tokens.device)
        prompts = [
            render(self.templates[t], f)
            for t, f in zip(self.template_ids.tolist(), fillers, strict=True)
        ]
        return dataclasses.replace(
            self,
            prompts=prompts,
            tokens=tokens,
            io_ids=tokens[rows, positions["IO"]],
            s_ids=tokens[rows, positions["S1"]],
            fillers=fillers,
            corruption=kind,
        )


# --- head scores -----------------------------------------------------------------------


@result
class HeadScores(Result):
    """One score per attention head, [n_layers, n_heads], with how it was computed.

    ``name`` says which score ("induction", "duplicate_token",
    "previous_token", "copying"); ``meta`` the data it was computed on.

    Example: ``induction_scores(model).top(3)`` → ``[(18, 6, 0.93), …]``.
    """

    format = "mechscope.head_scores/1"

    name: str
    scores: Float[Tensor, "layer head"]
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def top(self, k: int = 5, largest: bool = True) -> list[tuple[int, int, float]]:
        """The k highest (or lowest) heads as (layer, head, score), best first."""
        return top_heads(self.scores, k, largest)

    def summary(self) -> str:
        n_layers, n_heads = self.scores.shape
        model = f", model={self.model_name}" if self.model_name else ""
        return f"{self.name}, {n_layers}×{n_heads} heads{model}; top {_fmt_top(self.scores)}"


@result
class IOIAttentionScores(Result):
    """Mean attention from END to the IO, S1 and S2 tokens, each [n_layers, n_heads].

    Indexes like a dict: ``scores["IO"]``, ``scores["S2"]``.

    Example: ``ioi_attention_scores(model, ds)["S2"].shape`` → [n_layers, n_heads].
    """

    format = "mechscope.ioi_attention/1"
    KEYS: ClassVar[tuple[str, ...]] = ("IO", "S1", "S2")

    io: Float[Tensor, "layer head"]
    s1: Float[Tensor, "layer head"]
    s2: Float[Tensor, "layer head"]
    model_name: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The three score arrays by key ("IO", "S1", "S2")."""
        return {"IO": self.io, "S1": self.s1, "S2": self.s2}

    def __getitem__(self, key: str) -> Any:
        if key not in self.KEYS:
            raise KeyError(f"{key!r}; valid: {', '.join(self.KEYS)}")
        return self.as_dict()[key]

    def keys(self) -> tuple[str, ...]:
        return self.KEYS

    def summary(self) -> str:
        n_layers, n_heads = self.io.shape
        tops = "; ".join(f"END→{k} top {_fmt_top(v, 2)}" for k, v in self.as_dict().items())
        return f"{n_layers}×{n_heads} heads; {tops}"


# --- head classes ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeadLabel:
    """One classified head: layer, head, class and score; unpacks as that 4-tuple.

    Example: ``layer, head, cls, score = HeadLabel(23, 0, "name_mover", 1.9)``.
    """

    layer: int
    head: int
    cls: str
    score: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.layer, self.head, self.cls, self.score))


@result
class HeadClassification(Result):
    """Heads with the classes `classify_heads` gave them; iterates as `HeadLabel`s.

    Example: ``classify_heads(ioi_attention=att, copying=cp).of("name_mover")``.
    """

    format = "mechscope.head_classes/1"

    labels: list[HeadLabel]
    settings: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[HeadLabel]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def of(self, cls: str) -> list[HeadLabel]:
        """The heads of one class, best first."""
        if cls not in HEAD_CLASSES:
            raise InputError(f"unknown head class {cls!r}; valid: {', '.join(HEAD_CLASSES)}")
        return [h for h in self.labels if h.cls == cls]

    def summary(self) -> str:
        lines = [f"{len(self)} labels"]
        for cls in HEAD_CLASSES:
            if heads := self.of(cls):
                tops = ", ".join(f"L{h.layer}H{h.head} {h.score:+.2f}" for h in heads)
                lines.append(f"{cls:<23} {tops}")
        return "\n".join(lines)
