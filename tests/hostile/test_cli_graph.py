"""`transcoders train|eval` and `graph` fed what a careless user types: one line, exit 2.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py and of `saved` here: ``{R}`` a small finished transcoder
run of the tiny model (trained by the CLI), ``{X}`` a transcoder set of a model of
another shape (3 layers of d_model 48), ``{W}`` a set of another family's tiny model
(GPT-2: same shape, other MLP sites), ``{B}`` a set whose record is broken JSON, ``{N}``
a set whose weights are NUL bytes, ``{E}`` an empty folder, ``{H}`` a harvest run,
``{G}`` a graph run, ``{GEMMA}`` a tiny Gemma 3 folder (post-norms). Every row names the
tiny model and asks for few tokens, so that a missing check shows as a wrong answer, not
as an hour-long run; every fixture folder is compared byte for byte after each row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent
M = ["--model", "{F}"]
TR = ["transcoders", "train", *M, "--corpus", "fortunes", "--width", "16", "--k", "2",
      "--tokens", "512", "--batch-size", "256", "--window", "32", "--eval-tokens", "0"]  # fmt: skip
EV = ["transcoders", "eval", "{R}", *M, "--corpus", "fortunes", "--tokens", "64",
      "--window", "32"]  # fmt: skip
G = ["graph", "{F}", "hello world", "--transcoders", "{R}", "--max-features", "64",
     "--check", "2"]  # fmt: skip
GP = G[3:]  # the graph options without model and prompt

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- transcoders train: --layers -----------------------------------------------------
    ("train-layers-malformed", [*TR, "--layers", "0,x", "--out", "{O}"], ["--layers", "0,x"]),
    ("train-layers-backwards", [*TR, "--layers", "1-0", "--out", "{O}"],
     ["--layers", "backwards"]),
    ("train-layers-negative", [*TR, "--layers", "-1", "--out", "{O}"], ["--layers", "-1"]),
    ("train-layers-out-of-range", [*TR, "--layers", "7", "--out", "{O}"], ["7", "0..1"]),
    ("train-layers-range-past", [*TR, "--layers", "0-5", "--out", "{O}"], ["2", "0..1"]),
    ("train-layers-range-huge", [*TR, "--layers", "0-99999999999", "--out", "{O}"],
     ["--layers", "99999999999"]),
    ("train-layers-empty", [*TR, "--layers", "", "--out", "{O}"], ["--layers"]),
    ("train-layers-commas", [*TR, "--layers", ",,", "--out", "{O}"], ["--layers"]),
    # --- transcoders train: kinds and numbers ---------------------------------------------
    ("train-kind-unknown", [*TR, "--kind", "gated", "--out", "{O}"], ["gated", "topk"]),
    ("train-kind-relu", [*TR, "--kind", "relu", "--out", "{O}"], ["relu", "jumprelu"]),
    ("train-width-zero", [*TR, "--width", "0", "--out", "{O}"], ["width"]),
    ("train-width-negative", [*TR, "--width", "-16", "--out", "{O}"], ["width"]),
    ("train-width-huge", [*TR, "--width", "1000000000000", "--out", "{O}"], ["width"]),
    ("train-k-zero", [*TR, "--k", "0", "--out", "{O}"], ["k", "width"]),
    ("train-k-negative", [*TR, "--k", "-2", "--out", "{O}"], ["k", "width"]),
    ("train-k-past-width", [*TR, "--k", "17", "--out", "{O}"], ["k", "width=16"]),
    ("train-tokens-zero", [*TR, "--tokens", "0", "--out", "{O}"], ["tokens"]),
    ("train-tokens-negative", [*TR, "--tokens", "-512", "--out", "{O}"], ["tokens"]),
    ("train-tokens-below-batch", [*TR, "--tokens", "128", "--out", "{O}"], ["tokens", "256"]),
    ("train-batch-zero", [*TR, "--batch-size", "0", "--out", "{O}"], ["batch"]),
    ("train-batch-negative", [*TR, "--batch-size", "-256", "--out", "{O}"], ["batch"]),
    ("train-batch-not-windows", [*TR, "--batch-size", "250", "--out", "{O}"],
     ["batch", "250", "32"]),
    ("train-window-zero", [*TR, "--window", "0", "--out", "{O}"], ["window"]),
    ("train-window-one", [*TR, "--window", "1", "--batch-size", "256", "--out", "{O}"],
     ["window"]),
    ("train-window-past-context", [*TR, "--window", "4096", "--batch-size", "4096",
                                   "--tokens", "4096", "--out", "{O}"], ["window=4096", "2048"]),
    ("train-lr-zero", [*TR, "--lr", "0", "--out", "{O}"], ["lr"]),
    ("train-lr-negative", [*TR, "--lr", "-0.001", "--out", "{O}"], ["lr"]),
    ("train-lr-nan", [*TR, "--lr", "nan", "--out", "{O}"], ["lr"]),
    ("train-lr-inf", [*TR, "--lr", "inf", "--out", "{O}"], ["lr"]),
    ("train-l0-negative", [*TR, "--kind", "jumprelu", "--l0", "-1", "--out", "{O}"], ["l0"]),
    ("train-l0-nan", [*TR, "--kind", "jumprelu", "--l0", "nan", "--out", "{O}"], ["l0"]),
    ("train-eval-tokens-negative", [*TR, "--eval-tokens", "-512", "--out", "{O}"], ["eval"]),
    ("train-eval-tokens-whole-corpus", [*TR, "--eval-tokens", "1000000000", "--out", "{O}"],
     ["eval"]),
    ("train-checkpoint-zero", [*TR, "--checkpoint-every", "0", "--out", "{O}"], ["checkpoint"]),
    ("train-checkpoint-negative", [*TR, "--checkpoint-every", "-5", "--out", "{O}"],
     ["checkpoint"]),
    ("train-max-steps-negative", [*TR, "--max-steps", "-1", "--out", "{O}"], ["max"]),
    ("train-seed-huge", [*TR, "--seed", str(2**70), "--out", "{O}"], ["seed"]),
    # --- transcoders train: model, corpus, placement --------------------------------------
    ("train-model-missing", ["transcoders", "train", "--model", "{T}/none", *TR[4:],
                             "--out", "{O}"], ["none"]),
    ("train-model-file", ["transcoders", "train", "--model", "{T}/afile", *TR[4:],
                          "--out", "{O}"], ["afile"]),
    ("train-corpus-unknown", [*TR, "--corpus", "klingon", "--out", "{O}"], ["klingon"]),
    ("train-corpus-empty-file", [*TR, "--corpus", "{T}/empty.txt", "--out", "{O}"],
     ["empty.txt"]),
    ("train-dtype-unknown", [*TR, "--dtype", "int8", "--out", "{O}"], ["int8"]),
    ("train-device-unknown", [*TR, "--device", "gpu", "--out", "{O}"], ["gpu"]),
    ("train-device-map-bogus", [*TR, "--device-map", "everywhere", "--out", "{O}"],
     ["--device-map", "everywhere"]),
    # --- transcoders train: --out ---------------------------------------------------------
    ("train-out-file", [*TR, "--out", "{T}/afile"], ["file"]),
    ("train-out-dot", [*TR, "--out", "."], ["--out"]),
    ("train-out-empty", [*TR, "--out", ""], ["--out"]),
    ("train-out-under-file", [*TR, "--out", "{T}/afile/run"], ["afile"]),
    ("train-out-foreign", [*TR, "--out", "{T}/other"], ["no mechscope run"]),
    ("train-out-harvest-run", [*TR, "--out", "{H}"], ["harvest"]),
    ("train-out-graph-run", [*TR, "--out", "{G}"], ["graph"]),
    # --- transcoders eval: what is not a transcoder set -----------------------------------
    ("eval-missing", ["transcoders", "eval", "{T}/none", *EV[3:]], ["none"]),
    ("eval-file", ["transcoders", "eval", "{T}/afile", *EV[3:]], ["afile"]),
    ("eval-nul-file", ["transcoders", "eval", "{T}/nul.bin", *EV[3:]], ["nul.bin"]),
    ("eval-hostile-folder", ["transcoders", "eval", "{T}", *EV[3:]], ["transcoder"]),
    ("eval-foreign", ["transcoders", "eval", "{T}/other", *EV[3:]], ["other"]),
    ("eval-empty-folder", ["transcoders", "eval", "{E}", *EV[3:]], ["transcoder"]),
    ("eval-harvest-run", ["transcoders", "eval", "{H}", *EV[3:]], ["transcoder"]),
    ("eval-graph-run", ["transcoders", "eval", "{G}", *EV[3:]], ["transcoder"]),
    ("eval-broken-record", ["transcoders", "eval", "{B}", *EV[3:]], ["transcoders.json"]),
    ("eval-nul-weights", ["transcoders", "eval", "{N}", *EV[3:]], ["transcoders.safetensors"]),
    ("eval-other-shape", ["transcoders", "eval", "{X}", *EV[3:]], ["d_model"]),
    ("eval-other-family", ["transcoders", "eval", "{W}", *EV[3:]],
     ["transformer.h.0.ln_2", "model.layers.0.post_attention_layernorm"]),
    # --- transcoders eval: a real set, one wrong option -----------------------------------
    ("eval-tokens-zero", [*EV, "--tokens", "0"], ["tokens", "≥ 1"]),
    ("eval-tokens-negative", [*EV, "--tokens", "-64"], ["tokens", "≥ 1"]),
    ("eval-window-zero", [*EV, "--window", "0"], ["window", "≥ 2"]),
    ("eval-window-one", [*EV, "--window", "1"], ["window", "≥ 2"]),
    ("eval-window-past-context", [*EV, "--window", "4096", "--tokens", "4096"],
     ["window=4096", "2048"]),
    ("eval-start-window-negative", [*EV, "--start-window", "-1"], ["start_window", "-1"]),
    ("eval-start-window-past-corpus", [*EV, "--start-window", "1000000000"],
     ["1000000000", "start_window"]),
    ("eval-corpus-unknown", [*EV, "--corpus", "klingon"], ["klingon"]),
    ("eval-model-missing", [*EV[:3], "--model", "{T}/none", *EV[5:]], ["none"]),
    # --- graph: --transcoders -------------------------------------------------------------
    ("graph-transcoders-missing", [*G[:4], "{T}/none", *G[5:], "--out", "{O}"], ["none"]),
    ("graph-transcoders-file", [*G[:4], "{T}/afile", *G[5:], "--out", "{O}"], ["afile"]),
    ("graph-transcoders-nul-file", [*G[:4], "{T}/nul.bin", *G[5:], "--out", "{O}"],
     ["nul.bin"]),
    ("graph-transcoders-empty-folder", [*G[:4], "{E}", *G[5:], "--out", "{O}"],
     ["transcoder"]),
    ("graph-transcoders-hostile-folder", [*G[:4], "{T}", *G[5:], "--out", "{O}"],
     ["transcoder"]),
    ("graph-transcoders-foreign", [*G[:4], "{T}/other", *G[5:], "--out", "{O}"], ["other"]),
    ("graph-transcoders-harvest-run", [*G[:4], "{H}", *G[5:], "--out", "{O}"],
     ["transcoder"]),
    ("graph-transcoders-graph-run", [*G[:4], "{G}", *G[5:], "--out", "{O}"], ["transcoder"]),
    ("graph-transcoders-broken-record", [*G[:4], "{B}", *G[5:], "--out", "{O}"],
     ["transcoders.json"]),
    ("graph-transcoders-nul-weights", [*G[:4], "{N}", *G[5:], "--out", "{O}"],
     ["transcoders.safetensors"]),
    ("graph-transcoders-other-shape", [*G[:4], "{X}", *G[5:], "--out", "{O}"], ["d_model"]),
    ("graph-transcoders-other-family", [*G[:4], "{W}", *G[5:], "--out", "{O}"],
     ["transformer.h.0.ln_2", "model.layers.0.post_attention_layernorm"]),
    ("graph-transcoders-other-family-no-check", [*G[:4], "{W}", *G[5:], "--check", "0",
                                                 "--out", "{O}"], ["transformer.h.0.ln_2"]),
    ("graph-model-post-norms", ["graph", "{GEMMA}", "hello world", *GP, "--out", "{O}"],
     ["post-norm"]),
    ("graph-model-missing", ["graph", "{T}/none", "hello world", *GP, "--out", "{O}"],
     ["none"]),
    # --- graph: --harvest -----------------------------------------------------------------
    ("graph-harvest-missing", [*G, "--harvest", "{T}/none", "--out", "{O}"],
     ["--harvest", "none"]),
    ("graph-harvest-file", [*G, "--harvest", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("graph-harvest-foreign", [*G, "--harvest", "{T}/other", "--out", "{O}"], ["other"]),
    ("graph-harvest-empty-folder", [*G, "--harvest", "{E}", "--out", "{O}"], ["harvest"]),
    ("graph-harvest-transcoder-run", [*G, "--harvest", "{R}", "--out", "{O}"], ["harvest"]),
    # --- graph: --logit and the prompt ----------------------------------------------------
    ("graph-logit-multi-token", [*G, "--logit", " Paris", "--out", "{O}"],
     ["--logit", "' Paris' is 6 tokens"]),
    ("graph-logit-empty", [*G, "--logit", "", "--out", "{O}"], ["--logit", "0 tokens"]),
    ("graph-logit-second-bad", [*G, "--logit", "a", "--logit", "xyz", "--out", "{O}"],
     ["--logit", "'xyz'"]),
    ("graph-prompt-empty", ["graph", "{F}", "", *GP, "--out", "{O}"], ["prompt"]),
    ("graph-prompt-whitespace", ["graph", "{F}", "   \n\t", *GP, "--out", "{O}"], ["prompt"]),
    ("graph-prompt-past-context", ["graph", "{F}", "{LONG}", *GP, "--out", "{O}"],
     ["prompt", "2048"]),
    # --- graph: numbers -------------------------------------------------------------------
    ("graph-max-features-negative", [*G, "--max-features", "-1", "--out", "{O}"],
     ["--max-features", "≥ 0"]),
    ("graph-max-features-text", [*G, "--max-features", "lots", "--out", "{O}"],
     ["--max-features"]),
    ("graph-batch-zero", [*G, "--batch", "0", "--out", "{O}"], ["--batch"]),
    ("graph-batch-negative", [*G, "--batch", "-64", "--out", "{O}"], ["--batch"]),
    ("graph-batch-huge", [*G, "--batch", "1000000000000", "--out", "{O}"], ["--batch"]),
    ("graph-node-threshold-zero", [*G, "--node-threshold", "0", "--out", "{O}"],
     ["--node-threshold", "(0, 1]"]),
    ("graph-node-threshold-negative", [*G, "--node-threshold", "-0.5", "--out", "{O}"],
     ["--node-threshold", "(0, 1]"]),
    ("graph-node-threshold-past-one", [*G, "--node-threshold", "1.5", "--out", "{O}"],
     ["--node-threshold", "(0, 1]"]),
    ("graph-node-threshold-nan", [*G, "--node-threshold", "nan", "--out", "{O}"],
     ["--node-threshold", "nan"]),
    ("graph-node-threshold-inf", [*G, "--node-threshold", "inf", "--out", "{O}"],
     ["--node-threshold", "inf"]),
    ("graph-edge-threshold-zero", [*G, "--edge-threshold", "0", "--out", "{O}"],
     ["--edge-threshold", "(0, 1]"]),
    ("graph-edge-threshold-negative", [*G, "--edge-threshold", "-1", "--out", "{O}"],
     ["--edge-threshold", "(0, 1]"]),
    ("graph-edge-threshold-past-one", [*G, "--edge-threshold", "2", "--out", "{O}"],
     ["--edge-threshold", "(0, 1]"]),
    ("graph-edge-threshold-nan", [*G, "--edge-threshold", "nan", "--out", "{O}"],
     ["--edge-threshold", "nan"]),
    ("graph-edge-threshold-minus-inf", [*G, "--edge-threshold", "-inf", "--out", "{O}"],
     ["--edge-threshold", "inf"]),
    ("graph-check-negative", [*G, "--check", "-1", "--out", "{O}"], ["--check", "≥ 0"]),
    ("graph-heads-negative", [*G, "--heads", "-3", "--out", "{O}"], ["--heads", "≥ 0"]),
    ("graph-device-map-bogus", [*G, "--device-map", "everywhere", "--out", "{O}"],
     ["--device-map"]),
    # --- graph: --out ---------------------------------------------------------------------
    ("graph-out-file", [*G, "--out", "{T}/afile"], ["file"]),
    ("graph-out-dot", [*G, "--out", "."], ["--out"]),
    ("graph-out-empty", [*G, "--out", ""], ["--out"]),
    ("graph-out-under-file", [*G, "--out", "{T}/afile/graph"], ["afile"]),
    ("graph-out-foreign", [*G, "--out", "{T}/other"], ["no mechscope run"]),
    ("graph-out-transcoder-run", [*G, "--out", "{R}"], ["transcoders"]),
    ("graph-out-harvest-run", [*G, "--out", "{H}"], ["harvest"]),
]
# fmt: on


def _cli():
    """conftest.py's in-process `cli` (session fixtures cannot take the `hostile` fixture)."""
    import importlib.util
    import sys

    name = "_hostile_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "conftest.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].cli


