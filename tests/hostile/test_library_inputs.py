"""Hostile inputs to the library: each row one mistake, and the one mechscope error it must give.

Every row calls the library the way a user would (`Model.run`, `trace`, `hooks`,
`generate`, the techniques' entry points) with one thing wrong: a value of the
wrong shape, dtype or device, NaN where it poisons the result, a position, head or
neuron out of range or not an integer, a site that does not exist or belongs to
another model, a path that cannot be written. Each must raise a `MechscopeError`
(never a traceback from inside torch or transformers) whose message is one line
naming what was wrong and what is valid (`needles`).

`USER_FAILURES` and `FAULTS` raise in the middle of a forward (a user's callback, a
block that fails): the exception must come out unchanged, and the autouse
`model_guard` of conftest.py (plus the explicit checks here) finds no hook left on
any module, the weights and the attention implementation as before.

Run-time shape checks (jaxtyping, which tests/conftest.py turns on for the core under
pytest only) are off in this module: the rows test what a user's call raises.
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mechscope as ms
from mechscope.core.cache import ActivationCache
from mechscope.errors import (
    InputError,
    InterventionError,
    MechscopeError,
    ModelLoadError,
    SiteError,
)
from mechscope.testing import tiny_model
from mechscope.tracing.edits import Edit

S = "blocks.0.resid_post"  # [batch, pos, d_model=32] on every tiny model
TEXT = "Hello world"
CLEAN, CORRUPT = "When Mary and John went", "When Mary and Jake went"


@pytest.fixture(autouse=True)
def as_users_see_it() -> Iterator[None]:
    """No jaxtyping checks: a user's call meets mechscope's own checks, not pytest's."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


