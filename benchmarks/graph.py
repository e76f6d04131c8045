"""Attribution-graph time: batched backwards against one backward pass per node, one run.

`attribution_graph` computes the rows of many target nodes (latents, logits)
with one backward pass per `--batch` targets, the prompt copied once per
target in one kept forward. The naive way is one backward pass per target
node (``batch=1``: the same forward kept, one vector-Jacobian product per
node). Both build the same graph (the adjacencies are compared); the ratio is
their wall times, measured here one after the other on the same model,
transcoder set and prompt.

Both compute the same rows (the graph's logits and the latents it expanded),
compared entry by entry. With ``--transcoders`` a trained set is used (a run folder from
``mechscope transcoders train``), else a freshly initialised set for every layer
(the cost of a row does not depend on the weights, only on the number of
active latents: `--k` per position and layer).
"""

from __future__ import annotations

import argparse
import time

import torch

import mechscope as ms
from mechscope.graphs import attribution_graph
from mechscope.transcoders import TranscoderSet


def rows(model: ms.Model, tcs: TranscoderSet, graph, batch: int) -> tuple[float, torch.Tensor]:
    """Seconds to compute the rows of the graph's logits and expanded latents with `batch`
    rows per backward pass (the forward kept once), and the rows."""
    from mechscope.graphs.attribute import _Builder
    from mechscope.graphs.local import clean_run

    ids = torch.tensor([graph.token_ids])
    clean = clean_run(model, tcs, ids, first_as_error=graph.config["first_as_error"])
    logits = [int(graph.index[i]) for i in graph.nodes_of(3)]
    b = _Builder(model, tcs, clean, logits, batch, progress=False)
    where = {(int(la), int(p), int(i)): k for k, (la, p, i) in
             enumerate(zip(b.f_layer, b.f_pos, b.f_index, strict=True))}  # fmt: skip
    latents = [where[(int(graph.layer[i]), int(graph.pos[i]), int(graph.index[i]))]
               for i in graph.nodes_of(0)]  # fmt: skip
    targets = [-1 - k for k in range(len(logits))] + latents
    started = time.perf_counter()
    b.compute(targets)
    seconds = time.perf_counter() - started
    return seconds, torch.stack([b.rows[t] for t in targets])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--transcoders", default=None, help="Transcoder run or set folder.")
    parser.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=256, help="Latents expanded as targets.")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    model = ms.load(args.model)
    if args.transcoders:
        tcs = TranscoderSet.load(args.transcoders, model=model)
    else:
        tcs = TranscoderSet.build(model, width=args.width, k=args.k, skip=True)
    n_tok = len(model.to_tokens(args.prompt)[0])
    print(f"{model.name}; torch {torch.__version__}; CPU, {torch.get_num_threads()} threads; "
          f"{len(tcs)} transcoders; prompt of {n_tok} tokens; {args.nodes} latents expanded")  # fmt: skip
    started = time.perf_counter()
    graph = attribution_graph(model, tcs, args.prompt, batch=args.batch,
                              max_feature_nodes=args.nodes, progress=False)  # fmt: skip
    whole = time.perf_counter() - started
    n = graph.config["expanded_features"] + len(graph.nodes_of(3))
    print(f"whole graph (clean run, {n} rows chosen by influence, pruning, scores): {whole:.1f} s")
    rows(model, tcs, graph, args.batch)  # warm-up, untimed
    batched, a = rows(model, tcs, graph, args.batch)
    naive, b = rows(model, tcs, graph, 1)
    print(f"the same {n} rows, {args.batch} per backward pass: {batched:.2f} s "
          f"({-(-n // args.batch)} backward passes)")  # fmt: skip
    print(f"the same {n} rows, one backward pass per node:  {naive:.2f} s ({n} backward passes)")
    print(f"same rows: max |Δ edge| {float((a - b).abs().max()):.2e}")
    print(f"ratio naive / batched: {naive / batched:.2f}x")


if __name__ == "__main__":
    main()
