"""Damaged result files: every result type, every way a file goes wrong, one mechscope error.

The result types are enumerated from the registry (`mechscope.results.FORMATS`), each
built small from `tests/samples` (the round-trip samples; `test_every_format_is_here`
fails when a format has none). Each is saved, its file damaged one way (a row of
`DAMAGE`: truncated, random bytes, empty, a Parquet or JSON file in its place, a
record of the wrong shape or format tag, non-UTF-8, a folder where the file should
be…), and reopened with ``Cls.load`` and `open_result`, with torch and with numpy
arrays: each must raise one `MechscopeError` whose one-line message names the file,
never a traceback from safetensors, json or pyarrow. A clean save must load back equal.

The stores that are folders of several files (a harvest's Parquet tables and JSON
records, an SAE's weights and config, an activation cache) get the same treatment
file by file in `STORE_DAMAGE`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import samples as samples_pkg
from mechscope.errors import MechscopeError
from mechscope.results import FORMATS, Result, open_result, result_class

# --- the result types, from the registry --------------------------------------------------


@functools.cache
def _samples() -> dict[str, Result]:
    """One sample per format tag (the first the samples package builds)."""
    import importlib
    import pkgutil

    out: dict[str, Result] = {}
    for info in pkgutil.iter_modules(samples_pkg.__path__):
        for r in importlib.import_module(f"{samples_pkg.__name__}.{info.name}").samples():
            out.setdefault(r.format, r)
    return out


FORMAT_TAGS = sorted(FORMATS)


def test_every_format_is_here() -> None:
    missing = sorted(set(FORMATS) - set(_samples()))
    assert missing == [], f"formats with no sample to damage: {missing}"
    for fmt in FORMAT_TAGS:
        assert result_class(fmt).format == fmt


@pytest.mark.parametrize("fmt", FORMAT_TAGS)
def test_clean_save_round_trips(fmt: str, tmp_path: Path) -> None:
    result = _samples()[fmt]
    path = result.save(tmp_path / "r")
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # nothing half-written
    for arrays in ("torch", "numpy"):
        again = type(result).load(path, arrays=arrays)
        assert again == result, (fmt, arrays)
        assert open_result(path, arrays=arrays) == result, (fmt, arrays)
    assert type(result).load(result.save(tmp_path / "twice")) == result


# --- ways a result file goes wrong ------------------------------------------------------


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict[str, Any] | bytes, data: bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def _with_entry(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path, str], None]:
    """Damage that rewrites the ``{"format", "record"}`` entry of the file's metadata."""

    def damage(path: Path, fmt: str) -> None:
        header, data = _split(path.read_bytes())
        entry = json.loads(header["__metadata__"]["mechscope"])
        new = change(entry)
        header["__metadata__"]["mechscope"] = new if isinstance(new, str) else json.dumps(new)
        path.write_bytes(_join(header, data))

    return damage


def _with_record(
    change: Callable[[dict[str, Any], type[Result]], None],
) -> Callable[[Path, str], None]:
    def on_entry(entry: dict[str, Any]) -> dict[str, Any]:
        change(entry["record"], result_class(entry["format"]))
        return entry

    return _with_entry(on_entry)


def _field(
    cls: type[Result], want: Callable[[dataclasses.Field], bool]
) -> dataclasses.Field | None:
    saved = [f for f in dataclasses.fields(cls) if f.metadata.get("save", True)]  # type: ignore[arg-type]
    return next((f for f in saved if want(f)), None)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _checked(f: dataclasses.Field) -> bool:
    """A field whose outer type a loader can check (not Any, object, …)."""
    base = str(f.type).split("[", 1)[0].split("|", 1)[0].strip()
    return base in {"int", "float", "str", "bool", "list", "dict", "tuple", "Array", "Float",
                    "Int", "Bool", "Tensor"}  # fmt: skip


def _wrong_value(f: dataclasses.Field) -> object:
    """A JSON value no field of `f`'s type can hold."""
    base = str(f.type).split("[", 1)[0].strip()
    return 3 if base in ("str", "list", "dict", "tuple", "bool") else "not this"


def drop_required(record: dict[str, Any], cls: type[Result]) -> None:
    f = _field(cls, _required)
    if f is None:
        pytest.skip(f"{cls.__name__} has no required field")
    del record[f.name]


