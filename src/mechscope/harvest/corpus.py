"""Corpora of real English text, and packing them into token windows for harvesting.

A `Corpus` is a deterministic, lazy stream of documents (strings). Built-in
sources read text that Debian packages install, so nothing is fetched at run
time: Jane Austen's novels, the GCIDE dictionary (definitions and literary
quotations), fortune cookies, the Python documentation and WordNet glosses.
User corpora are .txt, .jsonl or .parquet files, folders of them, or folders
saved by HF ``datasets``. A mix interleaves its sources document by document,
so every prefix of it is mixed. `pack` tokenises documents into one stream,
a separator (EOS) between documents, and cuts it into windows that start
with BOS; `windows` does this with a model's tokenizer.

Example::

    corpus = open_corpus("default")  # austen, gcide, fortunes, pydocs, interleaved
    for ids in windows(model, corpus, 64, limit=1000):
        ...  # 64 token ids, BOS first
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import re
import subprocess
import unicodedata
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.model import Model
from ..errors import InputError, closest

DEFAULT_CORPUS = "default"
DEFAULT_MIX = ("austen", "gcide", "fortunes", "pydocs")
DOC_CHARS = 4000  # documents are runs of whole paragraphs of about this many characters
USER_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True)
class SourceInfo:
    """A built-in source: what it holds, where its text lies, which Debian package puts it there."""

    name: str
    description: str
    package: str
    licence: str
    paths: tuple[str, ...]

    @property
    def install(self) -> str:
        return f"apt-get install -y {self.package}"

    def installed(self) -> bool:
        return all(Path(p).exists() for p in self.paths)


_AUSTEN = "/usr/lib/R/site-library/janeaustenr/data/Rdata"
_GCIDE = "/usr/share/dictd/gcide"
_FORTUNES = "/usr/share/games/fortunes"
_PYDOCS = "/usr/share/doc/python3.11/html/_sources"
_WORDNET = "/usr/share/wordnet"

SOURCES: dict[str, SourceInfo] = {
    s.name: s
    for s in [
        SourceInfo(
            "austen",
            "Jane Austen's six novels, in runs of paragraphs broken at chapters",
            "r-cran-janeaustenr",
            "public domain (the novels); MIT (the janeaustenr packaging)",
            (_AUSTEN + ".rdx", _AUSTEN + ".rdb"),
        ),
        SourceInfo(
            "gcide",
            "GNU Collaborative International Dictionary of English (Webster 1913 + WordNet): "
            "definitions, etymologies and literary quotations, markup removed",
            "dict-gcide",
            "GPL-2+",
            (_GCIDE + ".dict.dz", _GCIDE + ".index"),
        ),
        SourceInfo(
            "fortunes",
            "fortune(6) cookies: quotations, jokes, poems (not the offensive set)",
            "fortunes",
            "BSD-3-Clause (the fortune-mod collection); quotations of mixed provenance",
            (_FORTUNES,),
        ),
        SourceInfo(
            "pydocs",
            "the Python 3.11 documentation (reST sources, markup removed): technical English and code",
            "python3.11-doc",
            "PSF-2.0",
            (_PYDOCS,),
        ),
        SourceInfo(
            "wordnet",
            "WordNet 3.0 synsets as 'lemma (pos): gloss' lines",
            "wordnet-base",
            "WordNet-3.0 (Princeton; permissive, BSD-like)",
            tuple(f"{_WORDNET}/data.{pos}" for pos in ("noun", "verb", "adj", "adv")),
        ),
    ]
}


# --- shared text helpers -----------------------------------------------------------------

_BREAK = None  # in a paragraph stream: start a new document here (e.g. at a chapter)


def _group(
    paragraphs: Iterable[str | None], size: int = DOC_CHARS, joiner: str = "\n\n"
) -> Iterator[str]:
    """Runs of whole paragraphs of about `size` characters; a longer paragraph stays whole."""
    run: list[str] = []
    n = 0
    for p in paragraphs:
        # a break flushes only a run of some length, so a heading never stands alone
        if (p is _BREAK and n >= size // 4) or (p and run and n + len(p) > size):
            yield joiner.join(run)
            run, n = [], 0
        if p:
            run.append(p)
            n += len(p) + len(joiner)
    if run:
        yield joiner.join(run)


def _paragraphs(lines: Iterable[str], joiner: str = "\n") -> Iterator[str]:
    """Blank-line separated paragraphs, their lines joined by `joiner`."""
    para: list[str] = []
    for line in lines:
        if line.strip():
            para.append(line.rstrip() if joiner == "\n" else line.strip())
        elif para:
            yield joiner.join(para)
            para = []
    if para:
        yield joiner.join(para)


@contextlib.contextmanager
def _quiet_rdata() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unknown file type")
        yield


# --- built-in sources --------------------------------------------------------------------

_HEADING = re.compile(r"(CHAPTER|Chapter|VOLUME) [0-9IVXLC]+\.?$")
_EMPHASIS = re.compile(r"(?<!\w)_(\w[^_]*?)_(?!\w)")  # _them_ -> them


def _austen() -> Iterator[str]:
    import rdata

    def load(data: bytes) -> Any:
        with _quiet_rdata():
            return rdata.conversion.convert(rdata.parser.parse_data(data))

    index = load(gzip.decompress(Path(_AUSTEN + ".rdx").read_bytes()))
    spans = {str(k): (int(o), int(n)) for k, (o, n) in index["variables"].items()}
    for name in sorted(spans):
        offset, length = spans[name]
        with open(_AUSTEN + ".rdb", "rb") as f:
            f.seek(offset)
            chunk = f.read(length)
        lines = [str(line) for line in load(zlib.decompress(chunk[4:]))]  # 4-byte length header
        yield from _group(_austen_paragraphs(lines))


def _austen_paragraphs(lines: list[str]) -> Iterator[str | None]:
    for p in _paragraphs(lines, joiner=" "):
        if _HEADING.match(p):
            yield _BREAK
        yield _EMPHASIS.sub(r"\1", p)


_B64 = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_GCIDE_SOURCE = re.compile(  # where each sense came from: [1913 Webster], [WordNet 1.5 +PJC], ...
    r"\s*\[\s*(?:(?:1913 Webster|Webster 1913 Suppl\.|WordNet(?: 1\.[56]| sense \d+)?"
    r"|Century Dict\. 1906|PJC\.?|AS|RDH|GG|RP)\s*\+?\s*)+\]"
)
_GCIDE_PRON = re.compile(r"\s*\\[^\\\n]*\\")  # \A*ban"don\
_GCIDE_PRON_PAREN = re.compile(r"\s*\((?=[^()\n]*(?:\[[^\]\s]{1,6}\]|[\"*`]))[^()\s]+\)")
_GCIDE_CHAR = re.compile(r"\[([^\[\]\s]{1,6})\]")  # [=a], ['e], [ae], [thorn]
_MARKS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303"}
_MARKS |= {",": "\u0327", "=": "\u0304", "-": "\u0304", ".": "\u0307", "*": ""}
_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "yogh": "ȝ"}
_NAMED |= {"imac": "ī", "aum": "ä", "asl": "a", "add": "a", "deg": "°", "sect": "§", "root": "√"}
_NAMED |= {"ng": "ŋ", "alpha": "α", "beta": "β", "dsdot": "ḍ"}


def _gcide_char(m: re.Match[str]) -> str:
    code = m.group(1)
    if code in _NAMED:
        return _NAMED[code]
    if code[0] in _MARKS and code[1:].isalpha() and len(code) <= 3:
        return unicodedata.normalize("NFC", code[1:] + _MARKS[code[0]])
    if code[-1] == "^" and code[:-1].isalpha() and len(code) <= 3:  # breve
        return unicodedata.normalize("NFC", code[:-1] + "\u0306")
    return m.group(0)  # [Obs.], [R.], [2]: real text


def _clean_gcide(entry: str) -> str:
    text = _GCIDE_SOURCE.sub("", entry)
    text = _GCIDE_PRON.sub("", text)
    text = _GCIDE_PRON_PAREN.sub("", text)
    text = _GCIDE_CHAR.sub(_gcide_char, text).replace("{", "").replace("}", "")
    return "\n".join(" ".join(p.split()) for p in _paragraphs(text.splitlines()))


def _gcide() -> Iterator[str]:
    spans: set[tuple[int, int]] = set()
    with open(_GCIDE + ".index", encoding="utf-8", errors="replace") as f:
        for line in f:
            word, offset, length = line.rstrip("\n").split("\t")[:3]
            if not word.startswith("00-"):  # 00-database-info etc.: the file's own header
                spans.add((_b64(offset), _b64(length)))

    def entries() -> Iterator[str]:
        pos = 0
        with gzip.open(_GCIDE + ".dict.dz", "rb") as f:
            for offset, length in sorted(spans):
                if offset < pos:
                    continue
                f.read(offset - pos)
                raw = f.read(length)
                pos = offset + length
                yield _clean_gcide(_decode(raw))

    yield from _group(entries())


def _b64(s: str) -> int:
    value = 0
    for c in s:
        value = value * 64 + _B64[c]
    return value


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few entries hold cp1252 bytes
        return raw.decode("cp1252", errors="replace")


_OVERSTRIKE = re.compile(r"[^\x08\n]\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _fortunes() -> Iterator[str]:
    skip = {"ascii-art"}  # pictures, not text
    files = sorted(
        p
        for p in Path(_FORTUNES).iterdir()  # not recursive: off/ holds the offensive set
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )
    for path in files:
        if path.name in skip:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")  # each file is < 250 kB
        yield from _group(_clean_fortune(c) for c in re.split(r"^%\n", text, flags=re.M))


def _clean_fortune(cookie: str) -> str:
    while "\x08" in cookie:  # terminal overstrike (underline, accents): keep the last character
        cleaned = _OVERSTRIKE.sub("", cookie)
        if cleaned == cookie:
            break
        cookie = cleaned
    return _CONTROL.sub("", cookie).strip("\n").rstrip()


_PYDOCS_ORDER = ("tutorial", "howto", "faq", "library", "reference")  # then the rest
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s|$)")
_RST_FOOTNOTE = re.compile(r"^(\s*)\.\.\s+\[[^\]]*\]\s*(.*)$")
_RST_OPTION = re.compile(r"^\s+:[\w -]+:(?:\s|$)")
_RST_RULE = re.compile(r"^\s*([=\-~^*#\"+`'.:_])\1{3,}\s*$")
_RST_DROP = {"index", "toctree", "module", "currentmodule", "moduleauthor", "sectionauthor"}
_RST_DROP |= {"highlight", "testsetup", "testcleanup", "include", "literalinclude", "image"}
_RST_DROP |= {"figure", "raw", "tabularcolumns", "audit-event-table", "productionlist"}
_RST_NOTES = {"note", "warning", "seealso", "important", "tip", "caution", "attention"}
_RST_NOTES |= {"hint", "danger", "impl-detail"}
_RST_SIGNATURES = {"function", "method", "class", "attribute", "data", "exception", "decorator"}
_RST_SIGNATURES |= {"classmethod", "staticmethod", "abstractmethod", "opcode", "cmdoption"}
_RST_SIGNATURES |= {"option", "envvar", "describe", "coroutinefunction", "coroutinemethod"}
_RST_SIGNATURES |= {"decoratormethod", "pdbcommand", "rubric", "centered", "program"}
_RST_VERSIONS = {
    "versionadded": "New in version {}.",
    "versionchanged": "Changed in version {}:",
    "deprecated": "Deprecated since version {}:",
    "deprecated-removed": "Deprecated since version {}:",
}
_RST_ROLE = re.compile(r":((?:[\w-]+:)*[\w-]+):`([^`]+)`")
_RST_LINK = re.compile(r"(?<![`\w])`([^`<]+?)\s*<[^>`]*>`__?")
_RST_REF = re.compile(r"(?<![`\w:])`([^`]+)`__?")
_RST_FOOTREF = re.compile(r"\s?\[#?[\w-]*\]_")
_RST_STRONG = re.compile(r"\*\*(\S[^*]*?)\*\*")
_RST_EM = re.compile(r"(?<![\w*])\*(\S|\S[^*\n]*?\S)\*(?![\w*])")


def _pydocs() -> Iterator[str]:
    def rank(p: Path) -> tuple[int, Path]:
        top = p.relative_to(_PYDOCS).parts[0]
        return (_PYDOCS_ORDER.index(top) if top in _PYDOCS_ORDER else len(_PYDOCS_ORDER), p)

    for path in sorted(Path(_PYDOCS).rglob("*.rst.txt"), key=rank):
        text = _clean_rst(path.read_text(encoding="utf-8", errors="replace"))
        yield from _group(_paragraphs(text.splitlines()))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _clean_rst(text: str) -> str:
    """reST as plain text: directives become their text (or go), roles and links their titles."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if _RST_RULE.match(line):
            continue
        if not _RST_EXPLICIT.match(line):
            out.append(line)
            continue
        indent = _indent(line)
        while i < len(lines) and _RST_OPTION.match(lines[i]) and _indent(lines[i]) > indent:
            i += 1
        directive, footnote = _RST_DIRECTIVE.match(line), _RST_FOOTNOTE.match(line)
        if directive and directive.group(2) not in _RST_DROP:
            header = _directive_text(directive.group(2), directive.group(3))
            if header:
                out.append(" " * indent + header)
        elif footnote:
            out.append(" " * indent + footnote.group(2))
        else:  # comments, link targets, substitutions, index entries: drop with their block
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                i += 1
    text = "\n".join(out)
    # links before roles: a role's output `x` must not pair with the backtick of a later ref
    text = _RST_REF.sub(r"\1", _RST_LINK.sub(r"\1", text))
    text = _RST_FOOTREF.sub("", text)
    text = _RST_ROLE.sub(_role_text, text).replace("``", "`")
    text = _RST_EM.sub(r"\1", _RST_STRONG.sub(r"\1", text))
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.M)  # "for example::" opens a code block
    return re.sub(r"\s*::$", "", text, flags=re.M)  # so does " ::", which prints nothing


