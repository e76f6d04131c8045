"""Sweeps over layer × coefficient: how far steering moves a target, and what it costs.

At each (layer, coefficient) `steering_sweep` samples generations from a set
of prompts with the layer's vector added and scores them (by default the
share that mention a topic: any of a list of words); the cost is the rise of
perplexity on corpus windows with the same steering, and the KL of the
next-token distributions on neutral prompts. `SteeringSweep.best` picks the
strongest effect whose perplexity rise stays under a bound (the sweep's
`max_rise`). The result, `SteeringSweep`, lives in `steering.results` and is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.model import Model
from ..errors import InputError
from .apply import generate, next_token_kl, perplexity, steer
from .results import MAX_RISE, MEASURES, SteeringSweep, cell_key
from .vectors import SteeringVector, word_pattern

__all__ = [
    "MEASURES",
    "NEUTRAL_PROMPTS",
    "PROMPTS",
    "WEDDING_WORDS",
    "SteeringSweep",
    "corpus_windows",
    "steering_sweep",
    "target_probability",
    "target_tokens",
    "topic_share",
]

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
    """A scorer: the share of texts containing any of `words` (whole words, any case).

    Example: ``topic_share(["wedding"])(["A June wedding.", "Rain."])`` → ``0.5``.
    """
    pattern = word_pattern(words)
    return lambda texts: sum(bool(pattern.search(t)) for t in texts) / max(1, len(texts))


def target_tokens(model: Model, words: Sequence[str]) -> list[int]:
    """Token ids of `words` that are single tokens: " word", " Word", "word", "Word".

    Example: ``target_tokens(model, ["wedding"])`` → ``[18338]`` on SmolLM2.
    """
    ids: set[int] = set()
    for word in words:
        for variant in (f" {word}", f" {word.capitalize()}", word, word.capitalize()):
            tokens = model.ids(variant, False)
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
    """The next-token probability of any of `words` after each prompt, averaged over prompts.

    Example: ``target_probability(model, PROMPTS, WEDDING_WORDS, v, coef=4)`` → a float.
    """
    if not prompts:
        raise InputError("target_probability needs at least one prompt")
    ids = torch.tensor(target_tokens(model, words))
    lengths = model.lengths(prompts)
    ivs = steer(vector, coef, lengths=lengths.tolist()) if vector is not None and coef else []
    logits = model.run(list(prompts), interventions=ivs).logits
    last = logits[torch.arange(len(prompts)), lengths - 1].float().softmax(-1).cpu()
    return float(last[:, ids].sum(-1).mean())


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
    max_rise: float = MAX_RISE,
    progress: bool = True,
) -> SteeringSweep:
    """Measure the target and the costs for each vector (one per layer) × coefficient.

    The target is the next-token probability of `words` after `prompts`, and
    `score` of sampled generations (default: the share mentioning `words`;
    name another score with `target`). `corpus` defaults to 24 windows of
    128 tokens of the default corpus. Each cell samples ``samples``
    generations per prompt with the same seeds, so cells differ only by the
    steering; `keep` generations per cell are kept. `max_rise` is the bound on
    the perplexity rise that the sweep's `best` cell keeps within.

    Example::

        with_topic, without = topic_sentences(WEDDING_WORDS)
        vectors = [mean_diff_vector(model, with_topic, without, layer) for layer in (4, 8, 12)]
        steering_sweep(model, vectors, [2, 4, 8]).best()  # (layer, coef, P(target), rise)
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
        kept[cell_key(vector.layer, coef)] = texts[:keep]
    return SteeringSweep(
        [v.layer for v in vectors], [float(c) for c in coefs], prob, effect, ppl, kl,
        base_p, score(base), base_ppl, target or "score", list(words), vectors[0].method,
        len(batch), kept, max_rise,
    )  # fmt: skip


def corpus_windows(
    model: Model, corpus: str = "default", n: int = 24, length: int = 128
) -> Tensor:  # [n length]
    """`n` token windows of `length` from a corpus, for measuring perplexity.

    Example: ``corpus_windows(model, n=8, length=64).shape`` → ``(8, 64)``.
    """
    from ..corpus import windows

    rows = list(windows(model, corpus, length, limit=n))
    if not rows:
        raise InputError(f"the corpus {corpus!r} gave no windows")
    return torch.tensor(rows)