def wrong_type(record: dict[str, Any], cls: type[Result]) -> None:
    f = _field(cls, _checked)
    assert f is not None, f"{cls.__name__} has no field of a checkable type"
    record[f.name] = _wrong_value(f)


def array_to_missing_tensor(record: dict[str, Any], cls: type[Result]) -> None:
    def swap(v: Any) -> bool:
        if isinstance(v, dict):
            if set(v) == {"__array__"}:
                v["__array__"] = "no such tensor"
                return True
            return any(swap(x) for x in v.values())
        return isinstance(v, list) and any(swap(x) for x in v)

    if not swap(record):
        pytest.skip(f"{cls.__name__}'s sample holds no array")


def bad_tag(value: object) -> Callable[[dict[str, Any], type[Result]], None]:
    def change(record: dict[str, Any], cls: type[Result]) -> None:
        f = _field(cls, lambda f: True)
        assert f is not None
        record[f.name] = value

    return change


def _other_format(fmt: str) -> str:
    return next(
        f
        for f in FORMAT_TAGS
        if f != fmt and result_class(f).__module__ != result_class(fmt).__module__
    )


def _parquet(path: Path, fmt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.unlink()
    pq.write_table(pa.table({"format": [fmt], "x": [1.0]}), path)


def _plain_safetensors(path: Path, fmt: str) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": fmt})


def _non_utf8(path: Path, fmt: str) -> None:
    header, data = _split(path.read_bytes())
    text = json.dumps(header).encode()
    text = text.replace(b'"__metadata__"', b'"__meta\xff\xfedata__"', 1)
    path.write_bytes(_join(text, data))


def _non_utf8_record(path: Path, fmt: str) -> None:
    header, data = _split(path.read_bytes())
    text = json.dumps(header, ensure_ascii=False).encode()
    text = text.replace(fmt.encode(), fmt.encode() + b"\xc3\x28", 1)  # an invalid 2-byte sequence
    path.write_bytes(_join(text, data))


def _folder(path: Path, fmt: str) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _cut(fraction: float) -> Callable[[Path, str], None]:
    def damage(path: Path, fmt: str) -> None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * fraction)])

    return damage


def _cut_data(path: Path, fmt: str) -> None:
    header, data = _split(path.read_bytes())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - max(1, len(data) // 2)] if data else raw[:-1])


def _random(path: Path, fmt: str) -> None:
    rng = random.Random(fmt)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(path.stat().st_size)))


def _random_after_length(path: Path, fmt: str) -> None:
    raw = path.read_bytes()
    rng = random.Random(fmt)
    path.write_bytes(raw[:8] + bytes(rng.randrange(256) for _ in range(len(raw) - 8)))


def _huge_header(path: Path, fmt: str) -> None:
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 60) + raw[8:])


def _header_overlaps_data(path: Path, fmt: str) -> None:
    header, data = _split(path.read_bytes())
    header["mechscope.extra"] = {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}
    path.write_bytes(_join(header, data))


DAMAGE: dict[str, Callable[[Path, str], None]] = {
    "empty": lambda p, f: p.write_bytes(b""),
    "cut in the length": lambda p, f: p.write_bytes(p.read_bytes()[:5]),
    "cut in the header": _cut(0.3),
    "cut in the data": _cut_data,
    "trailing bytes": lambda p, f: p.write_bytes(p.read_bytes() + b"\x00garbage"),
    "random bytes": _random,
    "random bytes after the length": _random_after_length,
    "a header length of 2**60": _huge_header,
    "a tensor past the end": _header_overlaps_data,
    "a Parquet file": _parquet,
    "a JSON file": lambda p, f: p.write_text(json.dumps({"format": f, "record": {}})),
    "a text file": lambda p, f: p.write_text("hello\n"),
    "safetensors without a result": _plain_safetensors,
    "non-UTF-8 header": _non_utf8,
    "non-UTF-8 in the record": _non_utf8_record,
    "metadata entry not JSON": _with_entry(lambda e: "{not json"),
    "metadata entry a list": _with_entry(lambda e: [e]),
    "metadata entry a string": _with_entry(lambda e: json.dumps("just text")),
    "record a list": _with_entry(lambda e: {**e, "record": [1, 2]}),
    "record missing": _with_entry(lambda e: {"format": e["format"]}),
    "format tag missing": _with_entry(lambda e: {"record": e["record"]}),
    "format tag unknown": _with_entry(lambda e: {**e, "format": "mechscope.nothing/9"}),
    "format tag a number": _with_entry(lambda e: {**e, "format": 3}),
    "format tag of a later version": _with_entry(
        lambda e: {**e, "format": e["format"].rsplit("/", 1)[0] + "/99"}
    ),
    "format tag of another result": _with_entry(
        lambda e: {**e, "format": _other_format(e["format"])}
    ),
    "a required field missing": _with_record(drop_required),
    "an unknown field": _with_record(lambda r, c: r.update(bogus_field=1)),
    "a field of the wrong type": _with_record(wrong_type),
    "an array naming a missing tensor": _with_record(array_to_missing_tensor),
    "a malformed tuple": _with_record(bad_tag({"__tuple__": 3})),
    "a malformed dict": _with_record(bad_tag({"__items__": [1, 2, 3]})),
    "an unknown nested class": _with_record(bad_tag({"__dataclass__": "Path", "fields": {}})),
    "a nested class with other fields": _with_record(
        bad_tag({"__dataclass__": "no_such_part", "fields": {"x": 1}})
    ),
    "an array tag of a number": _with_record(bad_tag({"__array__": 3})),
    "a folder in its place": _folder,
    "the file missing": lambda p, f: p.unlink(),
}

