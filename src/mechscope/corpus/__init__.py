"""Corpora: text to harvest from, and packing it into token windows.

`sources` reads the built-in corpora (Debian packages: Austen, GCIDE, fortunes,
the Python docs, WordNet), `files` the user's .txt/.jsonl/.parquet files and HF
``datasets`` folders, `corpus` mixes them into one deterministic `Corpus`, and
`packing` tokenises documents into windows that start with BOS. Every
technique that reads text (harvests, SAE training and evaluation, ROME's key
statistics) uses this package; none reaches into another technique for it.

Example::

    from mechscope.corpus import open_corpus, windows
    corpus = open_corpus("default")  # austen, gcide, fortunes, pydocs, interleaved
    for ids in windows(model, corpus, 64, limit=1000):
        ...  # 64 token ids, BOS first
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .corpus import Corpus, open_corpus
    from .packing import boundary_tokens, pack, window_batches, windows
    from .sources import DEFAULT_CORPUS, DEFAULT_MIX, DOC_CHARS, SOURCES, SourceInfo

__getattr__, __dir__, __all__ = exports(__name__, __file__)
