"""`mechscope harvest`, `merge-harvests` and `explain` as real processes on a tiny model folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mechscope.testing import tiny_model

CHAT = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    model = tiny_model("llama")
    model.tokenizer.chat_template = CHAT
    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def mechscope(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MECHSCOPE_CACHE": str(cache), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mechscope", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_harvest_shards_merge_and_explain(folder: Path, tmp_path: Path) -> None:
    common = [
        "--corpus",
        "fortunes",
        "--tokens",
        "512",
        "--window",
        "16",
        "--batch-size",
        "4",
        "--k",
        "6",
    ]
    for i in (0, 1):
        res = mechscope(
            "harvest",
            str(folder),
            *common,
            "--shard",
            f"{i}/2",
            "--out",
            str(tmp_path / f"s{i}"),
            cache=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        assert "view it: mechscope serve" in res.stdout
    res = mechscope(
        "merge-harvests",
        str(tmp_path / "s0"),
        str(tmp_path / "s1"),
        "--out",
        str(tmp_path / "h"),
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "512 tokens" in res.stdout
    res = mechscope(
        "explain",
        str(tmp_path / "h"),
        "--units",
        "blocks.0.mlp.post:0-2",
        "--sample",
        "1",
        "--explainer",
        str(folder),
        "--show",
        "3",
        "--test",
        "2",
        "--out",
        str(tmp_path / "e"),
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "mean score" in res.stdout and "top_tokens" in res.stdout
    assert "explainer: 4 calls" in res.stdout
    assert (tmp_path / "e" / "scores.parquet").exists()


def test_bad_input_is_one_line(folder: Path, tmp_path: Path) -> None:
    res = mechscope(
        "harvest", str(folder), "--corpus", "nonsense", "--out", str(tmp_path / "x"), cache=tmp_path
    )
    assert res.returncode == 2 and "nonsense" in res.stderr and "Traceback" not in res.stderr
    res = mechscope(
        "harvest", str(folder), "--shard", "3", "--out", str(tmp_path / "x"), cache=tmp_path
    )
    assert res.returncode == 2 and "I/N" in res.stderr
