"""Hostile inputs to circuit tracing's library calls: each row one mistake, one mechscope error.

Every row calls `attribution_graph`, `check_graph`, `AttributionGraph.with_supernodes` /
`with_labels` / `find`, `save_supernodes` or `attach_transcoders` the way a user would,
with one thing wrong: a keyword of the wrong type or out of its range, a prompt that is
neither text nor one row of token ids, ids out of the vocabulary, a transcoder set of
another model, a hostile supernode group. Each must raise an `InputError` subclass (never
a bare TypeError, IndexError or RuntimeError from inside torch) whose message is one line
naming the argument or quoting the value that was wrong (`needles`).

Rows wrapped in `found` failed when the suite was written; each names the defect it found
(since fixed in src/mechscope/graphs/*), so the record of what was wrong stays beside the
row that now holds it fixed.

Run-time shape checks (jaxtyping) are off here: the rows test what a user's call raises.
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

from mechscope.errors import InputError, MechscopeError
from mechscope.graphs import attribution_graph, check_graph
from mechscope.graphs.local import GraphError
from mechscope.graphs.results import AttributionGraph
from mechscope.testing import tiny_model
from mechscope.transcoders import TranscoderSet, attach_transcoders
from mechscope.transcoders.model import TranscoderError

TEXT = "hello world"
LONG = "hello " * 3000  # 18,000 byte tokens, past the tiny models' 2,048
WIDTH, K = 16, 2
SAME = object()  # "the row's own" (None is a hostile value of its own)


@pytest.fixture(autouse=True)
def as_users_see_it() -> Iterator[None]:
    """No jaxtyping checks: a user's call meets mechscope's own checks, not pytest's."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


def _other_model(layers: int = 2, d_model: int = 32) -> Any:
    import transformers as tf

    from mechscope.core.model import Model
    from mechscope.testing import tiny_config, tiny_tokenizer

    config = tiny_config("llama")
    config.num_hidden_layers, config.hidden_size = layers, d_model
    torch.manual_seed(0)
    hf = tf.AutoModelForCausalLM.from_config(config).eval()
    return Model(hf, tiny_tokenizer(), name=f"llama-{layers}x{d_model}")


@pytest.fixture(scope="module")
def graph() -> AttributionGraph:
    """The graph of TEXT through `Env`'s set (the same seeds: the same model and set)."""
    model = tiny_model("llama")
    tcs = TranscoderSet.build(model, width=WIDTH, k=K)
    return attribution_graph(model, tcs, TEXT, max_feature_nodes=16, progress=False)


