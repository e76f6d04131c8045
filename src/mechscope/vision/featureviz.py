"""Feature visualisation by optimisation (Olah et al. 2017): images that excite a unit.

Three parts, each small and swappable:

- **objectives** (`channel`, `neuron`, `direction`, `deepdream`, `diversity`)
  read saved sites and return a score to maximise; they compose with ``+``,
  ``-`` and ``*`` (``channel("net._blocks.9", 3) - 1e-2 * diversity(…)``);
- **parameterisations** (`pixel_image`, `fourier_image`, with decorrelated
  colour) map free parameters to a batch of images in [0, 1];
- **transforms** (`pad`, `jitter`, `random_scale`, `random_rotate`) are applied
  to the images at every step, so that what is found is robust, not noise.

`render` runs Adam on the parameters and keeps snapshots at chosen steps (a
`Rendering`, in ``results.py``). Everything random draws from one generator
seeded by `seed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.interventions import stop
from ..core.model import Model
from ..errors import InputError
from .results import Rendering

Images = Float[Tensor, "batch 3 h w"]

# ---------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """A score over saved activations, one value per image (to maximise); composable.

    Example::

        obj = channel("net._blocks.9", 3) - 1e-2 * diversity("net._blocks.9")
        obj.sites                # frozenset({'net._blocks.9'}); render(model, obj, batch=4)
    """

    fn: Callable[[dict[str, Tensor]], Tensor]  # site -> activation, to [batch]
    sites: frozenset[str]
    name: str

    def __call__(self, acts: dict[str, Tensor]) -> Float[Tensor, " batch"]:
        return self.fn(acts)

    def __add__(self, other: Objective | float) -> Objective:
        if not isinstance(other, Objective):
            return Objective(lambda a: self(a) + other, self.sites, f"{self.name} + {other:g}")
        return Objective(lambda a: self(a) + other(a), self.sites | other.sites,
                         f"{self.name} + {other.name}")  # fmt: skip

    def __radd__(self, other: float) -> Objective:
        return self + other

    def __mul__(self, k: float) -> Objective:
        return Objective(lambda a: k * self(a), self.sites, f"{k:g}·{self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)


def _act(acts: dict[str, Tensor], site: str, cs: Sequence[int] = ()) -> Tensor:
    x = acts[site]
    if x.ndim not in (2, 4):
        raise InputError(
            f"{site!r} has shape {tuple(x.shape)}: expected [batch c] or [batch c h w]"
        )
    bad = [c for c in cs if not 0 <= c < x.shape[1]]
    if bad:
        raise InputError(f"{site!r} has channels 0–{x.shape[1] - 1}; no channel {bad[0]}")
    return x


def channel(site: str, c: int) -> Objective:
    """The mean activation of channel `c` over all positions.

    Example: ``render(load_vision(), channel("net._blocks.9", 3))`` → a `Rendering`.
    """

    def fn(a: dict[str, Tensor]) -> Tensor:
        x = _act(a, site, [c])
        return x[:, c].reshape(len(x), -1).mean(-1)

    return Objective(fn, frozenset([site]), f"channel({site}:{c})")


def channels(site: str, cs: Sequence[int]) -> Objective:
    """Image i excites channel ``cs[i]`` (mean over positions): many units in one batch.

    Example: ``render(model, channels("net._blocks.9", [0, 1, 2, 3]), batch=4)`` (one image each).
    """
    index = torch.tensor(list(cs))

    def fn(a: dict[str, Tensor]) -> Tensor:
        x = _act(a, site, cs)
        if len(x) != len(index):
            raise InputError(f"{len(index)} channels need a batch of {len(index)}, got {len(x)}")
        return x[torch.arange(len(x)), index.to(x.device)].reshape(len(x), -1).mean(-1)

    return Objective(fn, frozenset([site]), f"channels({site}:{','.join(map(str, cs))})")


def neuron(site: str, c: int, x: int | None = None, y: int | None = None) -> Objective:
    """Channel `c` at one spatial position (default: the centre).

    Example: ``neuron("a", 2)({"a": torch.rand(2, 4, 5, 5)})`` → [2], channel 2 at (2, 2).
    """

    def fn(a: dict[str, Tensor]) -> Tensor:
        t = _act(a, site, [c])
        if t.ndim == 2:
            return t[:, c]
        h, w = t.shape[-2:]
        return t[:, c, h // 2 if y is None else y, w // 2 if x is None else x]

    return Objective(fn, frozenset([site]), f"neuron({site}:{c})")


def direction(site: str, vector: Float[Tensor, " c"]) -> Objective:
    """The activation's dot product with `vector` over channels, averaged over positions.

    Example: ``render(model, direction("net._blocks.9", torch.randn(112)))`` (112 channels there).
    """
    v = vector.detach().float()

    def fn(a: dict[str, Tensor]) -> Tensor:
        t = _act(a, site)
        if t.shape[1] != v.numel():
            raise InputError(
                f"the direction has {v.numel()} entries, {site!r} {t.shape[1]} channels"
            )
        prod = torch.einsum("bc...,c->b...", t, v.to(t))
        return prod.reshape(len(t), -1).mean(-1)

    return Objective(fn, frozenset([site]), f"direction({site})")


def deepdream(site: str) -> Objective:
    """The mean squared activation of the whole layer (DeepDream).

    Example: ``render(load_vision(), deepdream("net._blocks.5"), steps=128)``.
    """

    def fn(a: dict[str, Tensor]) -> Tensor:
        t = _act(a, site)
        return (t**2).reshape(len(t), -1).mean(-1)

    return Objective(fn, frozenset([site]), f"deepdream({site})")


def diversity(site: str) -> Objective:
    """Minus the mean cosine similarity of the batch's Gram matrices (rewards different images).

    Example::

        obj = channel("net._blocks.9", 3) - 1e-2 * diversity("net._blocks.9")
        render(model, obj, batch=4)          # four different images of channel 3
    """

    def fn(a: dict[str, Tensor]) -> Tensor:
        t = _act(a, site)
        b = len(t)
        flat = t.reshape(b, t.shape[1], -1)
        gram = F.normalize((flat @ flat.transpose(1, 2)).reshape(b, -1), dim=-1)
        sim = gram @ gram.T
        off = (sim.sum(-1) - sim.diagonal()) / max(1, b - 1)
        return -off

    return Objective(fn, frozenset([site]), f"diversity({site})")


# ---------------------------------------------------------------------------- parameterisations

# the square root of ImageNet's colour correlation (Lucid's decorrelated colour space)
COLOR_CORRELATION_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)
_COLOR_NORM = COLOR_CORRELATION_SQRT.norm(dim=0).max()


def _to_rgb(x: Tensor, decorrelate: bool) -> Images:
    """Unbounded parameters [b 3 h w] → colours in [0, 1] (through the correlation, then a sigmoid)."""
    if decorrelate:
        x = torch.einsum("bchw,dc->bdhw", x, (COLOR_CORRELATION_SQRT / _COLOR_NORM).to(x))
    return torch.sigmoid(x)


@dataclass
class ImageParam:
    """Free parameters and the map from them to images in [0, 1].

    Example::

        param = pixel_image(64)
        param().shape            # torch.Size([1, 3, 64, 64]); param.params are what Adam moves
    """

    params: list[Tensor]
    make: Callable[[], Images]

    def __call__(self) -> Images:
        return self.make()


def pixel_image(
    size: int, batch: int = 1, *, sd: float = 0.01, decorrelate: bool = True,
    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
) -> ImageParam:  # fmt: skip
    """One parameter per pixel and colour.

    Example: ``render(model, obj, param=pixel_image(128, decorrelate=False))``.
    """
    x = (torch.randn(batch, 3, size, size, generator=generator) * sd).to(device).requires_grad_()
    return ImageParam([x], lambda: _to_rgb(x, decorrelate))


def _frequencies(h: int, w: int) -> Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)  # [h, w//2+1]


def fourier_image(
    size: int, batch: int = 1, *, sd: float = 0.01, decay_power: float = 1.0,
    decorrelate: bool = True, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> ImageParam:  # fmt: skip
    """Parameters in the Fourier basis, each frequency scaled by 1/frequency^decay_power.

    Gradient steps then move low frequencies as much as high ones, which
    keeps the optimisation from filling the image with high-frequency noise.

    Example: ``fourier_image(128, 4)()`` → [4 3 128 128], values in (0, 1).
    """
    freqs = _frequencies(size, size).to(device)
    scale = (1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power) * size**0.5 / size
    noise = torch.randn(batch, 3, *freqs.shape, 2, generator=generator) * sd
    spectrum = noise.to(device).requires_grad_()

    def make() -> Images:
        coeffs = torch.view_as_complex(spectrum) * scale
        x = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho")
        return _to_rgb(x * 4, decorrelate)

    return ImageParam([spectrum], make)


# ---------------------------------------------------------------------------- transforms

Transform = Callable[[Images, torch.Generator], Images]


def pad(n: int, value: float = 0.5) -> Transform:
    """Pad every side with `n` pixels of a constant grey.

    Example: ``pad(12)(torch.rand(1, 3, 64, 64), torch.Generator())`` → [1 3 88 88].
    """
    return lambda x, g: F.pad(x, (n, n, n, n), value=value)


def jitter(d: int) -> Transform:
    """Crop a random offset of up to `d` pixels in each direction.

    Example: ``jitter(8)(torch.rand(1, 3, 64, 64), torch.Generator())`` → [1 3 56 56].
    """

    def fn(x: Images, g: torch.Generator) -> Images:
        dx, dy = (int(torch.randint(0, d + 1, (1,), generator=g)) for _ in range(2))
        h, w = x.shape[-2:]
        return x[..., dy : h - d + dy, dx : w - d + dx]

    return fn


def _affine(x: Images, scale: float, angle: float) -> Images:
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom by one of `scales`, chosen at random each step.

    Example: ``render(model, obj, transforms=[pad(8), random_scale([0.9, 1.0, 1.1])])``.
    """

    def fn(x: Images, g: torch.Generator) -> Images:
        return _affine(x, float(scales[int(torch.randint(len(scales), (1,), generator=g))]), 0.0)

    return fn


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate by one of `degrees`, chosen at random each step.

    Example: ``random_rotate([-5, 0, 5])(torch.rand(1, 3, 8, 8), torch.Generator())`` (same shape).
    """

    def fn(x: Images, g: torch.Generator) -> Images:
        deg = float(degrees[int(torch.randint(len(degrees), (1,), generator=g))])
        return _affine(x, 1.0, math.radians(deg))

    return fn


def standard_transforms() -> list[Transform]:
    """Lucid's default robustness set: pad 12, jitter 8, scale ±10%, rotate ±10°, jitter 4.

    Example: ``render(model, obj, transforms=[*standard_transforms(), jitter(2)])``.
    """
    return [
        pad(12),
        jitter(8),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate(list(range(-10, 11))),
        jitter(4),
    ]


# ---------------------------------------------------------------------------- rendering


def render(
    model: Model,
    objective: Objective,
    *,
    param: ImageParam | None = None,
    size: int = 128,
    batch: int = 1,
    steps: int = 512,
    lr: float = 0.05,
    transforms: Sequence[Transform] | None = None,
    thresholds: Sequence[int] = (),
    seed: int = 0,
    progress: bool = True,
) -> Rendering:
    """Maximise `objective` over the images of `param` (default: Fourier, decorrelated).

    Each step applies `transforms` (default: `standard_transforms`), runs the
    model with the objective's sites saved, and takes an Adam step on the
    parameters. Snapshots are kept at `thresholds` and at the last step
    (step 0 is the starting image).

    Example::

        model = load_vision()
        r = render(model, channel("net._blocks.9", 3), steps=256, thresholds=(0, 64))
        sorted(r.images), r.final.shape      # [0, 64, 256], torch.Size([1, 3, 128, 128])
    """
    if steps < 1:
        raise InputError("render needs at least one step")
    g = torch.Generator().manual_seed(seed)
    param = param or fourier_image(size, batch, generator=g, device=model.device)
    chain = list(standard_transforms() if transforms is None else transforms)
    opt = torch.optim.Adam(param.params, lr=lr)
    keep = set(thresholds) | {steps}
    images: dict[int, Images] = {}
    if 0 in keep:
        images[0] = param().detach().clone()
    losses = []
    sites = model.table.order(sorted(objective.sites))
    # the layers after the objective's last site play no part: the forward stops there
    ivs = [stop(sites[-1])]
    for step in tqdm(range(1, steps + 1), desc=objective.name, disable=not progress):
        opt.zero_grad()
        x = param()
        for t in chain:
            x = t(x, g)
        with torch.enable_grad():
            with model.hooks(ivs, save=sites, keep_graph=True) as cache:
                model.hf(x.to(model.dtype))  # the image stays float32 in a half-precision model
            loss = -objective({s: cache.live[s].float() for s in sites}).sum()
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step in keep:
            images[step] = param().detach().clone()
    return Rendering(images, objective.name, losses)
