"""Harvest throughput against a plain forward, and peak memory at two corpus sizes, one run.

Throughput: the same windows of the default corpus go through (a) plain
forwards, ``model.hf(ids)`` with logits, the way a user would run the model,
and (b) `harvest` of every MLP neuron of every layer with top-20 examples, a
10-window random sample and full statistics (corpus tokenising included).
Plain forwards are timed before and after the harvest and averaged. The ratio
of harvest tokens/s to plain tokens/s has the target ≥ 0.85. For honesty the
ratio against a forward without the unembedding (which a harvest of MLP
neurons does not need and skips) is printed too.

Memory: harvests of two corpus sizes run in fresh processes; each reports its
peak resident memory. A harvest's memory is bounded by the batch and the
per-unit state (units × (k + sample) × window), so the two peaks should be
about equal.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import torch

import mechscope as ms
from mechscope.harvest import harvest, windows

CHILD = """
import resource, sys, mechscope as ms
from mechscope.harvest import harvest
store = harvest(ms.load(sys.argv[1]), "default", out=sys.argv[2], tokens=int(sys.argv[3]),
                batch_size=int(sys.argv[4]), progress=False, keep_state=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, store.run["harvested_tokens"])
"""


def plain_rate(model: ms.Model, batches: list[torch.Tensor], base: bool) -> float:
    forward = model.hf.model if base else model.hf
    start = time.perf_counter()
    with torch.no_grad():
        for ids in batches:
            forward(ids, use_cache=False)
    return sum(b.numel() for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batches", type=int, default=8, help="Batches of 32 × 64 tokens.")
    parser.add_argument(
        "--memory-tokens", type=int, nargs=2, default=[8192, 32768], help="Two corpus sizes."
    )
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    model = ms.load(args.model)
    batch, window = 32, 64
    tokens = args.batches * batch * window
    ids = torch.tensor(list(windows(model, "default", window, limit=args.batches * batch)))
    batches = list(ids.split(batch))
    n_units = sum(s.sizes[-1] for s in model.sites("blocks.*.mlp.post"))
    print(
        f"model {model.name}: {n_units} MLP neurons, {tokens} tokens in batches of {batch}×{window}"
    )

    plain_rate(model, batches[:1], base=False)  # warm-up
    before = plain_rate(model, batches, base=False)
    base_before = plain_rate(model, batches, base=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = harvest(
            model, "default", out=f"{tmp}/h", tokens=tokens, batch_size=batch, progress=False
        )
        h_rate = store.run["harvested_tokens"] / store.run["timings"]["harvest"]
        tables = store.run["timings"]["tables"]
    after = plain_rate(model, batches, base=False)
    base_after = plain_rate(model, batches, base=True)
    plain = (before + after) / 2
    base = (base_before + base_after) / 2
    print(f"plain forward (with logits):   {plain:8.0f} tokens/s  ({before:.0f}, {after:.0f})")
    print(f"forward without unembedding:   {base:8.0f} tokens/s")
    print(
        f"harvest (top-20, all neurons): {h_rate:8.0f} tokens/s  (+ {tables:.1f} s writing tables)"
    )
    print(f"ratio vs forward without unembedding: {h_rate / base:.2f}")
    ratio = h_rate / plain
    print(
        f"harvest / plain forward: {ratio:.2f} (target ≥ 0.85: {'met' if ratio >= 0.85 else 'NOT met'})"
    )

    if args.skip_memory:
        return
    peaks = []
    for n in args.memory_tokens:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, args.model, f"{tmp}/h", str(n), str(batch)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        peaks.append(int(out[0]))
        print(f"peak memory, harvest of {int(out[1]):>7} tokens: {out[0]} MiB")
    print(
        f"peak memory ratio for {args.memory_tokens[1] // args.memory_tokens[0]}× the corpus: "
        f"{peaks[1] / peaks[0]:.2f}"
    )


if __name__ == "__main__":
    main()