@pytest.fixture(scope="module")
def graph_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph run folder of TEXT (no check), for `save_supernodes`."""
    from mechscope.graphs import graph_run

    model = tiny_model("llama")
    tcs = TranscoderSet.build(model, width=WIDTH, k=K)
    out = tmp_path_factory.mktemp("hostile-graph-run") / "graph"
    return graph_run(model, tcs, TEXT, out, check_top=0, max_feature_nodes=16, progress=False)


class Env:
    """The models, sets and graphs one row needs (models built inside its test, for the guard)."""

    def __init__(self, graph: AttributionGraph, folder: Path) -> None:
        self.llama = tiny_model("llama")
        self.tcs = TranscoderSet.build(self.llama, width=WIDTH, k=K)
        self.graph, self.folder = graph, folder

    @functools.cached_property
    def feature(self) -> str:
        """The id of the graph's most influential latent."""
        return self.graph.top_features(1)[0]["id"]

    @functools.cached_property
    def gpt2_set(self) -> TranscoderSet:
        """A set of tiny GPT-2: the llama's shape (2 × d_model 32), other MLP sites."""
        return TranscoderSet.build(tiny_model("gpt2"), width=WIDTH, k=K)

    @functools.cached_property
    def wide_set(self) -> TranscoderSet:
        return TranscoderSet.build(_other_model(d_model=48), width=WIDTH, k=K)

    @functools.cached_property
    def deep_set(self) -> TranscoderSet:
        return TranscoderSet.build(_other_model(layers=3), width=WIDTH, k=K)

    def ag(self, prompt: Any = TEXT, tcs: Any = SAME, **kw: Any) -> AttributionGraph:
        kw = {"max_feature_nodes": 8, "progress": False, **kw}
        return attribution_graph(self.llama, self.tcs if tcs is SAME else tcs, prompt, **kw)

    def check(self, graph: Any = SAME, tcs: Any = SAME, **kw: Any) -> object:
        return check_graph(
            self.llama, self.tcs if tcs is SAME else tcs, self.graph if graph is SAME else graph,
            **kw,
        )  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One row: what to call, the mechscope error it must raise, words its message holds."""

    id: str
    call: Callable[[Env], object]
    error: type[Exception]
    needles: tuple[str, ...] = ()


def C(id: str, call: Callable[[Env], object], error: type[Exception], *needles: str) -> Any:  # noqa: N802
    return pytest.param(Case(id, call, error, needles), id=id)


def found(row: Any, what: str) -> Any:
    """A row that found the defect `what` when it was written (fixed since; see the top)."""
    return row


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


def _ids(rows: list[Any]) -> list[Any]:
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids), "row ids must be unique"
    return rows


def ids_of(n: int, dtype: torch.dtype = torch.long, value: int = 104) -> torch.Tensor:
    return torch.full((1, n), value, dtype=dtype)


# --- attribution_graph ----------------------------------------------------------------

GRAPHS = _ids([
    # the logits to explain
    C("logits: a multi-token word", lambda e: e.ag(logits=[" Paris"]),
      InputError, "' Paris'", "not one"),
    C("logits: an empty string", lambda e: e.ag(logits=[""]), InputError, "''", "not one"),
    C("logits: a token id past the vocabulary", lambda e: e.ag(logits=[999]),
      GraphError, "999", "0..258"),
    C("logits: a negative token id", lambda e: e.ag(logits=[-1]), GraphError, "-1", "0..258"),
    found(C("logits: one string, not a list", lambda e: e.ag(logits="ab"),
             InputError, "logits"),
           "a str is iterated: 'ab' explains the logits of 'a' and 'b' without a word"),
    found(C("logits: a float entry", lambda e: e.ag(logits=[1.5]), InputError, "logits", "1.5"),
           "ValueError from the tokenizer (text input must be of type str)"),
    found(C("logits: a bool entry", lambda e: e.ag(logits=[True]), InputError, "logits"),
           "True passes as token id 1, then ValueError from tensor indexing"),
    found(C("logits: a None entry", lambda e: e.ag(logits=[None]), InputError, "logits"),
           "ValueError from the tokenizer (specify either text or text_target)"),
    found(C("logits: an integer, not a list", lambda e: e.ag(logits=5), InputError, "logits"),
           "TypeError: 'int' object is not iterable"),
    # the numbers
    C("max_logits: zero", lambda e: e.ag(max_logits=0), GraphError, "max_logits", "≥ 1"),
    C("max_logits: negative", lambda e: e.ag(max_logits=-3), GraphError, "max_logits"),
    C("max_logits: a float", lambda e: e.ag(max_logits=2.5), GraphError, "max_logits", "2.5"),
    C("max_logits: a bool", lambda e: e.ag(max_logits=True), GraphError, "max_logits", "True"),
    C("max_logits: a string", lambda e: e.ag(max_logits="3"), GraphError, "max_logits", "'3'"),
    C("logit_mass: zero", lambda e: e.ag(logit_mass=0), GraphError, "logit_mass", "(0, 1]"),
    C("logit_mass: past one", lambda e: e.ag(logit_mass=1.5), GraphError, "logit_mass", "1.5"),
    C("logit_mass: NaN", lambda e: e.ag(logit_mass=math.nan), GraphError, "logit_mass", "nan"),
    C("logit_mass: a string", lambda e: e.ag(logit_mass="0.5"), GraphError, "logit_mass"),
    found(C("logit_mass: a bool", lambda e: e.ag(logit_mass=True), GraphError, "logit_mass"),
           "True passes the (0, 1] check as 1.0"),
    C("max_feature_nodes: negative", lambda e: e.ag(max_feature_nodes=-1),
      GraphError, "max_feature_nodes", "≥ 0"),
    C("max_feature_nodes: a float", lambda e: e.ag(max_feature_nodes=2.5),
      GraphError, "max_feature_nodes"),
    C("max_feature_nodes: None", lambda e: e.ag(max_feature_nodes=None),
      GraphError, "max_feature_nodes", "None"),
    C("max_feature_nodes: a string", lambda e: e.ag(max_feature_nodes="8"),
      GraphError, "max_feature_nodes"),
    C("batch: zero", lambda e: e.ag(batch=0), GraphError, "batch", "≥ 1"),
    C("batch: negative", lambda e: e.ag(batch=-4), GraphError, "batch"),
    C("batch: a float", lambda e: e.ag(batch=1.5), GraphError, "batch", "1.5"),
    C("batch: None", lambda e: e.ag(batch=None), GraphError, "batch"),
    found(C("batch: more rows than memory", lambda e: e.ag(batch=10**12), InputError, "batch"),
           "RuntimeError from torch's allocator: the forward always holds `batch` copies of "
           "the prompt, even for fewer targets, and nothing checks the memory it needs"),
    C("node_threshold: zero", lambda e: e.ag(node_threshold=0),
      GraphError, "node_threshold", "(0, 1]"),
    C("node_threshold: negative", lambda e: e.ag(node_threshold=-0.1), GraphError, "node_threshold"),
    C("node_threshold: past one", lambda e: e.ag(node_threshold=1.01),
      GraphError, "node_threshold", "1.01"),
    C("node_threshold: NaN", lambda e: e.ag(node_threshold=math.nan),
      GraphError, "node_threshold", "nan"),
    C("node_threshold: inf", lambda e: e.ag(node_threshold=math.inf),
      GraphError, "node_threshold", "inf"),
    C("node_threshold: a string", lambda e: e.ag(node_threshold="0.8"),
      GraphError, "node_threshold"),
    C("node_threshold: None", lambda e: e.ag(node_threshold=None), GraphError, "node_threshold"),
    C("node_threshold: a tensor", lambda e: e.ag(node_threshold=torch.tensor(0.5)),
      GraphError, "node_threshold"),
    C("edge_threshold: zero", lambda e: e.ag(edge_threshold=0),
      GraphError, "edge_threshold", "(0, 1]"),
    C("edge_threshold: past one", lambda e: e.ag(edge_threshold=2), GraphError, "edge_threshold"),
    C("edge_threshold: NaN", lambda e: e.ag(edge_threshold=math.nan),
      GraphError, "edge_threshold", "nan"),
    C("edge_threshold: minus inf", lambda e: e.ag(edge_threshold=-math.inf),
      GraphError, "edge_threshold", "-inf"),
    C("edge_threshold: a string", lambda e: e.ag(edge_threshold="x"),
      GraphError, "edge_threshold"),
    # prompts that are neither text nor ids
    C("prompt: None", lambda e: e.ag(None), GraphError, "prompt", "None"),
    C("prompt: a number", lambda e: e.ag(42), GraphError, "prompt", "42"),
    C("prompt: bytes", lambda e: e.ag(b"hi"), GraphError, "prompt"),
    C("prompt: a list of ints", lambda e: e.ag([104, 105]), GraphError, "prompt"),
    C("prompt: a numpy array", lambda e: e.ag(np.full((1, 4), 104)), GraphError, "prompt"),
    C("prompt: empty text", lambda e: e.ag(""), GraphError, "prompt", "''"),
    C("prompt: whitespace", lambda e: e.ag(" \n\t "), GraphError, "prompt"),
    C("prompt: past the context", lambda e: e.ag(LONG), InputError, "prompt", "2048"),
    # token ids of the wrong shape, dtype or range
    C("ids: two rows", lambda e: e.ag(torch.full((2, 4), 104)), GraphError, "prompt", "[2, 4]"),
    C("ids: 3-d", lambda e: e.ag(torch.full((1, 1, 4), 104)), GraphError, "prompt", "[1, 1, 4]"),
    C("ids: 0-d", lambda e: e.ag(torch.tensor(104)), GraphError, "prompt"),
    C("ids: no positions", lambda e: e.ag(ids_of(0)), InputError, "empty"),
    C("ids: past the vocabulary", lambda e: e.ag(ids_of(4, value=999)), InputError, "999", "258"),
    C("ids: negative", lambda e: e.ag(ids_of(4, value=-1)), InputError, "-1", "258"),
    C("ids: past the context", lambda e: e.ag(ids_of(3000)), InputError, "3000", "2048"),
    found(C("ids: float", lambda e: e.ag(ids_of(4, torch.float32)),
             GraphError, "prompt", "float32"),
           "the message shows the shape [1, 4], which is right, not the dtype, which is wrong"),
    found(C("ids: uint8", lambda e: e.ag(ids_of(4, torch.uint8)), GraphError, "prompt", "uint8"),
           "the message shows the shape [1, 4], which is right, not the dtype, which is wrong"),
    found(C("ids: bool", lambda e: e.ag(ids_of(4, torch.bool, 1)), GraphError, "prompt", "bool"),
           "the message shows the shape [1, 4], which is right, not the dtype, which is wrong"),
    # models and sets that do not fit
    C("transcoders: another d_model", lambda e: e.ag(tcs=e.wide_set),
      TranscoderError, "d_model=48", "d_model=32"),
    C("transcoders: a layer past the model", lambda e: e.ag(tcs=e.deep_set),
      TranscoderError, "layer 2", "2 layers"),
    found(C("transcoders: another family's set of the same shape",
             lambda e: e.ag(tcs=e.gpt2_set), TranscoderError, "transformer.h.0.ln_2"),
           "TranscoderSet.check compares d_model and layers, not the MLP sites each "
           "transcoder reads: a GPT-2 set builds a graph of the Llama without a word"),
    found(C("transcoders: None", lambda e: e.ag(tcs=None), InputError, "TranscoderSet"),
           "AttributeError: 'NoneType' object has no attribute 'check' (check_model)"),
    found(C("transcoders: a dict", lambda e: e.ag(tcs={0: "tc"}), InputError, "TranscoderSet"),
           "AttributeError: 'dict' object has no attribute 'check' (check_model)"),
    C("model: post-norms (Gemma 3)",
      lambda e: attribution_graph(tiny_model("gemma3"), e.tcs, TEXT, progress=False),
      GraphError, "post-norms"),
])  # fmt: skip


@pytest.mark.parametrize("case", GRAPHS)
def test_attribution_graph(case: Case, graph: AttributionGraph, graph_folder: Path) -> None:
    expect_error(case, Env(graph, graph_folder))


# --- check_graph ----------------------------------------------------------------------


def _no_latents(e: Env) -> AttributionGraph:
    return e.ag(max_feature_nodes=0)


CHECKS = _ids([
    C("top: zero", lambda e: e.check(top=0), InputError, "top", "≥ 1"),
    C("top: negative", lambda e: e.check(top=-1), InputError, "top"),
    C("top: a float", lambda e: e.check(top=2.5), InputError, "top", "2.5"),
    C("top: a bool", lambda e: e.check(top=True), InputError, "top"),
    C("top: a string", lambda e: e.check(top="3"), InputError, "top", "'3'"),
    C("factor: one (no change)", lambda e: e.check(factor=1), InputError, "factor", "other than 1"),
    C("factor: NaN", lambda e: e.check(factor=math.nan), InputError, "factor", "nan"),
    C("factor: inf", lambda e: e.check(factor=math.inf), InputError, "factor", "inf"),
    C("factor: a string", lambda e: e.check(factor="0"), InputError, "factor", "'0'"),
    C("factor: None", lambda e: e.check(factor=None), InputError, "factor"),
    C("target: an unknown node", lambda e: e.check(target="9_9_9"), InputError, "'9_9_9'"),
    C("target: a latent, not a logit", lambda e: e.check(target=e.feature),
      InputError, "target", "not a logit"),
    C("target: an integer", lambda e: e.check(target=3), InputError, "3"),
    C("graph: no latents left to check", lambda e: e.check(graph=_no_latents(e)),
      InputError, "no latents"),
    C("transcoders: None", lambda e: e.check(tcs=None), TranscoderError, "TranscoderSet"),
    C("transcoders: another family's set", lambda e: e.check(tcs=e.gpt2_set),
      TranscoderError, "transformer.h.0.ln_2"),
    C("transcoders: another d_model", lambda e: e.check(tcs=e.wide_set),
      TranscoderError, "d_model"),
    found(C("graph: None", lambda e: e.check(graph=None), InputError, "graph"),
           "AttributeError: 'NoneType' object has no attribute 'top_features'"),
    found(C("graph: a dict", lambda e: e.check(graph={"nodes": []}), InputError, "graph"),
           "AttributeError: 'dict' object has no attribute 'top_features'"),
])  # fmt: skip


@pytest.mark.parametrize("case", CHECKS)
def test_check_graph(case: Case, graph: AttributionGraph, graph_folder: Path) -> None:
    expect_error(case, Env(graph, graph_folder))


# --- AttributionGraph.with_supernodes / with_labels / find ---------------------------

EDITS = _ids([
    C("with_supernodes: a string", lambda e: e.graph.with_supernodes("abc"),
      InputError, "supernode", "[name, node id"),
    C("with_supernodes: a dict", lambda e: e.graph.with_supernodes({"a": [e.feature]}),
      InputError, "supernode"),
    C("with_supernodes: a name alone", lambda e: e.graph.with_supernodes([["France"]]),
      InputError, "supernode", "['France']"),
    C("with_supernodes: a name that is not text",
      lambda e: e.graph.with_supernodes([[7, e.feature]]), InputError, "supernode", "[7, "),
    C("with_supernodes: an unknown node", lambda e: e.graph.with_supernodes([["a", "9_9_9"]]),
      InputError, "'9_9_9'"),
    C("with_supernodes: a node id that is a number",
      lambda e: e.graph.with_supernodes([["a", 5]]), InputError, "no node 5"),
    C("with_supernodes: a tuple group", lambda e: e.graph.with_supernodes([("a", e.feature)]),
      InputError, "supernode"),
    found(C("with_supernodes: None", lambda e: e.graph.with_supernodes(None),
             InputError, "supernode"),
           "TypeError: 'NoneType' object is not iterable"),
    found(C("with_supernodes: a node id that is a list",
             lambda e: e.graph.with_supernodes([["a", ["x"]]]), InputError, "supernode"),
           "TypeError: unhashable type: 'list' (the id is looked up in a set)"),
    found(C("with_supernodes: a huge name",
             lambda e: e.graph.with_supernodes([["x" * 10**6, e.feature]]),
             InputError, "name"),
           "a name of a million characters is kept (the viewer refuses past 200)"),
    found(C("with_supernodes: an empty name",
             lambda e: e.graph.with_supernodes([["", e.feature]]), InputError, "name"),
           "an empty name is kept (the viewer refuses it)"),
    found(C("with_labels: None", lambda e: e.graph.with_labels(None), InputError, "labels"),
           "TypeError: 'NoneType' object is not a mapping"),
    found(C("with_labels: a list", lambda e: e.graph.with_labels(["Paris"]),
             InputError, "labels"),
           "TypeError: 'list' object is not a mapping"),
    found(C("with_labels: an unknown node", lambda e: e.graph.with_labels({"9_9_9": "Paris"}),
             InputError, "'9_9_9'"),
           "a label of a node that is not in the graph is kept without a word"),
    found(C("with_labels: a label that is not text",
             lambda e: e.graph.with_labels({e.feature: 5}), InputError, "label"),
           "a label that is a number is kept (describe() prints it, the JSON export writes it)"),
    C("find: None", lambda e: e.graph.find(None), InputError, "no node None"),
    C("find: a list", lambda e: e.graph.find(["a"]), InputError, "no node"),
    C("find: an empty id", lambda e: e.graph.find(""), InputError, "no node ''"),
    C("find: a latent of another layer", lambda e: e.graph.find("7_0_0"), InputError, "'7_0_0'"),
])  # fmt: skip


@pytest.mark.parametrize("case", EDITS)
def test_graph_edits(case: Case, graph: AttributionGraph, graph_folder: Path) -> None:
    expect_error(case, Env(graph, graph_folder))


# --- save_supernodes ------------------------------------------------------------------


def _save(groups: Any, path: Any = SAME) -> Callable[[Env], object]:
    from mechscope.graphs.runs import save_supernodes

    def call(e: Env) -> object:
        filled = groups(e) if callable(groups) else groups
        return save_supernodes(e.folder if path is SAME else path, filled)

    return call


SAVES = _ids([
    C("groups: None", _save(None), InputError, "supernodes", "list"),
    C("groups: a string", _save("abc"), InputError, "supernodes", "list"),
    C("groups: a dict", _save(lambda e: {"a": [e.feature]}), InputError, "supernodes", "list"),
    C("groups: a tuple", _save(lambda e: (["a", e.feature],)), InputError, "supernodes"),
    C("group: a name alone", _save([["France"]]), InputError, "supernode"),
    C("group: a tuple", _save(lambda e: [("a", e.feature)]), InputError, "supernode"),
    C("name: a number", _save(lambda e: [[1, e.feature]]), InputError, "supernode", "[1, "),
    C("name: None", _save(lambda e: [[None, e.feature]]), InputError, "supernode", "None"),
    C("node: unknown", _save([["France", "9_9_9"]]), InputError, "France", "'9_9_9'"),
    C("node: a number", _save([["France", 12]]), InputError, "France", "12"),
    C("path: no graph run", _save(lambda e: [["a", e.feature]], "/nonexistent/graph"),
      InputError, "/nonexistent/graph", "graph run"),
    found(C("name: a million characters", _save(lambda e: [["x" * 10**6, e.feature]]),
             InputError, "name"),
           "written as is: a 1 MB supernodes.json (the viewer's POST refuses names past 200)"),
    found(C("name: empty", _save(lambda e: [["", e.feature]]), InputError, "name"),
           "written as is (the viewer's POST refuses an empty name)"),
    found(C("names: the same twice", _save(lambda e: [["a", e.feature], ["a", e.feature]]),
             InputError, "'a'"),
           "written as is (the viewer's POST refuses two supernodes of one name)"),
    found(C("node: a list", _save(lambda e: [["a", [e.feature]]]), InputError, "supernode"),
           "TypeError: unhashable type: 'list' (from with_supernodes)"),
    found(C("path: None", _save(lambda e: [["a", e.feature]], None), InputError, "path"),
           "TypeError from Path(None)"),
])  # fmt: skip


@pytest.mark.parametrize("case", SAVES)
def test_save_supernodes(case: Case, graph: AttributionGraph, graph_folder: Path, hostile) -> None:
    before = hostile.snapshot(graph_folder)
    try:
        expect_error(case, Env(graph, graph_folder))
    finally:
        after = hostile.snapshot(graph_folder)
        if after != before:  # put it back for the next rows, then fail
            (graph_folder / "supernodes.json").unlink(missing_ok=True)
    assert after == before, f"{case.id}: the graph run folder was changed by a refused call"


# --- attach_transcoders ---------------------------------------------------------------

ATTACH = _ids([
    C("a set of another d_model", lambda e: attach_transcoders(e.llama, e.wide_set),
      TranscoderError, "d_model=48", "d_model=32"),
    C("a set of a deeper model", lambda e: attach_transcoders(e.llama, e.deep_set),
      TranscoderError, "layer 2", "2 layers"),
    C("a set of another family", lambda e: attach_transcoders(e.llama, e.gpt2_set),
      TranscoderError, "transformer.h.0.ln_2", "model.layers.0.post_attention_layernorm"),
    C("not a set", lambda e: attach_transcoders(e.llama, [e.tcs[0]]),
      TranscoderError, "TranscoderSet", "list"),
    C("a name with a dot", lambda e: attach_transcoders(e.llama, e.tcs, name="a.b"),
      TranscoderError, "'a.b'"),
    C("an empty name", lambda e: attach_transcoders(e.llama, e.tcs, name=""), TranscoderError, "''"),
])  # fmt: skip


@pytest.mark.parametrize("case", ATTACH)
def test_attach_transcoders(case: Case, graph: AttributionGraph, graph_folder: Path) -> None:
    env = Env(graph, graph_folder)
    expect_error(case, env)
    attached = [s.name for s in env.llama.table.attached()]
    assert not attached, f"{case.id}: a refused attach left sites {attached}"
