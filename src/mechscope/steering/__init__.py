"""Steering (Turner et al. 2023; contrastive activation addition): add a vector to the residual stream.

`vectors` builds steering vectors from prompt pairs (activation addition),
from two sets of texts (difference of means, first principal component) or
from a probe's direction, and saves them as safetensors; `apply` adds them
during runs and generation and measures their cost (corpus perplexity, KL
on neutral prompts); `sweep` scans layer × coefficient for the effect on a
target and its cost; `results` holds the result classes (no torch).

Example::

    from mechscope import steering
    v = steering.actadd(model, "I talk about weddings constantly",
                        "I do not talk about weddings constantly", layer=6)
    steering.generate(model, "I went up to my friend and said", v, coef=4)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .apply import generate, next_token_kl, perplexity, steer
    from .results import MAX_RISE, SteeringExamples, SteeringSweep, SteeringVector
    from .sweep import (
        NEUTRAL_PROMPTS,
        PROMPTS,
        WEDDING_WORDS,
        corpus_windows,
        steering_sweep,
        target_probability,
        target_tokens,
        topic_share,
    )
    from .vectors import (
        actadd,
        from_direction,
        mean_diff_vector,
        pca_vector,
        text_activations,
        topic_sentences,
    )

__getattr__, __dir__, __all__ = exports(__name__, __file__)
