"""Indirect object identification (Wang et al. 2022): the data set, its metric, head diagnostics.

Example::

    from mechscope.ioi import ioi_dataset, logit_diff, induction_scores
    ds = ioi_dataset(model, 100)
    logit_diff(model.run(ds.tokens).logits, ds)

The result classes live in the torch-free `mechscope.ioi.results`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .dataset import NAMES, OBJECTS, PLACES, TEMPLATES, ioi_dataset, logit_diff, single_tokens
    from .heads import (
        classify_heads,
        copying_scores,
        duplicate_token_scores,
        head_logit_attribution,
        induction_scores,
        ioi_attention_scores,
        previous_token_scores,
        repeated_random_tokens,
    )
    from .reproduce import IOIReport, ioi_run
    from .results import (
        CORRUPTIONS,
        HEAD_CLASSES,
        HeadClassification,
        HeadLabel,
        HeadScores,
        IOIAttentionScores,
        IOIDataset,
    )

__getattr__, __dir__, __all__ = exports(__name__, __file__)
