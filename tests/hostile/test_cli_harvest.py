"""`harvest` and `merge-harvests` fed what a careless user types: one line, exit 2.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py. Every harvest row asks for few tokens, so that a
missing check shows as a wrong answer, not as an hour-long harvest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

H = ["harvest", "{F}", "--tokens", "64", "--window", "16"]

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- --out -----------------------------------------------------------------------
    ("out-file", [*H, "--out", "{T}/afile"], ["file"]),
    ("out-dot", [*H, "--out", "."], ["--out"]),
    ("out-empty", [*H, "--out", ""], ["--out"]),
    ("out-foreign", [*H, "--out", "{T}/other"], ["no mechscope run"]),
    ("out-proc", [*H, "--out", "/proc/x/run"], ["cannot create"]),
    ("out-under-file", [*H, "--out", "{T}/afile/run"], ["afile"]),
    # --- numbers ---------------------------------------------------------------------
    ("tokens-zero", ["harvest", "{F}", "--tokens", "0", "--out", "{O}"], ["tokens"]),
    ("tokens-negative", ["harvest", "{F}", "--tokens", "-5", "--out", "{O}"], ["tokens"]),
    ("tokens-text", ["harvest", "{F}", "--tokens", "lots", "--out", "{O}"], ["tokens"]),
    ("window-zero", [*H, "--window", "0", "--out", "{O}"], ["window"]),
    ("window-one", [*H, "--window", "1", "--out", "{O}"], ["window"]),
    ("window-past-context", [*H, "--window", "100000", "--out", "{O}"], ["window"]),
    ("k-negative", [*H, "--k", "-1", "--out", "{O}"], ["k"]),
    ("k-zero", [*H, "--k", "0", "--out", "{O}"], ["k"]),
    ("random-negative", [*H, "--random", "-2", "--out", "{O}"], ["random"]),
    ("batch-zero", [*H, "--batch-size", "0", "--out", "{O}"], ["batch"]),
    ("batch-negative", [*H, "--batch-size", "-8", "--out", "{O}"], ["batch"]),
    # --- shards ----------------------------------------------------------------------
    ("shard-malformed", [*H, "--shard", "2of3", "--out", "{O}"], ["shard"]),
    ("shard-empty", [*H, "--shard", "", "--out", "{O}"], ["shard"]),
    ("shard-out-of-range", [*H, "--shard", "3/3", "--out", "{O}"], ["shard"]),
    ("shard-negative", [*H, "--shard", "-1/3", "--out", "{O}"], ["shard"]),
    ("shard-zero-parts", [*H, "--shard", "0/0", "--out", "{O}"], ["shard"]),
    ("shard-more-than-windows", [*H, "--shard", "0/64", "--out", "{O}"], ["shard"]),
    # --- corpora and sites -----------------------------------------------------------
    ("unknown-corpus", [*H, "--corpus", "klingon", "--out", "{O}"], ["klingon"]),
    ("corpus-missing-file", [*H, "--corpus", "{T}/none.txt", "--out", "{O}"], ["none.txt"]),
    ("corpus-empty-file", [*H, "--corpus", "{T}/empty.txt", "--out", "{O}"], ["empty.txt"]),
    ("corpus-folder-of-nothing", [*H, "--corpus", "{T}/other/nothing", "--out", "{O}"],
     ["nothing"]),
    ("corpus-empty-name", [*H, "--corpus", "", "--out", "{O}"], ["corpus"]),
    ("corpus-bad-mix", [*H, "--corpus", "fortunes:abc", "--out", "{O}"], ["fortunes:abc"]),
    ("unknown-site", [*H, "--sites", "blocks.7.mlp.post", "--out", "{O}"], ["blocks.7"]),
    ("empty-site", [*H, "--sites", "", "--out", "{O}"], ["site"]),
    ("engine-unknown", [*H, "--engine", "spark", "--out", "{O}"], ["spark"]),
    ("engine-workers-zero", [*H, "--engine", "ray", "--workers", "0", "--out", "{O}"],
     ["workers"]),
    ("unknown-model", ["harvest", "{T}/none", "--tokens", "64", "--out", "{O}"], ["none"]),
    # --- merge-harvests --------------------------------------------------------------
    ("merge-no-parts", ["merge-harvests", "--out", "{O}"], ["parts"]),
    ("merge-missing-part", ["merge-harvests", "{T}/none", "--out", "{O}"], ["none"]),
    ("merge-file-part", ["merge-harvests", "{T}/afile", "--out", "{O}"], ["afile"]),
    ("merge-foreign-part", ["merge-harvests", "{T}/other", "--out", "{O}"], ["other"]),
    ("merge-out-file", ["merge-harvests", "{T}/other", "--out", "{T}/afile"], []),
]
# fmt: on


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, tmp_path: Path) -> None:
    table.check(args, needles, tmp_path)


def test_merge_of_one_harvest_twice_is_refused(table, tmp_path: Path, hostile) -> None:
    """Merging a shard with itself would count its windows twice: one line, nothing written."""
    part = tmp_path / "part"
    res = hostile.cli(
        *[table.fill(a, part) for a in H],
        "--shard",
        "0/2",
        "--batch-size",
        "1",
        "--out",
        str(part),
        cache=tmp_path / "cache",
    )
    assert res.code == 0, res.err
    out = tmp_path / "merged"
    res = hostile.cli(
        "merge-harvests", str(part), str(part), "--out", str(out), cache=tmp_path / "cache"
    )
    hostile.assert_user_error(res, "part", out=out, before=None)
