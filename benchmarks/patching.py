"""Full resid_pre layer × position patching sweep on the IOI prompt: loop vs batched, one run.

Baseline: one forward per patch (`model.run` with one `patch` intervention,
the way TransformerLens' `get_act_patch_resid_pre` works). Batched: mechscope's
`activation_patching` (per-row patches, resumed from the lowest patched layer,
last-position logits only, and patches whose clean value equals the corrupted
one, such as every position before the first changed token, not run since
they change nothing). Both are timed in this process on the same
prompt, after one warm-up each, and checked to give the same numbers. The
last line states the ratio against its target (≥ 10×).
"""

from __future__ import annotations

import argparse
import time

import torch

import mechscope as ms
from mechscope.patching import activation_patching

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    model = ms.load(args.model)
    io, s = model.to_single_token(" Mary"), model.to_single_token(" John")
    clean, corrupt = model.to_tokens(CLEAN), model.to_tokens(CORRUPT)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, io] - logits[:, -1, s]

    n_layers, n_pos = model.dims.n_layers, clean.shape[1]

    def loop() -> torch.Tensor:
        cache = model.run(clean, save=["blocks.*.resid_pre"]).cache
        out = torch.empty(n_layers, n_pos)
        for layer in range(n_layers):
            for pos in range(n_pos):
                patch = ms.patch(f"blocks.{layer}.resid_pre", cache, positions=[pos])
                out[layer, pos] = metric(model.run(corrupt, interventions=[patch]).logits)
        return out

    def batched() -> torch.Tensor:
        return activation_patching(model, clean, corrupt, metric, "resid_pre", progress=False).raw

    print(f"model {model.name}, {n_layers} layers × {n_pos} positions = {n_layers * n_pos} patches")
    batched()  # warm-up
    start = time.perf_counter()
    fast = batched()
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = loop()
    t_slow = time.perf_counter() - start
    err = (fast - slow).abs().max().item()
    print(f"  one forward per patch: {t_slow:6.2f} s")
    print(f"  batched sweep:         {t_fast:6.2f} s   (max |difference| {err:.1e})")
    print(f"ratio loop / batched = {t_slow / t_fast:.1f}× (target ≥ 10×)")


if __name__ == "__main__":
    main()
