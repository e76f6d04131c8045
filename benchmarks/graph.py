"""Attribution-graph time: batched backwards against one backward pass per node, one run.

`attribution_graph` computes the rows of many target nodes (latents, logits)
with one backward pass per `--batch` targets, the prompt copied once per
target in one kept forward. The naive way is one backward pass per target
node (``batch=1``: the same forward kept, one vector-Jacobian product per
node). Both build the same graph (the adjacencies are compared); the ratio is
their wall times, measured here one after the other on the same model,
transcoder set and prompt.

With ``--transcoders`` a trained set is used (a run folder from
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


def timed(model: ms.Model, tcs: TranscoderSet, prompt: str, batch: int, nodes: int):
    started = time.perf_counter()
    graph = attribution_graph(model, tcs, prompt, batch=batch, max_feature_nodes=nodes,
                              progress=False)  # fmt: skip
    return time.perf_counter() - started, graph


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
    timed(model, tcs, args.prompt, args.batch, 8)  # warm-up, untimed
    batched, g_batched = timed(model, tcs, args.prompt, args.batch, args.nodes)
    naive, g_naive = timed(model, tcs, args.prompt, 1, args.nodes)
    same = g_batched.node_ids() == g_naive.node_ids()
    diff = float((g_batched.adjacency - g_naive.adjacency).abs().max()) if same else float("nan")
    rows = g_batched.config["expanded_features"] + int((g_batched.kind == 3).sum())
    print(f"batched ({args.batch} rows per backward): {batched:.1f} s, "
          f"{g_batched.config['backward_passes']} backward passes")  # fmt: skip
    print(f"naive (one backward per node):    {naive:.1f} s, "
          f"{g_naive.config['backward_passes']} backward passes for {rows} rows")  # fmt: skip
    print(f"same graph: {same}, max |Δ edge| {diff:.2e}")
    print(f"ratio naive / batched: {naive / batched:.1f}x")


if __name__ == "__main__":
    main()
