"""`explain` fed what a careless user types: one line, exit 2, nothing written.

Each row is (id, arguments, words the one error line must hold); ``{H}`` is a small
finished harvest of the tiny model, the other placeholders are those of `Table`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E = ["explain", "{H}", "--explainer", "{F}"]
UNIT = ["--units", "blocks.0.mlp.post:0"]

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    ("missing-run", ["explain", "{T}/none", "--out", "{O}"], ["none"]),
    ("file-run", ["explain", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("foreign-run", ["explain", "{T}/other", "--out", "{O}"], ["other"]),
    ("no-units", [*E, "--out", "{O}"], ["units"]),
    ("sample-negative", [*E, "--sample", "-1", "--out", "{O}"], ["sample"]),
    ("sample-huge", [*E, "--sample", "1000000000000", "--out", "{O}"], ["sample"]),
    ("units-malformed", [*E, "--units", "blocks.0.mlp.post:a-b", "--out", "{O}"], ["units"]),
    ("units-reversed-range", [*E, "--units", "blocks.0.mlp.post:9-3", "--out", "{O}"],
     ["9-3"]),
    ("units-empty", [*E, "--units", "", "--out", "{O}"], ["units"]),
    ("units-unknown-site", [*E, "--units", "blocks.9.mlp.post:0", "--out", "{O}"],
     ["blocks.9"]),
    ("units-out-of-range", [*E, "--units", "blocks.0.mlp.post:99999", "--out", "{O}"],
     ["99999"]),
    ("units-neuron-form-unknown", [*E, "--units", "L40 N3", "--out", "{O}"], ["L40 N3"]),
    ("explainer-missing", ["explain", "{H}", *UNIT, "--explainer", "{T}/none", "--out", "{O}"],
     ["none"]),
    ("explainer-empty", ["explain", "{H}", *UNIT, "--explainer", "", "--out", "{O}"],
     ["empty"]),
    ("explainer-url-no-model", ["explain", "{H}", *UNIT, "--explainer", "http://127.0.0.1:9/v1",
                                "--out", "{O}"], ["explainer"]),
    ("explainer-url-bad-port", ["explain", "{H}", *UNIT, "--explainer",
                                "http://127.0.0.1:99999/v1@m", "--out", "{O}"], ["99999"]),
    ("simulator-missing", [*E, *UNIT, "--simulator", "{T}/none", "--out", "{O}"], ["none"]),
    ("show-zero", [*E, *UNIT, "--show", "0", "--out", "{O}"], ["show"]),
    ("show-negative", [*E, *UNIT, "--show", "-2", "--out", "{O}"], ["show"]),
    ("test-zero", [*E, *UNIT, "--test", "0", "--out", "{O}"], ["test"]),
    ("test-negative", [*E, *UNIT, "--test", "-1", "--out", "{O}"], ["test"]),
    ("out-file", [*E, *UNIT, "--out", "{T}/afile"], ["afile"]),
    ("out-dot", [*E, *UNIT, "--out", "."], ["--out"]),
    ("out-is-the-harvest", [*E, *UNIT, "--out", "{H}"], ["harvest run"]),
    ("engine-unknown", [*E, *UNIT, "--engine", "spark", "--out", "{O}"], ["spark"]),
]
# fmt: on


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, harvest_run: Path, tmp_path: Path) -> None:
    before = {str(p): p.read_bytes() for p in harvest_run.rglob("*") if p.is_file()}
    table.check([a.replace("{H}", str(harvest_run)) for a in args], needles, tmp_path)
    after = {str(p): p.read_bytes() for p in harvest_run.rglob("*") if p.is_file()}
    assert after == before, "a failed explain changed the harvest it read"
