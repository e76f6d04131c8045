"""Attribution graphs: circuits read through transcoders, for one prompt at a time.

`local` makes a model its local replacement around one prompt (transcoders for
the MLPs with latents and error terms fixed, attention patterns and norm
denominators frozen); `attribute` builds the graph of direct effects between
token embeddings, active latents, error nodes and logits with batched
backwards; `prune` computes influence, prunes, and scores (replacement,
completeness); `results` holds `AttributionGraph` (saves, reopens, exports
Neuronpedia's JSON); `validate` checks a graph's predictions by intervening on
the model.

Example::

    from mechscope.graphs import attribution_graph
    g = attribution_graph(model, tcs, "The capital of France is")
    print(g.summary()); g.to_neuronpedia("graph.json")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import exports

if TYPE_CHECKING:
    from .attribute import attribution_graph
    from .local import CleanRun, GraphError, LocalReplacement, clean_run
    from .prune import influence, normalized, prune, scores
    from .results import AttributionGraph
    from .runs import graph_run, harvest_labels, open_graph_run, plot_graph
    from .validate import GraphCheck, check_graph, spearman

__getattr__, __dir__, __all__ = exports(__name__, __file__)
