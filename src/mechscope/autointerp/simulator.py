"""Simulating a unit from its explanation: predict its activation on every token of a window.

`LogprobSimulator` (a local model) writes the window one token per line,
each followed by a tab and the placeholder "unknown", and reads at every
placeholder the model's distribution over the digit tokens 0…`scale_max`:
the prediction is the expected value, all positions in one forward (Bills et
al.'s "all at once" method). `JsonSimulator` (any backend, e.g. an HTTP
server without log-probabilities) asks for a JSON list of integers and
validates it; an unusable answer is a failed simulation with its raw text.

Example::

    sim = LogprobSimulator(LocalBackend(model))
    sim.simulate("the word 'she' in old spellings", example.tokens).values
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from .backends import Backend, LocalBackend, Message
from .explainer import show

SYSTEM = (
    "You predict how strongly a neuron of a language model reacts to each token of a text, "
    "from an explanation of what the neuron reacts to. Strength is an integer from 0 "
    "(not at all) to {scale_max} (as strongly as it ever does); most tokens are 0."
)
LOGPROB_TASK = (
    "Explanation of the neuron: {explanation}\n\nFor each token below (one per line), "
    "give the strength after the tab."
)
JSON_TASK = (
    "Explanation of the neuron: {explanation}\n\nTokens: {tokens}\n\nAnswer with a JSON list "
    "of {n} integers from 0 to {scale_max}, one per token, and nothing else."
)
PLACEHOLDER = "unknown"


@dataclass(frozen=True)
class Simulation:
    """Simulated activations of one window (None when the simulation failed).

    Example: ``parse_simulation(Completion("[0, 3]"), 2, 10)`` →
    ``Simulation([0.0, 3.0], raw="[0, 3]")``.
    """

    values: list[float] | None
    raw: str = ""
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.values is None


def digit_tokens(tokenizer: object, scale_max: int = 10) -> list[int]:
    """Token ids of "0", "1", … that are single tokens (SmolLM2: 0…9, "10" is two tokens).

    Example: ``len(digit_tokens(model.tokenizer))`` → 10 for SmolLM2.
    """
    ids = []
    for d in range(scale_max + 1):
        enc = tokenizer(str(d), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        if len(enc) != 1:
            break
        ids.append(enc[0])
    if len(ids) < 2:
        raise InputError("the simulator's tokenizer has no single-token digits 0 and 1")
    return ids


class LogprobSimulator:
    """All-at-once simulation from exact next-token log-probabilities of a local model.

    Example: ``LogprobSimulator(LocalBackend(model)).simulate("commas", example.tokens).values``
    → one expected strength per token, in 0…9 for SmolLM2.
    """

    def __init__(self, backend: LocalBackend, scale_max: int = 10) -> None:
        if not isinstance(backend, LocalBackend):
            raise InputError("LogprobSimulator needs a LocalBackend (prompt log-probabilities)")
        self.backend = backend
        tok = backend.model.tokenizer
        self.digits = digit_tokens(tok, scale_max)
        self.scale_max = len(self.digits) - 1
        self.name = f"logprob:{backend.name}"

    def _prompt(self, explanation: str, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
        messages: list[Message] = [
            {"role": "system", "content": SYSTEM.format(scale_max=self.scale_max)},
            {"role": "user", "content": LOGPROB_TASK.format(explanation=explanation)},
        ]
        ids = self.backend.prompt_ids(messages)
        positions = []
        for token in tokens:
            ids += self.backend.model.ids(show(token) + "\t", False)
            positions.append(len(ids) - 1)  # the next token here is the strength
            ids += self.backend.model.ids(PLACEHOLDER + "\n", False)
        return ids, positions

    def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        """Expected strength (0…scale_max) at every token, in one forward."""
        (out,) = self.simulate_many([(explanation, tokens)])
        return out

    def simulate_many(self, jobs: Sequence[tuple[str, Sequence[str]]]) -> list[Simulation]:
        """Several windows, batched into as few forwards as fit."""
        prompts = [self._prompt(e, t) for e, t in jobs]
        lps = self.backend.position_logprobs_many(
            [ids for ids, _ in prompts], [pos for _, pos in prompts], self.digits
        )
        scale = torch.arange(len(self.digits), dtype=torch.float32)
        return [Simulation([float(v) for v in (lp.softmax(-1) * scale).sum(-1)]) for lp in lps]


class JsonSimulator:
    """Simulation from a JSON answer, for backends without prompt log-probabilities.

    Example::

        sim = JsonSimulator(OpenAIBackend("http://127.0.0.1:8000", "my-model"))
        sim.simulate("commas", example.tokens).values    # None if the answer was unusable
    """

    def __init__(
        self, backend: Backend, scale_max: int = 10, max_tokens: int | None = None
    ) -> None:
        self.backend = backend
        self.scale_max = scale_max
        self.max_tokens = max_tokens
        self.name = f"json:{backend.name}"

    def messages(self, explanation: str, tokens: Sequence[str]) -> list[Message]:
        listed = json.dumps([show(t) for t in tokens], ensure_ascii=False)
        task = JSON_TASK.format(
            explanation=explanation, tokens=listed, n=len(tokens), scale_max=self.scale_max
        )
        return [
            {"role": "system", "content": SYSTEM.format(scale_max=self.scale_max)},
            {"role": "user", "content": task},
        ]

    def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        (answer,) = self.simulate_many([(explanation, tokens)])
        return answer

    def simulate_many(self, jobs: Sequence[tuple[str, Sequence[str]]]) -> list[Simulation]:
        """Several windows at once (an HTTP backend runs them concurrently)."""
        requests = [self.messages(e, t) for e, t in jobs]
        longest = max((len(t) for _, t in jobs), default=1)
        answers = self.backend.chat_many(requests, max_tokens=self.max_tokens or 4 * longest + 16)
        return [
            parse_simulation(a, len(t), self.scale_max)
            for a, (_, t) in zip(answers, jobs, strict=True)
        ]


def parse_simulation(answer: object, n: int, scale_max: int) -> Simulation:
    """Validate a JSON answer: a list of `n` numbers in 0…scale_max (else a failed simulation).

    Example: ``parse_simulation(Completion("[0, 11]"), 2, 10).error`` →
    ``"values outside 0…10"``.
    """
    if isinstance(answer, Exception):
        return Simulation(None, "", f"{type(answer).__name__}: {answer}")
    raw = getattr(answer, "text", "")
    match = re.search(r"\[[^\[\]]*\]", raw)
    if not match:
        return Simulation(None, raw, "no JSON list in the answer")
    try:
        values = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        return Simulation(None, raw, f"not valid JSON: {err.msg}")
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        return Simulation(None, raw, "the list holds something other than numbers")
    if len(values) != n:
        return Simulation(None, raw, f"{len(values)} values for {n} tokens")
    if any(not 0 <= v <= scale_max for v in values):
        return Simulation(None, raw, f"values outside 0…{scale_max}")
    return Simulation([float(v) for v in values], raw)
