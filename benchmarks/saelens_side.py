"""SAELens side of the TopK SAE training-throughput benchmark.

Run with the SAELens venv's python (``.venv-saelens/bin/python``), never the
project's: it imports only the standard library, torch, safetensors and
sae_lens. It trains SAELens's ``TopKTrainingSAE`` with SAELens's own training
step, ``SAETrainer.step`` (the seam its ``fit`` loop and multi-SAE trainer
call): forward with MSE plus the AuxK dead-latent loss, dead-latent
bookkeeping, grad-norm clipping at 1.0, Adam and its LR scheduler. SAELens
defaults are kept (decoder rows rescaled to unit norm inside the forward,
dense decode, AuxK coefficient 1.0 once a latent has been silent for
``dead_feature_window`` steps); no wandb, evals, checkpoints or progress bar.
``--sparse-decode`` switches to SAELens's COO-sparse decode, which in SAELens
6.54 only trains with decoder-norm rescaling off, so it turns that off too.

Batches are read in order from the ``acts`` tensor of a safetensors file,
wrapping around; only the steps after ``--warmup-steps`` are timed. One JSON
line goes to stdout. ``final_mse`` is the per-element mean squared error of
the last timed step's batch (SAELens's own ``mse_loss``, summed over d_in,
is ``final_mse_loss_saelens``); ``l0`` is that batch's mean count of nonzero
latents per token. ``aux_loss`` says whether the AuxK term is enabled;
``aux_loss_active_steps`` counts the timed steps in which SAELens actually
computed it (it needs at least one dead latent).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

import sae_lens
import torch
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig
from safetensors.torch import load_file


def batches(acts: torch.Tensor, batch: int) -> Iterator[torch.Tensor]:
    """Yield consecutive rows of ``acts``, wrapping around at the end."""
    n = acts.shape[0]
    start = 0
    while True:
        stop = start + batch
        if stop <= n:
            yield acts[start:stop]
        else:
            parts = [acts[start:]]
            rest = stop - n
            while rest > n:
                parts.append(acts)
                rest -= n
            parts.append(acts[:rest])
            yield torch.cat(parts)
        start = stop % n


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acts", required=True, help="safetensors file with float32 'acts'")
    parser.add_argument("--width", type=int, required=True, help="number of latents (d_sae)")
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True, help="tokens per step")
    parser.add_argument("--steps", type=int, required=True, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dead-window",
        type=int,
        default=1000,
        help="SAELens dead_feature_window: steps without firing before AuxK sees a latent",
    )
    parser.add_argument(
        "--aux-coef", type=float, default=1.0, help="AuxK coefficient; 0 turns the term off"
    )
    parser.add_argument(
        "--sparse-decode",
        action="store_true",
        help="SAELens use_sparse_activations (COO decode); also turns off decoder-norm rescaling",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.steps < 1 or args.batch < 1 or args.warmup_steps < 0:
        raise SystemExit("--steps and --batch must be positive, --warmup-steps non-negative")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    acts = load_file(args.acts)["acts"]
    if acts.dtype != torch.float32 or acts.ndim != 2:
        raise SystemExit(
            f"'acts' must be a 2-D float32 tensor, got {acts.dtype} {tuple(acts.shape)}"
        )
    acts = acts.contiguous()

    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(
            d_in=acts.shape[1],
            d_sae=args.width,
            k=args.k,
            dtype="float32",
            device="cpu",
            aux_loss_coefficient=args.aux_coef,
            use_sparse_activations=args.sparse_decode,
            # SAELens 6.54's COO decode fails in backward (aten::view on SparseCPU)
            # when acts are rescaled by decoder norms, so sparse runs turn that off.
            rescale_acts_by_decoder_norm=not args.sparse_decode,
        )
    )
    total_steps = args.warmup_steps + args.steps
    data = batches(acts, args.batch)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=total_steps * args.batch,
            train_batch_size_samples=args.batch,
            lr=args.lr,
            lr_end=args.lr / 10,  # what SAELens's runner config fills in; unused when constant
            device="cpu",
            dead_feature_window=args.dead_window,
            feature_sampling_window=total_steps + 1,
            logger=LoggingConfig(log_to_wandb=False),
        ),
        sae=sae,
        data_provider=data,
    )

    def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        aux_active = bool(trainer.dead_neurons.any()) and args.aux_coef > 0
        out = trainer.step(next(data))
        trainer.n_training_steps += 1
        return out.sae_in, out.sae_out, out.feature_acts, aux_active

    for _ in range(args.warmup_steps):
        step()
    aux_steps = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        sae_in, sae_out, feats, aux_active = step()
        aux_steps += aux_active
    elapsed = time.perf_counter() - start

    with torch.no_grad():
        err = (sae_out - sae_in).pow(2)
        if feats.is_sparse:
            feats = feats.to_dense()
        result = {
            "tokens_per_s": args.steps * args.batch / elapsed,
            "steps": args.steps,
            "seconds": elapsed,
            "final_mse": err.mean().item(),
            "final_mse_loss_saelens": err.sum(-1).mean().item(),
            "l0": (feats != 0).sum(-1).float().mean().item(),
            "sae_lens_version": sae_lens.__version__,
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "aux_loss": args.aux_coef > 0,
            "aux_loss_active_steps": aux_steps,
            "sparse_decode": args.sparse_decode,
            "decoder_norm_rescale": sae.cfg.rescale_acts_by_decoder_norm,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
