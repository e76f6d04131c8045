"""`models`, `sites`, `run` and `ioi` fed what a careless user types: one line, exit 2.

Each row is (id, arguments, words the one error line must hold); the placeholders are
those of `Table` in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# fmt: off
CASES: list[tuple[str, list[str], list[str]]] = [
    # --- models ----------------------------------------------------------------------
    ("run-unknown-model", ["run", "no-such-model-xyz", "hi"], ["no-such-model-xyz"]),
    ("run-empty-model", ["run", "", "hi"], ["empty"]),
    ("run-blank-model", ["run", "   ", "hi"], ["empty"]),
    ("run-file-as-model", ["run", "{T}/afile", "hi"], ["afile"]),
    ("run-json-as-model", ["run", "{T}/broken.json", "hi"], ["broken.json"]),
    ("run-folder-not-model", ["run", "{T}/other", "hi"], ["other"]),
    ("run-missing-gguf", ["run", "{T}/none.gguf", "hi"], ["none.gguf"]),
    ("run-fake-gguf", ["run", "{T}/nul.bin", "hi"], ["nul.bin"]),
    ("sites-unknown-model", ["sites", "{T}/nothing-here"], ["nothing-here"]),
    ("sites-file-as-model", ["sites", "{T}/bad.json"], ["bad.json"]),
    ("sites-pattern-no-match", ["sites", "{F}", "--pattern", "zzz.*"], ["zzz.*"]),
    # --- sites -----------------------------------------------------------------------
    ("run-unknown-site", ["run", "{F}", "hi", "--save", "blocks.99.mlp.post"], ["blocks.99"]),
    ("run-empty-site", ["run", "{F}", "hi", "--save", ""], ["site"]),
    ("run-bad-glob", ["run", "{F}", "hi", "--save", "nothing.*"], ["nothing"]),
    ("run-gpt2-site-on-llama", ["run", "{F}", "hi", "--save", "transformer.h.0.mlp"],
     ["transformer.h.0.mlp"]),
    ("run-negative-layer-site", ["run", "{F}", "hi", "--save", "blocks.-1.mlp.post"],
     ["blocks.-1"]),
    ("run-site-part-unknown", ["run", "{F}", "hi", "--save", "blocks.0.soul"], ["soul"]),
    # --- numbers ---------------------------------------------------------------------
    ("run-top-zero", ["run", "{F}", "hi", "--top", "0"], ["--top"]),
    ("run-top-negative", ["run", "{F}", "hi", "--top", "-3"], ["--top"]),
    ("run-top-huge", ["run", "{F}", "hi", "--top", "1000000000000"], ["--top"]),
    ("run-top-text", ["run", "{F}", "hi", "--top", "many"], ["top"]),
    ("run-top-float", ["run", "{F}", "hi", "--top", "2.5"], ["top"]),
    ("run-dtype-unknown", ["run", "{F}", "hi", "--dtype", "float7"], ["float7"]),
    ("run-device-unknown", ["run", "{F}", "hi", "--device", "tpu:9"], ["tpu"]),
    ("run-device-cuda-absent", ["run", "{F}", "hi", "--device", "cuda:7"], ["cuda"]),
    ("run-device-map-json", ["run", "{F}", "hi", "--device-map", "{{nope"], ["device-map"]),
    # --- prompts ---------------------------------------------------------------------
    ("run-past-context", ["run", "{F}", "{LONG}"], ["context is 2048"]),
    ("run-empty-prompt", ["run", "{F}", ""], ["prompt", "empty"]),
    ("run-empty-prompt-no-bos", ["run", "{F}", "", "--no-bos"], ["empty"]),
    # --- --out -----------------------------------------------------------------------
    ("run-out-without-save", ["run", "{F}", "hi", "--out", "{O}"], ["--save"]),
    ("run-out-unwritable", ["run", "{F}", "hi", "--save", "blocks.0.mlp.post",
                            "--out", "/proc/mechscope/c.safetensors"], ["/proc"]),
    ("run-out-folder", ["run", "{F}", "hi", "--save", "blocks.0.mlp.post", "--out", "{T}"],
     [".safetensors"]),
    ("run-out-under-file", ["run", "{F}", "hi", "--save", "blocks.0.mlp.post",
                            "--out", "{T}/afile/c.safetensors"], ["afile"]),
    # --- ioi -------------------------------------------------------------------------
    ("ioi-prompts-zero", ["ioi", "{F}", "--prompts", "0", "--out", "{O}"], ["n_prompts"]),
    ("ioi-prompts-negative", ["ioi", "{F}", "--prompts", "-4", "--out", "{O}"], ["n_prompts"]),
    ("ioi-sweep-prompts-zero", ["ioi", "{F}", "--sweep-prompts", "0", "--out", "{O}"],
     ["sweep_prompts"]),
    ("ioi-resid-prompts-negative", ["ioi", "{F}", "--resid-prompts", "-1", "--out", "{O}"],
     ["resid_prompts"]),
    ("ioi-threshold-nan", ["ioi", "{F}", "--threshold", "nan", "--out", "{O}"],
     ["threshold"]),
    ("ioi-unknown-model", ["ioi", "{T}/none", "--out", "{O}"], ["none"]),
    ("ioi-out-file", ["ioi", "{F}", "--out", "{T}/afile"], ["afile"]),
    ("ioi-out-dot", ["ioi", "{F}", "--out", "."], ["--out"]),
    # --- tour ------------------------------------------------------------------------
    ("tour-unknown-model", ["tour", "--model", "{T}/none"], ["none"]),
]
# fmt: on


@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_row(args: list[str], needles: list[str], table, tmp_path: Path) -> None:
    table.check(args, needles, tmp_path)


def test_special_tokens_only_prompt_runs(table, tmp_path: Path, hostile) -> None:
    """A prompt of only special tokens is a prompt: it runs (exit 0, no traceback)."""
    from transformers import AutoTokenizer

    specials = "".join(AutoTokenizer.from_pretrained(table.folder).all_special_tokens)
    res = hostile.cli("run", str(table.folder), specials, "--no-bos", cache=tmp_path)
    assert res.traceback is None and res.code == 0, (res.code, res.err, res.traceback)
    assert "next token after" in res.out


@pytest.mark.model
def test_a_prompt_past_smollm2s_context_fails_at_once(hostile) -> None:
    """9,001 words (more tokens than SmolLM2's 8,192) fail before any forward, naming the limit."""
    res = hostile.cli("run", "smollm2-135m", "hello " * 9001)
    hostile.assert_user_error(res, "context is 8192")
