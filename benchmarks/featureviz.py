"""Feature-visualisation rendering speed: mechscope against Lucent, same model and objective, one run.

Both render channel `--channel` of EfficientNet-Lite0's ``net._blocks.8``
(the same weights, wrapped to take images in [0, 1]) from a 128-pixel
Fourier image with decorrelated colour, under Lucid's standard transforms
(pad 12, jitter 8, scale, rotate, jitter 4), with Adam at lr 0.05 for
`--steps` steps, float32 with the same number of threads:

- mechscope: `mechscope.vision.featureviz.render` as users call it;
- Lucent: ``lucent.optvis.render.render_vis`` (``preprocess=False``), run by
  ``benchmarks/_lucent_render.py`` in the Lucent virtual environment
  (``make bench`` creates it: ``.venv-lucent``).

Lucent upsamples images under 224 pixels to 224 before the model; mechscope
does not. So that the network sees the same images on both sides, Lucent is
given ``fixed_image_size`` = the size mechscope's transforms leave (140 for
128). mechscope's render ends each forward at the objective's site
(``net._blocks.8``); Lucent has no such option and runs the whole network:
that is part of what is compared. Only the render calls are timed, each
after a short untimed warm-up render; the two alternate for `--repeats`
rounds and the medians are compared; the target is Lucent time / mechscope
time ≥ 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mechscope.vision import load_vision
from mechscope.vision.featureviz import channel, render, standard_transforms

# the Lucent environment's python (MECHSCOPE_LUCENT_PYTHON overrides it, e.g. on a machine
# where Lucent is on the path of the system python)
LUCENT_PYTHON = Path(
    os.environ.get("MECHSCOPE_LUCENT_PYTHON")
    or Path(__file__).resolve().parents[1] / ".venv-lucent" / "bin" / "python"
)
SIDE = Path(__file__).with_name("_lucent_render.py")


def network_input_size(size: int) -> int:
    """The side of the images that mechscope's standard transforms hand to the model."""
    x, g = torch.zeros(1, 3, size, size), torch.Generator().manual_seed(0)
    for t in standard_transforms():
        x = t(x, g)
    return x.shape[-1]


def mechscope_time(
    model, site: str, c: int, size: int, steps: int, device: str
) -> tuple[float, float]:
    """(seconds, channel mean on the final image) of one `render` of `steps` steps."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    r = render(model, channel(site, c), size=size, batch=1, steps=steps, lr=0.05,
               transforms=standard_transforms(), seed=0, progress=False)  # fmt: skip
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    # untimed check that it optimised: the channel's mean on the final image, no transforms
    with torch.no_grad(), model.hooks(save=[site]) as cache:
        model.hf(r.final.to(device))
    return seconds, float(cache[site][:, c].mean())


def lucent_time(args: argparse.Namespace, input_size: int) -> dict:
    cmd = [
        str(LUCENT_PYTHON), str(SIDE), "--block", str(args.block), "--channel", str(args.channel),
        "--size", str(args.size), "--input-size", str(input_size), "--steps", str(args.steps),
        "--warmup-steps", "2", "--threads", str(args.threads), "--device", args.device,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"Lucent's side failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=8, help="Objective site: net._blocks.N.")
    parser.add_argument("--channel", type=int, default=5)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not LUCENT_PYTHON.exists() and not shutil.which(str(LUCENT_PYTHON)):
        sys.exit(f"no Lucent environment at {LUCENT_PYTHON}: run `make bench` (it creates it)")
    torch.set_num_threads(args.threads)
    site = f"net._blocks.{args.block}"
    model = load_vision("efficientnet-lite0")
    model.hf.to(args.device)
    input_size = network_input_size(args.size)
    print(
        f"efficientnet-lite0, channel {args.channel} of {site}; {args.size} px Fourier image "
        f"(network sees {input_size} px), {args.steps} steps, {args.threads} threads, "
        f"{args.device}, torch {torch.__version__}"
    )
    try:
        mechscope_time(model, site, args.channel, args.size, 2, args.device)  # warm-up
    except RuntimeError as e:
        sys.exit(f"mechscope's render failed on {args.device}: {e}")
    ours, theirs = [], []
    for r in range(args.repeats):
        seconds, act = mechscope_time(model, site, args.channel, args.size, args.steps, args.device)
        ours.append(seconds)
        side = lucent_time(args, input_size)
        theirs.append(side["seconds"])
        print(
            f"round {r}: mechscope {seconds:.2f} s ({1000 * seconds / args.steps:.1f} ms/step, "
            f"final channel mean {act:.3g}) | Lucent {side['lucent_version']} "
            f"(kornia {side['kornia_version']}) {side['seconds']:.2f} s "
            f"({1000 * side['seconds'] / args.steps:.1f} ms/step, final channel mean "
            f"{side['activation']:.3g})"
        )
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"mechscope {a:.2f} s, Lucent {b:.2f} s: ratio {b / a:.2f}x (target >= 1)")


if __name__ == "__main__":
    main()
