"""Neuroscope-style harvesting: corpora, top-k examples and statistics per unit, stored as Parquet.

Example::

    import mechscope as ms
    from mechscope.harvest import harvest, open_harvest
    store = harvest(ms.load(), "default", out="runs/harvest", tokens=1_000_000)
    page = store.unit("blocks.12.mlp.post", 345)     # top examples, histogram, statistics
    store.search_token(" Paris")                     # which units fire on " Paris"
"""

from .collect import DEFAULT_SITES, harvest, merge_harvests
from .corpus import DEFAULT_CORPUS, SOURCES, Corpus, open_corpus, pack, windows
from .stats import UnitAccumulator, hist_edges
from .tables import Example, HarvestStore, TokenHit, UnitRecord, UnitStats, open_harvest

__all__ = [
    "DEFAULT_CORPUS",
    "DEFAULT_SITES",
    "SOURCES",
    "Corpus",
    "Example",
    "HarvestStore",
    "TokenHit",
    "UnitAccumulator",
    "UnitRecord",
    "UnitStats",
    "harvest",
    "hist_edges",
    "merge_harvests",
    "open_corpus",
    "open_harvest",
    "pack",
    "windows",
]
