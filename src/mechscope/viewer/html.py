"""HTML for the viewer's pages: escaped by construction (MarkupSafe), the shell in Jinja2.

Text from runs and corpora (tokens, configs, file names) goes into pages only
through `render`, `escape`, `join` or a Jinja2 template (autoescaped), which
escape it; only `Markup` (HTML this package built) is inserted as is.
`document` wraps a page body in the viewer's shell (``templates/shell.html``:
header, navigation, CSS and JS served from ``viewer/static``; no CDN, no
inline script).

Example::

    render("<p>{name} fired {act:.2f}</p>", name="<script>", act=1.5)
    # Markup('<p>&lt;script&gt; fired 1.50</p>')
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup, escape

__all__ = [
    "Markup",
    "definition_list",
    "document",
    "escape",
    "join",
    "link",
    "macro",
    "render",
    "table",
    "template",
    "url",
]


@functools.cache
def environment() -> jinja2.Environment:
    """The viewer's Jinja2 environment: the package's templates, every value autoescaped.

    Example: ``environment().get_template("shell.html")`` → ``<Template 'shell.html'>``.
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mechscope.viewer", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template(name: str, /, **values: Any) -> Markup:
    """Render the package template `name` (``templates/<name>``) with `values`, escaped.

    Example: ``template("shell.html", title="t", body=body, crumbs=[], nav=[], current="/")``.
    """
    return Markup(environment().get_template(name).render(**values))


def render(template: str, /, **values: object) -> Markup:
    """`template` (a ``str.format`` string of trusted HTML) with every value escaped
    unless it is `Markup`.

    Example: ``render("<b>{x}</b>", x="a<b")`` → ``Markup('<b>a&lt;b</b>')``.
    """
    return Markup(template).format(**values)


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """Concatenate `parts` (each escaped unless Markup) with `sep` (escaped unless Markup).

    Example: ``join(["a<b", Markup("<br>")], ", ")`` → ``Markup('a&lt;b, <br>')``.
    """
    return Markup(escape(sep).join(escape(p) for p in parts))


def url(*segments: object, **query: object) -> str:
    """An absolute URL path from segments, each percent-quoted; `query` values of None are dropped.

    Example: ``url("run", "ioi", "unit", "blocks.0.mlp.post", 3)`` is
    ``"/run/ioi/unit/blocks.0.mlp.post/3"``.
    """
    path = "/" + "/".join(quote(str(s), safe="") for s in segments)
    kept = {k: str(v) for k, v in query.items() if v is not None}
    return path + ("?" + urlencode(kept) if kept else "")


def macro(name: str, /, *args: Any, **kwargs: Any) -> Markup:
    """Call the macro `name` of ``templates/macros.html`` (the pieces pages share) from Python.

    Example: ``macro("table", ["site", "unit"], [["blocks.0.mlp.post", 3]])`` → ``<table …>``.
    """
    module = environment().get_template("macros.html").module
    return Markup(getattr(module, name)(*args, **kwargs))


def table(header: Iterable[object], rows: Iterable[Iterable[object]], cls: str = "grid") -> Markup:
    """An HTML table (the ``table`` macro); cells are escaped unless Markup.

    Example: ``table(["site", "unit"], [["blocks.0.mlp.post", 3]])`` → ``Markup('<table …>')``.
    """
    return macro("table", list(header), [list(r) for r in rows], cls=cls)


def link(href: str, text: object, **attrs: object) -> Markup:
    """An ``<a>`` element; `attrs` become attributes (``cls`` → ``class``).

    Example: ``link("/run/ioi", "ioi", cls="run")`` → ``<a href="/run/ioi" class="run">ioi</a>``.
    """
    extra = join(
        render(' {k}="{v}"', k="class" if k == "cls" else k.replace("_", "-"), v=v)
        for k, v in attrs.items()
        if v is not None
    )
    return render('<a href="{href}"{extra}>{text}</a>', href=href, extra=extra, text=text)


def definition_list(items: Mapping[str, object]) -> Markup:
    """A ``<dl>`` of facts (name → value; the ``facts`` macro).

    Example: ``definition_list({"model": "smollm2-135m"})`` → ``<dl class="facts"><dt>…``.
    """
    return macro("facts", dict(items))


def document(
    title: str,
    body: Markup,
    *,
    crumbs: Iterable[tuple[str, str]] = (),
    nav: Iterable[tuple[str, str]] = (),
    current: str = "",
) -> Markup:
    """The whole HTML page: header with breadcrumbs (label, href) and run navigation, then `body`.

    Example: ``document("IOI", Markup("<p>…</p>"), crumbs=[("ioi", "/run/ioi")])`` → the page.
    """
    return template(
        "shell.html", title=title, body=body, crumbs=list(crumbs), nav=list(nav), current=current
    )
