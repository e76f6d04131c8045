"""Pages every run has: the index of runs, a run's record (config, run.json, figures), its files.

``/run/<run>`` shows the home registered for the run's kind, or the record
when the kind has none, so a run of a kind the viewer does not know is still
readable. Files are served from inside the run folder only.
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from ..html import Markup, link, template, url
from ..registry import Document, NotFound, Request, Response, page
from ..runs import RunInfo
from .common import file_url, human_size

STATIC = Path(__file__).resolve().parent.parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
}
IMAGE_FORMATS = ("png", "svg", "jpg", "jpeg", "gif", "webp")


def content_type(path: Path) -> str:
    """The Content-Type to serve `path` with."""
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def file_inside(root: Path, relative: str) -> Path:
    """`root`/`relative` if it is a file inside `root` (no ``..``, no escaping symlinks), else 404.

    Names the disk refuses (a NUL byte, a name too long, a symlink loop) are missing files too.
    """
    root = root.resolve()
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    missing = NotFound(f"no file {relative[:200]!r} here")
    if not parts or any(p == ".." or p.startswith(".") or "\x00" in p for p in parts):
        raise missing
    try:
        target = root.joinpath(*parts).resolve()
        inside = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError, RuntimeError):  # too long, a NUL, a symlink loop (3.11)
        inside = False
    if not inside:
        raise missing
    return target


@page("/", title="Runs")
def index(req: Request) -> Document:
    """All runs served, newest first."""
    req.app.refresh()
    runs = sorted(req.app.runs.values(), key=lambda r: r.finished, reverse=True)
    rows = [(link(url("run", r.id), r.id), r.kind, r.finished, r.model, str(r.path)) for r in runs]
    paths = ", ".join(str(p) for p in req.app.paths)
    return Document("Runs", template("generic/index.html", runs=runs, paths=paths, rows=rows))


@page("/run/{run}", title="Run")
def run_home(req: Request) -> Document | Markup | Response:
    """The home page registered for the run's kind, else its record."""
    handler = req.app.registry.homes.get(req.the_run.kind)
    return handler(req) if handler is not None else run_record(req)


@page("/run/{run}/record", title="Run record")
def run_record(req: Request) -> Document:
    """config.json, run.json, figures and other files of any run."""
    run = req.the_run
    facts = {
        "kind": run.kind,
        "folder": str(run.path),
        "finished": run.finished or "—",
        "model": run.model or "—",
    }
    body = template(
        "generic/record.html",
        facts=facts,
        figures=figure_blocks(run),
        config=json.dumps(run.config, indent=2, default=str),
        record=json.dumps(run.record, indent=2, default=str),
        files=file_rows(run),
    )
    return Document(f"{run.id}", body)


@dataclass(frozen=True)
class FigureBlock:
    """One figure of a run as the ``figures`` macro shows it: the stem, a link per saved
    format, the image to show (if any) and the interactive HTML to frame (if any).

    Example: ``FigureBlock("logit_diff", (("png", "/run/r/files/figures/logit_diff.png"),),
    image="/run/r/files/figures/logit_diff.png", frame=None)``.
    """

    stem: str
    links: tuple[tuple[str, str], ...]
    image: str | None
    frame: str | None


def figure_blocks(run: RunInfo) -> list[FigureBlock]:
    """Each figure of ``figures/``, its formats side by side under one stem.

    Figures are saved as PNG, SVG and HTML under one stem; when a PNG exists the
    template embeds the HTML version in a collapsed block, so a page of many
    plotly figures stays fast.
    """
    folder = run.path / "figures"
    if not folder.is_dir():
        return []
    stems: dict[str, dict[str, str]] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(run.path).as_posix()
        if not path.is_file() or any(p.startswith(".") for p in rel.split("/")):
            continue
        fmt = path.suffix.lower().lstrip(".")
        if fmt in ("html", "htm", *IMAGE_FORMATS):
            stem = path.relative_to(folder).with_suffix("").as_posix()
            stems.setdefault(stem, {})[fmt] = rel
    blocks = []
    for stem, formats in stems.items():
        image = next((formats[f] for f in IMAGE_FORMATS if f in formats), None)
        html_rel = formats.get("html") or formats.get("htm")
        blocks.append(
            FigureBlock(
                stem,
                tuple((fmt, file_url(run, rel)) for fmt, rel in formats.items()),
                file_url(run, image) if image else None,
                file_url(run, html_rel) if html_rel else None,
            )
        )
    return blocks


def file_rows(run: RunInfo) -> list[tuple[Markup, str]]:
    """(link, size) of each of the run folder's top-level files."""
    return [
        (link(file_url(run, path.name), path.name), human_size(path.stat().st_size))
        for path in sorted(run.path.iterdir())
        if path.is_file() and not path.name.startswith(".")
    ]


@page("/run/{run}/files/{path:path}")
def run_file(req: Request) -> Response:
    """A file from inside the run folder (figures, results), with its content type."""
    target = file_inside(req.the_run.path, req.params["path"])
    return Response(content_type=content_type(target), file=target)


@page("/static/{name:path}")
def static(req: Request) -> Response:
    """The viewer's own CSS and JS."""
    target = file_inside(STATIC, req.params["name"])
    return Response(content_type=content_type(target), file=target)


@page("/favicon.ico")
def favicon(req: Request) -> Response:
    """No icon (spares the browser's console a 404)."""
    return Response(status=204)