def _directive_text(name: str, arg: str) -> str:
    if name in _RST_VERSIONS:
        return _RST_VERSIONS[name].format(arg.split()[0] if arg else "?")
    if name in _RST_NOTES:
        title = "See also" if name == "seealso" else name.replace("-", " ").capitalize()
        return f"{title}: {arg}".rstrip()
    if name in _RST_SIGNATURES or ":" in name:  # c:function etc.
        return arg
    return ""  # code-block, doctest, only, ...: the content stays, the header goes


def _role_text(m: re.Match[str]) -> str:
    role, body = m.group(1), m.group(2).strip()
    if body.endswith(">") and "<" in body:
        body = body[: body.rindex("<")].strip()
    if role in ("pep", "rfc"):
        return f"{role.upper()} {body}"
    body = body.lstrip("!")
    if body.startswith("~"):
        body = body[1:].rsplit(".", 1)[-1]
    return f"`{body}`" if role in ("func", "meth", "class", "attr", "data", "exc", "obj") else body


def _wordnet() -> Iterator[str]:
    labels = {"noun": "n.", "verb": "v.", "adj": "adj.", "adv": "adv."}
    for pos, label in labels.items():
        with open(f"{_WORDNET}/data.{pos}", encoding="utf-8", errors="replace") as f:
            glosses = (_wordnet_gloss(line, label) for line in f if not line.startswith("  "))
            yield from _group(glosses, joiner="\n")


