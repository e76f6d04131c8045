"""Corpora: built-in sources read real English, mixes interleave, packing cuts exact windows."""

from __future__ import annotations

import dataclasses
import json
from itertools import islice
from pathlib import Path

import pytest

from mechscope.corpus import (
    DEFAULT_MIX,
    SOURCES,
    Corpus,
    open_corpus,
    pack,
    windows,
)
from mechscope.corpus import sources as corpus_mod
from mechscope.errors import InputError
from mechscope.testing import tiny_model, tiny_tokenizer

COMMON_WORDS = (" the ", " of ", " and ", " to ", " a ", " is ")


def first(corpus: Corpus, n: int) -> list[str]:
    return list(islice(corpus.documents(), n))


def need(name: str) -> None:
    info = SOURCES[name]
    if not info.installed():
        pytest.skip(f"Debian package {info.package} not installed ({info.install})")


# --- built-in sources --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOURCES))
def test_builtin_source_yields_english_documents(name: str) -> None:
    need(name)
    docs = first(open_corpus(name), 5)
    assert len(docs) == 5
    for doc in docs:
        assert doc.strip() and len(doc) < 3 * corpus_mod.DOC_CHARS
        lowered = doc.lower()
        assert sum(w in lowered for w in COMMON_WORDS) >= 2, doc[:300]
        letters = sum(c.isalpha() or c.isspace() for c in doc)
        assert letters / len(doc) > 0.7, doc[:300]


def test_builtin_markup_is_cleaned() -> None:
    need("gcide")
    need("pydocs")
    gcide = "\n".join(first(open_corpus("gcide"), 30))
    assert "[1913 Webster]" not in gcide and "[WordNet" not in gcide
    assert "{" not in gcide and "\\" not in gcide
    pydocs = "\n".join(first(open_corpus("pydocs"), 30))
    assert ":func:`" not in pydocs and ".. index::" not in pydocs and ">`_" not in pydocs


def test_gcide_markup_to_text() -> None:
    entry = (
        'Abandon \\A*ban"don\\ ([.a]*b[a^]n"d[u^]n), v. t. [OF. abandoner.]\n'
        "   To give up; -- see {Ban}; caf['e]. [Obs.]\n      [1913 Webster +PJC]\n"
    )
    assert corpus_mod._clean_gcide(entry) == (
        "Abandon, v. t. [OF. abandoner.] To give up; -- see Ban; café. [Obs.]"
    )


def test_rst_markup_to_text() -> None:
    rst = (
        "Title\n=====\n\n.. index:: single: foo\n\n"
        "Use :func:`~json.dumps` and `the docs <https://x.org>`_ (see :pep:`8`)::\n\n"
        "    >>> 1 + 1\n\n.. function:: dumps(obj)\n   :noindex:\n\n   Serialise *obj*.\n"
    )
    words = "Title Use `dumps` and the docs (see PEP 8): >>> 1 + 1 dumps(obj) Serialise obj."
    assert corpus_mod._clean_rst(rst).split() == words.split(" ")


def test_default_mix_interleaves_its_sources_round_robin() -> None:
    for name in DEFAULT_MIX:
        need(name)
    default = open_corpus("default")
    assert default.spec == "default"
    assert [s.name for s in default.sources] == list(DEFAULT_MIX)
    per_source = [first(open_corpus(name), 2) for name in DEFAULT_MIX]
    expected = [docs[i] for i in range(2) for docs in per_source]
    assert first(default, 2 * len(DEFAULT_MIX)) == expected


def test_documents_are_deterministic() -> None:
    need("austen")
    need("fortunes")
    a = open_corpus("austen, Fortunes")
    assert a.spec == "austen,fortunes"
    assert first(a, 6) == first(open_corpus(["austen", "fortunes"]), 6) == first(a, 6)


def test_record_names_packages_versions_and_licences() -> None:
    need("fortunes")
    rec = open_corpus("fortunes").record()
    assert rec["spec"] == "fortunes"
    (src,) = rec["sources"]
    assert src["package"] == "fortunes" and "BSD" in src["licence"]
    assert src["paths"] == ["/usr/share/games/fortunes"]
    assert src["version"] is None or src["version"][0].isdigit()
    json.dumps(rec)  # goes into config.json


def test_missing_debian_package_names_the_install_command(monkeypatch) -> None:
    gone = dataclasses.replace(SOURCES["gcide"], paths=("/nonexistent/gcide.dict.dz",))
    monkeypatch.setitem(SOURCES, "gcide", gone)
    with pytest.raises(InputError, match="apt-get install -y dict-gcide"):
        open_corpus("gcide")


def test_unknown_spec_lists_valid_names() -> None:
    with pytest.raises(InputError) as e:
        open_corpus("austin")
    msg = str(e.value)
    assert "did you mean austen" in msg
    assert all(n in msg for n in ["default", *SOURCES]) and "path" in msg
    with pytest.raises(InputError, match="empty"):
        open_corpus(" , ")


# --- user files --------------------------------------------------------------------------


