"""TopK SAE training throughput: mechscope against SAELens, on the same stored activations, one run.

SmolLM2's ``blocks.15.resid_post`` is recorded once over the default corpus
(window-first and separator tokens left out) and written as one safetensors
file. Both trainers then fit a TopK SAE of the same width, k and batch size
on those rows, float32 on the CPU with the same number of threads:

- mechscope: `train_sae` as users call it (AuxK, decoder kept at unit norm,
  learning-rate schedule), timed end to end after one untimed warm-up run;
- SAELens: its own training step (``SAETrainer.step`` on a
  ``TopKTrainingSAE``), run by ``benchmarks/saelens_side.py`` in the SAELens
  virtual environment (``make bench`` creates it: ``.venv-saelens``).

The two alternate for `--rounds` rounds and the median of each is compared;
the target is mechscope ≥ 1.5× SAELens tokens/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

import mechscope as ms
from mechscope.core.activations import load_activations, store_activations
from mechscope.sae.train import TrainConfig, train_sae

SAELENS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-saelens" / "bin" / "python"
SIDE = Path(__file__).with_name("saelens_side.py")


def mechscope_rate(
    acts: torch.Tensor, width: int, k: int, batch: int, steps: int
) -> tuple[float, float]:
    """(tokens/s, per-element MSE of the last batch in raw units) of `train_sae` over `steps` steps."""

    def batches(n: int):
        for i in range(n):
            start = (i * batch) % (len(acts) - batch + 1)
            yield acts[start : start + batch]

    cfg = TrainConfig(width=width, k=k, tokens=batch * steps, batch_size=batch, eval_every=10**9)
    warm = TrainConfig(width=width, k=k, tokens=batch * 2, batch_size=batch, eval_every=10**9)
    train_sae(batches(2), warm, d_in=acts.shape[1], progress=False)
    started = time.perf_counter()
    trained = train_sae(batches(steps), cfg, d_in=acts.shape[1], progress=False)
    seconds = time.perf_counter() - started
    # the trainer's loss is on activations divided by `scale`: back to raw units, per element
    mse = trained.history[-1]["mse"] * trained.scale**2 / acts.shape[1]
    return batch * steps / seconds, mse


def saelens_rate(acts_file: Path, width: int, k: int, batch: int, steps: int, threads: int) -> dict:
    cmd = [
        str(SAELENS_PYTHON), str(SIDE), "--acts", str(acts_file), "--width", str(width), "--k", str(k),
        "--batch", str(batch), "--steps", str(steps), "--warmup-steps", "2", "--threads", str(threads),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--site", default="blocks.15.resid_post")
    parser.add_argument("--tokens", type=int, default=1 << 16, help="Corpus tokens to record.")
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=12, help="Timed steps per trainer and round.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not SAELENS_PYTHON.exists():
        sys.exit(f"no SAELens environment at {SAELENS_PYTHON}: run `make bench` (it creates it)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "acts"
        model = ms.load(args.model)
        store_activations(model, args.site, folder, tokens=args.tokens, progress=False)
        acts = load_activations(folder)
        acts_file = Path(tmp) / "acts.safetensors"
        save_file({"acts": acts.contiguous()}, str(acts_file))
        del model
        print(
            f"{len(acts):,} rows of {args.site} ({acts.shape[1]} dims); width {args.width}, k {args.k}, "
            f"batch {args.batch}, {args.steps} steps, {args.threads} threads, torch {torch.__version__}"
        )
        ours, theirs = [], []
        for r in range(args.rounds):
            rate, mse = mechscope_rate(acts, args.width, args.k, args.batch, args.steps)
            ours.append(rate)
            side = saelens_rate(acts_file, args.width, args.k, args.batch, args.steps, args.threads)
            theirs.append(side["tokens_per_s"])
            print(
                f"round {r}: mechscope {rate:,.0f} tok/s (last batch MSE/elem {mse:.4g}) | "
                f"SAELens {side['sae_lens_version']} {side['tokens_per_s']:,.0f} tok/s "
                f"(last batch MSE/elem {side['final_mse']:.4g}, L0 {side['l0']:.0f})"
            )
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"mechscope {a:,.0f} tok/s, SAELens {b:,.0f} tok/s: ratio {a / b:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
