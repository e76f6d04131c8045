"""The built-in corpora: real English text that Debian packages install.

Jane Austen's novels (r-cran-janeaustenr), the GCIDE dictionary (dict-gcide),
fortune cookies (fortunes), the Python documentation's reStructuredText
(python3.11-doc) and WordNet glosses (wordnet-base), each cleaned into plain
paragraphs and grouped into documents of about `DOC_CHARS` characters.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import unicodedata
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CORPUS = "default"
DEFAULT_MIX = ("austen", "gcide", "fortunes", "pydocs")
DOC_CHARS = 4000  # documents are runs of whole paragraphs of about this many characters
USER_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True)
class SourceInfo:
    """A built-in source: what it holds, where its text lies, which Debian package puts it there.

    Example: ``SOURCES["fortunes"].installed()`` → whether its files are there;
    ``SOURCES["fortunes"].install`` → ``"apt-get install -y fortunes"``.
    """

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
