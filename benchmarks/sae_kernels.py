"""TopK kernels: the sparse ones against dense autograd, in the same trainer, one run.

`train_sae` fits the same TopK SAE (same width, k, batch, AuxK, Adam,
unit-norm decoder) on the same activations with ``kernels="sparse"``
(sparse encoder gradient, embedding-bag decoder, sampled decoder gradient)
and ``kernels="dense"`` (TopK scattered into dense latents, dense decoder,
autograd through all of it: what most SAE code does). Sparse is the default
because of these numbers. Runs on CUDA when present, else on the CPU.
Activations are Gaussian unless `--acts` names a folder of stored ones (the
cost of a step does not depend on the values).
"""

from __future__ import annotations

import argparse
import time

import torch

from mechscope.core.activations import load_activations
from mechscope.sae.train import TrainConfig, train_sae


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(
    acts: torch.Tensor,
    width: int,
    k: int,
    batch: int,
    steps: int,
    device: torch.device,
    kernels: str,
) -> float:
    """Tokens/s of `train_sae` with the given TopK kernels, after an untimed warm-up run."""

    def batches(n: int):
        for i in range(n):
            yield acts[(i * batch) % (len(acts) - batch + 1) :][:batch].to(device)

    def run(n: int) -> None:
        cfg = TrainConfig(
            width=width, k=k, tokens=batch * n, batch_size=batch, eval_every=10**9, kernels=kernels
        )
        train_sae(batches(n), cfg, d_in=acts.shape[1], device=device, progress=False)

    run(2)
    sync(device)
    started = time.perf_counter()
    run(steps)
    sync(device)
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--acts", default=None, help="Folder from store_activations (default: Gaussian)."
    )
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--widths", type=int, nargs="+", default=[4608, 18432])
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    acts = load_activations(args.acts) if args.acts else torch.randn(args.batch * 8, args.d_in)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{name}; torch {torch.__version__}; d_in {acts.shape[1]}, k {args.k}, batch {args.batch}"
    )
    for width in args.widths:
        dense = rate(acts, width, args.k, args.batch, args.steps, device, "dense")
        sparse = rate(acts, width, args.k, args.batch, args.steps, device, "sparse")
        print(
            f"width {width:>6}: sparse kernels {sparse:>12,.0f} tok/s | dense {dense:>12,.0f} tok/s"
            f" | sparse/dense {sparse / dense:.2f}x"
        )


if __name__ == "__main__":
    main()
