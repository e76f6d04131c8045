"""Pieces the technique pages share: a run's files and figures, missing-file pages, numbers.

Example::

    from .common import figure_html, missing_file, num
    figure_html(run, "trace", "Causal trace")     # the figure's PNG with links to every format
    num(float("nan"))                             # "—"
"""

from __future__ import annotations

import math
import re

from ..html import Markup, link, macro, render, url
from ..registry import NotFound
from ..runs import RunInfo


def figure_html(run: RunInfo, stem: str, caption: str, *, interactive: bool = False) -> Markup:
    """The figure ``figures/<stem>``: its PNG (else SVG), with links to every format.

    `interactive` shows the HTML version instead when there is one.

    Example: ``figure_html(run, "trace", "Causal trace")`` → ``<figure class="sae-figure" …>``.
    """
    folder = run.path / "figures"
    formats = {
        fmt: f"figures/{stem}.{fmt}"
        for fmt in ("png", "svg", "html")
        if (folder / f"{stem}.{fmt}").is_file()
    }
    if not formats:
        return render('<p class="muted">No figure figures/{stem}.*</p>', stem=stem)
    links = [(fmt, file_url(run, rel)) for fmt, rel in formats.items()]
    image = None if interactive and "html" in formats else formats.get("png") or formats.get("svg")
    frame = file_url(run, formats["html"]) if "html" in formats else None
    return macro("figure", stem, caption, links, file_url(run, image) if image else None, frame)


def num(x: float | None, spec: str = ".4g") -> str:
    """A number as shown: "—" when missing or NaN."""
    return "—" if x is None or math.isnan(x) else format(float(x), spec)


def count(n: int, noun: str) -> str:
    """``count(3, "fact")`` → ``"3 facts"``; ``count(1, "fact")`` → ``"1 fact"``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def share(x: float | None) -> str:
    """A fraction as a percentage: ``share(0.25)`` → ``"25.0%"``, "—" when missing."""
    return "—" if x is None or math.isnan(x) else f"{x:.1%}"


def missing_file(run: RunInfo, relative: str) -> NotFound:
    """The 404 for a run that lacks its main result file (it did not finish)."""
    return NotFound(
        f"{run.kind} run {run.id} has no {relative}: it did not finish",
        render("<p>{a}</p>", a=link(url("run", run.id, "record"), "its record and files")),
    )


def summary_html(run: RunInfo) -> Markup:
    """run.json's one-line ``summary`` (the result's repr), or nothing."""
    summary = run.record.get("summary")
    if isinstance(summary, list):
        summary = "\n".join(str(line) for line in summary)
    return render('<pre class="summary">{s}</pre>', s=summary) if summary else Markup("")


def tensor_links(run: RunInfo, folder: str, name: re.Pattern[str]) -> list[tuple[re.Match, str]]:
    """The safetensors files in `folder` whose stem matches `name`: (match, relative path)."""
    path = run.path / folder
    if not path.is_dir():
        return []
    found = []
    for file in sorted(path.glob("*.safetensors")):
        m = name.fullmatch(file.stem)
        if m is not None and file.is_file():
            found.append((m, f"{folder}/{file.name}"))
    return found


def download(run: RunInfo, relative: str) -> Markup:
    """A link that downloads `relative`, with the file's size."""
    size = human_size((run.path / relative).stat().st_size)
    return render(
        "{a} <span class=muted>({size})</span>",
        a=link(file_url(run, relative), relative, download=""),
        size=size,
    )


def file_url(run: RunInfo, relative: str) -> str:
    """The URL that serves `relative` (a path inside the run folder)."""
    return url("run", run.id, "files", *relative.split("/"))


def human_size(n: float) -> str:
    """A byte count as shown: ``human_size(2_500_000)`` → ``"2.5 MB"``."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
