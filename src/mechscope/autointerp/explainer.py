"""Explanations of a unit from its top-activating windows (Bills et al. 2023), and two baselines.

The explainer is shown a few top windows as snippets around their peak, each
token that the unit fires on marked with its activation discretised to
0…`scale_max` (relative to the unit's largest activation), and asked for one
short phrase. Baselines need no language model: the unit's most frequent
peak tokens, and another unit's explanation (`random` in the pipeline).

Example::

    from mechscope.autointerp import explain, LocalBackend
    explain(LocalBackend(model), store.unit("blocks.25.mlp.post", 342).top[:5])
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MechscopeError
from ..harvest.tables import Example
from .backends import Backend, Message

SYSTEM = (
    "You study neurons of a language model. Each neuron reacts to something specific in "
    "text. You see text snippets; each token the neuron reacts to is marked as "
    "[[token|strength]] with strength from 1 to {scale_max}. Say in a few words what the "
    "neuron reacts to. Answer with the short phrase only."
)
QUESTION = "{examples}\n\nWhat does this neuron react to? Answer in a few words."
VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
MAX_WORDS = 25


class ExplanationError(MechscopeError):
    """The model's answer could not be read as an explanation.

    Example: ``parse_explanation("")`` raises ExplanationError("the answer is empty").
    """


@dataclass(frozen=True)
class Explanation:
    """One explanation of one unit, with the raw answer it came from (empty for baselines).

    Example: ``explain(backend, record.top[:5], site="blocks.25.mlp.post", unit=342).text``.
    """

    site: str
    unit: int
    method: str
    text: str
    raw: str = ""
    failed: bool = False
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    cached: bool = False


def show(token: str) -> str:
    """A token made visible in one line (newlines and tabs as symbols).

    Example: ``show("a\\nb\\t")`` → ``"a↵b⇥"``.
    """
    for ch, sym in VISIBLE.items():
        token = token.replace(ch, sym)
    return token


def discretise(acts: Sequence[float], scale: float, scale_max: int = 10) -> list[int]:
    """Activations as integers 0…scale_max relative to `scale` (the unit's max); negatives are 0.

    Example: ``discretise([0.0, 2.5, 5.0, -1.0], scale=5.0)`` → ``[0, 5, 10, 0]``.
    """
    if scale <= 0:
        return [0] * len(acts)
    return [min(scale_max, max(0, round(scale_max * a / scale))) for a in acts]


def snippet(example: Example, context: int = 12) -> tuple[list[str], list[float]]:
    """The tokens and activations around an example's peak (`context` before, half after).

    Example: ``tokens, acts = snippet(store.unit("blocks.25.mlp.post", 342).top[0])``.
    """
    lo = max(example.max_pos - context, 0)
    hi = min(example.max_pos + context // 2 + 1, len(example.tokens))
    return example.tokens[lo:hi], example.acts[lo:hi]


def explanation_prompt(
    examples: Sequence[Example], scale: float, *, scale_max: int = 10, context: int = 12
) -> list[Message]:
    """Chat messages asking for an explanation of the unit behind `examples`.

    Example: ``explanation_prompt(record.top[:5], record.stats.max)`` → a system and a user
    message.
    """
    blocks = []
    for i, ex in enumerate(examples):
        tokens, acts = snippet(ex, context)
        levels = discretise(acts, scale, scale_max)
        text = "".join(
            f"[[{show(t)}|{lv}]]" if lv > 0 else show(t)
            for t, lv in zip(tokens, levels, strict=True)
        )
        blocks.append(f"Snippet {i + 1}: {text}")
    return [
        {"role": "system", "content": SYSTEM.format(scale_max=scale_max)},
        {"role": "user", "content": QUESTION.format(examples="\n".join(blocks))},
    ]


_MARKUP = re.compile(r"\[\[([^\]|]*)(?:\|[^\]]*)?\]\]")
_PREFIX = re.compile(
    r"^(?:explanation\s*:\s*|answer\s*:\s*|this neuron (?:reacts|responds|fires|activates) (?:to|on)\s*|"
    r"the neuron (?:reacts|responds|fires|activates) (?:to|on)\s*|it (?:reacts|responds) to\s*)",
    re.IGNORECASE,
)


def parse_explanation(raw: str) -> str:
    """The explanation in a model's answer: its first non-empty line, prefixes and quotes removed.

    Example: ``parse_explanation("Explanation: plural nouns.")`` → ``"plural nouns"``.
    """
    for line in raw.splitlines():
        text = line.strip().strip("*").strip()
        text = _MARKUP.sub(r"\1", text)  # small models echo the [[token|strength]] marks
        text = _PREFIX.sub("", text).strip()
        text = text.rstrip(".").strip().strip("\"'`").rstrip(".").strip()
        if text:
            words = text.split()
            if len(words) > MAX_WORDS:
                text = " ".join(words[:MAX_WORDS])
            if not re.search(r"[A-Za-z]", text):
                raise ExplanationError(f"no words in the answer: {raw[:80]!r}")
            return text
    raise ExplanationError("the answer is empty")


def explain(
    backend: Backend,
    examples: Sequence[Example],
    *,
    scale: float | None = None,
    scale_max: int = 10,
    max_tokens: int = 40,
    site: str = "",
    unit: int = -1,
) -> Explanation:
    """Ask `backend` for an explanation of the unit behind `examples` (failures are recorded).

    Example::

        record = store.unit("blocks.25.mlp.post", 342)
        explain(LocalBackend(model), record.top[:5], scale=record.stats.max).text
    """
    scale = scale if scale is not None else max((e.max_act for e in examples), default=0.0)
    messages = explanation_prompt(examples, scale, scale_max=scale_max)
    (answer,) = backend.chat_many([messages], max_tokens=max_tokens)
    return explanation_from_answer(answer, site, unit)


def explanation_from_answer(answer: object, site: str, unit: int) -> Explanation:
    """An `Explanation` from a `Completion` or the exception a backend returned instead.

    Example: ``explanation_from_answer(Completion("commas"), "blocks.25.mlp.post", 342).text``
    → ``"commas"``; an exception gives ``failed=True``.
    """
    if isinstance(answer, Exception):
        return Explanation(site, unit, "llm", "", "", True, f"{type(answer).__name__}: {answer}")
    raw = getattr(answer, "text", "")
    cost = {
        "tokens_in": getattr(answer, "tokens_in", 0),
        "tokens_out": getattr(answer, "tokens_out", 0),
        "seconds": round(getattr(answer, "seconds", 0.0), 3),
        "cached": getattr(answer, "cached", False),
    }
    try:
        return Explanation(site, unit, "llm", parse_explanation(raw), raw, **cost)
    except ExplanationError as err:
        return Explanation(site, unit, "llm", "", raw, True, str(err), **cost)


def top_tokens_explanation(examples: Sequence[Example], n: int = 4) -> str:
    """Baseline: the tokens on which the unit peaks most often in `examples`.

    Example: ``top_tokens_explanation(record.top)`` → e.g. ``'the tokens "she", "her"'``.
    """
    counts: Counter[str] = Counter()
    for ex in examples:
        counts[ex.tokens[ex.max_pos].strip() or show(ex.tokens[ex.max_pos])] += 1
    words = [t for t, _ in counts.most_common(n)]
    return "the tokens " + ", ".join(f'"{w}"' for w in words) if words else "nothing"