def _wordnet_gloss(line: str, label: str) -> str:
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    n_words = int(fields[3], 16)
    words = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2]]
    return f"{', '.join(words[:3])} ({label}): {gloss.strip()}"


_READERS = {
    "austen": _austen,
    "gcide": _gcide,
    "fortunes": _fortunes,
    "pydocs": _pydocs,
    "wordnet": _wordnet,
}


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


# --- packing -----------------------------------------------------------------------------


def pack(
    documents: Iterable[str],
    tokenizer: Any,
    window: int,
    *,
    bos_id: int | None,
    sep_id: int | None,
    start: int = 0,
    limit: int | None = None,
    batch_docs: int = 64,
) -> Iterator[list[int]]:
    """Fixed windows of token ids cut from one stream of documents.

    Documents are tokenised without special tokens (text that looks like a
    special token stays text), `sep_id` goes between them, and the stream is
    cut into chunks of ``window - 1`` ids, each yielded as ``[bos_id, *chunk]``
    (chunks of `window` ids when `bos_id` is None). The tail shorter than a
    chunk is dropped. `start` skips that many windows (for resuming; the
    stream is still tokenised from the beginning), `limit` stops after that
    many.

    >>> ws = list(pack(["Hello world."], tok, 4, bos_id=0, sep_id=1))  # doctest: +SKIP
    """
    width = window - (bos_id is not None)
    if width < 1:
        raise InputError(f"window must be at least {2 if bos_id is not None else 1}, got {window}")
    if start < 0 or (limit is not None and limit < 0) or batch_docs < 1:
        raise InputError("start and limit must be >= 0 and batch_docs >= 1")
    stop = None if limit is None else start + limit
    head = [] if bos_id is None else [bos_id]
    done = 0  # windows cut so far, skipped or yielded
    buf: list[int] = []
    started = False  # a separator goes before every document but the first
    docs = iter(documents)
    while (stop is None or done < stop) and (batch := list(islice(docs, batch_docs))):
        encoded = tokenizer(
            batch,
            add_special_tokens=False,
            split_special_tokens=True,
            return_attention_mask=False,
            verbose=False,
        )["input_ids"]
        for ids in encoded:
            if ids:
                if sep_id is not None and started:
                    buf.append(sep_id)
                buf.extend(ids)
                started = True
        n = len(buf) // width
        first = min(n, max(start - done, 0))  # skipped windows are never sliced out
        done += first
        for k in range(first, n):
            if stop is not None and done >= stop:
                return
            yield head + buf[k * width : (k + 1) * width]
            done += 1
        del buf[: n * width]


