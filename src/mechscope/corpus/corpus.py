"""`Corpus`: a deterministic, lazy stream of documents from built-in and user sources.

A mix interleaves its sources document by document, so every prefix of it is
mixed. `open_corpus` parses a spec (a name, a path, or a comma-separated mix).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, closest
from .files import (
    _check_columns,
    _field,
    _hf,
    _hf_columns,
    _json_record,
    _jsonl,
    _parquet,
    _pyarrow,
    _txt,
)
from .sources import _READERS, DEFAULT_CORPUS, DEFAULT_MIX, SOURCES, USER_SUFFIXES

# --- corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str  # a built-in name, or the file or folder name
    kind: str  # builtin, txt, jsonl, parquet, hf, folder
    path: Path | None = None
    text_field: str = "text"
    files: tuple[Path, ...] = ()  # a folder's files, in reading order

    def documents(self) -> Iterator[str]:
        if self.kind == "builtin":
            return _READERS[self.name]()
        assert self.path is not None
        if self.kind == "folder":
            return (d for f in self.files for d in _file_documents(f, self.text_field))
        if self.kind == "hf":
            return _hf(self.path, self.text_field)
        return _file_documents(self.path, self.text_field)

    def record(self) -> dict[str, Any]:
        if self.kind == "builtin":
            info = SOURCES[self.name]
            return {
                "name": self.name,
                "kind": "builtin",
                "description": info.description,
                "paths": list(info.paths),
                "package": info.package,
                "version": _dpkg_version(info.package),
                "licence": info.licence,
            }
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "path": str(self.path)}
        if self.kind in ("jsonl", "parquet", "hf", "folder"):
            out["text_field"] = self.text_field
        if self.kind == "folder":
            out["files"] = [str(f) for f in self.files]
        elif self.path is not None and self.path.is_file():
            out["bytes"] = self.path.stat().st_size
        return out


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl(path, text_field)
    if suffix == ".parquet":
        return _parquet(path, text_field)
    return _txt(path)


def _dpkg_version(package: str) -> str | None:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _round_robin(iterators: Sequence[Iterator[str]]) -> Iterator[str]:
    live = list(iterators)
    while live:
        for it in list(live):
            try:
                yield next(it)
            except StopIteration:
                live.remove(it)


@dataclass(frozen=True)
class Corpus:
    """A deterministic, lazy stream of documents from one source or a round-robin mix.

    Build with `open_corpus`. ``documents()`` starts a fresh pass each call;
    ``record()`` describes the sources for a run's config.json.

    Example::

        corpus = open_corpus("austen,fortunes")
        next(corpus.documents())[:60]              # the start of the first Austen document
        corpus.record()["sources"][1]["package"]   # "fortunes"
    """

    spec: str
    sources: tuple[_Source, ...] = field(repr=False)

    def documents(self) -> Iterator[str]:
        """The documents in order; a mix takes one from each source in turn."""
        its = [s.documents() for s in self.sources]
        return its[0] if len(its) == 1 else _round_robin(its)

    def record(self) -> dict[str, Any]:
        """The spec and, per source, its path(s), Debian package and version, licence."""
        return {"spec": self.spec, "sources": [s.record() for s in self.sources]}

    def __repr__(self) -> str:
        return f"Corpus({self.spec!r}: {', '.join(s.name for s in self.sources)})"


def open_corpus(spec: str | Path | Sequence[str | Path], *, text_field: str = "text") -> Corpus:
    """A corpus from a built-in name, a path, a comma-separated mix, or a list of these.

    Built-in names: ``"default"`` (austen, gcide, fortunes and pydocs, one
    document from each in turn) and the keys of `SOURCES`. Paths: a .txt
    file (blank-line paragraphs grouped into documents of about 4,000
    characters), a .jsonl file or .parquet file (documents in `text_field`),
    a folder saved by HF ``datasets`` (its `text_field` column), or a folder
    of such files (read in sorted order).

    >>> open_corpus("austen,fortunes")  # doctest: +SKIP
    Corpus('austen,fortunes': austen, fortunes)
    """
    parts = _split_spec(spec)
    names: list[str] = []
    sources: list[_Source] = []
    for part in parts:
        name, found = _resolve(part, text_field)
        names.append(name)
        sources.extend(s for s in found if s not in sources)
    return Corpus(",".join(dict.fromkeys(names)), tuple(sources))


def _split_spec(spec: object) -> list[str | Path]:
    if isinstance(spec, Path):
        return [spec]
    if isinstance(spec, str):
        if spec.strip() and Path(spec.strip()).expanduser().exists():
            return [spec.strip()]
        parts: list[str | Path] = [p.strip() for p in spec.split(",") if p.strip()]
    elif isinstance(spec, Sequence):
        parts = [p for s in spec for p in _split_spec(s)]
    else:
        raise InputError(f"a corpus spec is a name, a path or a list of them, not {type(spec)}")
    if not parts:
        raise InputError(f"the corpus spec is empty; valid names: {_valid_names()}")
    return parts


def _valid_names() -> str:
    return ", ".join([DEFAULT_CORPUS, *SOURCES])


def _resolve(part: str | Path, text_field: str) -> tuple[str, list[_Source]]:
    if isinstance(part, str) and part.lower() == DEFAULT_CORPUS:
        return DEFAULT_CORPUS, [_builtin(n) for n in DEFAULT_MIX]
    if isinstance(part, str) and part.lower() in SOURCES:
        return part.lower(), [_builtin(part.lower())]
    path = Path(part).expanduser()
    if not path.exists():
        near = closest(str(part).lower(), [DEFAULT_CORPUS, *SOURCES], n=2)
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
        raise InputError(
            f"unknown corpus {str(part)!r}{hint}: give a built-in name ({_valid_names()}) "
            f"or the path of an existing {', '.join(USER_SUFFIXES)} file or folder"
        )
    path = path.resolve()
    return str(path), [_path_source(path, text_field)]


def _builtin(name: str) -> _Source:
    info = SOURCES[name]
    if not info.installed():
        raise InputError(
            f"the built-in corpus {name!r} needs the Debian package {info.package}, "
            f"which is not installed: {info.install}"
        )
    if name == "austen" and importlib.util.find_spec("rdata") is None:
        raise InputError(
            "the built-in corpus 'austen' needs the Python package rdata: pip install rdata"
        )
    return _Source(name, "builtin")


def _path_source(path: Path, text_field: str) -> _Source:
    if path.is_file():
        _check_file(path, text_field)
        return _Source(path.name, path.suffix.lower()[1:], path, text_field)
    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if "train" not in splits:
            raise InputError(
                f"{path} holds several splits ({', '.join(splits)}): give the folder of one"
            )
        path = path / "train"
    if (path / "state.json").exists() or (path / "dataset_info.json").exists():
        _check_columns(path, _hf_columns(path), text_field)
        return _Source(path.name, "hf", path, text_field)
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in USER_SUFFIXES)
    if not files:
        raise InputError(f"the folder {path} holds no {', '.join(USER_SUFFIXES)} files")
    for f in files:
        _check_file(f, text_field)
    return _Source(path.name, "folder", path, text_field, tuple(files))


def _check_file(path: Path, text_field: str) -> None:
    """Fail at open time, not mid-harvest: a known suffix, and the text field present."""
    suffix = path.suffix.lower()
    if suffix not in USER_SUFFIXES:
        raise InputError(
            f"cannot read {path}: corpus files are {', '.join(USER_SUFFIXES)} "
            "(or a folder saved by HF datasets)"
        )
    if suffix == ".parquet":
        names = _pyarrow().parquet.ParquetFile(path).schema_arrow.names
        _check_columns(path, names, text_field)
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    _field(_json_record(path, number, line), text_field, path, number)
                    return
        raise InputError(f"{path} is empty")
