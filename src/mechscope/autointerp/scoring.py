"""Scoring explanations: correlation (Bills et al. 2023), detection and fuzzing (delphi).

- **correlation**: Pearson correlation between simulated and true activations
  over every token of held-out windows (top windows the explainer did not
  see, and random windows), pooled.
- **detection**: from the explanation alone, does a judge tell the held-out top
  windows from random ones? AUROC of its p(yes).
- **fuzzing**: in held-out top windows, are the tokens where the unit really
  fires highlighted, or the same number of other tokens? AUROC of p(yes).

A judge with a local model reads p(yes) exactly from log-probabilities; with
any other backend it parses a yes/no answer (an unreadable answer is dropped
and counted). `mean_ci` gives means with bootstrap 95% intervals over units.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from ..harvest.tables import Example
from .backends import Backend, LocalBackend, Message
from .explainer import show

DETECT = (
    "A neuron of a language model reacts to: {explanation}.\n\nText: {text}\n\n"
    "Does the neuron react to anything in this text? Answer Yes or No."
)
FUZZ = (
    "A neuron of a language model reacts to: {explanation}.\n\nIn this text some tokens are "
    "marked [[like this]]: {text}\n\nAre the marked tokens what the neuron reacts to? Answer Yes or No."
)


def correlation(simulated: Sequence[Sequence[float]], true: Sequence[Sequence[float]]) -> float:
    """Pearson correlation over all tokens of all windows (nan if either side is constant).

    Example: ``correlation([[0, 1, 2]], [[0, 2, 4]])`` → 1.0.
    """
    s = (
        np.concatenate([np.asarray(x, dtype=float) for x in simulated])
        if simulated
        else np.zeros(0)
    )
    t = np.concatenate([np.asarray(x, dtype=float) for x in true]) if true else np.zeros(0)
    if len(s) < 2 or s.std() == 0 or t.std() == 0:
        return float("nan")
    return float(np.corrcoef(s, t)[0, 1])


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (ties count half); nan without both classes.

    Example: ``auroc([0.9, 0.2, 0.6], [True, False, True])`` → 1.0.
    """
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


class Judge:
    """Yes/no questions: exact p(yes) from a local model, else a parsed answer (1, 0 or None).

    Example: ``Judge(LocalBackend(model)).p_yes([[{"role": "user", "content": "Is 2 > 1?"}]])``
    → ``[p]``, one p(yes) in [0, 1] per request.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self._yes_no: tuple[list[int], list[int]] | None = None
        if isinstance(backend, LocalBackend):
            tok = backend.model.tokenizer

            def single(words: Sequence[str]) -> list[int]:
                ids = [tok(w, add_special_tokens=False)["input_ids"] for w in words]
                return [i[0] for i in ids if len(i) == 1]

            yes, no = single(["Yes", "yes", " Yes", " yes"]), single(["No", "no", " No", " no"])
            if yes and no:
                self._yes_no = (yes, no)

    def p_yes(self, requests: Sequence[Sequence[Message]]) -> list[float | None]:
        """For each request, the probability (or parsed answer) that the answer is yes."""
        if self._yes_no is not None:
            assert isinstance(self.backend, LocalBackend)
            yes, no = self._yes_no
            seqs = [self.backend.prompt_ids(m) for m in requests]
            lps = self.backend.position_logprobs_many(seqs, [[len(s) - 1] for s in seqs], yes + no)
            probs = [lp[0].exp() for lp in lps]
            return [float(p[: len(yes)].sum() / p.sum()) for p in probs]
        answers = self.backend.chat_many(requests, max_tokens=4)
        return [_parse_yes_no(a) for a in answers]


def _parse_yes_no(answer: object) -> float | None:
    if isinstance(answer, Exception):
        return None
    words = getattr(answer, "text", "").strip().lower().split()
    first = words[0].strip(".,!:;\"'") if words else ""
    return 1.0 if first == "yes" else 0.0 if first == "no" else None


def _text(tokens: Sequence[str], marked: set[int] | None = None) -> str:
    marked = marked or set()
    return "".join(f"[[{show(t)}]]" if i in marked else show(t) for i, t in enumerate(tokens))


def detection(
    judge: Judge, explanation: str, positives: Sequence[Example], negatives: Sequence[Example]
) -> tuple[float, int]:
    """AUROC of p(yes) separating `positives` (top windows) from `negatives`; and failures.

    Example: ``detection(Judge(backend), "commas", record.top[1::2], record.random)`` →
    ``(auroc, failed)``.
    """
    windows = [*positives, *negatives]
    labels = [True] * len(positives) + [False] * len(negatives)
    requests = [
        [{"role": "user", "content": DETECT.format(explanation=explanation, text=_text(w.tokens))}]
        for w in windows
    ]
    return _score(judge.p_yes(requests), labels)


def fuzzing(
    judge: Judge, explanation: str, windows: Sequence[Example], scale: float, *, seed: int = 0
) -> tuple[float, int]:
    """AUROC of p(yes) for truly highlighted (the unit fires: ≥ ½ scale) vs as many random tokens.

    Example: ``fuzzing(Judge(backend), "commas", record.top[1::2], record.stats.max)`` →
    ``(auroc, failed)``.
    """
    rng = random.Random(seed)
    requests: list[list[Message]] = []
    labels: list[bool] = []
    for w in windows:
        fired = {i for i, a in enumerate(w.acts) if a >= 0.5 * scale and a > 0} or {w.max_pos}
        others = [i for i in range(len(w.tokens)) if i not in fired and i > 0]
        fake = set(rng.sample(others, min(len(fired), len(others))))
        for marked, label in ((fired, True), (fake, False)):
            text = _text(w.tokens, marked)
            requests.append(
                [{"role": "user", "content": FUZZ.format(explanation=explanation, text=text)}]
            )
            labels.append(label)
    return _score(judge.p_yes(requests), labels)


def _score(p: Sequence[float | None], labels: Sequence[bool]) -> tuple[float, int]:
    keep = [(s, y) for s, y in zip(p, labels, strict=True) if s is not None]
    failed = len(p) - len(keep)
    if not keep:
        return float("nan"), failed
    return auroc([s for s, _ in keep], [y for _, y in keep]), failed


def mean_ci(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and bootstrap 95% interval over units (nan values dropped).

    Example: ``mean_ci([0.1, 0.5, 0.9])`` → ``(0.5, lo, hi)`` with lo ≤ 0.5 ≤ hi.
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return float(x.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