def test_txt_file_is_split_into_paragraph_runs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} says something.\nIt has two lines." for i in range(300)]
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(paragraphs) + "\n")
    c = open_corpus(str(path))
    assert c.spec == str(path.resolve())
    docs = list(c.documents())
    assert len(docs) > 1 and all(len(d) <= corpus_mod.DOC_CHARS for d in docs)
    assert "\n\n".join(docs) == "\n\n".join(paragraphs)
    (tmp_path / "short.txt").write_text("One short document.\n")
    assert list(open_corpus(tmp_path / "short.txt").documents()) == ["One short document."]


def test_jsonl_file_and_text_field(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"id": i, "body": f"document number {i}"} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert list(open_corpus(path, text_field="body").documents()) == [r["body"] for r in rows]
    with pytest.raises(InputError) as e:
        open_corpus(path)
    assert "'text'" in str(e.value) and "'id', 'body'" in str(e.value)


def test_parquet_file_in_row_group_batches(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"row {i} of the table" for i in range(2500)]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": texts, "n": list(range(2500))}), path, row_group_size=700)
    assert list(open_corpus(path).documents()) == texts
    with pytest.raises(InputError, match="no column 'content'.*'text', 'n'"):
        open_corpus(path, text_field="content")


def test_hf_save_to_disk_folder(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    texts = ["first saved document", "second saved document"]
    folder = tmp_path / "ds"
    try:
        import datasets

        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(folder))
    except ImportError:  # the layout save_to_disk writes, built with pyarrow alone
        folder.mkdir()
        table = pa.table({"text": texts})
        arrow = pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb")
        with arrow as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}
        (folder / "state.json").write_text(json.dumps(state))
        (folder / "dataset_info.json").write_text("{}")
    c = open_corpus(folder)
    assert [s.kind for s in c.sources] == ["hf"]
    assert list(c.documents()) == texts
    with pytest.raises(InputError, match="no column 'body'"):
        open_corpus(folder, text_field="body")


def test_folder_of_files_and_mixes_of_paths(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("from b\n")
    (tmp_path / "a.txt").write_text("from a\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    assert list(open_corpus(tmp_path).documents()) == ["from a", "from b"]
    mix = open_corpus([tmp_path / "a.txt", str(tmp_path / "b.txt")])
    assert list(mix.documents()) == ["from a", "from b"]
    assert len(mix.record()["sources"]) == 2
    with pytest.raises(InputError, match=r"\.txt, \.jsonl, \.parquet"):
        open_corpus(tmp_path / "notes.md")


# --- packing -----------------------------------------------------------------------------

DOCS = ["The first document.", "", "A second, longer document about the weather.", "Third!"] * 5


def stream(tok, docs: list[str], sep: int | None) -> list[int]:
    out: list[int] = []
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        if ids and out and sep is not None:
            out.append(sep)
        out.extend(ids)
    return out


def test_pack_cuts_the_separated_stream_into_bos_windows() -> None:
    tok = tiny_tokenizer()
    full = list(pack(DOCS, tok, 16, bos_id=0, sep_id=1, batch_docs=3))
    assert full and all(len(w) == 16 and w[0] == 0 for w in full)
    content = [i for w in full for i in w[1:]]
    expected = stream(tok, DOCS, sep=1)
    assert content == expected[: len(content)] and len(expected) - len(content) < 15
    assert list(pack(DOCS, tok, 16, bos_id=0, sep_id=1, batch_docs=64)) == full


def test_pack_without_bos_or_separator() -> None:
    tok = tiny_tokenizer()
    full = list(pack(DOCS, tok, 8, bos_id=None, sep_id=None))
    assert all(len(w) == 8 for w in full)
    content = [i for w in full for i in w]
    assert content == stream(tok, DOCS, sep=None)[: len(content)]


def test_pack_start_and_limit_equal_slicing_a_full_pass() -> None:
    tok = tiny_tokenizer()
    full = list(pack(DOCS, tok, 12, bos_id=0, sep_id=1, batch_docs=2))
    n = len(full)
    for start, limit in [(0, 3), (3, 4), (n - 2, 10), (n + 5, 3), (2, 0), (5, None)]:
        got = pack(DOCS, tok, 12, bos_id=0, sep_id=1, start=start, limit=limit, batch_docs=2)
        stop = None if limit is None else start + limit
        assert list(got) == full[start:stop], (start, limit)


def test_pack_text_that_looks_special_stays_text() -> None:
    tok = tiny_tokenizer()
    (w,) = pack(["<|eos|>"], tok, 8, bos_id=0, sep_id=1)
    assert 1 not in w[1:]


def test_pack_rejects_bad_arguments() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match="window must be at least 2"):
        list(pack(DOCS, tok, 1, bos_id=0, sep_id=1))
    with pytest.raises(InputError, match="start and limit"):
        list(pack(DOCS, tok, 8, bos_id=0, sep_id=1, start=-1))


def test_windows_use_the_model_bos_and_eos(tmp_path: Path) -> None:
    model = tiny_model("llama")
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in DOCS if d))
    got = list(windows(model, str(path), 16, start=1, limit=3))
    want = list(pack([d for d in DOCS if d], model.tokenizer, 16, bos_id=0, sep_id=1))[1:4]
    assert got == want and len(got) == 3