# loading another result's record through its own tag can be valid: only Cls.load must refuse
OPEN_MAY_SUCCEED = {"format tag of another result"}


@functools.cache
def _clean_bytes(fmt: str, folder: Path) -> bytes:
    return _samples()[fmt].save(folder / fmt.replace("/", "_")).read_bytes()


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clean-results")


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
@pytest.mark.parametrize("fmt", FORMAT_TAGS)
def test_damaged_file_gives_one_error_naming_it(
    fmt: str, damage: str, tmp_path: Path, clean_folder: Path
) -> None:
    cls = result_class(fmt)
    path = tmp_path / "result.safetensors"
    path.write_bytes(_clean_bytes(fmt, clean_folder))
    DAMAGE[damage](path, fmt)
    opens: list[tuple[str, Callable[[], object]]] = [
        ("Cls.load torch", lambda: cls.load(path)),
        ("Cls.load numpy", lambda: cls.load(path, arrays="numpy")),
        ("open_result torch", lambda: open_result(path)),
        ("open_result numpy", lambda: open_result(path, arrays="numpy")),
    ]
    for how, call in opens:
        if how.startswith("open_result") and damage in OPEN_MAY_SUCCEED:
            _opens_or_fails_cleanly(call, path, how)
            continue
        _fails_cleanly(call, path, how)


def _fails_cleanly(call: Callable[[], object], path: Path, how: str) -> MechscopeError:
    try:
        got = call()
    except MechscopeError as e:
        message = str(e)
        assert "\n" not in message and message.strip(), f"{how}: not one line: {message!r}"
        assert str(path) in message, f"{how}: the message does not name the file: {message!r}"
        return e
    except Exception as e:
        import traceback

        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        pytest.fail(f"{how}: {type(e).__name__} escaped instead of a mechscope error:\n{tb}")
    pytest.fail(f"{how}: loaded a damaged file without an error: {got!r}")


def _opens_or_fails_cleanly(call: Callable[[], object], path: Path, how: str) -> None:
    try:
        got = call()
    except MechscopeError:
        _fails_cleanly(call, path, how)
    else:
        assert isinstance(got, Result), how


# --- stores of several files ------------------------------------------------------------


def _harvest(folder: Path) -> Path:
    from mechscope.harvest import harvest
    from mechscope.testing import tiny_model

    corpus = folder / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = folder / "harvest"
    harvest(tiny_model("llama"), str(corpus), out=out, sites="blocks.0.mlp.post", tokens=64,
            window=16, k=2, n_random=1, batch_size=4, progress=False)  # fmt: skip
    return out


def _open_harvest(path: Path) -> object:
    from mechscope.harvest.tables import open_harvest

    store = open_harvest(path)
    site = store.sites[0]
    store.unit(site, 0)  # reads units, examples and windows
    store.search_token(" the")  # token_hits
    return store.top_units(site, limit=3)


def _sae(folder: Path) -> Path:
    from mechscope.sae.model import SAEConfig, SparseAutoencoder

    return SparseAutoencoder(SAEConfig(d_in=8, width=16, k=2, site="blocks.0.resid_post")).save(
        folder / "sae"
    )


