"""Full causal trace of one fact (all layers × tokens × 3 kinds, 10 noise samples): batched vs per cell.

Baseline: one forward per heatmap cell (kind, layer, token), its batch the
10 noise samples, as in the ROME authors' tracing code: the subject's
embeddings noised by an intervention, the clean state restored by `patch`
interventions at that token in the cell's layer (or window of layers).
Batched: mechscope's `trace_fact`: the corrupted run captured once, each
restoration resumed from the first block it changes and the token it
restores (reading the corrupted keys and values before it), windows that
clipping makes identical computed once, tokens before the subject not run
(they equal the corrupted run), and only the last position unembedded.
Both use the same noise, are timed in this process and checked to agree;
the last line states the ratio against its target (≥ 5×).
"""

from __future__ import annotations

import argparse
import time

import torch

import mechscope as ms
from mechscope.tracing import Fact, trace_fact
from mechscope.tracing.facts import subject_span
from mechscope.tracing.trace import KINDS, _place, _window, noise_scale

FACT = Fact("The Eiffel Tower", "{} is located in the city of", "Paris")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    model = ms.load(args.model)
    torch.set_grad_enabled(False)
    n_layers, samples = model.dims.n_layers, args.samples
    ids = model.to_tokens(FACT.prompt)
    n_pos = ids.shape[1]
    start, end = subject_span(model, FACT)
    target = model.to_tokens(" " + FACT.object, prepend_bos=False)[0, 0]
    sigma = noise_scale(model)

    def per_cell() -> dict[str, torch.Tensor]:
        clean = model.run(
            ids, save=["blocks.*.resid_post", "blocks.*.mlp.out", "blocks.*.attn.out"]
        )
        g = torch.Generator().manual_seed(0)  # the draws trace_fact makes with seed 0
        draws = torch.randn(samples, end - start, model.dims.d_model, generator=g) * sigma
        noise = ms.add("embed", _place(draws, start, end, n_pos))
        batch = ids.expand(samples, -1)
        out = {k: torch.empty(n_layers, n_pos) for k in KINDS}
        for kind, site in KINDS.items():
            for layer in range(n_layers):
                for t in range(n_pos):
                    restore = [
                        ms.patch(f"blocks.{lay}.{site}", clean.cache, positions=t)
                        for lay in _window(kind, layer, n_layers, 10)
                    ]
                    logits = model.run(batch, interventions=[noise, *restore]).logits
                    out[kind][layer, t] = logits[:, -1].softmax(-1)[:, target].mean()
        return out

    def batched() -> dict[str, torch.Tensor]:
        return trace_fact(model, FACT, samples=samples, noise=sigma).scores

    cells = len(KINDS) * n_layers * n_pos
    print(f"model {model.name}: {FACT.prompt!r} → {FACT.object!r}, {n_pos} tokens, "
          f"{n_layers} layers, 3 kinds = {cells} cells × {samples} noise samples")  # fmt: skip
    batched()  # warm-up
    t0 = time.perf_counter()
    fast = batched()
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = per_cell()
    t_slow = time.perf_counter() - t0
    err = max(float((fast[k] - slow[k]).abs().max()) for k in KINDS)
    print(f"one forward per cell: {t_slow:8.1f} s ({cells} forwards of {samples} rows)")
    print(f"batched trace_fact:   {t_fast:8.1f} s")
    print(f"largest difference in P(object): {err:.2e}")
    ratio = t_slow / t_fast
    print(f"speed-up {ratio:.2f}× (target ≥ 5×): {'met' if ratio >= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
