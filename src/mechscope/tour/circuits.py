"""The tour's circuit-tracing section: a small transcoder set and one attribution graph.

Example::

    from rich.console import Console
    from mechscope.tour.circuits import circuit_tracing
    circuit_tracing(mechscope.load(), Console())   # train transcoders for every MLP; graph a prompt
"""

from __future__ import annotations

from rich.console import Console

from .. import Model
from .settings import OUT_DIR, PROMPTS, TOUR_GRAPH_NODES, TOUR_TC_TOKENS, TOUR_TC_WIDTH


def circuit_tracing(model: Model, console: Console) -> None:
    """Train TopK transcoders with skip connections for every MLP on a slice of the corpus,
    evaluate them spliced in, and build, check and save the attribution graph of a prompt.

    Example: ``circuit_tracing(mechscope.load(), Console())``, one step of `run_tour`.
    """
    from ..graphs import graph_run, open_graph_run
    from ..transcoders import TranscoderTrainConfig, train_transcoders

    config = TranscoderTrainConfig(
        width=TOUR_TC_WIDTH, k=16, skip=True, tokens=TOUR_TC_TOKENS, batch_size=1024
    )
    trained = train_transcoders(model, config=config, out=OUT_DIR / "transcoders", eval_tokens=8192)
    console.print(f"{trained!r} in {trained.seconds:.0f} s")
    if trained.eval is not None:
        console.print(trained.eval)
    prompt = PROMPTS[0]
    path = graph_run(
        model, trained.transcoders, prompt, OUT_DIR / "graph", source=str(trained.path or ""),
        logits=[" Paris"], max_feature_nodes=TOUR_GRAPH_NODES, check_top=8, progress=True,
    )  # fmt: skip
    graph, check = open_graph_run(path)
    console.print(graph.summary(), highlight=False)
    console.print("the latents of most influence on ' Paris':")
    for row in graph.top_features(6):
        console.print(f"  {graph.describe(row['node'])}   influence {row['influence']:.3f}",
                      highlight=False)  # fmt: skip
    if check is not None:
        console.print(check.summary(), highlight=False)
    console.print(
        f"graph page: [bold]mechscope serve {path}[/bold]; Neuronpedia's JSON: "
        f"{path / 'neuronpedia.json'}"
    )
