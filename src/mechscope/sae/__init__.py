"""Superposition and sparse autoencoders.

`toy` trains the toy models of superposition (Elhage et al. 2022); `model`
holds the SAE architectures (TopK, ReLU with L1, JumpReLU); `activations`
streams a site's activations from a model through a shuffling buffer or from
stored shards; `train` fits an SAE; `evaluate` measures L0, variance
explained and cross-entropy loss recovered with the SAE spliced into the
forward. An SAE attached to a model (`Model.attach`) makes its latents a site.
"""
