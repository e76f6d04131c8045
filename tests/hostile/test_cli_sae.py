"""`sae train|eval|store` and `toy` fed what a careless user types: one line, exit 2.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py and of `saved` here: ``{S}`` a saved SAE of the tiny
model, ``{A}`` its site's stored activations, ``{H}`` a harvest run. Every row names the
tiny model and asks for few tokens and steps, so that a missing check shows as a wrong
answer, not as an hour-long run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SITE = "blocks.0.resid_post"
M = ["--model", "{F}"]
TR = ["sae", "train", SITE, *M, "--tokens", "256", "--batch-size", "64", "--width", "32",
      "--k", "4", "--eval-tokens", "128", "--harvest-tokens", "0"]  # fmt: skip
EV = ["sae", "eval", "{S}", *M, "--tokens", "128"]
ST = ["sae", "store", SITE, *M, "--tokens", "256"]
TOY = ["toy", "--steps", "20", "--no-phase"]

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- sae train: sites and kinds ----------------------------------------------------
    ("train-site-unknown", ["sae", "train", "blocks.7.resid_post", *TR[3:], "--out", "{O}"],
     ["blocks.7"]),
    ("train-site-empty", ["sae", "train", "", *TR[3:], "--out", "{O}"], ["site"]),
    ("train-site-vision", ["sae", "train", "net._blocks.5", *TR[3:], "--out", "{O}"],
     ["net._blocks.5"]),
    ("train-kind-unknown", [*TR, "--kind", "gated", "--out", "{O}"], ["gated"]),
    ("train-unknown-model", ["sae", "train", SITE, "--model", "{T}/none", *TR[5:],
                             "--out", "{O}"], ["none"]),
    # --- sae train: numbers ------------------------------------------------------------
    ("train-width-zero", [*TR, "--width", "0", "--out", "{O}"], ["width"]),
    ("train-width-negative", [*TR, "--width", "-8", "--out", "{O}"], ["width"]),
    ("train-width-huge", [*TR, "--width", "1000000000000", "--out", "{O}"], ["width"]),
    ("train-k-zero", [*TR, "--k", "0", "--out", "{O}"], ["k", "width"]),
    ("train-k-negative", [*TR, "--k", "-2", "--out", "{O}"], ["k", "width"]),
    ("train-k-past-width", [*TR, "--k", "33", "--out", "{O}"], ["width"]),
    ("train-tokens-zero", [*TR, "--tokens", "0", "--out", "{O}"], ["tokens"]),
    ("train-tokens-negative", [*TR, "--tokens", "-256", "--out", "{O}"], ["tokens"]),
    ("train-tokens-below-batch", [*TR, "--tokens", "32", "--out", "{O}"], ["tokens"]),
    ("train-batch-zero", [*TR, "--batch-size", "0", "--out", "{O}"], ["batch"]),
    ("train-batch-negative", [*TR, "--batch-size", "-64", "--out", "{O}"], ["batch"]),
    ("train-lr-zero", [*TR, "--lr", "0", "--out", "{O}"], ["lr"]),
    ("train-lr-negative", [*TR, "--lr", "-0.001", "--out", "{O}"], ["lr"]),
    ("train-lr-nan", [*TR, "--lr", "nan", "--out", "{O}"], ["lr"]),
    ("train-lr-inf", [*TR, "--lr", "inf", "--out", "{O}"], ["lr"]),
    ("train-l1-negative", [*TR, "--kind", "relu", "--l1", "-5", "--out", "{O}"], ["l1"]),
    ("train-l1-nan", [*TR, "--kind", "relu", "--l1", "nan", "--out", "{O}"], ["l1"]),
    ("train-l0-negative", [*TR, "--kind", "jumprelu", "--l0", "-1", "--out", "{O}"], ["l0"]),
    ("train-eval-tokens-zero", [*TR, "--eval-tokens", "0", "--out", "{O}"], ["eval"]),
    ("train-eval-tokens-negative", [*TR, "--eval-tokens", "-128", "--out", "{O}"], ["eval"]),
    ("train-harvest-tokens-negative", [*TR, "--harvest-tokens", "-1", "--out", "{O}"],
     ["harvest"]),
    ("train-checkpoint-zero", [*TR, "--checkpoint-every", "0", "--out", "{O}"], ["checkpoint"]),
    # --- sae train: stored activations -------------------------------------------------
    ("train-activations-missing", [*TR, "--activations", "{T}/none", "--out", "{O}"],
     ["none"]),
    ("train-activations-file", [*TR, "--activations", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("train-activations-foreign", [*TR, "--activations", "{T}/other", "--out", "{O}"],
     ["other"]),
    ("train-activations-other-site", ["sae", "train", "blocks.1.resid_post", *TR[3:],
                                      "--activations", "{A}", "--out", "{O}"], ["blocks.0"]),
    # --- sae train: --out --------------------------------------------------------------
    ("train-out-file", [*TR, "--out", "{T}/afile"], ["file"]),
    ("train-out-dot", [*TR, "--out", "."], ["--out"]),
    ("train-out-empty", [*TR, "--out", ""], ["--out"]),
    ("train-out-under-file", [*TR, "--out", "{T}/afile/run"], ["afile"]),
    ("train-out-foreign", [*TR, "--out", "{T}/other"], ["no mechscope run"]),
    # --- sae eval: what is not an SAE --------------------------------------------------
    ("eval-missing", ["sae", "eval", "{T}/none", *M], ["none"]),
    ("eval-file", ["sae", "eval", "{T}/afile", *M], ["afile"]),
    ("eval-nul-file", ["sae", "eval", "{T}/nul.bin", *M], ["nul.bin"]),
    ("eval-foreign", ["sae", "eval", "{T}/other", *M], ["other"]),
    ("eval-harvest-run", ["sae", "eval", "{H}", *M], ["sae"]),
    # --- sae eval: a real SAE, one wrong option ----------------------------------------
    ("eval-site-unknown", [*EV, "--site", "blocks.7.resid_post"], ["blocks.7"]),
    ("eval-site-empty", [*EV, "--site", ""], ["site"]),
    ("eval-tokens-zero", [*EV, "--tokens", "0"], ["tokens"]),
    ("eval-tokens-negative", [*EV, "--tokens", "-128"], ["tokens"]),
    ("eval-start-window-negative", [*EV, "--start-window", "-1"], ["start_window"]),
    ("eval-corpus-unknown", [*EV, "--corpus", "klingon"], ["klingon"]),
    # --- sae store ---------------------------------------------------------------------
    ("store-dtype-unknown", [*ST, "--store-dtype", "int8", "--out", "{O}"], ["int8"]),
    ("store-site-unknown", ["sae", "store", "blocks.7.mlp.out", *ST[3:], "--out", "{O}"],
     ["blocks.7"]),
    ("store-site-empty", ["sae", "store", "", *ST[3:], "--out", "{O}"], ["site"]),
    ("store-tokens-zero", [*ST, "--tokens", "0", "--out", "{O}"], ["tokens"]),
    ("store-tokens-negative", [*ST, "--tokens", "-1", "--out", "{O}"], ["tokens"]),
    ("store-start-window-negative", [*ST, "--start-window", "-1", "--out", "{O}"],
     ["start_window"]),
    ("store-corpus-unknown", [*ST, "--corpus", "klingon", "--out", "{O}"], ["klingon"]),
    ("store-out-file", [*ST, "--out", "{T}/afile"], ["afile"]),
    ("store-out-dot", [*ST, "--out", "."], ["--out"]),
    ("store-out-empty", [*ST, "--out", ""], ["--out"]),
    ("store-out-under-file", [*ST, "--out", "{T}/afile/acts"], ["afile"]),
    ("store-out-foreign", [*ST, "--out", "{T}/other"], ["no stored activations"]),
    # --- toy ---------------------------------------------------------------------------
    ("toy-n-zero", [*TOY, "--n", "0", "--out", "{O}"], ["n="]),
    ("toy-m-equals-n", [*TOY, "--n", "5", "--m", "5", "--out", "{O}"], ["m < n"]),
    ("toy-m-past-n", [*TOY, "--n", "5", "--m", "9", "--out", "{O}"], ["m < n"]),
    ("toy-m-zero", [*TOY, "--m", "0", "--out", "{O}"], ["m=0"]),
    ("toy-sparsities-malformed", [*TOY, "--sparsities", "0,x", "--out", "{O}"],
     ["--sparsities"]),
    ("toy-sparsities-empty", [*TOY, "--sparsities", "", "--out", "{O}"], ["sparsit"]),
    ("toy-sparsities-commas", [*TOY, "--sparsities", ",,", "--out", "{O}"], ["sparsit"]),
    ("toy-sparsity-one", [*TOY, "--sparsities", "0,1", "--out", "{O}"], ["[0, 1)"]),
    ("toy-sparsity-negative", [*TOY, "--sparsities", "-0.5", "--out", "{O}"], ["[0, 1)"]),
    ("toy-sparsity-nan", [*TOY, "--sparsities", "nan", "--out", "{O}"], ["--sparsities"]),
    ("toy-decay-zero", [*TOY, "--decay", "0", "--out", "{O}"], ["decay"]),
    ("toy-decay-negative", [*TOY, "--decay", "-0.7", "--out", "{O}"], ["decay"]),
    ("toy-decay-nan", [*TOY, "--decay", "nan", "--out", "{O}"], ["decay"]),
    ("toy-steps-zero", [*TOY, "--steps", "0", "--out", "{O}"], ["steps"]),
    ("toy-steps-negative", [*TOY, "--steps", "-10", "--out", "{O}"], ["steps"]),
    ("toy-device-gpu", [*TOY, "--device", "cuda", "--out", "{O}"], ["cpu"]),
    ("toy-out-file", [*TOY, "--out", "{T}/afile"], ["file"]),
    ("toy-out-dot", [*TOY, "--out", "."], ["--out"]),
    ("toy-out-foreign", [*TOY, "--out", "{T}/other"], ["no mechscope run"]),
]
# fmt: on


@pytest.fixture(scope="module")
def saved(harvest_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{S}: an SAE of the tiny model at SITE; {A}: SITE's stored activations; {H}: a harvest."""
    from mechscope.core.activations import store_activations
    from mechscope.sae.model import SAEConfig, SparseAutoencoder
    from mechscope.testing import tiny_chat_model

    root = tmp_path_factory.mktemp("hostile-sae")
    SparseAutoencoder(SAEConfig(d_in=32, width=32, k=4, site=SITE)).save(root / "sae")
    store_activations(tiny_chat_model("llama"), SITE, root / "acts", "fortunes", tokens=256,
                      progress=False)  # fmt: skip
    return {"{S}": root / "sae", "{A}": root / "acts", "{H}": harvest_run}


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, saved, tmp_path: Path) -> None:
    filled = []
    for a in args:
        for key, path in saved.items():
            a = a.replace(key, str(path))
        filled.append(a)
    table.check(filled, needles, tmp_path)
