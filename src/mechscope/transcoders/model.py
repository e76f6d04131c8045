"""Transcoders: sparse dictionaries that read an MLP's input and write its output.

A transcoder (Dunefsky et al. 2024) replaces one MLP: it reads the normalised
residual x the MLP reads (``d_in``) and predicts the MLP's output y
(``d_out``, what the block adds to the residual stream):

    f = act(x W_enc + b_enc),    ŷ = f W_dec + b_dec  (+ x W_skip with a skip connection)

with act the SAE module's TopK or JumpReLU (`mechscope.sae.model`). The
optional linear skip W_skip (Paulo et al. 2025, "Transcoders beat sparse
autoencoders") starts at zero. Decoder rows have unit norm, so a latent's
value is the length of its contribution to the MLP output. `TranscoderSet`
holds one transcoder per chosen layer with the model's identity, saved as one
safetensors file and one JSON record in a folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor, nn

from .._arrays import write_safetensors
from ..errors import InputError
from ..sae.model import SAEConfig, SAEError, SparseAutoencoder
from ..store import read_json_object

if TYPE_CHECKING:
    from ..core.model import Model

KINDS: tuple[str, ...] = ("topk", "jumprelu")
WEIGHTS_FILE = "transcoders.safetensors"
CONFIG_FILE = "transcoders.json"
SET_FORMAT = "mechscope.transcoder_set/1"


class TranscoderError(InputError, SAEError):
    """A wrong transcoder configuration, file or use (an `InputError`, and an `SAEError`).

    Example: ``TranscoderConfig(d_in=32, width=8, k=9)`` raises it: "k must be in 1..width=8, got 9".
    """


def mlp_sites(model: Model, layer: int) -> tuple[str, str]:
    """The sites of one MLP's input (its pre-norm's output) and of its output (``blocks.L.mlp.out``).

    The input is a module path (the MLP's norm), the output the canonical site, which on
    Gemma 2/3 includes the post-MLP norm: what the block adds to the residual stream.

    Example: ``mlp_sites(tiny_model("llama"), 1)`` →
    ``("model.layers.1.post_attention_layernorm", "blocks.1.mlp.out")``.
    """
    if model.adapter is None or model.dims is None:
        raise TranscoderError(f"{model.name} is not a transformer mechscope knows: it has no MLPs")
    n = model.dims.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise TranscoderError(f"layer {layer!r} is not a layer of {model.name}; valid: 0..{n - 1}")
    a = model.adapter
    return f"{a.layers}.{layer}.{a.mlp_norm}", f"blocks.{layer}.mlp.out"


def check_layers(model: Model, layers: Sequence[int] | None) -> list[int]:
    """`layers` sorted and checked against `model` (None: every layer).

    Example: ``check_layers(tiny_model("llama"), None)`` → ``[0, 1]``; ``[5]`` raises
    TranscoderError.
    """
    if model.dims is None:
        mlp_sites(model, 0)  # raises: not a transformer
    assert model.dims is not None
    if layers is None:
        return list(range(model.dims.n_layers))
    if isinstance(layers, (int, str)) or not isinstance(layers, Sequence) or not layers:
        raise TranscoderError(f"layers must be a non-empty list of layer indices, got {layers!r}")
    for layer in layers:
        mlp_sites(model, layer)
    return sorted(set(layers))


def sae_checks(kind: str, checks: Callable[[], None]) -> None:
    """Run a config's SAE `checks` for a transcoder of `kind`, their errors as TranscoderError.

    Example: ``sae_checks(self.kind, super().__post_init__)`` in a config's ``__post_init__``.
    """
    if kind not in KINDS:
        raise TranscoderError(f"unknown transcoder kind {kind!r}; valid: {', '.join(KINDS)}")
    try:
        checks()
    except SAEError as e:
        raise TranscoderError(str(e)) from None


@dataclass(frozen=True)
class TranscoderConfig(SAEConfig):
    """An `SAEConfig` (d_in, width, kind, k; `site` is the input site) plus the output side.

    Example: ``TranscoderConfig(d_in=576, width=4608, k=32, layer=15, skip=True).d_out`` → 576
    (``d_out=None`` means d_in); ``TranscoderConfig.from_dict(cfg.to_dict()) == cfg``.
    """

    d_out: int | None = None
    skip: bool = False
    layer: int = 0
    output_site: str = ""

    def __post_init__(self) -> None:
        sae_checks(self.kind, super().__post_init__)
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_in)
        for name, low in (("d_out", 1), ("layer", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TranscoderError(
                    f"the transcoder's {name} must be an integer ≥ {low}, got {value!r}"
                )
        if not isinstance(self.skip, bool):
            raise TranscoderError(f"skip must be True or False, got {self.skip!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TranscoderConfig:
        """Build from a dict; unknown keys are errors.

        Example: ``TranscoderConfig.from_dict({"d_in": 32, "width": 64, "k": 4})``.
        """
        try:
            return super().from_dict(data)  # type: ignore[return-value]
        except SAEError as e:
            raise TranscoderError(str(e).replace("SAE config", "transcoder config")) from None


class Transcoder(SparseAutoencoder):
    """ŷ = f W_dec + b_dec (+ x W_skip), f = encode(x); see the module docstring.

    Shapes: W_enc [d_in, width], b_enc [width], W_dec [width, d_out], b_dec [d_out],
    W_skip [d_in, d_out] with ``skip``, log_threshold [width] for ``jumprelu``. The
    encoder (TopK, JumpReLU) and `normalize_decoder` are the SAE's.

    Example::

        tc = Transcoder(TranscoderConfig(d_in=32, width=128, k=8, skip=True))
        f = tc.encode(x)          # [..., 128], at most 8 non-zero per row
        y_hat = tc.decode(f, x)   # [..., 32]; tc(x) is the same
    """

    cfg: TranscoderConfig  # type: ignore[assignment]

    def __init__(self, cfg: TranscoderConfig, seed: int = 0) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        assert cfg.d_out is not None
        g = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.width, cfg.d_out, generator=g)
        self.W_dec = nn.Parameter(w_dec / w_dec.norm(dim=1, keepdim=True))
        # the input and output spaces differ: no tied initialisation, unit-norm columns
        w_enc = torch.randn(cfg.d_in, cfg.width, generator=g)
        self.W_enc = nn.Parameter(w_enc / w_enc.norm(dim=0, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(cfg.width))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out))
        if cfg.kind == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((cfg.width,), -3.0))

    def __repr__(self) -> str:
        c = self.cfg
        extra = f", k={c.k}" if c.kind == "topk" else ""
        skip = ", skip" if c.skip else ""
        return (
            f"Transcoder({c.kind}, layer {c.layer}, d_in={c.d_in}, d_out={c.d_out}, "
            f"width={c.width}{extra}{skip})"
        )

    @property
    def reads(self) -> str:
        """The site the transcoder reads (its MLP's input, ``cfg.site``), not the one it stands
        for (``cfg.output_site``): what `Model.attach` encodes.

        Example: ``tcs[1].reads`` → ``"model.layers.1.post_attention_layernorm"`` on a tiny Llama.
        """
        return self.cfg.site

    def pre_activation(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... width"]:
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... width"]:
        """The latents f (dense, mostly zero), in the transcoder's dtype."""
        _check(x, self.cfg.d_in, "encode", "MLP inputs")
        return super().encode(x)

    def decode(
        self, f: Float[Tensor, "... width"], x: Float[Tensor, "... d_in"] | None = None
    ) -> Float[Tensor, "... d_out"]:
        """ŷ from the latents (and, with a skip connection, the input x it needs)."""
        _check(f, self.cfg.width, "decode", "latents")
        y = f @ self.W_dec + self.b_dec
        if self.cfg.skip:
            if x is None:
                raise TranscoderError("this transcoder has a skip connection: decode(f, x)")
            _check(x, self.cfg.d_in, "decode", "MLP inputs")
            y = y + x.to(self.W_skip.dtype) @ self.W_skip
        return y

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """ŷ, in x's dtype."""
        return self.decode(self.encode(x), x).to(x.dtype)

    @torch.no_grad()
    def fold_scales(self, input_scale: float, output_scale: float) -> None:
        """Make a transcoder trained on x / `input_scale` → y / `output_scale` read x and write y.

        Latents are multiplied by `output_scale`, so with unit-norm decoder rows they
        measure length in the MLP output's own units; the TopK selection is unchanged.

        Example: ``tc.fold_scales(s_in, s_out)``; then ``tc(x) == s_out * before(x / s_in)``.
        """
        ratio = output_scale / input_scale
        self.W_enc *= ratio
        self.b_enc *= output_scale
        self.b_dec *= output_scale
        if self.cfg.skip:
            self.W_skip *= ratio
        if self.cfg.kind == "jumprelu":
            self.log_threshold += math.log(output_scale)

    def fold_input_scale(self, scale: float) -> None:
        """`fold_scales` with one scale for input and output (the SAE's meaning).

        Example: ``tc.fold_input_scale(2.0)`` is ``tc.fold_scales(2.0, 2.0)``.
        """
        self.fold_scales(scale, scale)

    def save(self, folder: str | Path) -> Path:
        """Write this transcoder as a one-layer `TranscoderSet` folder.

        Example: ``Transcoder.load(tc.save("tc-l3"))``.
        """
        return TranscoderSet({self.cfg.layer: self}).save(folder)

    @classmethod
    def load(cls, folder: str | Path) -> Transcoder:
        """Read a folder holding a one-layer `TranscoderSet`.

        Example: ``Transcoder.load("tc-l3").cfg.layer`` → 3.
        """
        tcs = TranscoderSet.load(folder)
        if len(tcs) != 1:
            raise TranscoderError(
                f"{folder} holds {len(tcs)} transcoders (layers {tcs.layers}); "
                "use TranscoderSet.load"
            )
        return tcs[tcs.layers[0]]


def _check(x: object, size: int, what: str, of: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1:
        got = f"{x.dtype} {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise TranscoderError(f"{what} takes a float tensor of {of} [..., {size}], got {got}")
    if x.shape[-1] != size:
        raise TranscoderError(f"{what} takes {of} [..., {size}], got [..., {x.shape[-1]}]")


def model_identity(model: Model) -> dict[str, Any]:
    """What a transcoder set records of the model it was trained on.

    Example: ``model_identity(tiny_model("llama"))`` → ``{"name": "tiny-llama", "family":
    "llama", "n_layers": 2, "d_model": 32, "weights_sha256": None, "source": None}``.
    """
    return {
        "name": model.name,
        "family": model.adapter.family if model.adapter else None,
        "n_layers": model.dims.n_layers if model.dims else None,
        "d_model": model.dims.d_model if model.dims else None,
        "weights_sha256": model.weights_sha256,
        "source": model.source,
    }


class TranscoderSet(nn.Module):
    """One transcoder per chosen layer of one model, with that model's identity.

    Saved as ``transcoders.safetensors`` (tensors ``{layer}.{name}``) and
    ``transcoders.json`` (format tag, model identity, each layer's config) in a folder.

    Example::

        tcs = TranscoderSet.build(model, layers=[0, 1], width=128, k=8)
        tcs[1](x)                       # one layer's transcoder
        TranscoderSet.load(tcs.save("tcs"), model=model).to("cuda")
    """

    def __init__(
        self, transcoders: Mapping[int, Transcoder], identity: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if not transcoders:
            raise TranscoderError("a transcoder set needs at least one transcoder")
        for layer, tc in transcoders.items():
            if not isinstance(tc, Transcoder) or tc.cfg.layer != layer:
                raise TranscoderError(f"entry {layer!r} of a transcoder set must be a Transcoder "
                                      f"with cfg.layer={layer!r}, got {tc!r}")  # fmt: skip
        self.transcoders = nn.ModuleDict({str(k): transcoders[k] for k in sorted(transcoders)})
        self.identity: dict[str, Any] = dict(identity or {})  # the model trained on

    @classmethod
    def build(
        cls,
        model: Model,
        layers: Sequence[int] | None = None,
        *,
        width: int,
        kind: str = "topk",
        k: int = 32,
        skip: bool = False,
        seed: int = 0,
    ) -> TranscoderSet:
        """Freshly initialised transcoders for `layers` (None: all) of `model`.

        Example: ``TranscoderSet.build(tiny_model("gpt2"), width=64, k=4).layers`` → ``[0, 1]``.
        """
        layers = check_layers(model, layers)
        assert model.dims is not None
        d = model.dims.d_model
        made = {}
        for layer in layers:
            site_in, site_out = mlp_sites(model, layer)
            cfg = TranscoderConfig(
                d_in=d, width=width, kind=kind, k=k, site=site_in, model=model.name,  # type: ignore[arg-type]
                d_out=d, skip=skip, layer=layer, output_site=site_out,
            )  # fmt: skip
            made[layer] = Transcoder(cfg, seed=seed + layer)
        return cls(made, model_identity(model))

    @property
    def layers(self) -> list[int]:
        return [int(k) for k in self.transcoders]

    def __getitem__(self, layer: int) -> Transcoder:
        key = str(layer)
        if key not in self.transcoders:
            raise TranscoderError(f"no transcoder for layer {layer!r}; this set has {self.layers}")
        return self.transcoders[key]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[int]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.transcoders)

    def items(self) -> list[tuple[int, Transcoder]]:
        """(layer, transcoder) pairs in layer order.

        Example: ``[tc.cfg.width for _, tc in tcs.items()]``.
        """
        return [(layer, self[layer]) for layer in self.layers]

    def __repr__(self) -> str:
        first = self[self.layers[0]]
        c = first.cfg
        extra = f", k={c.k}" if c.kind == "topk" else ""
        return (
            f"TranscoderSet({self.identity.get('name') or '?'}: layers {self.layers}, {c.kind}, "
            f"width={c.width}{extra}{', skip' if c.skip else ''})"
        )

    def check(self, model: Model, *, same_weights: bool = True) -> None:
        """Fail in one line unless this set fits `model` (its d_model, its layers, the MLP
        input each transcoder reads, and with `same_weights` the weights' hash when both
        record one): a set of another family's model of the same shape is refused.

        Example: ``tcs.check(model)`` → None, or TranscoderError("… reads d_model=16 …").
        """
        if model.dims is None:
            raise TranscoderError(f"{model.name} is not a transformer mechscope knows")
        for layer, tc in self.items():
            if layer >= model.dims.n_layers:
                raise TranscoderError(f"the set has a transcoder for layer {layer} but "
                                      f"{model.name} has {model.dims.n_layers} layers")  # fmt: skip
            d = model.dims.d_model
            if (tc.cfg.d_in, tc.cfg.d_out) != (d, d):
                raise TranscoderError(
                    f"the transcoder of layer {layer} reads d_model={tc.cfg.d_in} and writes "
                    f"{tc.cfg.d_out}, but {model.name} has d_model={d}"
                )
            site_in = mlp_sites(model, layer)[0]
            if tc.reads and tc.reads != site_in:
                raise TranscoderError(
                    f"the transcoder of layer {layer} reads {tc.reads!r}, but the MLP of layer "
                    f"{layer} of {model.name} reads {site_in!r}: a set of another model"
                )
        ours, theirs = self.identity.get("weights_sha256"), model.weights_sha256
        if same_weights and ours and theirs and ours != theirs:
            raise TranscoderError(
                f"these transcoders were trained on {self.identity.get('name')} (weights "
                f"{ours[:12]}…), not on {model.name} ({theirs[:12]}…); pass same_weights=False "
                "to use them anyway"
            )

    # --- files -------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``transcoders.safetensors`` and ``transcoders.json`` into `folder`.

        Example: ``TranscoderSet.load(tcs.save("runs/tc/transcoders"))``.
        """
        folder = Path(folder)
        tensors = {
            f"{layer}.{name}": v.detach().contiguous().cpu()
            for layer, tc in self.items()
            for name, v in tc.state_dict().items()
        }
        record = {
            "format": SET_FORMAT,
            "model": self.identity,
            "layers": {str(layer): tc.cfg.to_dict() for layer, tc in self.items()},
        }
        config = folder / f".{CONFIG_FILE}.partial"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CONFIG_FILE).unlink(missing_ok=True)
            write_safetensors(folder / WEIGHTS_FILE, tensors, {})
            # the record goes in last: a folder with transcoders.json holds a whole set
            config.write_text(json.dumps(record, indent=2))
            os.replace(config, folder / CONFIG_FILE)
        except OSError as e:
            raise TranscoderError(f"cannot write the transcoders to {folder}: {e}") from None
        finally:
            config.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, *, model: Model | None = None, same_weights: bool = True
    ) -> TranscoderSet:
        """Read a set written by `save` (a folder, or a run folder holding ``transcoders/``);
        with `model`, `check` it against that model.

        Example: ``TranscoderSet.load("runs/tc", model=model).layers`` → ``[0, 1, …]``.
        """
        folder = Path(folder)
        if not (folder / CONFIG_FILE).exists() and (folder / "transcoders" / CONFIG_FILE).exists():
            folder = folder / "transcoders"
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise TranscoderError(
                f"no transcoder set in {folder}: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        try:
            record = read_json_object(folder / CONFIG_FILE) or {}
        except InputError as e:
            raise TranscoderError(str(e)) from None
        if record.get("format") != SET_FORMAT or not isinstance(record.get("layers"), dict):
            raise TranscoderError(f"{folder / CONFIG_FILE} is not a {SET_FORMAT} record")
        try:
            state = load_file(str(folder / WEIGHTS_FILE))
        except Exception as e:  # safetensors' own error type, OSError
            raise TranscoderError(
                f"{folder / WEIGHTS_FILE} is not readable safetensors ({e})"
            ) from None
        made = {}
        for key, data in record["layers"].items():
            if not isinstance(data, dict):
                raise TranscoderError(f"{folder / CONFIG_FILE}: layer {key} has no config object")
            try:
                tc = Transcoder(TranscoderConfig.from_dict(data))
            except (TypeError, ValueError) as e:
                raise TranscoderError(f"{folder / CONFIG_FILE}: layer {key}: {e}") from None
            own = {name: v.shape for name, v in tc.state_dict().items()}
            theirs = {n.split(".", 1)[1]: v for n, v in state.items() if n.split(".")[0] == key}
            if theirs.keys() != own.keys():
                raise TranscoderError(f"{folder / WEIGHTS_FILE}: layer {key} holds "
                                      f"{sorted(theirs)}, expected {sorted(own)}")  # fmt: skip
            for name, v in theirs.items():
                if v.shape != own[name]:
                    raise TranscoderError(
                        f"{folder / WEIGHTS_FILE}: {key}.{name} is {list(v.shape)}, its config "
                        f"says {list(own[name])}"
                    )
            tc.load_state_dict(theirs)
            made[tc.cfg.layer] = tc
        tcs = cls(made, record.get("model") if isinstance(record.get("model"), dict) else {})
        if model is not None:
            tcs.check(model, same_weights=same_weights)
        return tcs

    def config_dicts(self) -> dict[str, dict[str, Any]]:
        """Each layer's config as a dict (keys are layer numbers as strings).

        Example: ``tcs.config_dicts()["3"]["width"]`` → 4608.
        """
        return {str(layer): dataclasses.asdict(tc.cfg) for layer, tc in self.items()}