class Env:
    """The models and files one row needs, built inside its test (so the guard sees them)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.llama = tiny_model("llama")  # 2 layers, d_model 32, 4 heads, 2 kv heads, d_mlp 64

    @functools.cached_property
    def gpt2(self) -> ms.Model:
        return tiny_model("gpt2")  # 256 learned positions

    @functools.cached_property
    def n(self) -> int:
        """Positions of TEXT."""
        return int(self.llama.to_tokens(TEXT).shape[1])

    @functools.cached_property
    def corpus(self) -> str:
        path = self.tmp / "corpus.txt"
        path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
        return str(path)

    def run(self, *ivs: ms.Intervention, **kw: Any) -> ms.RunOutput:
        return self.llama.run(TEXT, interventions=list(ivs), **kw)

    def cache(self, text: str = TEXT, site: str = S) -> ActivationCache:
        return self.llama.run(text, save=[site]).cache


@dataclass(frozen=True)
class Case:
    """One row: what to call, the mechscope error it must raise, words its message holds."""

    id: str
    call: Callable[[Env], object]
    error: type[Exception]
    needles: tuple[str, ...] = ()


def C(id: str, call: Callable[[Env], object], error: type[Exception], *needles: str) -> Case:  # noqa: N802
    return Case(id, call, error, needles)


def expect_error(case: Case, env: Env) -> MechscopeError:
    """Run the row: one mechscope error of its type, one line, naming what it must."""
    try:
        case.call(env)
    except MechscopeError as e:
        err = e
    except Exception as e:  # a raw traceback is what a row must never give
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        pytest.fail(f"{case.id}: {type(e).__name__} escaped instead of a mechscope error:\n{tb}")
    else:
        pytest.fail(f"{case.id}: no error raised")
    assert isinstance(err, case.error), (case.id, type(err).__name__, str(err))
    message = str(err)
    assert message.strip() and "\n" not in message, f"{case.id}: not one line: {message!r}"
    for needle in case.needles:
        assert needle.lower() in message.lower(), f"{case.id}: {needle!r} not in {message!r}"
    return err


def _ids(rows: list[Case]) -> list[str]:
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids), "row ids must be unique"
    return ids


nan32 = torch.full((32,), math.nan)

# --- interventions: values of the wrong shape, dtype, device, NaN -----------------------

VALUES = [
    C("add: vector wider than d_model", lambda e: e.run(ms.add(S, torch.ones(7))),
      InterventionError, "shape mismatch", S, "(7,)", "(1, "),
    C("add: rows that do not broadcast", lambda e: e.run(ms.add(S, torch.ones(3, 32))),
      InterventionError, "shape mismatch", "(3, 32)"),
    C("add: d_model vector on mlp.post (d_mlp 64)",
      lambda e: e.run(ms.add("blocks.0.mlp.post", torch.ones(32))),
      InterventionError, "blocks.0.mlp.post", "(32,)"),
    C("add: q-shaped value on attn.k (2 kv heads, not 4)",
      lambda e: e.run(ms.add("blocks.0.attn.k", torch.ones(e.n, 4, 8))),
      InterventionError, "blocks.0.attn.k", "shape mismatch"),
    C("add: wrong width on attn.q", lambda e: e.run(ms.add("blocks.0.attn.q", torch.ones(7))),
      InterventionError, "blocks.0.attn.q"),
    C("replace: pattern of the wrong size",
      lambda e: e.run(ms.replace("blocks.0.attn.pattern", torch.ones(3))),
      InterventionError, "blocks.0.attn.pattern", "(3,)"),
    C("add: wrong width on logits", lambda e: e.run(ms.add("logits", torch.ones(7))),
      InterventionError, "logits", "shape mismatch"),
    C("add: wrong width on embed", lambda e: e.run(ms.add("embed", torch.ones(7))),
      InterventionError, "embed"),
    C("add: wrong width on resid_mid", lambda e: e.run(ms.add("blocks.1.resid_mid", torch.ones(7))),
      InterventionError, "blocks.1.resid_mid"),
    C("add: wrong width on resid_pre", lambda e: e.run(ms.add("blocks.1.resid_pre", torch.ones(7))),
      InterventionError, "blocks.1.resid_pre"),
    C("patch: cache of a shorter prompt", lambda e: e.run(ms.patch(S, e.cache("Hi"))),
      InterventionError, "shape mismatch", S),
    C("patch: cache that lacks the site", lambda e: e.run(ms.patch(S, e.cache(site="blocks.1.mlp.out"))),
      SiteError, "not saved", "blocks.1.mlp.out"),
    C("patch: from a plain list", lambda e: ms.patch(S, [1.0, 2.0]),
      InterventionError, "tensor or an activation cache"),
    C("scale: factor tensor of the wrong size", lambda e: e.run(ms.scale(S, torch.ones(5))),
      InterventionError, "shape mismatch", "(5,)"),
    C("mean_ablate: mean of the wrong size", lambda e: e.run(ms.mean_ablate(S, torch.ones(3))),
      InterventionError, "shape mismatch"),
    C("resample: source rows of another shape",
      lambda e: e.run(ms.resample_ablate(S, torch.ones(2, 3, 32))),
      InterventionError, "resample", "(3, 32)"),
    C("resample: no source rows", lambda e: ms.resample_ablate(S, torch.ones(0, 4, 32)),
      InterventionError, "source rows", "(0, 4, 32)"),
    C("resample: a 0-d source", lambda e: ms.resample_ablate(S, torch.tensor(1.0)),
      InterventionError, "source rows"),
    C("replace: integer value on a float site",
      lambda e: e.run(ms.replace(S, torch.ones(32, dtype=torch.long))),
      InterventionError, "torch.int64", "floating-point"),
    C("add: boolean value", lambda e: ms.add(S, torch.ones(32, dtype=torch.bool)),
      InterventionError, "torch.bool", "mask="),
    C("add: complex value", lambda e: ms.add(S, torch.ones(32, dtype=torch.complex64)),
      InterventionError, "real-valued", "complex64"),
    C("add: value on the meta device", lambda e: ms.add(S, torch.ones(32, device="meta")),
      InterventionError, "meta device"),
    C("add: NaN in the vector", lambda e: ms.add(S, nan32), InterventionError, "NaN", S),
    C("patch: NaN in the cached value",
      lambda e: ms.patch(S, e.cache()[S] * math.nan), InterventionError, "NaN"),
    C("scale: NaN factor", lambda e: ms.scale(S, math.nan), InterventionError, "number", "nan"),
    C("scale: bool factor", lambda e: ms.scale(S, True), InterventionError, "number"),
    C("scale: string factor", lambda e: ms.scale(S, "2"), InterventionError, "number"),
    C("add: no value", lambda e: ms.add(S, None), InterventionError, "tensor value", "NoneType"),
    C("apply: not callable", lambda e: ms.apply(S, 3), InterventionError, "callable"),
    C("apply: fn returns another shape", lambda e: e.run(ms.apply(S, lambda x: x[0])),
      InterventionError, "fn must return shape", "(1, "),
    C("apply: fn returns None", lambda e: e.run(ms.apply(S, lambda x: None)),
      InterventionError, "fn must return", "NoneType"),
    C("mask: wrong shape", lambda e: e.run(ms.Intervention(S, "zero", mask=torch.ones(5, dtype=torch.bool))),
      InterventionError, "mask", "(5,)", "does not broadcast"),
    C("mask: not boolean", lambda e: ms.Intervention(S, "zero", mask=torch.ones(5)),
      InterventionError, "boolean tensor", "float32"),
    C("mask: with positions too",
      lambda e: ms.Intervention(S, "zero", positions=[0], mask=torch.ones(1, dtype=torch.bool)),
      InterventionError, "selects by itself", "positions"),
    C("paired: selectors of different lengths",
      lambda e: e.run(ms.Intervention(S, "zero", rows=[0, 0], positions=[0, 1, 2], paired=True)),
      InterventionError, "paired", "2, 3"),
    C("paired: no selectors", lambda e: ms.Intervention(S, "zero", paired=True),
      InterventionError, "needs index selectors"),
    C("source_rows: without paired",
      lambda e: ms.Intervention(S, "replace", torch.ones(1, 4, 32), source_rows=[0]),
      InterventionError, "needs paired=True"),
    C("source_rows: past the source's rows",
      lambda e: e.run(ms.Intervention(S, "replace", torch.ones(1, e.n, 32), rows=[0],
                                      positions=[0], source_rows=[3], paired=True)),
      InterventionError, "source_rows", "[3]", "1 entries"),
    C("op: unknown operation", lambda e: ms.Intervention(S, "double"),
      InterventionError, "unknown operation", "'double'", "replace"),
    C("cache.to: device string that is no device",
      lambda e: e.cache().to("gpu"), ModelLoadError, "'gpu'", "valid here", "cpu"),
    C("cache.to: a GPU this machine lacks",
      lambda e: e.cache().to("cuda:7"), ModelLoadError, "cuda:7", "valid here"),
]  # fmt: skip


@pytest.mark.parametrize("case", VALUES, ids=_ids(VALUES))
def test_values(case: Case, tmp_path: Path) -> None:
    expect_error(case, Env(tmp_path))


# --- selectors: positions, heads, neurons, rows out of range or not integers ------------


def _zero(site: str = S, **sel: Any) -> Callable[[Env], object]:
    return lambda e: e.run(ms.zero_ablate(site, **sel))


SELECTORS = [
    C("positions: = length", lambda e: e.run(ms.zero_ablate(S, positions=[e.n])),
      InterventionError, "positions", "out of range", "entries"),
    C("positions: beyond -length", lambda e: e.run(ms.zero_ablate(S, positions=[-e.n - 1])),
      InterventionError, "positions", "out of range"),
    C("positions: one int past the end", lambda e: e.run(ms.zero_ablate(S, positions=e.n + 5)),
      InterventionError, "out of range"),
    C("positions: a float in a list", _zero(positions=[1.5]),
      InterventionError, "positions", "integer", "1.5"),
    C("positions: a float", _zero(positions=1.5), InterventionError, "positions", "1.5"),
    C("positions: a string", _zero(positions="0"), InterventionError, "positions", "'0'"),
    C("positions: strings in a list", _zero(positions=["a"]), InterventionError, "'a'"),
    C("positions: a bool", _zero(positions=[True]), InterventionError, "True"),
    C("positions: a float tensor", _zero(positions=torch.tensor([1.5])),
      InterventionError, "torch.float32"),
    C("positions: a bool tensor", _zero(positions=torch.tensor([True, False])),
      InterventionError, "torch.bool", "mask="),
    C("positions: a float numpy array", _zero(positions=np.array([0.5])),
      InterventionError, "float64"),
    C("positions: nested lists", _zero(positions=[[0, 1], [2]]), InterventionError, "[0, 1]"),
    C("positions: slice with a float end", _zero(positions=slice(0, 1.5)),
      InterventionError, "slice"),
    C("positions: slice of step 0", _zero(positions=slice(None, None, 0)),
      InterventionError, "slice"),
    C("heads: = n_heads", _zero("blocks.0.attn.z", heads=[4]),
      InterventionError, "heads", "[4]", "4 entries"),
    C("heads: beyond -n_heads", _zero("blocks.0.attn.z", heads=[-5]),
      InterventionError, "heads", "[-5]"),
    C("heads: query head index on kv heads", _zero("blocks.0.attn.k", heads=[2]),
      InterventionError, "blocks.0.attn.k", "2 entries"),
    C("heads: a float", _zero("blocks.0.attn.z", heads=[1.0]), InterventionError, "heads"),
    C("heads: on the residual stream", _zero(heads=[0]),
      InterventionError, "does not apply", "d_model"),
    C("neurons: = d_mlp", _zero("blocks.0.mlp.post", neurons=[64]),
      InterventionError, "neurons", "64 entries"),
    C("neurons: d_model index past resid width", _zero(neurons=[32]),
      InterventionError, "neurons", "32 entries"),
    C("neurons: a float", _zero("blocks.0.mlp.post", neurons=[3.0]),
      InterventionError, "neurons", "3.0"),
    C("neurons: on attention patterns", _zero("blocks.0.attn.pattern", neurons=[0]),
      InterventionError, "does not apply", "q_pos"),
    C("rows: past the batch", _zero(rows=[1]), InterventionError, "rows", "1 entries"),
    C("rows: beyond -batch", _zero(rows=[-2]), InterventionError, "rows"),
    C("generate: position before the prompt",
      lambda e: e.llama.generate("hi", 2, [ms.zero_ablate(S, positions=[-10])]),
      InterventionError, "positions", "[-10]"),
    C("trace: heads out of range",
      lambda e: _trace(e, lambda t: t.zero_ablate("blocks.1.attn.z", heads=[9])),
      InterventionError, "heads", "[9]"),
]  # fmt: skip


def _trace(env: Env, body: Callable[[Any], None], model: ms.Model | None = None) -> object:
    with (model or env.llama).trace(TEXT) as t:
        body(t)
    return t.logits


@pytest.mark.parametrize("case", SELECTORS, ids=_ids(SELECTORS))
def test_selectors(case: Case, tmp_path: Path) -> None:
    expect_error(case, Env(tmp_path))


# --- sites: unknown, of another model, past the last layer -----------------------------

SITES = [
    C("run: GPT-2 module path on Llama", lambda e: e.llama.run(TEXT, save=["transformer.h.0.attn"]),
      SiteError, "transformer.h.0.attn", "blocks.{0..1}"),
    C("run: Llama module path on GPT-2", lambda e: e.gpt2.run(TEXT, save=["model.layers.0.mlp"]),
      SiteError, "model.layers.0.mlp", "valid sites"),
    C("run: TransformerLens hook name", lambda e: e.llama.run(TEXT, save=["blocks.0.attn.hook_z"]),
      SiteError, "hook_z", "blocks.0.attn.z"),
    C("run: layer = n_layers", lambda e: e.llama.run(TEXT, save=["blocks.2.resid_post"]),
      SiteError, "blocks.2.resid_post", "blocks.{0..1}"),
    C("run: negative layer", lambda e: e.llama.run(TEXT, save=["blocks.-1.resid_post"]),
      SiteError, "blocks.-1.resid_post", "blocks.{0..1}"),
    C("run: intervention at layer 99", lambda e: e.run(ms.zero_ablate("blocks.99.mlp.post")),
      SiteError, "blocks.99.mlp.post", "blocks.1.mlp.post"),
    C("run: glob matching nothing", lambda e: e.llama.run(TEXT, save=["blocks.*.resid_psot"]),
      SiteError, "matches no site", "blocks.*.resid_post"),
    C("run: empty site name", lambda e: e.llama.run(TEXT, save=[""]), SiteError, "''"),
    C("run: a site that is not a string", lambda e: e.llama.run(TEXT, save=[3]),
      SiteError, "strings", "int"),
    C("run: save_grad at a missing layer",
      lambda e: e.llama.run(TEXT, save_grad=["blocks.9.resid_post"], backward=lambda lg: lg.sum()),
      SiteError, "blocks.9.resid_post"),
    C("run: one intervention, not a list", lambda e: e.llama.run(TEXT, interventions=ms.zero_ablate(S)),
      InputError, "list", "wrap it in a list"),
    C("run: a string among the interventions", lambda e: e.llama.run(TEXT, interventions=[S]),
      InputError, "Intervention objects", "str"),
    C("trace: save at a missing layer",
      lambda e: _trace(e, lambda t: t.save("blocks.9.resid_post")), SiteError, "blocks.9"),
    C("trace: GPT-2 site on Llama",
      lambda e: _trace(e, lambda t: t.add("transformer.h.0", torch.ones(32))),
      SiteError, "transformer.h.0"),
    C("trace: value of the wrong shape (fails at the end of the block)",
      lambda e: _trace(e, lambda t: t.add(S, torch.ones(7))), InterventionError, "shape mismatch"),
    C("hooks: unknown site", lambda e: _hooks(e, [ms.save("blocks.5.resid_post")]),
      SiteError, "blocks.5.resid_post"),
    C("hooks: value of the wrong shape", lambda e: _hooks(e, [ms.add(S, torch.ones(7))]),
      InterventionError, "shape mismatch", S),
    C("generate: unknown site", lambda e: e.llama.generate("hi", 2, [ms.zero_ablate("blocks.7.mlp.out")]),
      SiteError, "blocks.7.mlp.out"),
    C("generate: value of the wrong shape",
      lambda e: e.llama.generate("hi", 2, [ms.add(S, torch.ones(7))]), InterventionError, "(7,)"),
    C("attach: unknown site", lambda e: e.llama.attach(_sae(32), "blocks.9.resid_post"),
      SiteError, "blocks.9.resid_post"),
]  # fmt: skip


def _hooks(env: Env, ivs: list[ms.Intervention]) -> None:
    with env.llama.hooks(ivs):
        env.llama.hf(env.llama.to_tokens(TEXT))


def _sae(d_in: int, width: int = 16, site: str = S) -> Any:
    from mechscope.sae.model import SAEConfig, SparseAutoencoder

    return SparseAutoencoder(SAEConfig(d_in=d_in, width=width, k=2, site=site))


@pytest.mark.parametrize("case", SITES, ids=_ids(SITES))
def test_sites(case: Case, tmp_path: Path) -> None:
    expect_error(case, Env(tmp_path))


# --- inputs of run and generate ------------------------------------------------------

INPUTS = [
    C("run: token id past the vocabulary", lambda e: e.llama.run(torch.tensor([[5, 999]])),
      InputError, "999", "0…258"),
    C("run: negative token id", lambda e: e.llama.run(torch.tensor([[5, -1]])),
      InputError, "-1", "vocabulary"),
    C("run: float token ids", lambda e: e.llama.run(torch.tensor([[5.0, 1.0]])),
      InputError, "integer", "float32"),
    C("run: bool token ids", lambda e: e.llama.run(torch.tensor([[True]])), InputError, "bool"),
    C("run: 3-d token ids", lambda e: e.llama.run(torch.ones(1, 2, 3, dtype=torch.long)),
      InputError, "[batch, pos]", "(1, 2, 3)"),
    C("run: no tokens", lambda e: e.llama.run(torch.zeros(1, 0, dtype=torch.long)),
      InputError, "not empty", "(1, 0)"),
    C("run: dict without input_ids", lambda e: e.llama.run({"attention_mask": torch.ones(1, 3)}),
      InputError, "input_ids", "attention_mask"),
    C("run: an int", lambda e: e.llama.run(3), InputError, "got int"),
    C("run: an empty list", lambda e: e.llama.run([]), InputError, "empty list"),
    C("run: a list with a number", lambda e: e.llama.run(["a", 3]), InputError, "list of strings"),
    C("run: past GPT-2's 256 positions", lambda e: e.gpt2.run("x" * 300),
      InputError, "300 tokens", "256"),
    C("generate: negative max_new_tokens", lambda e: e.llama.generate("hi", -1),
      InputError, "max_new_tokens", "-1"),
    C("generate: fractional max_new_tokens", lambda e: e.llama.generate("hi", 2.5),
      InputError, "max_new_tokens", "2.5"),
    C("generate: temperature 0 with sampling",
      lambda e: e.llama.generate("hi", 2, do_sample=True, temperature=0),
      InputError, "temperature", "positive"),
    C("generate: NaN temperature",
      lambda e: e.llama.generate("hi", 2, do_sample=True, temperature=math.nan),
      InputError, "temperature", "nan"),
    C("generate: an int prompt", lambda e: e.llama.generate(3, 2), InputError, "prompt", "3"),
    C("generate: a list with a number", lambda e: e.llama.generate(["a", 3], 2),
      InputError, "prompt"),
    C("generate: no prompts", lambda e: e.llama.generate([], 2), InputError, "prompt"),
    C("generate: past GPT-2's context", lambda e: e.gpt2.generate("x" * 250, 10),
      InputError, "256"),
    C("load: device string that is no device", lambda e: ms.load(str(e.tmp), device="gpu"),
      ModelLoadError, "'gpu'", "valid here"),
    C("load: a GPU this machine lacks", lambda e: ms.load(str(e.tmp), device="cuda:9"),
      ModelLoadError, "cuda:9", "valid here"),
    C("load: the meta device", lambda e: ms.load(str(e.tmp), device="meta"),
      ModelLoadError, "meta", "valid here"),
    C("load: unknown dtype", lambda e: ms.load(str(e.tmp), dtype="int8"),
      ModelLoadError, "int8", "float32"),
]  # fmt: skip


@pytest.mark.parametrize("case", INPUTS, ids=_ids(INPUTS))
def test_inputs(case: Case, tmp_path: Path) -> None:
    expect_error(case, Env(tmp_path))


# --- technique entry points ------------------------------------------------------------


def _metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 5] - logits[:, -1, 6]


def _patching(e: Env, **kw: Any) -> object:
    from mechscope.patching.sweep import activation_patching

    args = {"clean": CLEAN, "corrupted": CORRUPT, "metric": _metric, "progress": False, **kw}
    return activation_patching(e.llama, **args)


def _paths(e: Env, **kw: Any) -> object:
    from mechscope.patching.paths import path_patching

    return path_patching(e.llama, CLEAN, CORRUPT, _metric, progress=False, **kw)


def _attribution(e: Env, clean: str = CLEAN, corrupted: str = CORRUPT, metric=_metric) -> object:
    from mechscope.patching.attribution import attribution_patching

    return attribution_patching(e.llama, clean, corrupted, metric)


def _vector(values: Any, layer: Any = 0) -> Any:
    from mechscope.steering.results import SteeringVector

    return SteeringVector(values, layer)


def _steer_generate(e: Env, vector: Any, coef: float = 1.0, **kw: Any) -> object:
    from mechscope.steering.apply import generate

    return generate(e.llama, "hi", vector, coef, max_new_tokens=2, **kw)


def _steer(vector: Any, coef: Any = 1.0, **kw: Any) -> object:
    from mechscope.steering.apply import steer

    return steer(vector, coef, **kw)


def _actadd(e: Env, layer: Any) -> object:
    from mechscope.steering.vectors import actadd

    return actadd(e.llama, "Love", "Hate", layer)


def _fact(subject: str = "France", template: str = "The capital of {} is", obj: str = "Paris"):
    from mechscope.tracing.facts import Fact

    return Fact(subject, template, obj)


def _trace_fact(e: Env, fact: Any = None, **kw: Any) -> object:
    from mechscope.tracing.trace import trace_fact

    return trace_fact(e.llama, fact or _fact(), **{"samples": 2, **kw})


def _rome(e: Env, new: str = "Rome", covariance: Any = None, **kw: Any) -> object:
    from mechscope.tracing.rome import RomeConfig, edit

    cfg = RomeConfig(steps=1, prefixes=0, kl_weight=0.0)
    cov = torch.eye(64) if covariance is None else covariance
    return edit(e.llama, _fact(), new, config=cfg, covariance=cov, progress=False, **kw)


def _apply_edit(e: Env, value: Any, key_dir: Any, layer: int = 0) -> object:
    from mechscope.tracing.edits import Edit

    return Edit(_fact(), "Rome", layer, value, key_dir, torch.ones(64)).apply(e.llama)


def _ccs(pos: Any, neg: Any, **kw: Any) -> object:
    from mechscope.probes.probes import CCSProbe

    return CCSProbe.fit(pos, neg, **{"restarts": 1, "epochs": 2, **kw})


def _logistic(pos: Any, neg: Any, labels: Any) -> object:
    from mechscope.probes.probes import logistic_probe

    return logistic_probe(pos, neg, labels, epochs=2)


def _mean_diff(pos: Any, neg: Any, labels: Any) -> object:
    from mechscope.probes.probes import mean_diff_probe

    return mean_diff_probe(pos, neg, labels)


def _harvest(e: Env, out: Path | str | None = None, **kw: Any) -> object:
    from mechscope.harvest import harvest

    args = {"tokens": 64, "window": 16, "k": 2, "n_random": 1, "batch_size": 4, "progress": False}
    return harvest(e.llama, e.corpus, out=out or e.tmp / "harvest", **{**args, **kw})


def _hidden(e: Env, pairs: list) -> object:
    from mechscope.probes.probes import hidden_states

    return hidden_states(e.llama, pairs, progress=False)


r4 = torch.randn(4, 8)
SAEError = __import__("mechscope.sae.model", fromlist=["SAEError"]).SAEError

TECHNIQUES = [
    # activation patching
    C("patching: unknown site", lambda e: _patching(e, site="resid_psot"),
      InputError, "resid_psot", "resid_post"),
    C("patching: layer = n_layers", lambda e: _patching(e, layers=[2]),
      InputError, "layers", "[2]", "0…1"),
    C("patching: negative layer", lambda e: _patching(e, layers=[-1]), InputError, "layers", "0…1"),
    C("patching: fractional layer", lambda e: _patching(e, layers=[0.5]),
      InputError, "layers", "integers"),
    C("patching: position past the prompt", lambda e: _patching(e, positions=[99]),
      InputError, "positions", "[99]", "out of range"),
    C("patching: position beyond -length", lambda e: _patching(e, positions=[-99]),
      InputError, "positions", "[-99]"),
    C("patching: fractional position", lambda e: _patching(e, positions=[1.5]),
      InputError, "positions", "integers"),
    C("patching: prompts of different lengths", lambda e: _patching(e, corrupted="Hi"),
      InputError, "same shape"),
    C("patching: unknown direction", lambda e: _patching(e, direction="sideways"),
      InputError, "denoise", "sideways"),
    C("patching: float token ids",
      lambda e: _patching(e, clean=torch.ones(1, 4), corrupted=torch.ones(1, 4)),
      InputError, "integer"),
    C("patching: 3-d token ids",
      lambda e: _patching(e, clean=torch.ones(1, 1, 4, dtype=torch.long),
                          corrupted=torch.ones(1, 1, 4, dtype=torch.long)),
      InputError, "[batch, pos]"),
    C("patching: token ids past the vocabulary",
      lambda e: _patching(e, clean=torch.full((1, 4), 999), corrupted=torch.full((1, 4), 999)),
      InputError, "999"),
    C("patching: metric with one value per vocabulary entry",
      lambda e: _patching(e, metric=lambda lg: lg), InputError, "metric", "one value per prompt"),
    C("patching: metric that is NaN", lambda e: _patching(e, metric=lambda lg: lg[:, -1, 0] * math.nan),
      InputError, "metric", "finite", "nan"),
    C("path patching: receiver head out of range", lambda e: _paths(e, receivers=[(1, 9)]),
      InputError, "receiver (1, 9)", "heads 0…3"),
    C("path patching: receiver layer out of range", lambda e: _paths(e, receivers=[(5, 0)]),
      InputError, "(5, 0)", "layers 0…1"),
    C("path patching: receiver that is not a pair", lambda e: _paths(e, receivers=[3]),
      InputError, "(layer, head)", "3"),
    C("path patching: sender out of range", lambda e: _paths(e, senders=[(0, 9)]),
      InputError, "sender (0, 9)"),
    C("path patching: receiver input", lambda e: _paths(e, receivers=[(1, 0)], receiver_input="z"),
      InputError, "receiver_input", "'z'"),
    C("attribution patching: prompts of different lengths",
      lambda e: _attribution(e, corrupted="Hi"), InputError, "same shape"),
    C("attribution patching: NaN metric",
      lambda e: _attribution(e, metric=lambda lg: lg[:, -1, 0].sum() * math.nan),
      InputError, "finite"),
    # steering
    C("actadd: layer = n_layers", lambda e: _actadd(e, 2), InputError, "layer 2", "2 blocks"),
    C("actadd: negative layer", lambda e: _actadd(e, -1), InputError, "layer -1"),
    C("actadd: fractional layer", lambda e: _actadd(e, 1.5), InputError, "integer", "1.5"),
    C("mean_diff_vector: layer past the model",
      lambda e: __import__("mechscope.steering.vectors", fromlist=["x"]).mean_diff_vector(
          e.llama, ["a"], ["b"], 9, progress=False),
      InputError, "layer 9"),
    C("steering vector: wider than d_model", lambda e: _steer_generate(e, _vector(torch.ones(7))),
      InputError, "width 7", "32"),
    C("steering vector: layer past the model", lambda e: _steer_generate(e, _vector(torch.ones(32), 7)),
      InputError, "layer 7", "2 blocks"),
    C("steering vector: NaN", lambda e: _vector(nan32), InputError, "NaN"),
    C("steering vector: complex", lambda e: _vector(torch.ones(32, dtype=torch.complex64)),
      InputError, "real numbers", "complex64"),
    C("steering vector: bool", lambda e: _vector(torch.ones(32, dtype=torch.bool)),
      InputError, "real numbers", "bool"),
    C("steering vector: 3-d", lambda e: _vector(torch.ones(2, 3, 32)),
      InputError, "[d_model] or [k, d_model]", "[2, 3, 32]"),
    C("steering vector: no rows", lambda e: _vector(torch.ones(0, 32)), InputError, "[0, 32]"),
    C("steering vector: a list", lambda e: _vector([1.0, 2.0]), InputError, "tensor", "list"),
    C("steering vector: layer as a string", lambda e: _vector(torch.ones(32), "3"),
      InputError, "layer", "'3'"),
    C("steer: NaN coefficient", lambda e: _steer(_vector(torch.ones(32)), math.nan),
      InputError, "coefficient", "nan"),
    C("steer: infinite coefficient", lambda e: _steer_generate(e, _vector(torch.ones(32)), math.inf),
      InputError, "coefficient", "inf"),
    C("steer: string coefficient", lambda e: _steer(_vector(torch.ones(32)), "2"),
      InputError, "coefficient"),
    C("steer: position past the prompt",
      lambda e: _steer_generate(e, _vector(torch.ones(32)), positions=[99]),
      InterventionError, "positions", "[99]"),
    C("steer: front vector longer than the prompt",
      lambda e: e.llama.run("h", interventions=_steer(_vector(torch.ones(5, 32)))),
      InterventionError, "positions", "out of range"),
    # causal tracing
    C("trace: NaN noise", lambda e: _trace_fact(e, noise=math.nan), InputError, "noise", "nan"),
    C("trace: negative noise", lambda e: _trace_fact(e, noise=-1.0), InputError, "noise", "≥ 0"),
    C("trace: infinite noise", lambda e: _trace_fact(e, noise=math.inf), InputError, "noise"),
    C("trace: unknown kind", lambda e: _trace_fact(e, kinds=["mlpp"]),
      InputError, "mlpp", "hidden, mlp, attn"),
    C("trace: kinds as one string", lambda e: _trace_fact(e, kinds="mlp"),
      InputError, "list", "['mlp']"),
    C("trace: no samples", lambda e: _trace_fact(e, samples=0), InputError, "samples", "0"),
    C("trace: fractional samples", lambda e: _trace_fact(e, samples=1.5), InputError, "samples"),
    C("trace: window 0", lambda e: _trace_fact(e, window=0), InputError, "window"),
    C("trace: batch_size 0", lambda e: _trace_fact(e, batch_size=0), InputError, "batch_size"),
    C("trace: empty object", lambda e: _trace_fact(e, _fact(obj="")), InputError, "object", "empty"),
    C("fact: template without {}", lambda e: _fact(template="No braces here"),
      InputError, "template", "'{}'"),
    C("fact: template with {0} {1}", lambda e: _fact(template="The capital of {0} {1} is"),
      InputError, "template"),
    C("fact: template with a named field", lambda e: _fact(template="The capital of {x} is"),
      InputError, "template", "{x}"),
    C("fact: template with two {}", lambda e: _fact(template="{} and {}"), InputError, "template"),
    C("fact: unbalanced brace", lambda e: _fact(template="The {} of {"), InputError, "template"),
    C("fact: object not a string", lambda e: _fact(obj=3), InputError, "object", "3"),
    C("fact: subject not in the tokens", lambda e: _trace_fact(e, _fact(subject="")),
      InputError, "subject", "not found"),
    C("rome: layer = n_layers", lambda e: _rome(e, layer=2), InputError, "layer 2", "2 blocks"),
    C("rome: negative layer", lambda e: _rome(e, layer=-1), InputError, "layer -1"),
    C("rome: fractional layer", lambda e: _rome(e, layer=0.5), InputError, "integer"),
    C("rome: covariance of the wrong size", lambda e: _rome(e, covariance=torch.eye(5), layer=0),
      InputError, "covariance", "[64, 64]", "[5, 5]"),
    C("rome: NaN covariance", lambda e: _rome(e, covariance=torch.full((64, 64), math.nan), layer=0),
      InputError, "covariance", "NaN"),
    C("rome: empty new object", lambda e: _rome(e, new=" ", layer=0), InputError, "empty"),
    C("rome: the object it has", lambda e: _rome(e, new="Paris", layer=0), InputError, "already"),
    C("edit.apply: value of another model",
      lambda e: _apply_edit(e, torch.ones(7), torch.ones(64)), InputError, "value", "(7,)", "(32,)"),
    C("edit.apply: key of another model",
      lambda e: _apply_edit(e, torch.ones(32), torch.ones(16)), InputError, "key_dir", "(64,)"),
    C("edit.apply: layer past the model",
      lambda e: _apply_edit(e, torch.ones(32), torch.ones(64), layer=9), InputError, "layer 9"),
    C("edit.apply: NaN value", lambda e: _apply_edit(e, nan32, torch.ones(64)),
      InputError, "value", "NaN"),
    # probes
    C("probes: no pairs", lambda e: _hidden(e, []), InputError, "no contrast pairs"),
    C("ccs: widths differ", lambda e: _ccs(r4, torch.randn(4, 9)), InputError, "[4, 8]", "[4, 9]"),
    C("ccs: counts differ", lambda e: _ccs(r4, torch.randn(3, 8)), InputError, "[3, 8]"),
    C("ccs: 1-d states", lambda e: _ccs(torch.randn(8), torch.randn(8)), InputError, "[n, d]"),
    C("ccs: integer states", lambda e: _ccs(torch.ones(4, 8, dtype=torch.long), r4),
      InputError, "float tensor", "int64"),
    C("ccs: NaN states", lambda e: _ccs(torch.full((4, 8), math.nan), r4), InputError, "NaN"),
    C("ccs: no restarts", lambda e: _ccs(r4, r4, restarts=0), InputError, "restart"),
    C("logistic: labels of another count", lambda e: _logistic(r4, r4, torch.ones(3)),
      InputError, "labels", "[3]", "[4]"),
    C("logistic: widths differ", lambda e: _logistic(r4, torch.randn(4, 9), torch.ones(4)),
      InputError, "[4, 9]"),
    C("mean_diff: one class only", lambda e: _mean_diff(r4, torch.randn(4, 8), torch.ones(4)),
      InputError, "both true and false"),
    C("direction.predict: states of another width",
      lambda e: __import__("mechscope.probes.results", fromlist=["x"]).LinearDirection(
          torch.ones(8), 0.0).predict(torch.randn(4, 9), torch.randn(4, 9)),
      InputError, "width 8", "[4, 9]"),
    # SAEs
    C("sae.encode: activations of another width", lambda e: _sae(32).encode(torch.randn(3, 31)),
      SAEError, "encode", "[..., 32]", "[..., 31]"),
    C("sae.encode: integer activations", lambda e: _sae(32).encode(torch.ones(3, 32, dtype=torch.long)),
      SAEError, "float tensor", "int64"),
    C("sae.encode: a 0-d tensor", lambda e: _sae(32).encode(torch.tensor(1.0)), SAEError, "[]"),
    C("sae.encode: a list", lambda e: _sae(32).encode([1.0] * 32), SAEError, "list"),
    C("sae.decode: latents of another width", lambda e: _sae(32).decode(torch.randn(3, 15)),
      SAEError, "decode", "[..., 16]"),
    C("sae: attach to a site of another width",
      lambda e: e.llama.attach(_sae(16), S, name="bad"), InputError, "16", "32", S),
    C("sae: attach to attention patterns",
      lambda e: e.llama.attach(_sae(16, site="blocks.0.attn.pattern")), SiteError, "patterns"),
    C("sae: attached run with a wrong-width SAE",
      lambda e: e.llama.run(TEXT, interventions=[ms.zero_ablate(
          e.llama.attach(_sae(32, width=16)).latents, neurons=[16])]),
      InterventionError, "neurons", "[16]", "16 entries"),
    C("sae config: k > width",
      lambda e: __import__("mechscope.sae.model", fromlist=["x"]).SAEConfig(d_in=32, width=8, k=9),
      SAEError, "k must be in 1..width=8"),
    C("sae config: fractional k",
      lambda e: __import__("mechscope.sae.model", fromlist=["x"]).SAEConfig(d_in=32, width=8, k=2.5),
      SAEError, "k", "integer"),
    C("sae config: unknown kind",
      lambda e: __import__("mechscope.sae.model", fromlist=["x"]).SAEConfig(d_in=32, width=8, kind="gated"),
      SAEError, "gated", "topk"),
    # harvest
    C("harvest: unknown site", lambda e: _harvest(e, sites="blocks.9.mlp.post"),
      SiteError, "blocks.9.mlp.post"),
    C("harvest: fewer tokens than a window", lambda e: _harvest(e, tokens=8),
      InputError, "tokens ≥ window", "tokens=8"),
    C("harvest: fractional k", lambda e: _harvest(e, k=2.5), InputError, "k", "integer", "2.5"),
    C("harvest: k 0", lambda e: _harvest(e, k=0), InputError, "k ≥ 1"),
    C("harvest: window 1", lambda e: _harvest(e, window=1, tokens=16), InputError, "window ≥ 2"),
    C("harvest: feature reader returns [batch, unit]",
      lambda e: _harvest(e, sites=[], features={"f": (S, lambda x: x[:, 0])}),
      InputError, "[batch, pos, unit]"),
    C("harvest: feature at an unknown site",
      lambda e: _harvest(e, sites=[], features={"f": ("blocks.8.resid_post", lambda x: x)}),
      SiteError, "blocks.8.resid_post"),
    C("harvest: feature that is not callable",
      lambda e: _harvest(e, sites=[], features={"f": (S, 3)}), InputError, "function"),
    C("harvest: SAE features of another width",
      lambda e: _harvest(e, sites=[], features={"f": (S, _sae(16).encode)}),
      SAEError, "[..., 16]", "[..., 32]"),
    C("harvest: window past GPT-2's 256 positions",
      lambda e: __import__("mechscope.harvest", fromlist=["x"]).harvest(
          e.gpt2, e.corpus, out=e.tmp / "h", tokens=600, window=300, progress=False),
      InputError, "harvest window", "300 tokens", "256"),
    C("harvest: out under an existing file",
      lambda e: _harvest(e, out=Path(e.corpus) / "run"), InputError, "corpus.txt"),
    C("harvest: out in /proc", lambda e: _harvest(e, out="/proc/x/y"), InputError, "/proc/x/y"),
]  # fmt: skip


@pytest.mark.parametrize("case", TECHNIQUES, ids=_ids(TECHNIQUES))
def test_techniques(case: Case, tmp_path: Path) -> None:
    expect_error(case, Env(tmp_path))


# --- saving where nothing can be written ------------------------------------------------


def _savers() -> dict[str, Callable[[Env, Path], object]]:
    from mechscope.patching.results import PatchResult

    patch = PatchResult(
        torch.zeros(2, 3), torch.zeros(2, 3), ("layer", "pos"), {"layer": ["0", "1"]},
        "resid_pre", "denoise", 1.0, 0.0, {},
    )  # fmt: skip
    return {
        "steering vector": lambda e, p: _vector(torch.ones(32)).save(p),
        "patch result": lambda e, p: patch.save(p),
        "activation cache": lambda e, p: e.cache().save(p.with_name(p.name + ".safetensors")),
        "sae": lambda e, p: _sae(32).save(p),
    }


def _targets(e: Env) -> dict[str, Path]:
    """Paths no result can be written to, and the files whose bytes must not change."""
    blocker = e.tmp / "blocker.txt"
    blocker.write_text("a file, not a folder")
    taken = e.tmp / "taken"  # a folder stands where the file would go
    (taken.with_name("taken.safetensors")).mkdir()
    (taken / "sae.safetensors").mkdir(parents=True)
    return {
        "/proc": Path("/proc/x/y"),
        "under a file": blocker / "sub" / "r",
        "onto a folder": taken,
    }


SAVE_ROWS = [(s, t) for s in ("steering vector", "patch result", "activation cache", "sae")
             for t in ("/proc", "under a file", "onto a folder")]  # fmt: skip


@pytest.mark.parametrize(("saver", "target"), SAVE_ROWS, ids=[f"{s} {t}" for s, t in SAVE_ROWS])
def test_save_where_nothing_can_be_written(saver: str, target: str, tmp_path: Path) -> None:
    env = Env(tmp_path)
    path = _targets(env)[target]
    before = _tree(tmp_path)
    with pytest.raises((MechscopeError, OSError)) as info:
        _savers()[saver](env, path)
    message = str(info.value)
    assert "\n" not in message, message
    shown = str(path) if target != "onto a folder" else str(tmp_path)
    assert shown in message, (shown, message)
    assert not isinstance(info.value, OSError) or info.value.filename, "an OSError names its file"
    assert _tree(tmp_path) == before, "a failed save left something behind"


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")
    }


# --- exceptions raised in the middle of a forward ----------------------------------------


class Boom(Exception):
    """What a user's callback (or a failing block) raises; it must come out unchanged."""


