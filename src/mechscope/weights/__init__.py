"""Circuits read from weights: expanded weights between conv layers; OV / QK circuits and
virtual weights between neurons and heads of language models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .conv import expanded_weights, linearised
    from .lm import neuron_wiring
    from .results import ConvWeights, NeuronWiring
    from .runs import conv_weights_run, lm_weights_run

__getattr__, __dir__, __all__ = exports(__name__, __file__)
