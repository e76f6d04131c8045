"""Sparse autoencoders: the architectures, their configuration, saving and loading.

An SAE reads a site's activation x (``d_in``) and writes ``width`` latents f,
from which x̂ = f W_dec + b_dec reconstructs x. Three encoders are built in:

- ``topk`` (Gao et al. 2024): f = TopK_k(ReLU(W_encᵀ(x − b_dec) + b_enc)); L0 is k by
  construction.
- ``relu`` (Bricken et al. 2023; Cunningham et al. 2023): f = ReLU(W_encᵀ(x − b_dec) + b_enc),
  sparsity from an L1 penalty Σ_i f_i ‖W_dec,i‖ (weighted by the decoder norms).
- ``jumprelu`` (Rajamanoharan et al. 2024): f = z · H(z − θ) with z the pre-activation and a
  learned threshold θ > 0 per latent, sparsity from an L0 penalty through straight-through
  pseudo-derivatives.

Decoder rows have unit norm, so a latent's value is the length of its
direction's contribution to x. Weights are saved as safetensors with the
config beside them as JSON; unknown config keys are errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor, nn

from .._arrays import write_safetensors
from ..errors import InputError, MechscopeError
from .results import read_sae_config

Kind = Literal["topk", "relu", "jumprelu"]
KINDS: tuple[str, ...] = ("topk", "relu", "jumprelu")
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae.json"


class SAEError(MechscopeError):
    """A wrong SAE configuration, file or use.

    Example: ``SAEConfig(d_in=576, width=8, k=32)`` raises SAEError (k must be in 1..width=8).
    """


@dataclass(frozen=True)
class SAEConfig:
    """What is needed to rebuild an SAE: sizes, kind, and where it reads (site, model).

    Example: ``SAEConfig(d_in=576, width=4608, k=32, site="blocks.15.resid_post")``;
    ``SAEConfig.from_dict(cfg.to_dict()) == cfg``.
    """

    d_in: int
    width: int
    kind: Kind = "topk"
    k: int = 32  # topk only
    jump_bandwidth: float = 0.001  # jumprelu: width ε of the rectangle pseudo-derivative
    site: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SAEError(f"unknown SAE kind {self.kind!r}; valid: {', '.join(KINDS)}")
        for name in ("d_in", "width", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SAEError(f"the SAE's {name} must be an integer, got {value!r}")
        if self.d_in < 1 or self.width < 1:
            raise SAEError(f"d_in and width must be positive, got {self.d_in} and {self.width}")
        if self.kind == "topk" and not 1 <= self.k <= self.width:
            raise SAEError(f"k must be in 1..width={self.width}, got {self.k}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """Build from a dict; unknown keys are errors (a typo must not pass silently)."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise SAEError(f"unknown SAE config keys {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**data)


