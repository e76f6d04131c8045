"""Overhead of mechscope's hooks on the default model, measured against plain HF in one run.

Batch 8 × 64 tokens on SmolLM2-135M-Instruct, fp32, no_grad. Repetitions are
interleaved (plain, hooked, hooked-with-nothing, plain, ...) so that drifts in
machine load hit all three alike; the ratio of medians is reported. The last
line states both ratios against their targets (≤ 1.05 saving every
resid_post, ≤ 1.01 with nothing saved).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mechscope


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()

    model = mechscope.load(args.model)
    g = torch.Generator().manual_seed(0)
    vocab = model.dims.d_vocab if model.dims else 1000
    ids = torch.randint(0, vocab, (args.batch, args.tokens), generator=g)
    resid = [f"blocks.{layer}.resid_post" for layer in range(model.dims.n_layers)]

    def plain() -> None:
        with torch.no_grad():
            model.hf(ids)

    def hooked() -> None:
        model.run(ids, save=resid)

    def bare() -> None:
        model.run(ids)

    for fn in (plain, hooked, bare):  # warm-up
        fn()
    times: dict[str, list[float]] = {"plain": [], "hooked": [], "bare": []}
    for _ in range(args.reps):
        for name, fn in (("plain", plain), ("hooked", hooked), ("bare", bare)):
            times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"model {model.name}, batch {args.batch} × {args.tokens} tokens, {args.reps} interleaved reps"
    )
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, attention {model.hf.config._attn_implementation}"
    )
    for k, v in med.items():
        print(f"  {k:<7} median {v * 1000:8.1f} ms  (min {min(times[k]) * 1000:.1f})")
    r_hooked = med["hooked"] / med["plain"]
    r_bare = med["bare"] / med["plain"]
    print(
        f"ratio saving every resid_post / plain HF = {r_hooked:.3f} (target ≤ 1.05); "
        f"ratio with no sites / plain HF = {r_bare:.3f} (target ≤ 1.01)"
    )


if __name__ == "__main__":
    main()
