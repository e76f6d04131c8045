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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .apply import generate, next_token_kl, perplexity, steer
from .vectors import SteeringVector, word_pattern

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
    "Last summer we decided to",
    "The most important thing in my life is",
    "He called his sister to talk about",
    "Everyone in the town was talking about",
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
    pattern = word_pattern(words)
    return lambda texts: sum(bool(pattern.search(t)) for t in texts) / max(1, len(texts))


def target_tokens(model: Model, words: Sequence[str]) -> list[int]:
    """Token ids of `words` that are single tokens: " word", " Word", "word", "Word"."""
    ids: set[int] = set()
    for word in words:
        for variant in (f" {word}", f" {word.capitalize()}", word, word.capitalize()):
            tokens = model._ids(variant, False)
            if len(tokens) == 1:
                ids.add(tokens[0])
    if not ids:
        raise InputError(f"none of {', '.join(words)} is a single token of {model.name}")
    return sorted(ids)


@torch.no_grad()
def target_probability(
    model: Model,
    prompts: Sequence[str],
    words: Sequence[str],
    vector: SteeringVector | None = None,
    coef: float = 0.0,
) -> float:
    """The next-token probability of any of `words` after each prompt, averaged over prompts."""
    if not prompts:
        raise InputError("target_probability needs at least one prompt")
    ids = torch.tensor(target_tokens(model, words))
    lengths = model.lengths(prompts)
    ivs = steer(vector, coef, lengths=lengths.tolist()) if vector is not None and coef else []
    logits = model.run(list(prompts), interventions=ivs).logits
    last = logits[torch.arange(len(prompts)), lengths - 1].float().softmax(-1).cpu()
    return float(last[:, ids].sum(-1).mean())


METRICS = ("probability", "effect")


@dataclass
class SteeringSweep:
    """The target and the costs at every (layer, coefficient); baselines are the unsteered model.

    Two measures of the target: ``probability``, the next-token probability
    of the target words after each prompt (exact, no sampling), and
    ``effect``, a score of sampled generations (by default the share that
    mention a target word).
    """

    layers: list[int]
    coefs: list[float]
    probability: Tensor  # [layer coef]: next-token P(target words), mean over prompts
    effect: Tensor  # [layer coef]: the score of steered generations
    perplexity: Tensor  # [layer coef]: corpus perplexity with the steering
    kl: Tensor  # [layer coef]: KL(unsteered ‖ steered) on neutral prompts, nats per token
    baseline_probability: float
    baseline_effect: float
    baseline_perplexity: float
    target: str = "target"
    words: list[str] = field(default_factory=list)
    method: str = ""
    n_generations: int = 0
    samples: dict[str, list[str]] = field(default_factory=dict)  # "layer,coef" -> generations

    @property
    def perplexity_rise(self) -> Tensor:
        """Relative rise of perplexity over the unsteered model (0.1 = 10%)."""
        return self.perplexity / self.baseline_perplexity - 1

    def factor(self, by: str = "probability") -> Tensor:
        """Steered over unsteered, per cell, for the probability or the generations' score."""
        values, base = self._metric(by)
        return values / base if base > 0 else torch.full_like(values, float("inf"))

    def _metric(self, by: str) -> tuple[Tensor, float]:
        if by == "probability":
            return self.probability, self.baseline_probability
        if by == "effect":
            return self.effect, self.baseline_effect
        raise InputError(f"unknown measure {by!r}; valid: {', '.join(METRICS)}")

    def best(
        self, max_rise: float = 0.10, by: str = "probability"
    ) -> tuple[int, float, float, float]:
        """(layer, coef, value, perplexity rise) of the largest `by` whose rise is ≤ `max_rise`."""
        values, _ = self._metric(by)
        ok = self.perplexity_rise <= max_rise
        if not ok.any():
            raise InputError(f"no (layer, coefficient) keeps the perplexity rise ≤ {max_rise:.0%}")
        score = torch.where(ok, values, torch.full_like(values, -float("inf")))
        i, j = divmod(int(score.argmax()), len(self.coefs))
        return (self.layers[i], self.coefs[j], float(values[i, j]),
                float(self.perplexity_rise[i, j]))  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "layers": self.layers, "coefs": self.coefs, "probability": self.probability.tolist(),
            "effect": self.effect.tolist(), "perplexity": self.perplexity.tolist(),
            "kl": self.kl.tolist(), "baseline_probability": self.baseline_probability,
            "baseline_effect": self.baseline_effect, "target": self.target, "words": self.words,
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
            t = {k: torch.tensor(d[k]) for k in ("probability", "effect", "perplexity", "kl")}
            return cls(
                d["layers"], d["coefs"], t["probability"], t["effect"], t["perplexity"], t["kl"],
                d["baseline_probability"], d["baseline_effect"], d["baseline_perplexity"],
                d.get("target", "target"), d.get("words", []), d.get("method", ""),
                d.get("n_generations", 0), d.get("samples", {}),
            )  # fmt: skip
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} is not a saved steering sweep: {e}") from None

    def figure(self, path: str | Path) -> dict[str, dict[str, Path]]:
        """Target probability (× unsteered), generations' score and perplexity rise per coefficient.

        One line per layer; PNG, SVG and HTML each.
        """
        from ..figures import figure_stem, line

        stem = figure_stem(path)
        coefs = [f"{c:g}" for c in self.coefs]

        def per_layer(values: Tensor) -> dict[str, Tensor | list[float]]:
            return {f"layer {layer}": values[i] for i, layer in enumerate(self.layers)}

        factor = per_layer(self.factor("probability"))
        factor["unsteered"] = [1.0] * len(coefs)
        effect = per_layer(self.effect)
        effect["unsteered"] = [self.baseline_effect] * len(coefs)
        rise = per_layer(100 * self.perplexity_rise)
        rise["10% bound"] = [10.0] * len(coefs)
        words = ", ".join(self.words[:4]) + ("…" if len(self.words) > 4 else "")
        return {
            "probability": line(factor, stem.with_name(stem.name + "_probability"),
                                title=f"next-token P({words}), steered / unsteered",
                                x_labels=coefs, x_title="coefficient", y_title="× unsteered"),
            "effect": line(effect, stem.with_name(stem.name + "_effect"),
                           title=f"{self.target} ({self.n_generations} generations per cell)",
                           x_labels=coefs, x_title="coefficient", y_title=self.target),
            "perplexity": line(rise, stem.with_name(stem.name + "_perplexity"),
                               title="perplexity rise on the corpus", x_labels=coefs,
                               x_title="coefficient", y_title="perplexity rise (%)"),
        }  # fmt: skip

    def __repr__(self) -> str:
        try:
            layer, coef, p, rise = self.best()
            i, j = self.layers.index(layer), self.coefs.index(coef)
            top = (
                f"best within 10% perplexity: layer {layer} coef {coef:g}, P(target) "
                f"×{p / max(self.baseline_probability, 1e-30):.1f}, {self.target} "
                f"{float(self.effect[i, j]):.3f} (unsteered {self.baseline_effect:.3f}), "
                f"perplexity {rise:+.1%}"
            )
        except InputError:
            top = "no cell within 10% perplexity"
        return (
            f"SteeringSweep({self.method}, {len(self.layers)} layers × {len(self.coefs)} coefs, "
            f"{top})"
        )