@pytest.fixture(scope="session")
def transcoder_run(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished transcoder run of the tiny model, trained by the CLI (read-only)."""
    root = tmp_path_factory.mktemp("hostile-transcoders")
    args = ["transcoders", "train", "--model", str(tiny_folder), "--corpus", "fortunes"]
    args += ["--width", "16", "--k", "2", "--tokens", "2048", "--batch-size", "256"]
    args += ["--window", "32", "--eval-tokens", "512", "--out", str(root / "tc")]
    res = _cli()(*args, cache=root / "cache")
    assert res.code == 0 and res.traceback is None, (res.err, res.traceback)
    return root / "tc"


@pytest.fixture(scope="module")
def saved(
    transcoder_run: Path, harvest_run: Path, tiny_folder: Path, tmp_path_factory
) -> dict[str, Path]:
    """The placeholders of the rows (see the module docstring)."""
    import transformers as tf

    from mechscope.core.model import Model
    from mechscope.testing import save_tiny, tiny_config, tiny_model, tiny_tokenizer
    from mechscope.transcoders import TranscoderSet

    root = tmp_path_factory.mktemp("hostile-graph")
    config = tiny_config("llama")
    config.hidden_size, config.num_hidden_layers = 48, 3
    wide = Model(tf.AutoModelForCausalLM.from_config(config).eval(), tiny_tokenizer(), name="wide")
    TranscoderSet.build(wide, width=16, k=2).save(root / "wide")
    TranscoderSet.build(tiny_model("gpt2"), width=16, k=2).save(root / "gpt2")
    shutil.copytree(transcoder_run / "transcoders", root / "broken")
    (root / "broken" / "transcoders.json").write_text('{"format": "mechscope.transcoder_set/1",')
    shutil.copytree(transcoder_run / "transcoders", root / "nul")
    (root / "nul" / "transcoders.safetensors").write_bytes(b"\0" * 64)
    (root / "empty").mkdir()
    save_tiny("gemma3", root / "gemma")
    args = ["graph", str(tiny_folder), "hello world", "--transcoders", str(transcoder_run)]
    args += ["--max-features", "8", "--check", "0", "--out", str(root / "graph")]
    res = _cli()(*args, cache=root / "cache")
    assert res.code == 0 and res.traceback is None, (res.err, res.traceback)
    return {"{R}": transcoder_run, "{X}": root / "wide", "{W}": root / "gpt2",
            "{B}": root / "broken", "{N}": root / "nul", "{E}": root / "empty",
            "{H}": harvest_run, "{GEMMA}": root / "gemma", "{G}": root / "graph"}  # fmt: skip


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, saved, tmp_path: Path, hostile) -> None:
    def fill(a: str) -> str:
        for key, path in sorted(saved.items(), key=lambda kv: -len(kv[0])):
            a = a.replace(key, str(path))
        return a

    before = {key: hostile.snapshot(path) for key, path in saved.items()}
    table.check([fill(a) for a in args], [fill(n) for n in needles], tmp_path)
    after = {key: hostile.snapshot(path) for key, path in saved.items()}
    changed = [key for key in saved if before[key] != after[key]]
    assert not changed, f"a failed command changed {changed}"


def test_the_rows_are_one_mistake_from_a_working_command(saved, tiny_folder, tmp_path, hostile):
    """`TR`, `EV` and `G` as they stand run to the end: each row's error is its own mistake."""
    cache = tmp_path / "cache"
    fill = {"{F}": str(tiny_folder), **{k: str(v) for k, v in saved.items()}}
    for name, base in (("tc", TR), ("eval", EV), ("graph", G)):
        args = [fill.get(a, a) for a in base]
        args += [] if name == "eval" else ["--out", str(tmp_path / name)]
        res = hostile.cli(*args, cache=cache)
        assert res.code == 0 and res.traceback is None, (name, res.err[-2000:], res.traceback)
