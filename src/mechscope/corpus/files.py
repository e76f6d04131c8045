"""User corpora: .txt, .jsonl and .parquet files, and folders saved by HF ``datasets``.

Each reader yields documents (strings); a malformed file gives one line naming
the file, the line or column at fault and what is valid.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .sources import _group, _paragraphs

# --- user sources ------------------------------------------------------------------------


def _txt(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        yield from _group(_paragraphs(f))


def _jsonl(path: Path, text_field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                text = _field(_json_record(path, number, line), text_field, path, number)
                if text.strip():
                    yield text


def _json_record(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}, line {number}: not JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}, line {number}: each line must be a JSON object")
    return record


def _field(record: dict[str, Any], text_field: str, path: Path, number: int) -> str:
    if text_field not in record:
        raise InputError(
            f"{path}, line {number}: no field {text_field!r}; it has "
            f"{', '.join(map(repr, record)) or 'no fields'}: pass text_field= one of them"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise InputError(f"{path}, line {number}: field {text_field!r} is not a string")
    return text


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(
            "reading .parquet and HF datasets needs pyarrow: pip install pyarrow"
        ) from None
    return pyarrow


def _check_columns(path: Path, names: Sequence[str], text_field: str) -> None:
    if text_field not in names:
        raise InputError(
            f"{path} has no column {text_field!r}; it has {', '.join(map(repr, names))}: "
            "pass text_field= one of them"
        )


def _parquet(path: Path, text_field: str) -> Iterator[str]:
    pq = _pyarrow().parquet
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=[text_field]):
        yield from (t for t in batch.column(0).to_pylist() if t and t.strip())


def _hf_arrow_files(path: Path) -> list[Path]:
    state = path / "state.json"
    if state.exists():
        files = json.loads(state.read_text())["_data_files"]
        return [path / f["filename"] for f in files]
    return sorted(path.glob("*.arrow"))


def _hf_columns(path: Path) -> list[str]:
    if importlib.util.find_spec("datasets") is not None:
        import datasets  # pyright: ignore[reportMissingImports]  # optional

        return list(datasets.load_from_disk(str(path)).column_names)
    pa = _pyarrow()
    files = _hf_arrow_files(path)
    if not files:
        raise InputError(f"{path} looks like a HF dataset folder but holds no .arrow files")
    with pa.memory_map(str(files[0])) as source:
        return list(pa.ipc.open_stream(source).schema.names)


def _hf(path: Path, text_field: str) -> Iterator[str]:
    if importlib.util.find_spec("datasets") is not None:
        import datasets  # pyright: ignore[reportMissingImports]  # optional

        for batch in datasets.load_from_disk(str(path)).iter(batch_size=256):
            yield from (t for t in batch[text_field] if t and t.strip())
        return
    pa = _pyarrow()
    for file in _hf_arrow_files(path):
        with pa.memory_map(str(file)) as source:
            for batch in pa.ipc.open_stream(source):
                yield from (t for t in batch.column(text_field).to_pylist() if t and t.strip())
