"""Superposition and sparse autoencoders.

`toy` trains the toy models of superposition (Elhage et al. 2022); `model`
holds the SAE architectures (TopK, ReLU with L1, JumpReLU); the activations
they train on stream from `mechscope.core.activations` (re-exported here);
`train` fits an SAE; `evaluate` measures L0, variance
explained and cross-entropy loss recovered with the SAE spliced into the
forward; `results` holds their results (`SAEEval`, `ToyResult`), readable
without torch. An SAE attached to a model (`Model.attach`) makes its latents a site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ..core.activations import (
        ShuffleBuffer,
        activations_meta,
        load_activations,
        store_activations,
        stream_activations,
    )
    from .evaluate import evaluate_sae, frequency_histogram
    from .fit import SAERun, harvest_latents, open_sae_run, sae_run
    from .model import SAEConfig, SAEError, SparseAutoencoder
    from .results import SAEEval, ToyResult
    from .runs import toy_run
    from .toy import (
        ToyModel,
        phase_diagram,
        quick_sweep,
        superposition,
        train_toy,
    )
    from .train import TrainConfig, TrainedSAE, train_sae

__getattr__, __dir__, __all__ = exports(__name__, __file__)
