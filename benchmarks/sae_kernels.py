"""Where the TopK trainer's speed comes from: sparse kernels against a dense TopK step, one run.

Both fit the same TopK SAE (same width, k, batch, Adam, unit-norm decoder)
on the same activations: `train_sae` (sparse encoder gradient, embedding-bag
decoder, sampled decoder gradient) and a dense step (pre-activations, TopK
scattered into dense latents, dense decoder, autograd through all of it:
what most SAE code does). Runs on CUDA when present, else on the CPU.
Activations are Gaussian unless `--acts` names a folder of stored ones (the
cost of a step does not depend on the values).
"""

from __future__ import annotations

import argparse
import time

import torch

from mechscope.sae.activations import load_activations
from mechscope.sae.model import SAEConfig, SparseAutoencoder
from mechscope.sae.train import TrainConfig, train_sae


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def dense_rate(
    acts: torch.Tensor, width: int, k: int, batch: int, steps: int, device: torch.device
) -> float:
    sae = SparseAutoencoder(SAEConfig(d_in=acts.shape[1], width=width, k=k)).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4)

    def step(x: torch.Tensor) -> None:
        pre = sae.pre_activation(x)
        vals, idx = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        loss = (f @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = sae.W_dec.grad
            assert g is not None
            g -= (g * sae.W_dec).sum(1, keepdim=True) * sae.W_dec
        opt.step()
        sae.normalize_decoder()

    rows = [
        acts[(i * batch) % (len(acts) - batch + 1) :][:batch].to(device) for i in range(steps + 2)
    ]
    for x in rows[:2]:
        step(x)
    sync(device)
    started = time.perf_counter()
    for x in rows[2:]:
        step(x)
    sync(device)
    return batch * steps / (time.perf_counter() - started)


def sparse_rate(
    acts: torch.Tensor, width: int, k: int, batch: int, steps: int, device: torch.device
) -> float:
    def batches(n: int):
        for i in range(n):
            yield acts[(i * batch) % (len(acts) - batch + 1) :][:batch].to(device)

    cfg = TrainConfig(width=width, k=k, tokens=batch * steps, batch_size=batch, eval_every=10**9)
    warm = TrainConfig(width=width, k=k, tokens=batch * 2, batch_size=batch, eval_every=10**9)
    train_sae(batches(2), warm, d_in=acts.shape[1], device=device, progress=False)
    sync(device)
    started = time.perf_counter()
    train_sae(batches(steps), cfg, d_in=acts.shape[1], device=device, progress=False)
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
        dense = dense_rate(acts, width, args.k, args.batch, args.steps, device)
        sparse = sparse_rate(acts, width, args.k, args.batch, args.steps, device)
        print(
            f"width {width:>6}: train_sae {sparse:>12,.0f} tok/s | dense TopK step {dense:>12,.0f} tok/s"
            f" | ratio {sparse / dense:.2f}x"
        )


if __name__ == "__main__":
    main()
