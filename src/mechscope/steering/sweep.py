"""Sweeps over layer × coefficient: how far steering moves a target, and what it costs.

At each (layer, coefficient) `steering_sweep` samples generations from a set
of prompts with the layer's vector added and scores them (by default the
share that mention a topic: any of a list of words); the cost is the rise of
perplexity on corpus windows with the same steering, and the KL of the
next-token distributions on neutral prompts. `SteeringSweep.best` picks the
strongest effect whose perplexity rise stays under a bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .apply import generate, next_token_kl, perplexity
from .vectors import SteeringVector

# open-ended prompts that steer nowhere by themselves
PROMPTS = (
    "I went up to my friend and said",
    "Yesterday my neighbour told me that",
    "The best part of this weekend was",
    "She opened the letter and read",
    "Let me tell you about my plans for",
    "My favourite memory is",
    "The meeting this morning was about",
    "When I got home, I",
)
# prompts for the KL cost (different from the generation prompts)
NEUTRAL_PROMPTS = (
    "The train to the coast leaves at nine in the morning.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "He put the books back on the shelf and turned off the light.",
    "The report lists the prices of wheat, corn and rice for the last year.",
    "To install the program, open a terminal and type the command.",
    "The river runs through the valley and into the lake.",
)
WEDDING_WORDS = ("wedding", "weddings", "bride", "brides", "groom", "married", "marry",
                 "marriage", "honeymoon", "bridal", "vows", "engaged", "engagement")  # fmt: skip


def topic_share(words: Sequence[str]) -> Callable[[Sequence[str]], float]:
    """A scorer: the share of texts containing any of `words` (whole words, any case)."""
    if not words:
        raise InputError("a topic needs at least one word")
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    return lambda texts: sum(bool(pattern.search(t)) for t in texts) / max(1, len(texts))


@dataclass
class SteeringSweep:
    """Effect and costs at every (layer, coefficient); baselines are the unsteered model."""

    layers: list[int]
    coefs: list[float]
    effect: Tensor  # [layer coef]: the target's score on steered generations
    perplexity: Tensor  # [layer coef]: corpus perplexity with the steering
    kl: Tensor  # [layer coef]: KL(unsteered ‖ steered) on neutral prompts, nats per token
    baseline_effect: float
    baseline_perplexity: float
    target: str = "target"
    method: str = ""
    n_generations: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)  # "layer,coef" -> generations

    @property
    def perplexity_rise(self) -> Tensor:
        """Relative rise of perplexity over the unsteered model (0.1 = 10%)."""
        return self.perplexity / self.baseline_perplexity - 1

    def best(self, max_rise: float = 0.10) -> tuple[int, float, float, float]:
        """(layer, coef, effect, perplexity rise) of the largest effect whose rise is ≤ `max_rise`."""
        ok = self.perplexity_rise <= max_rise
        if not ok.any():
            raise InputError(f"no (layer, coefficient) keeps the perplexity rise ≤ {max_rise:.0%}")
        score = torch.where(ok, self.effect, torch.full_like(self.effect, -float("inf")))
        i, j = divmod(int(score.argmax()), len(self.coefs))
        return (self.layers[i], self.coefs[j], float(self.effect[i, j]),
                float(self.perplexity_rise[i, j]))  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "layers": self.layers, "coefs": self.coefs, "effect": self.effect.tolist(),
            "perplexity": self.perplexity.tolist(), "kl": self.kl.tolist(),
            "baseline_effect": self.baseline_effect, "target": self.target,
            "baseline_perplexity": self.baseline_perplexity, "method": self.method,
            "n_generations": self.n_generations, "samples": self.samples,
        }  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringSweep:
        try:
            d = json.loads(Path(path).read_text())
            return cls(
                d["layers"], d["coefs"], torch.tensor(d["effect"]), torch.tensor(d["perplexity"]),
                torch.tensor(d["kl"]), d["baseline_effect"], d["baseline_perplexity"],
                d.get("target", "target"), d.get("method", ""), d.get("n_generations", 0),
                d.get("samples", {}),
            )  # fmt: skip
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path} is not a saved steering sweep: {e}") from None

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """Effect and perplexity rise against the coefficient, one line per layer (PNG, SVG, HTML)."""
        from ..figures import figure_stem, line

        stem = figure_stem(path)
        coefs = [f"{c:g}" for c in self.coefs]
        effect = {f"layer {layer}": self.effect[i] for i, layer in enumerate(self.layers)}
        effect["unsteered"] = [self.baseline_effect] * len(coefs)
        rise = {f"layer {layer}": 100 * self.perplexity_rise[i]
                for i, layer in enumerate(self.layers)}  # fmt: skip
        rise["10% bound"] = [10.0] * len(coefs)
        return {
            "effect": line(effect, stem.with_name(stem.name + "_effect"),
                           title=f"{self.target} ({self.n_generations} generations per cell)",
                           x_labels=coefs, x_title="coefficient", y_title=self.target),
            "perplexity": line(rise, stem.with_name(stem.name + "_perplexity"),
                               title="perplexity rise on the corpus", x_labels=coefs,
                               x_title="coefficient", y_title="perplexity rise (%)"),
        }  # fmt: skip

    def __repr__(self) -> str:
        try:
            layer, coef, eff, rise = self.best()
            top = (
                f"best within 10% perplexity: layer {layer} coef {coef:g} → {eff:.3f} (+{rise:.1%})"
            )
        except InputError:
            top = "no cell within 10% perplexity"
        return (
            f"SteeringSweep({self.method}, {len(self.layers)} layers × {len(self.coefs)} coefs, "
            f"{self.target} unsteered {self.baseline_effect:.3f}, {top})"
        )


def steering_sweep(
    model: Model,
    vectors: Sequence[SteeringVector],
    coefs: Sequence[float],
    *,
    score: Callable[[Sequence[str]], float] | None = None,
    target: str = "share mentioning weddings",
    prompts: Sequence[str] = PROMPTS,
    samples: int = 4,
    max_new_tokens: int = 30,
    temperature: float = 1.0,
    corpus: Tensor | None = None,  # [n pos] token windows
    neutral_prompts: Sequence[str] = NEUTRAL_PROMPTS,
    seed: int = 0,
    keep: int = 3,
    progress: bool = True,
) -> SteeringSweep:
    """Score sampled generations and measure costs for each vector (one per layer) × coefficient.

    `score` maps generations to a number (default: `topic_share(WEDDING_WORDS)`);
    `corpus` defaults to 24 windows of 128 tokens of the default corpus. Each
    cell samples ``samples`` generations per prompt with the same seeds, so
    cells differ only by the steering. `keep` generations per cell are kept.
    """
    if not vectors or not coefs:
        raise InputError("a sweep needs at least one vector and one coefficient")
    if len({v.layer for v in vectors}) != len(vectors):
        raise InputError("give one vector per layer")
    if samples < 1 or not prompts:
        raise InputError("a sweep needs prompts and at least one sample per prompt")
    score = score or topic_share(WEDDING_WORDS)
    if corpus is None:
        corpus = corpus_windows(model)
    batch = [p for p in prompts for _ in range(samples)]

    def sample(vector: SteeringVector | None, coef: float) -> list[str]:
        out = generate(model, batch, vector, coef, max_new_tokens=max_new_tokens,
                       do_sample=True, temperature=temperature, seed=seed)  # fmt: skip
        return list(out)

    base = sample(None, 0.0)
    base_ppl = perplexity(model, corpus)
    shape = (len(vectors), len(coefs))
    effect, ppl, kl = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    kept: dict[str, list[str]] = {"unsteered": base[:keep]}
    cells = [(i, j) for i in range(len(vectors)) for j in range(len(coefs))]
    for i, j in tqdm(cells, desc="steering sweep", disable=not progress):
        vector, coef = vectors[i], float(coefs[j])
        texts = sample(vector, coef)
        effect[i, j] = score(texts)
        ppl[i, j] = perplexity(model, corpus, vector, coef)
        kl[i, j] = next_token_kl(model, neutral_prompts, vector, coef)
        kept[f"{vector.layer},{coef:g}"] = texts[:keep]
    return SteeringSweep(
        [v.layer for v in vectors], [float(c) for c in coefs], effect, ppl, kl,
        score(base), base_ppl, target, vectors[0].method, len(batch), kept,
    )  # fmt: skip


def corpus_windows(
    model: Model, corpus: str = "default", n: int = 24, length: int = 128
) -> Tensor:  # [n length]
    """`n` token windows of `length` from a corpus, for measuring perplexity."""
    from ..harvest.corpus import windows

    rows = list(windows(model, corpus, length, limit=n))
    if not rows:
        raise InputError(f"the corpus {corpus!r} gave no windows")
    return torch.tensor(rows)
