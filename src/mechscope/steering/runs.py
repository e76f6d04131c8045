"""Run folders for steering, which the viewer serves.

A ``steer`` run holds the vectors (``vectors/L{layer}.safetensors``,
`SteeringVector.load`), ``sweep.safetensors`` (effect, perplexity and KL per
layer × coefficient, and the perplexity bound; `SteeringSweep.load`) with its
figures, and ``examples.safetensors`` (`SteeringExamples.load`): greedy
generations of the prompts unsteered and steered at the best cell (the
largest effect within the perplexity bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.model import Model
from ..errors import InputError
from ..store import model_record, new_run
from .apply import generate
from .results import MAX_RISE, SteeringExamples, SteeringSweep
from .sweep import PROMPTS, WEDDING_WORDS, steering_sweep
from .vectors import SteeringVector


def steer_examples(
    model: Model,
    prompts: Sequence[str],
    vector: SteeringVector,
    coef: float,
    *,
    max_new_tokens: int = 40,
) -> SteeringExamples:
    """Greedy continuations of each prompt, unsteered and with ``coef · vector``.

    Example: ``steer_examples(model, PROMPTS[:2], v, 4.0).rows[0]``
    → ``(prompt, unsteered, steered)``.
    """
    plain = generate(model, list(prompts), None, max_new_tokens=max_new_tokens)
    steered = generate(model, list(prompts), vector, coef, max_new_tokens=max_new_tokens)
    return SteeringExamples(vector.layer, float(coef), list(prompts), list(plain), list(steered))


def steer_run(
    model: Model,
    vectors: Sequence[SteeringVector],
    coefs: Sequence[float],
    out: str | Path,
    *,
    words: Sequence[str] = WEDDING_WORDS,
    score: Callable[[Sequence[str]], float] | None = None,
    target: str | None = None,
    prompts: Sequence[str] = PROMPTS,
    samples: int = 4,
    max_new_tokens: int = 30,
    corpus: Tensor | None = None,
    max_rise: float = MAX_RISE,
    seed: int = 0,
    progress: bool = True,
) -> SteeringSweep:
    """Sweep layer × coefficient (`steering_sweep`) and write the run folder `out`.

    The best cell (the largest next-token probability of `words` within
    `max_rise` of perplexity) gets greedy examples, steered and not.

    Example::

        plus, minus = "I talk about weddings constantly", "I do not talk about weddings constantly"
        vectors = [actadd(model, plus, minus, layer) for layer in (4, 6, 8)]
        steer_run(model, vectors, [1, 2, 4], "runs/steer-weddings")
    """
    config: dict[str, Any] = {
        "model": model_record(model), "method": vectors[0].method if vectors else None,
        "vectors": [{"layer": v.layer, "method": v.method, **v.meta} for v in vectors],
        "coefs": list(coefs), "words": list(words), "prompts": list(prompts),
        "samples": samples, "max_new_tokens": max_new_tokens, "max_rise": max_rise, "seed": seed,
    }  # fmt: skip
    with new_run("steer", out, config) as run:
        t0 = time.perf_counter()
        sweep = steering_sweep(model, vectors, coefs, words=words, score=score, target=target,
                               prompts=prompts, samples=samples, max_new_tokens=max_new_tokens,
                               corpus=corpus, seed=seed, max_rise=max_rise,
                               progress=progress)  # fmt: skip
        run.timed("sweep", t0)
        for v in vectors:
            v.save(run.dir / "vectors" / f"L{v.layer}.safetensors")
        sweep.save(run.dir / "sweep.safetensors")
        sweep.figure(run.figures / "sweep")
        try:
            layer, coef, effect, rise = sweep.best()
        except InputError:
            run.extra["best"] = None
        else:
            best = next(v for v in vectors if v.layer == layer)
            examples = steer_examples(model, prompts, best, coef, max_new_tokens=max_new_tokens)
            examples.save(run.dir / "examples.safetensors")
            i, j = sweep.layers.index(layer), sweep.coefs.index(coef)
            run.extra["best"] = {"layer": layer, "coef": coef, "probability": effect,
                                 "factor": float(sweep.factor()[i, j]),
                                 "effect": float(sweep.effect[i, j]),
                                 "perplexity_rise": rise}  # fmt: skip
        run.extra["summary"] = repr(sweep)
        run.finish()
    return sweep
