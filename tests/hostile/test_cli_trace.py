"""`trace` and `edit` fed what a careless user types: one line, exit 2, nothing written.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

P = "The capital of France is"
T = ["trace", "{F}", P, "--subject", "France"]
ED = ["edit", "{F}", P, "--subject", "France", "--relation", "country_capital", "--new", " Rome"]

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- trace: prompts and subjects -------------------------------------------------
    ("trace-no-subject", ["trace", "{F}", P, "--out", "{O}"], ["subject"]),
    ("trace-no-prompt-no-facts", ["trace", "{F}", "--out", "{O}"], ["prompt"]),
    ("trace-subject-absent", ["trace", "{F}", P, "--subject", "Spain", "--out", "{O}"],
     ["Spain"]),
    ("trace-subject-empty", ["trace", "{F}", P, "--subject", "", "--out", "{O}"], ["subject"]),
    ("trace-empty-prompt", ["trace", "{F}", "", "--subject", "France", "--out", "{O}"],
     ["prompt"]),
    ("trace-past-context", ["trace", "{F}", "{LONG}", "--subject", "hello", "--out", "{O}"],
     ["context is 2048"]),
    ("trace-object-empty", [*T, "--object", "", "--out", "{O}"], ["object"]),
    # --- trace: numbers --------------------------------------------------------------
    ("trace-samples-zero", [*T, "--samples", "0", "--out", "{O}"], ["samples"]),
    ("trace-samples-negative", [*T, "--samples", "-3", "--out", "{O}"], ["samples"]),
    ("trace-window-zero", [*T, "--window", "0", "--out", "{O}"], ["window"]),
    ("trace-noise-negative", [*T, "--noise", "-1", "--out", "{O}"], ["noise"]),
    ("trace-noise-nan", [*T, "--noise", "nan", "--out", "{O}"], ["noise"]),
    ("trace-noise-inf", [*T, "--noise", "inf", "--out", "{O}"], ["noise"]),
    ("trace-kinds-unknown", [*T, "--kinds", "hidden,soul", "--out", "{O}"], ["soul"]),
    ("trace-kinds-empty", [*T, "--kinds", "", "--out", "{O}"], ["kinds"]),
    ("trace-replace-empty", [*T, "--replace-with", ",,", "--out", "{O}"], ["replace"]),
    ("trace-replace-self", [*T, "--replace-with", "France", "--out", "{O}"], ["France"]),
    # --- trace --facts ---------------------------------------------------------------
    ("facts-non-utf8", ["trace", "{F}", "--facts", "{T}/bad.json", "--out", "{O}"], ["UTF-8"]),
    ("facts-folder", ["trace", "{F}", "--facts", "{T}", "--out", "{O}"], ["folder"]),
    ("facts-broken", ["trace", "{F}", "--facts", "{T}/broken.json", "--out", "{O}"], ["JSON"]),
    ("facts-wrong-type", ["trace", "{F}", "--facts", "{T}/list.json", "--out", "{O}"],
     ["list.json"]),
    ("facts-empty-file", ["trace", "{F}", "--facts", "{T}/empty.txt", "--out", "{O}"],
     ["empty.txt"]),
    ("facts-unknown-relation", ["trace", "{F}", "--facts", "capital_of_mars", "--out", "{O}"],
     ["capital_of_mars"]),
    ("facts-n-zero", ["trace", "{F}", "--facts", "all", "--n", "0", "--out", "{O}"], ["n"]),
    ("facts-and-prompt", ["trace", "{F}", P, "--facts", "all", "--out", "{O}"], ["facts"]),
    ("trace-out-file", [*T, "--out", "{T}/afile"], ["afile"]),
    ("trace-out-dot", [*T, "--out", "."], ["--out"]),
    ("trace-unknown-model", ["trace", "{T}/none", P, "--subject", "France", "--out", "{O}"],
     ["none"]),
    # --- edit ------------------------------------------------------------------------
    ("edit-subject-absent", ["edit", "{F}", P, "--subject", "Peru", "--new", " Rome",
                             "--out", "{O}"], ["Peru"]),
    ("edit-new-empty", [*ED[:-1], "", "--out", "{O}"], ["new"]),
    ("edit-new-equals-old", [*ED[:-1], " Paris", "--object", " Paris", "--out", "{O}"],
     ["new"]),
    ("edit-layer-out-of-range", [*ED, "--layer", "9", "--out", "{O}"], ["9"]),
    ("edit-layer-negative", [*ED, "--layer", "-1", "--out", "{O}"], ["-1"]),
    ("edit-steps-zero", [*ED, "--steps", "0", "--out", "{O}"], ["steps"]),
    ("edit-prefixes-negative", [*ED, "--prefixes", "-1", "--out", "{O}"], ["prefixes"]),
    ("edit-cov-tokens-zero", [*ED, "--cov-tokens", "0", "--out", "{O}"], ["cov"]),
    ("edit-n-neighbours-negative", [*ED, "--n-neighbours", "-1", "--out", "{O}"],
     ["neighbours"]),
    ("edit-neighbours-non-utf8", [*ED, "--neighbours", "{T}/bad.json", "--out", "{O}"],
     ["UTF-8"]),
    ("edit-neighbours-missing", [*ED, "--neighbours", "{T}/none.txt", "--out", "{O}"],
     ["none.txt"]),
    ("edit-neighbours-folder", [*ED, "--neighbours", "{T}/other", "--out", "{O}"],
     ["folder"]),
    ("edit-corpus-unknown", [*ED, "--corpus", "klingon", "--out", "{O}"], ["klingon"]),
    ("edit-relation-unknown", [*ED, "--relation", "capital_of_mars", "--out", "{O}"],
     ["capital_of_mars"]),
    ("edit-out-file", [*ED, "--out", "{T}/afile"], ["afile"]),
]
# fmt: on


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, tmp_path: Path) -> None:
    table.check(args, needles, tmp_path)
