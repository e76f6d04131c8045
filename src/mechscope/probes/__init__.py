"""Latent knowledge (Burns et al. 2022): contrast pairs and probes read from the residual stream.

`data` builds contrast pairs (true and false statements answered "Yes" and
"No"); `probes` reads the hidden states of both answers at every layer and
fits CCS (unsupervised), logistic-regression and difference-of-means probes,
with zero-shot prompting as the baseline; `sweep` runs them all at every
layer and reports held-out accuracy with intervals; `results` holds the
result classes (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .data import (
        geography_pairs,
        load_pairs,
        pair_texts,
        question_head,
        sentiment_pairs,
    )
    from .probes import (
        CCSProbe,
        hidden_states,
        logistic_probe,
        mean_diff_probe,
        normalise,
        zero_shot,
        zero_shot_logodds,
    )
    from .results import (
        METHODS,
        Accuracy,
        ContrastPair,
        LinearDirection,
        Normaliser,
        ProbePairs,
        ProbeResults,
    )
    from .sweep import probe_layers

__getattr__, __dir__, __all__ = exports(__name__, __file__)
