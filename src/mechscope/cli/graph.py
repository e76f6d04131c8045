"""``mechscope graph MODEL PROMPT --transcoders RUN``: an attribution graph from the shell."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console

from ..errors import InputError
from .options import Placement, placed

console = Console()


def _check_options(
    max_features: int,
    batch: int,
    node_threshold: float,
    edge_threshold: float,
    check_top: int,
    heads: int,
) -> None:
    """The numbers of ``mechscope graph``, refused in one line naming the option before any work."""
    for option, value, low in (("--max-features", max_features, 0), ("--batch", batch, 1),
                               ("--check", check_top, 0), ("--heads", heads, 0)):  # fmt: skip
        if value < low:
            raise InputError(f"{option} must be an integer ≥ {low}, got {value}")
    for option, share in (("--node-threshold", node_threshold),
                          ("--edge-threshold", edge_threshold)):  # fmt: skip
        if not (math.isfinite(share) and 0 < share <= 1):
            raise InputError(f"{option} is a share of influence kept, in (0, 1]; got {share}")


@placed
def graph_cmd(
    model: str = typer.Argument(..., help="Model spec, e.g. smollm2-135m."),
    prompt: str = typer.Argument(..., help="The prompt to explain."),
    transcoders: Path = typer.Option(
        ..., "--transcoders", help="Transcoder run folder (or a transcoders/ set folder)."
    ),
    logit: list[str] = typer.Option(
        None, "--logit", help="Output token to explain (repeatable; default: the top ones)."
    ),
    harvest: Path = typer.Option(
        None, "--harvest", help="Harvest of blocks.*.mlp.tc.latents, to label the latents."
    ),
    max_features: int = typer.Option(
        1024, "--max-features", help="Latents expanded as targets, by influence."
    ),
    batch: int = typer.Option(64, "--batch", help="Target rows per backward pass."),
    node_threshold: float = typer.Option(0.8, "--node-threshold", help="Influence share kept."),
    edge_threshold: float = typer.Option(0.98, "--edge-threshold", help="Edge score share kept."),
    check_top: int = typer.Option(
        10, "--check", help="Top latents checked by zero-ablation (0: no check)."
    ),
    heads: int = typer.Option(
        0, "--heads", help="Split the N strongest edges between positions by attention head."
    ),
    out: Path = typer.Option(Path("runs/graph"), "--out", help="Run folder to write."),
    *,
    place: Placement,
) -> None:
    """Build PROMPT's attribution graph through a transcoder set: prune it, score it
    (replacement, completeness), check its top latents by intervention, and write it with
    its figure and Neuronpedia's JSON."""
    from ..graphs import graph_run, open_graph_run
    from ..graphs.local import check_model
    from ..transcoders import TranscoderSet

    _check_options(max_features, batch, node_threshold, edge_threshold, check_top, heads)
    if not transcoders.exists():
        raise InputError(f"--transcoders {transcoders}: no such folder")
    m = place.load(model)
    tcs = TranscoderSet.load(transcoders)
    # a model whose graphs are not built here (post-norms, offload), then a set not of it
    check_model(m, tcs)
    for text in logit or []:
        try:
            m.to_single_token(text)
        except InputError as e:
            raise InputError(f"--logit takes one token of {m.name}: {e}") from None
    try:
        path = graph_run(
            m, tcs, prompt, out, harvest=harvest, check_top=check_top, source=str(transcoders),
            heads=heads, logits=logit or None, max_feature_nodes=max_features, batch=batch,
            node_threshold=node_threshold, edge_threshold=edge_threshold,
        )  # fmt: skip
    except InputError as e:  # the library names its keyword: say the option
        message = str(e)
        if message.startswith("batch "):
            raise InputError(f"--{message}") from None
        raise
    except (MemoryError, RuntimeError) as e:  # torch's out-of-memory errors (CPU, CUDA, MPS)
        if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
            raise
        raise InputError(
            f"out of memory building the graph with --batch {batch} target rows per backward "
            "pass; give a smaller --batch (or --max-features)"
        ) from None
    graph, check = open_graph_run(path)
    console.print(graph.summary(), highlight=False)
    for row in graph.top_features(8):
        console.print(f"  {graph.describe(row['node'])}  influence {row['influence']:.3f}")
    if check is not None:
        console.print(check.summary(), highlight=False)
    carried = path / "heads.json"
    if carried.is_file():
        import json

        for edge in json.loads(carried.read_text()):
            top = ", ".join(f"{h['head']} {h['share']:.0%}" for h in edge["heads"][:3])
            console.print(f"  {edge['source_name']} → {edge['target_name']}: {top}",
                          highlight=False)  # fmt: skip
    console.print(f"saved to {path}; view it: mechscope serve {path}")
