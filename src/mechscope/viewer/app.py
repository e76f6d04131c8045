"""The viewer application: runs, routing a request to a page, and wrapping pages in the shell.

`App.handle` turns (method, URL, form) into a `Response` and knows nothing
about sockets (``server.py`` does); a malformed query string gets a 400 page,
a method no page takes (for the run's kind) a 405; pages live in ``viewer/pages/``. Results
that are costly to open (a harvest's tables) are kept per app with
`App.resource`, and `App.lock` serialises access to them across the server's
threads.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import InputError, MechscopeError
from .html import Markup, document, escape, join, link, render, url
from .registry import REGISTRY, Document, NotFound, Registry, Request, Response
from .runs import RunInfo, discover_runs

if TYPE_CHECKING:
    from ..results import Result

T = TypeVar("T")
R = TypeVar("R", bound="Result")

# Our own pages run no inline script and load nothing from elsewhere; figures
# (plotly HTML with inline scripts) are served as files, without this policy.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'"
)


MAX_QUERY_CHARS = 8192  # a search term fits many times over
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class QueryTooLong(InputError):
    """A query string longer than `MAX_QUERY_CHARS` (answered with 414).

    Example: ``parse_query("q=" + "x" * 10_000)`` raises ``QueryTooLong``.
    """


class MethodNotAllowed(MechscopeError):
    """A method no page at this path answers (answered with 405 and an Allow header).

    Example: ``MethodNotAllowed("PUT", "/", ["GET", "HEAD"])`` → "PUT is not answered at /; use GET, HEAD".
    """

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        super().__init__(f"{method} is not answered at {path}; use {', '.join(allowed)}")
        self.allowed = allowed


def parse_query(query: str) -> dict[str, str]:
    """The arguments of a URL's query string, each given once, as percent-decoded UTF-8.

    Raises `InputError` for a bad percent-escape, bytes that are not UTF-8 or an
    argument given twice, and `QueryTooLong` past `MAX_QUERY_CHARS`.

    Example: ``parse_query("q=%20Paris&limit=5")`` → ``{"q": " Paris", "limit": "5"}``.
    """
    if len(query) > MAX_QUERY_CHARS:
        raise QueryTooLong(
            f"the query string has {len(query)} characters; at most {MAX_QUERY_CHARS} are read"
        )
    bad = _BAD_ESCAPE.search(query)
    if bad is not None:
        near = query[bad.start() : bad.start() + 3]
        raise InputError(f"bad percent-escape {near!r} in the query string (use %XX, XX in hex)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InputError("the query string is not percent-encoded UTF-8") from None
    args: dict[str, str] = {}
    for key, value in pairs:
        if key in args:
            raise InputError(f"the query gives {key!r} more than once; give each argument once")
        args[key] = value
    return args


class App:
    """The runs under `paths` and the pages of `registry` (the default: every technique's).

    Example::

        resp = App(["runs"]).handle("GET", "/")      # the list of runs, no socket involved
        resp.status, resp.content_type              # 200, 'text/html; charset=utf-8'
    """

    def __init__(self, paths: Iterable[str | Path], registry: Registry | None = None) -> None:
        from . import pages  # noqa: F401  (registers every technique's pages)

        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise MechscopeError("give at least one run folder (or a folder that holds runs)")
        self.registry = registry or REGISTRY
        self.runs: dict[str, RunInfo] = discover_runs(self.paths)
        self._resources: dict[Any, Any] = {}
        self._locks: dict[Any, threading.RLock] = {}
        self._guard = threading.Lock()

    def refresh(self) -> None:
        """Look for runs again (new runs appear; ids of known runs stay the same)."""
        known = {r.path: r.id for r in self.runs.values()}
        with contextlib.suppress(MechscopeError):  # a folder vanished: keep what we had
            self.runs = discover_runs(self.paths, known)

    def lock(self, key: Any) -> threading.RLock:
        """The lock that guards the resource `key`."""
        with self._guard:
            return self._locks.setdefault(key, threading.RLock())

    def resource(self, key: Any, factory: Callable[[], T]) -> T:
        """The object cached under `key`, made by `factory` on first use."""
        with self.lock(key):
            if key not in self._resources:
                self._resources[key] = factory()
            return self._resources[key]

    def result(self, run: RunInfo, relative: str, cls: type[R] | None = None) -> R | None:
        """The result saved at `relative` in `run` (numpy arrays, no torch), or None if the
        file is missing; read once while the file is unchanged. `cls` checks its class.

        Example::

            trace = req.app.result(run, "trace.safetensors", CausalTrace)
        """
        from ..results import open_result

        path = run.path / relative
        if not path.is_file():
            return None
        stat = path.stat()

        def load() -> Result:
            try:
                found = cls.load(path, arrays="numpy") if cls else open_result(path, arrays="numpy")
            except MechscopeError as err:
                said = str(err).replace(str(path), relative)  # the run's file, not the disk's
                raise MechscopeError(f"{run.kind} run {run.id}: {said}") from None
            return found

        return self.resource(("result", path, stat.st_mtime_ns, stat.st_size), load)  # type: ignore[return-value]

    def close(self) -> None:
        """Close the cached resources that can be closed."""
        with self._guard:
            resources, self._resources = list(self._resources.values()), {}
        for res in resources:
            close = getattr(res, "close", None)
            if callable(close):
                close()

    # ------------------------------------------------------------------ routing

    def handle(
        self,
        method: str,
        target: str,
        form: dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str = "",
    ) -> Response:
        """Answer one request; never raises (errors become error pages). `body` is a POST's
        raw body when sent as JSON (`content_type` ``application/json``); forms come as `form`."""
        split = urlsplit(target)
        path = "/" + "/".join(unquote(p) for p in split.path.split("/") if p)
        req = Request(self, method, split.path, {}, {}, form or {})
        req.body, req.content_type = body, content_type
        try:
            req.query = parse_query(split.query)
            return self._dispatch(req, path)
        except NotFound as err:
            return self.page(req, self.not_found_document(err.message, err.hint))
        except MethodNotAllowed as err:
            doc = Document("Method not allowed", render('<p class="error">{e}</p>', e=err), 405)
            resp = self.page(req, doc)
            resp.headers["Allow"] = ", ".join(err.allowed)
            return resp
        except MechscopeError as err:
            status = 414 if isinstance(err, QueryTooLong) else 400
            doc = Document("Cannot show this", render('<p class="error">{e}</p>', e=err), status)
            return self.page(req, doc)
        except Exception:  # a bug in a page: show it, keep serving
            trace = traceback.format_exc()
            print(trace, file=sys.stderr)
            doc = Document(
                "Internal error",
                render(
                    '<p class="error">This page failed; the traceback:</p><pre>{t}</pre>', t=trace
                ),
                500,
            )
            return self.page(req, doc)

    def _dispatch(self, req: Request, path: str) -> Response:
        found = self.registry.candidates(req.method, path)
        if not found:
            allowed = self.registry.methods_for(path)
            if allowed:
                raise MethodNotAllowed(req.method, req.path, allowed)
            raise NotFound(f"there is no page at {req.path}")
        route, params = found[0]
        if "run" in params:
            run = self.runs.get(params["run"])
            if run is None:
                self.refresh()
                run = self.runs.get(params["run"])
            if run is None:
                raise NotFound(f"no run named {params['run']!r}", self._run_list_hint())
            fitting = [(r, p) for r, p in found if r.accepts(run.kind)]
            if not fitting and req.method not in ("GET", "HEAD"):
                # a method taken here only for runs of other kinds (a graph run's POST):
                # for this run, a method no page takes, as a method taken nowhere
                others = [m for m in self.registry.methods_for(path) if m != req.method]
                raise MethodNotAllowed(req.method, req.path, others)
            if not fitting:
                kinds = sorted({k for r, _ in found for k in (r.kinds or ())})
                raise NotFound(
                    f"{req.path} is a page of {' / '.join(kinds)} runs; "
                    f"{run.id} is a {run.kind} run"
                )
            route, params = fitting[0]
            req.run = run
        req.params = params
        result = route.handler(req)
        if isinstance(result, Response):
            return result
        if isinstance(result, str):  # a bare body: titled by the route; plain text is escaped
            result = Document(route.title or "mechscope", escape(result))
        return self.page(req, result)

    # ---------------------------------------------------------------- rendering

    def page(self, req: Request, doc: Document) -> Response:
        """`doc` wrapped in the shell, as a response."""
        crumbs: list[tuple[str, str]] = []
        nav: list[tuple[str, str]] = []
        if req.run is not None:
            run = req.run
            crumbs.append((f"{run.id} ({run.kind})", url("run", run.id)))
            nav.append(("home", url("run", run.id)))
            if run.kind in self.registry.homes:
                nav.append(("record", url("run", run.id, "record")))
            for route in self.registry.nav_for(run.kind):
                href = route.pattern.replace("{run}", quote(run.id, safe=""))
                nav.append((route.nav or "", href))
        html = document(doc.title, doc.body, crumbs=crumbs, nav=nav, current=req.path)
        return Response(
            html.encode("utf-8"),
            status=doc.status,
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"},
        )

    def not_found_document(self, message: str, hint: Markup | None = None) -> Document:
        """The friendly 404 page."""
        body = render(
            '<p class="error">{message}</p>{hint}<p><a href="/">All runs</a></p>',
            message=message,
            hint=hint or Markup(""),
        )
        return Document("Not found", body, 404)

    def _run_list_hint(self) -> Markup:
        if not self.runs:
            return Markup("")
        items = join(render("<li>{a}</li>", a=link(url("run", i), i)) for i in sorted(self.runs))
        return render("<p>Runs served here:</p><ul>{items}</ul>", items=items)