def _boom(*_: object) -> Any:
    raise Boom("from the user")


class _BackwardBoom(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        raise Boom("in the backward pass")


def _late(n: int, then: Callable[[torch.Tensor], Any] = lambda x: x) -> Callable[[Any], Any]:
    """A callback that fails on its n-th call (a later generation step, say), `then` before."""
    calls = []

    def fn(x: torch.Tensor) -> Any:
        calls.append(1)
        if len(calls) >= n:
            raise Boom(f"call {n}")
        return then(x)

    return fn


def _hooks_then_raise(e: Env, **kw: Any) -> None:
    with e.llama.hooks(**kw):
        out = e.llama.hf(e.llama.to_tokens(TEXT))
        raise Boom(f"after the forward ({type(out).__name__})")


def _trace_body_raises(e: Env) -> None:
    with e.llama.trace(TEXT) as t:
        t.save(S)
        t.apply("blocks.1.mlp.post", torch.relu)
        raise Boom("inside the with-block")


def _backward_after_hooks(e: Env) -> None:
    with e.llama.hooks(save_grad=[S]):
        logits = e.llama.hf(e.llama.to_tokens(TEXT)).logits
    logits.sum().backward()  # after the block: nothing of the session may still run
    raise Boom("after a late backward")


def _attached_fails(e: Env) -> None:
    with e.llama.attach(_sae(32)) as sites:
        e.llama.run(TEXT, interventions=[ms.apply(sites.latents, _boom)])


USER_FAILURES: list[tuple[str, Callable[[Env], object]]] = [
    ("run: apply raises", lambda e: e.run(ms.apply(S, _boom))),
    ("run: observe raises", lambda e: e.run(ms.observe("blocks.1.attn.z", _boom))),
    ("run: apply on attention pattern raises", lambda e: e.run(ms.apply("blocks.0.attn.pattern", _boom))),
    ("run: backward metric raises", lambda e: e.llama.run(TEXT, save_grad=[S], backward=_boom)),
    ("run: the backward pass raises",
     lambda e: e.llama.run(TEXT, save_grad=[S], backward=lambda lg: _BackwardBoom.apply(lg.sum()))),
    ("run: keep_graph then apply raises", lambda e: e.run(ms.apply("logits", _boom), keep_graph=True)),
    ("trace: body raises", _trace_body_raises),
    ("trace: apply raises when it runs",
     lambda e: _trace(e, lambda t: t.apply("blocks.1.resid_mid", _boom))),
    ("hooks: raises after the forward", lambda e: _hooks_then_raise(e, save=[S])),
    ("hooks: raises with gradients watched", lambda e: _hooks_then_raise(e, save_grad=[S, "blocks.1.attn.z"])),
    ("hooks: backward after the block", _backward_after_hooks),
    ("generate: apply raises at a later step",
     lambda e: e.llama.generate("hi", 4, [ms.apply("blocks.1.attn.z", _late(3))])),
    ("generate: observe raises at once", lambda e: e.llama.generate("hi", 4, [ms.observe(S, _boom)])),
    ("attach: latents intervention raises", _attached_fails),
    ("patching: metric raises", lambda e: _patching(e, metric=_boom)),
    ("patching: metric raises on a resumed batch", lambda e: _patching(e, metric=_late(3, _metric))),
    ("attribution: metric raises in the backward",
     lambda e: _attribution(e, metric=lambda lg: _BackwardBoom.apply(_metric(lg)))),
    ("harvest: feature reader raises", lambda e: _harvest(e, sites=[], features={"f": (S, _late(2))})),
]  # fmt: skip


@pytest.mark.parametrize("call", [c for _, c in USER_FAILURES], ids=[i for i, _ in USER_FAILURES])
def test_user_failures_leave_the_model_as_it_was(
    call: Callable[[Env], object], tmp_path: Path
) -> None:
    env = Env(tmp_path)
    before = _state(env.llama)
    with pytest.raises(Boom):
        call(env)
    assert _state(env.llama) == before
    env.llama.run(TEXT, save=[S])  # still usable, and the guard checks it once more
    assert _state(env.llama) == before


def _state(model: ms.Model) -> tuple[list[str], str | None, dict[str, int]]:
    """Hooks on any module, the attention implementation, and a checksum of every weight."""
    hooks = [
        f"{name}.{kind}"
        for name, module in model.hf.named_modules()
        for kind in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        )  # fmt: skip
        if getattr(module, kind)
    ]
    attn = getattr(model.hf.config, "_attn_implementation", None)
    weights = {k: hash(v.detach().numpy().tobytes()) for k, v in model.hf.state_dict().items()}
    return hooks, attn, weights


