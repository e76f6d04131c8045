"""The viewer's page API: routes, per-kind run homes, requests and responses.

A technique adds pages in its own module ``viewer/pages/<technique>.py``
(listed in ``viewer/pages/__init__.py``)::

    from ..html import render
    from ..registry import Document, Request, home, page

    @home("harvest")                       # what /run/<run> shows for runs of this kind
    def harvest_home(req: Request) -> Document: ...

    @page("/run/{run}/unit/{site}/{unit:int}", kinds=("harvest",), title="Neuron")
    def unit_page(req: Request) -> Document:
        site, unit = req.params["site"], req.params["unit"]
        ...

    @page("/run/{run}/search", kinds=("harvest",), nav="search")   # a link in the run's header
    def search(req: Request) -> Document: ...

Patterns are Starlette's: ``{name}`` matches one segment (percent-decoded),
``{name:int}`` an integer, ``{name:path}`` the rest of the path. A pattern with
``{run}`` gets ``req.run`` (the run folder, 404 if unknown) and is offered only
to runs whose kind is in `kinds` (``None``: every kind). When two patterns
match, the one with more literal segments wins, then the one restricted to
kinds.

A handler returns a `Document` (title and body; the app adds the shell), a
bare `Markup` body (titled with the route's `title`), or a `Response` (files,
redirects); it raises `NotFound` for a friendly 404 page, and a
`MechscopeError` becomes a 400 page with its message. Build HTML with
``viewer/html.py``: `render` escapes every value that is not `Markup`. Data
that is costly to open is cached per viewer with ``req.app.resource(key,
factory)`` and guarded by ``req.app.lock(key)`` (the server is threaded).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.convertors import Convertor
from starlette.routing import compile_path

from ..errors import InputError
from .html import Markup

if TYPE_CHECKING:
    from .app import App
    from .runs import RunInfo


class NotFound(Exception):
    """Raised by a handler for a missing thing; the app answers with a friendly 404 page.

    Example: ``raise NotFound(f"no unit {unit} in {site}")`` in a handler → a 404 page.
    """

    def __init__(self, message: str, hint: Markup | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class Request:
    """One HTTP request, with the route's parameters and the run it names (if any).

    Example: in a handler, ``req.params["unit"]``, ``req.arg("q")``, ``req.the_run.path``.
    """

    app: App
    method: str
    path: str
    params: dict[str, Any]
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    run: RunInfo | None = None
    body: bytes = b""  # a POST's raw body when it was sent as JSON (forms are in `form`)
    content_type: str = ""  # a POST's media type, lower case, without parameters

    def json(self) -> Any:
        """The POST's JSON body, parsed; `InputError` when it was not sent as JSON or is not JSON.

        Example: ``groups = req.json()`` in a POST handler → ``[["France", "3_11_4"]]``.
        """
        if self.content_type != "application/json":
            raise InputError(
                f"send JSON (Content-Type: application/json), not {self.content_type or 'nothing'}"
            )
        try:
            return json.loads(self.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError("the body is not UTF-8 text") from None
        except json.JSONDecodeError as err:
            raise InputError(
                f"the body is not JSON: {err.msg} (line {err.lineno}, column {err.colno})"
            ) from None
        except (ValueError, RecursionError):  # a number over 4300 digits, nesting too deep
            raise InputError(
                "the body is JSON this viewer does not read (too deep or too long)"
            ) from None

    def arg(self, name: str, default: str = "") -> str:
        """A query-string (or form) argument, stripped; `default` when absent."""
        value = self.form.get(name, self.query.get(name))
        return default if value is None else value.strip()

    @property
    def the_run(self) -> RunInfo:
        """`run`, for routes that always have one (pattern with ``{run}``)."""
        if self.run is None:
            raise NotFound("this page needs a run")
        return self.run


@dataclass
class Document:
    """A page body with its title; the app wraps it in the viewer's shell.

    Example: ``return Document("Neuron 3", render("<p>{n}</p>", n=3))`` from a handler.
    """

    title: str
    body: Markup
    status: int = 200


@dataclass
class Response:
    """A raw HTTP response: bytes, or a file streamed from disk.

    Example: ``Response(file=run.path / "figures" / "grid.png", content_type="image/png")``.
    """

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None


def redirect(location: str, status: int = 303) -> Response:
    """A redirect to `location` (a URL path).

    Example: ``return redirect(url("run", run.id))`` → a 303 to the run's page.
    """
    return Response(status=status, headers={"Location": location})


Handler = Callable[[Request], "Document | Markup | Response"]

_FIELD = re.compile(r"^\{(\w+)(?::(int|path))?\}$")


@dataclass(frozen=True)
class Route:
    """A URL pattern bound to a handler; the pattern is compiled by Starlette.

    Example: ``Route("/run/{run}/unit/{unit:int}", handler).match("/run/ioi/unit/3")``
    → ``{'run': 'ioi', 'unit': 3}``.
    """

    pattern: str
    handler: Handler
    kinds: tuple[str, ...] | None = None
    title: str | None = None
    nav: str | None = None
    methods: tuple[str, ...] = ("GET",)

    @property
    def literals(self) -> int:
        return sum(1 for s in self.pattern.split("/") if s and not _FIELD.match(s))

    @functools.cached_property
    def _compiled(self) -> tuple[re.Pattern[str], dict[str, Convertor[Any]]]:
        regex, _, convertors = compile_path(self.pattern)
        return regex, convertors

    def match(self, path: str) -> dict[str, Any] | None:
        """The parameters if `path` (a percent-decoded URL path) fits this pattern, else None."""
        regex, convertors = self._compiled
        m = regex.match(path)
        if m is None:
            return None
        try:
            return {k: convertors[k].convert(v) for k, v in m.groupdict().items()}
        except ValueError:  # an integer too long for int() (over 4300 digits): no such page
            return None

    def allows(self, method: str) -> bool:
        """Whether the route answers `method` (HEAD wherever GET)."""
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)

    def accepts(self, kind: str | None) -> bool:
        return self.kinds is None or kind in self.kinds


class Registry:
    """All pages and run homes; `page` and `home` below register into the default one.

    Example::

        reg = REGISTRY.copy()
        reg.page("/hello", title="Hello")(lambda req: Markup("<p>hi</p>"))
        App(["runs"], reg).handle("GET", "/hello").status       # 200
    """

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.homes: dict[str, Handler] = {}

    def page(
        self,
        pattern: str,
        *,
        kinds: tuple[str, ...] | None = None,
        title: str | None = None,
        nav: str | None = None,
        methods: tuple[str, ...] = ("GET",),
    ) -> Callable[[Handler], Handler]:
        """Register a handler for `pattern` (see the module docstring); `nav` labels a header link."""
        for seg in pattern.split("/"):
            if "{" in seg and not _FIELD.match(seg):
                raise ValueError(f"bad pattern segment {seg!r} in {pattern!r}")
        if nav is not None and any(
            _FIELD.match(s) and s != "{run}" for s in pattern.split("/") if s
        ):
            raise ValueError(f"a nav page may have only {{run}} as parameter: {pattern!r}")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(pattern, handler, kinds, title, nav, methods))
            return handler

        return register

    def home(self, *kinds: str) -> Callable[[Handler], Handler]:
        """Register what ``/run/<run>`` shows for runs of these kinds."""

        def register(handler: Handler) -> Handler:
            for kind in kinds:
                self.homes[kind] = handler
            return handler

        return register

    def candidates(self, method: str, path: str) -> list[tuple[Route, dict[str, Any]]]:
        """Routes whose pattern fits `path`, best first (more literal segments, then kinds).

        Several pages may share a pattern for runs of different kinds, which a first-match
        router cannot express: every fitting route is returned and the app picks the first
        that accepts the run's kind.
        """
        found = []
        for order, route in enumerate(self.routes):
            if not route.allows(method):
                continue
            params = route.match(path)
            if params is not None:
                found.append((-route.literals, route.kinds is None, order, route, params))
        found.sort(key=lambda t: t[:3])
        return [(t[3], t[4]) for t in found]

    def methods_for(self, path: str) -> list[str]:
        """The methods some route answers at `path` (empty: there is no page at `path`).

        Example: ``REGISTRY.methods_for("/run/ioi")`` → ``["GET", "HEAD"]``.
        """
        found = {m for r in self.routes if r.match(path) is not None for m in r.methods}
        if "GET" in found:
            found.add("HEAD")
        return sorted(found)

    def nav_for(self, kind: str) -> list[Route]:
        """The header links offered to runs of `kind`."""
        return [r for r in self.routes if r.nav is not None and r.accepts(kind)]

    def copy(self) -> Registry:
        """A registry with the same pages, to extend without touching this one (tests)."""
        new = Registry()
        new.routes = list(self.routes)
        new.homes = dict(self.homes)
        return new


REGISTRY = Registry()
page = REGISTRY.page
home = REGISTRY.home
