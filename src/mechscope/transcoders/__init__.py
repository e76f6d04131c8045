"""Transcoders: sparse replacements of a model's MLPs, trained for every layer at once.

`model` holds the `Transcoder` (an SAE encoder on the MLP's input, a decoder to
its output, an optional linear skip), its config and the `TranscoderSet` (one
per layer, with the model's identity, saved as a folder); `train` fits a set
from one streamed forward per step, in a run folder that checkpoints and
resumes; `evaluate` splices the set into the forward (the replacement model,
and with error terms the exact local replacement) and scores it;
`results` holds `TranscoderEval`, readable without torch; `attach` makes a set's
latents and error terms sites of the model (``blocks.L.mlp.tc.latents``).

Example::

    from mechscope.transcoders import TranscoderTrainConfig, train_transcoders
    trained = train_transcoders(model, config=TranscoderTrainConfig(width=4608, k=32),
                                out="runs/tc")
    trained.eval.ce_recovered, trained.eval.rows()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .attach import AttachedSet, attach_transcoders
    from .evaluate import (
        ErrorTerm,
        boundary_mask,
        evaluate_transcoders,
        replacement_interventions,
        splice_transcoders,
        transcoder_errors,
    )
    from .model import (
        Transcoder,
        TranscoderConfig,
        TranscoderError,
        TranscoderSet,
        mlp_sites,
        model_identity,
    )
    from .results import TranscoderEval
    from .train import (
        TrainedTranscoders,
        TranscoderRun,
        TranscoderTrainConfig,
        open_transcoder_run,
        train_transcoders,
    )

__getattr__, __dir__, __all__ = exports(__name__, __file__)