# --- a block that fails in the middle of a technique ------------------------------------


class _FailingBlock:
    """Count block 1's forwards, and with `n` make the n-th raise `Boom` (restored on exit)."""

    def __init__(self, model: ms.Model, n: int | None = None) -> None:
        assert model.adapter is not None
        self.block = model.hf.get_submodule(f"{model.adapter.layers}.1")
        self.n, self.calls = n, 0

    def __enter__(self) -> _FailingBlock:
        forward = self.block.forward

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.n:
                raise Boom(f"block 1, call {self.n}")
            return forward(*args, **kwargs)

        self.block.forward = failing
        return self

    def __exit__(self, *exc: object) -> None:
        del self.block.forward  # the class's forward again


def _probe_pairs(e: Env) -> object:
    from mechscope.probes.results import ContrastPair

    return _hidden(
        e, [ContrastPair("Paris is in France.", True), ContrastPair("Rome is in Peru.", False)]
    )


FAULTS: list[tuple[str, Callable[[Env], object]]] = [
    ("run", lambda e: e.run(ms.add(S, torch.ones(32)), save=["blocks.*.attn.z"])),
    ("run with gradients", lambda e: e.llama.run(TEXT, save_grad=[S], backward=lambda lg: lg.sum())),
    ("trace", lambda e: _trace(e, lambda t: t.zero_ablate("blocks.1.attn.z", heads=[0]))),
    ("generate", lambda e: e.llama.generate("hi", 4, [ms.add(S, torch.ones(32))])),
    ("activation patching", lambda e: _patching(e, site="attn.z", per_position=False)),
    ("path patching", lambda e: _paths(e)),
    ("attribution patching", lambda e: _attribution(e)),
    ("causal tracing", lambda e: _trace_fact(e, kinds=["mlp"])),
    ("rome", lambda e: _rome(e, layer=0)),
    ("steered generation", lambda e: _steer_generate(e, _vector(torch.ones(32), 1))),
    ("probe hidden states", _probe_pairs),
    ("harvest", lambda e: _harvest(e, batch_size=2)),
]  # fmt: skip


@pytest.mark.parametrize("call", [c for _, c in FAULTS], ids=[i for i, _ in FAULTS])
def test_failing_block_leaves_the_model_as_it_was(
    call: Callable[[Env], object], tmp_path: Path
) -> None:
    dry = Env(tmp_path / "dry")  # how many forwards of block 1 the call makes
    with _FailingBlock(dry.llama) as count:
        result = call(dry)
    if isinstance(result, Edit):
        result.undo()
    env = Env(tmp_path / "real")
    before = _state(env.llama)
    middle = count.calls // 2 + 1  # past the first forward when there are several
    with _FailingBlock(env.llama, middle), pytest.raises(Boom):
        call(env)
    assert _state(env.llama) == before