def _open_sae(path: Path) -> object:
    from mechscope.sae.model import SparseAutoencoder

    return SparseAutoencoder.load(path)


def _cache(folder: Path) -> Path:
    from mechscope.core.cache import ActivationCache

    path = folder / "cache.safetensors"
    ActivationCache({"embed": torch.ones(1, 3, 4), "blocks.0.resid_post": torch.zeros(1, 3, 4)},
                    {"embed": torch.ones(1, 3, 4)}, "tiny").save(path)  # fmt: skip
    return path


def _open_cache(path: Path) -> object:
    from mechscope.core.cache import ActivationCache

    return ActivationCache.load(path)


def _explain(folder: Path) -> Path:
    """An explain run's folder as the pipeline leaves it (config and Parquet rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = folder / "explain"
    out.mkdir()
    unit = {"site": "blocks.0.mlp.post", "unit": 3}
    (out / "config.json").write_text(
        json.dumps(
            {"units": [["blocks.0.mlp.post", 3]], "methods": ["llm"], "scorers": ["correlation"]}
        )
    )
    rows = {
        "explanations": [{**unit, "method": "llm", "text": "the letter e", "raw": "e"}],
        "scores": [{**unit, "method": "llm", "scorer": "correlation", "score": 0.5}],
        "simulations": [{**unit, "method": "llm", "window": 0, "kind": "top",
                         "tokens": ["a", "e"], "true": [0.0, 1.0], "simulated": [0.0, 0.9]}],
    }  # fmt: skip
    for name, table in rows.items():
        pq.write_table(pa.Table.from_pylist(table), out / f"{name}.parquet")
    return out


def _open_explain(path: Path) -> object:
    from mechscope.autointerp.results import ExplainRun

    run = ExplainRun.open(path)
    assert run.explanations and run.scores, "a clean run reads its rows"
    return run.simulations(), run.summary()


def _other_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"something": [1, 2], "else": ["a", "b"]}), path)


def _safetensors_in(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(path))


def _folder_in(path: Path) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _cache_sites(value: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        header, data = _split(path.read_bytes())
        header["__metadata__"]["sites"] = value
        path.write_bytes(_join(header, data))

    return damage


def _json_edit(change: Callable[[Any], Any]) -> Callable[[Path], None]:
    return lambda p: p.write_text(json.dumps(change(json.loads(p.read_text()))))


def _other_sae_weights(path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"W_enc": torch.zeros(8, 4), "b_enc": torch.zeros(4), "W_dec": torch.zeros(4, 8),
               "b_dec": torch.zeros(8)}, str(path))  # fmt: skip


def _file_damage() -> dict[str, Callable[[Path], None]]:
    """What happens to any one file of a store."""
    return {
        "empty": lambda p: p.write_bytes(b""),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
        "random bytes": lambda p: p.write_bytes(random.Random(p.name).randbytes(p.stat().st_size)),
        "non-UTF-8": lambda p: p.write_bytes(b"\xff\xfe\x00" + p.read_bytes()[3:]),
        "a folder in its place": _folder_in,
        "missing": lambda p: p.unlink(),
    }


# (store, file inside it, damage) → must fail in one line naming the file or its folder
STORES: dict[str, tuple[Callable[[Path], Path], Callable[[Path], object]]] = {
    "harvest": (_harvest, _open_harvest),
    "sae": (_sae, _open_sae),
    "cache": (_cache, _open_cache),
    "explain": (_explain, _open_explain),
}

# a run that has not written a table yet is read without its rows: absent is not damaged
_ROWS_DAMAGE = {k: v for k, v in _file_damage().items() if k != "missing"}

STORE_FILES: dict[str, dict[str, dict[str, Callable[[Path], None]]]] = {
    "harvest": {
        **{
            f"{t}.parquet": {
                **_file_damage(),
                "a safetensors file": _safetensors_in,
                "another Parquet table": _other_parquet,
                "a JSON file": lambda p: p.write_text("{}"),
            }
            for t in ("units", "examples", "windows", "token_hits")
        },
        "config.json": {
            **_file_damage(),
            "a list": lambda p: p.write_text("[1, 2]"),
            "without sites": _json_edit(lambda c: {k: v for k, v in c.items() if k != "sites"}),
            "units not a mapping": _json_edit(lambda c: {**c, "units": [1]}),
            "a Parquet file": _other_parquet,
        },
        "hist.json": {
            **_file_damage(),
            "a number": lambda p: p.write_text("3"),
            "edges not numbers": _json_edit(lambda h: {**h, "edges": ["a"]}),
            "no every": _json_edit(lambda h: {"edges": h["edges"]}),
            "a safetensors file": _safetensors_in,
        },
        "run.json": {**_file_damage(), "a list": lambda p: p.write_text("[]")},
    },
    "sae": {
        "sae.json": {
            **_file_damage(),
            "a list": lambda p: p.write_text("[1]"),
            "without d_in": _json_edit(lambda c: {k: v for k, v in c.items() if k != "d_in"}),
            "d_in a string": _json_edit(lambda c: {**c, "d_in": "eight"}),
            "an unknown key": _json_edit(lambda c: {**c, "dimension": 3}),
            "an unknown kind": _json_edit(lambda c: {**c, "kind": "gated"}),
            "a safetensors file": _safetensors_in,
        },
        "sae.safetensors": {
            **_file_damage(),
            "a Parquet file": _other_parquet,
            "another SAE's weights": _other_sae_weights,
            "a tensor missing": _safetensors_in,
            "a JSON file": lambda p: p.write_text("{}"),
        },
    },
    "explain": {
        **{
            f"{t}.parquet": {
                **_ROWS_DAMAGE,
                "a safetensors file": _safetensors_in,
                "another Parquet table": _other_parquet,
            }
            for t in ("explanations", "scores", "simulations")
        },
        "config.json": {
            **_ROWS_DAMAGE,
            "a list": lambda p: p.write_text("[1, 2]"),
            "units not pairs": _json_edit(lambda c: {**c, "units": [3]}),
            "a Parquet file": _other_parquet,
        },
    },
    "cache": {
        "cache.safetensors": {
            **_file_damage(),
            "a Parquet file": _other_parquet,
            "a result, not a cache": lambda p: _samples()["mechscope.steering_vector/1"].save(p),
            "site list not JSON": _cache_sites("[not json"),
            "site list names a missing tensor": _cache_sites('["nowhere"]'),
            "site list a mapping": _cache_sites('{"embed": 1}'),
        },
    },
}

STORE_ROWS = [
    (store, name, damage)
    for store, files in STORE_FILES.items()
    for name, damages in files.items()
    for damage in damages
]


@pytest.fixture(scope="module")
def clean_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clean-stores")
    return {name: make(root) for name, (make, _) in STORES.items()}


def test_clean_stores_reopen(clean_stores: dict[str, Path], tmp_path: Path) -> None:
    for name, (_, reopen) in STORES.items():
        assert reopen(clean_stores[name]) is not None, name
    from mechscope.core.cache import ActivationCache
    from mechscope.sae.model import SparseAutoencoder

    sae = SparseAutoencoder.load(clean_stores["sae"])
    again = SparseAutoencoder.load(sae.save(tmp_path / "sae"))
    assert again.cfg == sae.cfg
    assert all(
        torch.equal(a, b)
        for a, b in zip(sae.state_dict().values(), again.state_dict().values(), strict=True)
    )
    cache = ActivationCache.load(clean_stores["cache"])
    back = ActivationCache.load(cache.save(tmp_path / "c.safetensors"))
    assert list(back) == list(cache) and all(torch.equal(back[k], cache[k]) for k in cache)
    assert back.grads.keys() == cache.grads.keys() and back.model_name == cache.model_name


@pytest.mark.parametrize(
    ("store", "name", "damage"), STORE_ROWS, ids=[" ".join(r) for r in STORE_ROWS]
)
def test_damaged_store_gives_one_error_naming_it(
    store: str, name: str, damage: str, clean_stores: dict[str, Path], tmp_path: Path
) -> None:
    clean = clean_stores[store]
    copy = tmp_path / clean.name
    if clean.is_dir():
        shutil.copytree(clean, copy)
        target = copy / name
    else:
        shutil.copy(clean, copy)
        target = copy
    STORE_FILES[store][name][damage](target)
    # one line naming the store (the damaged file's path starts with it)
    _fails_cleanly(lambda: STORES[store][1](copy), copy, f"{store} {name} {damage}")
