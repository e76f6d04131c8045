"""Probes and steering on the real default model (marked `model`)."""

from __future__ import annotations

import pytest

from mechscope import steering as st
from mechscope.probes import probe_layers, sentiment_pairs

pytestmark = pytest.mark.model


def test_the_wedding_vector_raises_wedding_words_at_little_perplexity_cost(smollm2):
    vector = st.actadd(smollm2, "I talk about weddings constantly",
                       "I do not talk about weddings constantly", 8)  # fmt: skip
    prompts = list(st.PROMPTS)
    base = st.target_probability(smollm2, prompts, st.WEDDING_WORDS)
    steered = st.target_probability(smollm2, prompts, st.WEDDING_WORDS, vector, 1.0)
    assert steered > 5 * base
    windows = st.corpus_windows(smollm2, n=8)
    rise = st.perplexity(smollm2, windows, vector, 1.0) / st.perplexity(smollm2, windows) - 1
    assert 0 < rise < 0.10


def test_a_supervised_probe_reads_tweet_sentiment(smollm2):
    pairs = sentiment_pairs(limit=100, seed=1)
    res = probe_layers(smollm2, pairs, test=40, layers=[15], restarts=2, epochs=200,
                       progress=False)  # fmt: skip
    assert res.accuracy["logistic"][0].value >= 0.7
    assert res.zero_shot.n == 40 and res.zero_shot_calibrated is not None
