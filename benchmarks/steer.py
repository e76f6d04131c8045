"""Steered against unsteered generation: what adding a steering vector costs in speed.

Both generate the same number of tokens greedily from the same prompts with
the default model; the steered run adds a vector to one layer's residual
stream at every position (prompt and generated tokens) through
`mechscope.steering.generate`. The unsteered baseline is plain
`model.generate` (mechscope's hooks not installed at all). Runs alternate,
so drifts of the machine hit both; the median of each is compared. The last
line states the ratio against its target (≤ 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mechscope as ms
from mechscope import steering as st

PROMPTS = ["I went up to my friend and said", "The best part of this weekend was"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = ms.load(args.model)
    torch.set_grad_enabled(False)
    layer = model.dims.n_layers // 5
    g = torch.Generator().manual_seed(0)
    vector = st.SteeringVector(torch.randn(model.dims.d_model, generator=g), layer)

    def plain() -> list[str]:
        return model.generate(PROMPTS, args.tokens)  # type: ignore[return-value]

    def steered() -> list[str]:
        return st.generate(model, PROMPTS, vector, 2.0, max_new_tokens=args.tokens)  # type: ignore[return-value]

    plain(), steered()  # warm-up
    times: dict[str, list[float]] = {"unsteered": [], "steered": []}
    for _ in range(args.repeats):
        for name, fn in (("unsteered", plain), ("steered", steered)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    changed = plain() != steered()
    print(f"model {model.name}: {len(PROMPTS)} prompts × {args.tokens} new tokens, greedy; "
          f"vector at blocks.{layer}.resid_pre, every position; {args.repeats} runs each")  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, ts in times.items():
        print(f"{name:10s} median {med[name]:.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})")
    print(f"the steering changed the text: {changed}")
    ratio = med["steered"] / med["unsteered"]
    print(
        f"steered / unsteered {ratio:.3f} (target ≤ 1.05): {'met' if ratio <= 1.05 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