def windows(
    model: Model,
    corpus: Corpus | str,
    window: int = 64,
    *,
    start: int = 0,
    limit: int | None = None,
) -> Iterator[list[int]]:
    """`pack` with the model's tokenizer: BOS first in each window, EOS between documents.

    >>> next(windows(model, "default", 64))[:3]  # doctest: +SKIP
    [1, 1024, 2150]
    """
    if model.tokenizer is None:
        raise InputError(f"{model.name} has no tokenizer: windows needs one to tokenise text")
    if not isinstance(corpus, Corpus):
        corpus = open_corpus(corpus)
    first, sep = boundary_tokens(model)
    return pack(
        corpus.documents(),
        model.tokenizer,
        window,
        bos_id=first,
        sep_id=sep,
        start=start,
        limit=limit,
    )


def window_batches(
    model: Model,
    corpus: Corpus | str,
    window: int,
    batch_size: int,
    *,
    start: int = 0,
    limit: int | None = None,
) -> Iterator[Tensor]:
    """`windows` grouped into id tensors [batch window] of `batch_size` rows (the last may be short)."""
    rows: list[list[int]] = []
    for ids in windows(model, corpus, window, start=start, limit=limit):
        rows.append(ids)
        if len(rows) == batch_size:
            yield torch.tensor(rows)
            rows = []
    if rows:
        yield torch.tensor(rows)


def boundary_tokens(model: Model) -> tuple[int | None, int | None]:
    """(first token of each window, separator between documents) for `model`.

    A tokenizer that prepends BOS itself (Llama 2, Gemma) gets its BOS first.
    Otherwise the document boundary the model saw in pretraining is used when
    it has one (``<|endoftext|>``: GPT-2, SmolLM2, Pythia), else BOS. Documents
    are separated by ``<|endoftext|>`` or EOS.
    """
    tok = model.tokenizer
    vocab = tok.get_vocab()
    eot = vocab.get("<|endoftext|>")
    adds_bos = tok.bos_token_id is not None and tok("a").input_ids[:1] == [tok.bos_token_id]
    first = tok.bos_token_id if adds_bos or eot is None else eot
    if first is None:
        first = model.bos_token_id
    return first, eot if eot is not None else tok.eos_token_id
