"""Circuits read from weights: expanded weights between conv layers; OV / QK circuits and
virtual weights between neurons and heads of language models."""

from .conv import ConvWeights, expanded_weights, linearised

__all__ = ["ConvWeights", "expanded_weights", "linearised"]
