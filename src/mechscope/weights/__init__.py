"""Circuits read from weights: expanded weights between conv layers; OV / QK circuits and
virtual weights between neurons and heads of language models."""

from .conv import ConvWeights, expanded_weights, linearised
from .lm import NeuronWiring, neuron_wiring
from .runs import conv_weights_run, lm_weights_run

__all__ = [
    "ConvWeights",
    "NeuronWiring",
    "conv_weights_run",
    "expanded_weights",
    "linearised",
    "lm_weights_run",
    "neuron_wiring",
]
