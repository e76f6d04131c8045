"""Scale: the Ray engine's harvest against the local engine's at the same total threads, and the
bfloat16 forward saving every resid site against plain HF bfloat16, measured in one run.

Harvest: every MLP neuron of SmolLM2 (`ms.load()`, float32) over the same
``--tokens`` of the default corpus, (a) on the local engine with torch on
``--threads`` threads, (b) on the Ray engine with ``--threads`` workers of 1
thread each, on a local cluster of that many CPUs. The cluster is started
first and warmed by a tiny harvest (each worker process imports torch and
mechscope once); both are start-up, reported apart. The ratio is the local
``harvest()`` call's wall time over the Ray call's (the Ray call includes
shipping the model, loading it in every worker, the shards and the merge;
target ≥ 0.9); the harvest loops alone (local tokens/s against the sum of
the shards' tokens/s) are printed too. Both runs must give the same tables.

bfloat16: ``ms.load(dtype=torch.bfloat16)``; one batch of ``--batch`` ×
``--seq`` tokens; `model.run(ids, save=["blocks.*.resid_pre"])` against
``model.hf(ids)``, interleaved, median of ``--reps``; the ratio is plain time
over saving time (throughput saving / plain). The default batch is small
(2 × 32) because a CPU without bfloat16 matrix units runs the bf16 forward
some 40× slower than float32.

On a shared machine both ratios move with the load (printed before and
after): two one-thread processes hold up better under contention than one
two-thread process, whose threads wait for each other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

import mechscope as ms
from mechscope.engine.cluster import ray_session
from mechscope.harvest import harvest


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def harvests(args: argparse.Namespace) -> None:
    model = ms.load(args.model)
    common = dict(tokens=args.tokens, batch_size=args.batch_size, progress=False)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        print(f"load average before the harvests: {load()}")
        t0 = time.perf_counter()
        local = harvest(model, "default", out=f"{tmp}/local", threads=args.threads, **common)
        local_s = time.perf_counter() - t0
        local_loop = local.run["harvested_tokens"] / local.run["timings"]["harvest"]

        t0 = time.perf_counter()
        with ray_session(cpus=args.threads):
            cluster_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            harvest(
                model,
                "default",
                out=f"{tmp}/warm",
                tokens=4 * 64 * args.threads,  # one batch of 4 windows per worker
                batch_size=4,
                engine="ray",
                workers=args.threads,
                threads=1,
                progress=False,
            )
            warm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            remote = harvest(
                model,
                "default",
                out=f"{tmp}/ray",
                engine="ray",
                workers=args.threads,
                threads=1,
                **common,
            )
            ray_s = time.perf_counter() - t0
        print(f"load average after the harvests: {load()}")
        same = all(
            pq.read_table(Path(tmp, "local", f"{t}.parquet")).equals(
                pq.read_table(Path(tmp, "ray", f"{t}.parquet"))
            )
            for t in ("units", "examples", "windows", "token_hits")
        )
        shards = remote.run["engine"]["shards"]
        shard_tokens = [(s["windows"][1] - s["windows"][0]) * 64 for s in shards]
        ray_loop = sum(
            n / s["seconds"]["harvest"] for n, s in zip(shard_tokens, shards, strict=True)
        )
        overlap = min(s["ended_at"] for s in shards) - max(s["started_at"] for s in shards)
        span = max(s["ended_at"] for s in shards) - min(s["started_at"] for s in shards)
        print(
            f"harvest of {args.tokens} tokens, every MLP neuron of {model.name}, "
            f"{args.threads} threads in all; tables equal: {same}"
        )
        print(
            f"start-up: cluster {cluster_s:.1f} s, first (warm-up) harvest {warm_s:.1f} s; "
            f"in the measured run: ship model {remote.run['timings']['ship_model']:.1f} s, "
            f"load in workers {max(s['seconds']['load_model'] for s in shards):.1f} s, "
            f"merge {remote.run['seconds']:.1f} s"
        )
        print(
            f"local ({args.threads} threads): {local_s:.1f} s, {args.tokens / local_s:.0f} tokens/s "
            f"(loop {local_loop:.0f})"
        )
        print(
            f"ray ({args.threads} workers × 1 thread): {ray_s:.1f} s, {args.tokens / ray_s:.0f} "
            f"tokens/s (shards' loops {ray_loop:.0f}, overlapping {overlap / span:.0%} of their span)"
        )
        ratio = local_s / ray_s
        print(
            f"ray / local throughput: {ratio:.2f} (target ≥ 0.9: {'met' if ratio >= 0.9 else 'NOT met'}); "
            f"loops alone {ray_loop / local_loop:.2f}"
        )


def bf16(args: argparse.Namespace) -> None:
    model = ms.load(args.model, dtype=torch.bfloat16)
    torch.manual_seed(0)
    ids = torch.randint(100, 40000, (args.batch, args.seq))
    sites = model.table.expand("blocks.*.resid_pre")

    def plain() -> None:
        with torch.no_grad():
            model.hf(ids)

    def saving() -> None:
        out = model.run(ids, save=["blocks.*.resid_pre"])
        assert len(out.cache) == len(sites)

    plain(), saving()  # warm-up
    times: dict[str, list[float]] = {"plain": [], "saving": []}
    for _ in range(args.reps):
        for name, fn in (("plain", plain), ("saving", saving)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    p, s = statistics.median(times["plain"]), statistics.median(times["saving"])
    print(
        f"bfloat16 forward of {args.batch}×{args.seq} tokens: plain HF {p * 1e3:.0f} ms, "
        f"saving {len(sites)} resid_pre sites {s * 1e3:.0f} ms (medians of {args.reps})"
    )
    print(f"bfloat16 saving every resid site / plain HF throughput: {p / s:.2f}")
    print(f"load average after the forwards: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tmp", default=None, help="Where the harvests are written.")
    parser.add_argument("--skip-harvest", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_harvest:
        harvests(args)
    bf16(args)


if __name__ == "__main__":
    main()
