"""Neuroscope-style harvesting: corpora, top-k examples and statistics per unit, stored as Parquet.

Example::

    import mechscope as ms
    from mechscope.harvest import harvest, open_harvest
    store = harvest(ms.load(), "default", out="runs/harvest", tokens=1_000_000)
    page = store.unit("blocks.12.mlp.post", 345)     # top examples, histogram, statistics
    store.search_token(" Paris")                     # which units fire on " Paris"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from ..corpus import DEFAULT_CORPUS, SOURCES, Corpus, open_corpus, pack, windows
    from .collect import DEFAULT_SITES, harvest, harvest_run
    from .state import merge_harvests
    from .stats import UnitAccumulator, hist_edges
    from .tables import Example, HarvestStore, TokenHit, UnitRecord, UnitStats, open_harvest

__getattr__, __dir__, __all__ = exports(__name__, __file__)
