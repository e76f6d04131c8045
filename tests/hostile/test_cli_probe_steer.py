"""`probe`, `steer` and `steer-sweep` fed what a careless user types: one line, exit 2.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PR = ["probe", "{F}", "--data", "sentiment", "--n", "12", "--test", "4"]
S = ["steer", "hi", "--model", "{F}"]
AA = ["--plus", "love", "--minus", "hate", "--layer", "0"]
SW = ["steer-sweep", "--model", "{F}", "--plus", "love", "--minus", "hate", "--layers", "0"]

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- probe -----------------------------------------------------------------------
    ("probe-data-non-utf8", ["probe", "{F}", "--data", "{T}/bad.json", "--out", "{O}"],
     ["UTF-8"]),
    ("probe-data-folder", ["probe", "{F}", "--data", "{T}", "--out", "{O}"], ["folder"]),
    ("probe-data-broken", ["probe", "{F}", "--data", "{T}/broken.json", "--out", "{O}"],
     ["JSON"]),
    ("probe-data-wrong-type", ["probe", "{F}", "--data", "{T}/list.json", "--out", "{O}"],
     ["list.json"]),
    ("probe-data-missing", ["probe", "{F}", "--data", "{T}/none.json", "--out", "{O}"],
     ["none.json"]),
    ("probe-data-unknown", ["probe", "{F}", "--data", "astrology", "--out", "{O}"],
     ["astrology"]),
    ("probe-layers-malformed", [*PR, "--layers", "3-", "--out", "{O}"], ["3-"]),
    ("probe-layers-out-of-range", [*PR, "--layers", "0-40", "--out", "{O}"], ["40"]),
    ("probe-layers-negative", [*PR, "--layers", "-1", "--out", "{O}"], ["-1"]),
    ("probe-layers-empty", [*PR, "--layers", "", "--out", "{O}"], ["layers"]),
    ("probe-test-too-many", ["probe", "{F}", "--n", "10", "--test", "20", "--out", "{O}"],
     ["test"]),
    ("probe-test-negative", [*PR[:-1], "-1", "--out", "{O}"], ["test"]),
    ("probe-n-zero", ["probe", "{F}", "--n", "0", "--test", "0", "--out", "{O}"], ["n"]),
    ("probe-restarts-zero", [*PR, "--restarts", "0", "--out", "{O}"], ["restarts"]),
    ("probe-epochs-negative", [*PR, "--epochs", "-5", "--out", "{O}"], ["epochs"]),
    ("probe-out-file", [*PR, "--out", "{T}/afile"], ["afile"]),
    ("probe-unknown-model", ["probe", "{T}/none", "--out", "{O}"], ["none"]),
    # --- steer -----------------------------------------------------------------------
    ("steer-method-unknown", [*S, "--topic", "cats", "--method", "magic"], ["magic"]),
    ("steer-no-vector", [*S, "--layer", "0"], ["--plus"]),
    ("steer-two-vectors", [*S, *AA, "--topic", "cats"], ["one"]),
    ("steer-topic-unknown", [*S, "--topic", "zzzqqq", "--layer", "0"], ["zzzqqq"]),
    ("steer-positive-missing", [*S, "--positive", "{T}/none.txt", "--negative",
                                "{T}/none.txt", "--layer", "0"], ["none.txt"]),
    ("steer-positive-non-utf8", [*S, "--positive", "{T}/bad.json", "--negative",
                                 "{T}/bad.json", "--layer", "0"], ["UTF-8"]),
    ("steer-positive-empty", [*S, "--positive", "{T}/empty.txt", "--negative",
                              "{T}/empty.txt", "--layer", "0"], ["empty.txt"]),
    ("steer-positive-folder", [*S, "--positive", "{T}/other", "--negative", "{T}/other",
                               "--layer", "0"], ["folder"]),
    ("steer-positive-only", [*S, "--positive", "{T}/afile", "--layer", "0"], ["--negative"]),
    ("steer-layer-out-of-range", [*S, "--plus", "love", "--minus", "hate", "--layer", "9"],
     ["9"]),
    ("steer-layer-negative", [*S, "--plus", "love", "--minus", "hate", "--layer", "-1"],
     ["-1"]),
    ("steer-plus-empty", [*S, "--plus", "", "--minus", "hate", "--layer", "0"], ["--plus"]),
    ("steer-vector-missing", [*S, "--vector", "{T}/none.st", "--layer", "0"], ["none.st"]),
    ("steer-vector-foreign", [*S, "--vector", "{T}/afile", "--layer", "0"], ["afile"]),
    ("steer-vector-nul", [*S, "--vector", "{T}/nul.bin", "--layer", "0"], ["nul.bin"]),
    ("steer-new-tokens-negative", [*S, *AA, "--max-new-tokens", "-1"], ["max"]),
    ("steer-new-tokens-past-context", [*S, *AA, "--max-new-tokens", "100000"], ["context"]),
    ("steer-coef-nan", [*S, *AA, "--coef", "nan"], ["coef"]),
    ("steer-empty-prompt", ["steer", "", "--model", "{F}", *AA], ["prompt"]),
    ("steer-past-context", ["steer", "{LONG}", "--model", "{F}", *AA], ["context is 2048"]),
    ("steer-save-not-safetensors", [*S, *AA, "--save", "{T}/v.txt"], [".safetensors"]),
    ("steer-save-unwritable", [*S, *AA, "--save", "/proc/x/v.safetensors"], ["/proc"]),
    # --- steer-sweep -----------------------------------------------------------------
    ("sweep-layers-malformed", [*SW[:-1], "a,b", "--out", "{O}"], ["a,b"]),
    ("sweep-layers-out-of-range", [*SW[:-1], "0,7", "--out", "{O}"], ["7"]),
    ("sweep-coefs-malformed", [*SW, "--coefs", "1,x", "--out", "{O}"], ["coefs"]),
    ("sweep-coefs-empty", [*SW, "--coefs", "", "--out", "{O}"], ["coef"]),
    ("sweep-coefs-nan", [*SW, "--coefs", "1,nan", "--out", "{O}"], ["coefs"]),
    ("sweep-samples-zero", [*SW, "--samples", "0", "--out", "{O}"], ["samples"]),
    ("sweep-new-tokens-zero", [*SW, "--max-new-tokens", "0", "--out", "{O}"], ["max"]),
    ("sweep-out-file", [*SW, "--out", "{T}/afile"], ["afile"]),
    ("sweep-words-empty", [*SW, "--words", ",", "--out", "{O}"], ["words"]),
]
# fmt: on


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, tmp_path: Path) -> None:
    table.check(args, needles, tmp_path)