class SparseAutoencoder(nn.Module):
    """x̂ = f W_dec + b_dec with f = encode(x); see the module docstring for each kind.

    Shapes: W_enc [d_in, width], b_enc [width], W_dec [width, d_in], b_dec [d_in]
    (the SAELens layout), plus log_threshold [width] for ``jumprelu``.

    Example::

        sae = SparseAutoencoder(SAEConfig(d_in=576, width=4608, k=32))
        f = sae.encode(x)            # [..., 4608], 32 non-zero per row
        x_hat = sae.decode(f)
    """

    def __init__(self, cfg: SAEConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.width, cfg.d_in, generator=g)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # tied initialisation (encoder = decoder transposed) avoids early dead latents
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.width))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.kind == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((cfg.width,), -3.0))

    def __repr__(self) -> str:
        c = self.cfg
        extra = f", k={c.k}" if c.kind == "topk" else ""
        where = f", site={c.site!r}" if c.site else ""
        return f"SparseAutoencoder({c.kind}, d_in={c.d_in}, width={c.width}{extra}{where})"

    @property
    def width(self) -> int:
        return self.cfg.width

    @property
    def threshold(self) -> Tensor:
        """θ per latent (jumprelu)."""
        return self.log_threshold.exp()

    def pre_activation(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... width"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... width"]:
        """The latents f (dense, mostly zero)."""
        self._check_input(x, self.cfg.d_in, "encode", "activations")
        x = x.to(self.W_enc.dtype)
        pre = self.pre_activation(x)
        kind = self.cfg.kind
        if kind == "relu":
            return torch.relu(pre)
        if kind == "jumprelu":
            return pre * (pre > self.threshold)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def decode(self, f: Float[Tensor, "... width"]) -> Float[Tensor, "... d_in"]:
        self._check_input(f, self.cfg.width, "decode", "latents")
        return f @ self.W_dec + self.b_dec

    def _check_input(self, x: Tensor, size: int, what: str, of: str) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
            got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise SAEError(f"{what} takes a float tensor of {of} [..., {size}], got {got}")
        if x.shape[-1] != size:
            raise SAEError(
                f"{what} takes {of} [..., {size}], got [..., {x.shape[-1]}]: this SAE reads "
                f"d_in={self.cfg.d_in}" + (f" at {self.cfg.site}" if self.cfg.site else "")
            )

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction x̂, in x's dtype."""
        return self.decode(self.encode(x)).to(x.dtype)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm, moving the scale into the encoder (same f W_dec)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec /= norms[:, None]
        self.W_enc *= norms[None, :]
        self.b_enc *= norms
        if self.cfg.kind == "jumprelu":
            self.log_threshold += norms.log()

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make an SAE trained on x / `scale` read x itself; latents are multiplied by `scale`.

        With unit-norm decoder rows the latents then measure length in the
        site's own units; the TopK selection is unchanged.
        """
        self.b_enc *= scale
        self.b_dec *= scale
        if self.cfg.kind == "jumprelu":
            self.log_threshold += float(torch.tensor(scale).log())

    # --- files -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``sae.safetensors`` and ``sae.json`` into `folder`."""
        folder = Path(folder)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        config = folder / f".{CONFIG_FILE}.partial"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # the config goes in last: a folder with sae.json holds a whole SAE
            config.write_text(json.dumps(self.cfg.to_dict(), indent=2))
            write_safetensors(folder / WEIGHTS_FILE, tensors, {})
            os.replace(config, folder / CONFIG_FILE)
        except OSError as e:
            raise SAEError(f"cannot write the SAE to {folder}: {e}") from None
        finally:
            config.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SparseAutoencoder:
        """Read an SAE saved by `save` (a folder, or a run folder holding ``sae/``)."""
        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists() and (folder / "sae" / CONFIG_FILE).exists():
            folder = folder / "sae"
        if not (folder / CONFIG_FILE).exists() or not (folder / WEIGHTS_FILE).exists():
            raise SAEError(f"no SAE in {folder}: expected {CONFIG_FILE} and {WEIGHTS_FILE}")
        try:
            data = read_sae_config(folder)
        except InputError as e:
            raise SAEError(str(e)) from None
        assert data is not None
        try:
            sae = cls(SAEConfig.from_dict(data))
        except (SAEError, TypeError, ValueError) as e:  # unknown or missing keys, wrong values
            raise SAEError(f"{folder / CONFIG_FILE} is not an SAE config: {e}") from None
        try:
            state = load_file(str(folder / WEIGHTS_FILE))
        except Exception as e:  # safetensors' own error type, OSError, a folder in its place
            raise SAEError(
                f"{folder / WEIGHTS_FILE} is not a readable safetensors file ({e})"
            ) from None
        missing = set(sae.state_dict()) - set(state)
        if missing:
            raise SAEError(f"{folder / WEIGHTS_FILE} lacks tensors {sorted(missing)}")
        expected = {k: tuple(v.shape) for k, v in sae.state_dict().items()}
        wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
        if wrong:
            k = wrong[0]
            raise SAEError(
                f"{folder / WEIGHTS_FILE}: {k} is {list(state[k].shape)}, its {CONFIG_FILE} says "
                f"{list(expected[k])}"
            )
        sae.load_state_dict(state)
        return sae