def steering_sweep(
    model: Model,
    vectors: Sequence[SteeringVector],
    coefs: Sequence[float],
    *,
    words: Sequence[str] = WEDDING_WORDS,
    score: Callable[[Sequence[str]], float] | None = None,
    target: str | None = None,
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
    """Measure the target and the costs for each vector (one per layer) × coefficient.

    The target is the next-token probability of `words` after `prompts`, and
    `score` of sampled generations (default: the share mentioning `words`;
    name another score with `target`). `corpus` defaults to 24 windows of
    128 tokens of the default corpus. Each cell samples ``samples``
    generations per prompt with the same seeds, so cells differ only by the
    steering; `keep` generations per cell are kept.
    """
    if not vectors or not coefs:
        raise InputError("a sweep needs at least one vector and one coefficient")
    if len({v.layer for v in vectors}) != len(vectors):
        raise InputError("give one vector per layer")
    if samples < 1 or not prompts:
        raise InputError("a sweep needs prompts and at least one sample per prompt")
    if score is None:
        score = topic_share(words)
        target = target or "share mentioning " + "/".join(list(words)[:3]) + "…"
    target_tokens(model, words)  # fails early if no word is a single token
    if corpus is None:
        corpus = corpus_windows(model)
    batch = [p for p in prompts for _ in range(samples)]

    def sample(vector: SteeringVector | None, coef: float) -> list[str]:
        out = generate(model, batch, vector, coef, max_new_tokens=max_new_tokens,
                       do_sample=True, temperature=temperature, seed=seed)  # fmt: skip
        return list(out)

    base = sample(None, 0.0)
    base_ppl = perplexity(model, corpus)
    base_p = target_probability(model, prompts, words)
    shape = (len(vectors), len(coefs))
    prob, effect = torch.zeros(shape), torch.zeros(shape)
    ppl, kl = torch.zeros(shape), torch.zeros(shape)
    kept: dict[str, list[str]] = {"unsteered": base[:keep]}
    cells = [(i, j) for i in range(len(vectors)) for j in range(len(coefs))]
    for i, j in tqdm(cells, desc="steering sweep", disable=not progress):
        vector, coef = vectors[i], float(coefs[j])
        texts = sample(vector, coef)
        prob[i, j] = target_probability(model, prompts, words, vector, coef)
        effect[i, j] = score(texts)
        ppl[i, j] = perplexity(model, corpus, vector, coef)
        kl[i, j] = next_token_kl(model, neutral_prompts, vector, coef)
        kept[f"{vector.layer},{coef:g}"] = texts[:keep]
    return SteeringSweep(
        [v.layer for v in vectors], [float(c) for c in coefs], prob, effect, ppl, kl,
        base_p, score(base), base_ppl, target or "score", list(words), vectors[0].method,
        len(batch), kept,
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
