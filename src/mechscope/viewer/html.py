"""A tiny HTML templating helper: everything is escaped unless it is already `Markup`.

Text from runs and corpora (tokens, configs, file names) goes into pages only
through `render`, `escape` or `join`, which pass it through `html.escape`;
only `Markup` (HTML this package built) is inserted as is. `document` wraps a
page body in the viewer's shell (header, navigation, CSS and JS served from
``viewer/static``; no CDN, no inline script).

Example::

    render("<p>{name} fired {act:.2f}</p>", name="<script>", act=1.5)
    # Markup('<p>&lt;script&gt; fired 1.50</p>')
"""

from __future__ import annotations

import html
import string
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode


class Markup(str):
    """A string of HTML that is safe to insert as is (built by this package, never from data)."""

    __slots__ = ()

    def __html__(self) -> Markup:
        return self

    def __add__(self, other: str) -> Markup:  # type: ignore[override]
        return Markup(str.__add__(self, escape(other)))

    def __repr__(self) -> str:
        return f"Markup({str.__repr__(self)})"


def escape(value: object) -> Markup:
    """`value` as HTML text: Markup passes through, anything else is converted and escaped."""
    if isinstance(value, Markup):
        return value
    if hasattr(value, "__html__"):
        return Markup(value.__html__())  # type: ignore[attr-defined]
    return Markup(html.escape(str(value), quote=True))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Markup):
            return value if not format_spec else format(str(value), format_spec)
        return html.escape(format(value, format_spec), quote=True)


_FORMATTER = _EscapingFormatter()


def render(template: str, /, **values: object) -> Markup:
    """Fill `template` (``str.format`` fields, format specs allowed) with escaped `values`."""
    return Markup(_FORMATTER.vformat(template, (), values))


def join(parts: Iterable[object], sep: str = "") -> Markup:
    """Concatenate `parts` (each escaped unless Markup) with `sep` (escaped unless Markup)."""
    return Markup(escape(sep).join(escape(p) for p in parts))


def url(*segments: object, **query: object) -> str:
    """An absolute URL path from segments, each percent-quoted; `query` values of None are dropped.

    Example: ``url("run", "ioi", "unit", "blocks.0.mlp.post", 3)`` is
    ``"/run/ioi/unit/blocks.0.mlp.post/3"``.
    """
    path = "/" + "/".join(quote(str(s), safe="") for s in segments)
    kept = {k: str(v) for k, v in query.items() if v is not None}
    return path + ("?" + urlencode(kept) if kept else "")


def table(header: Iterable[object], rows: Iterable[Iterable[object]], cls: str = "grid") -> Markup:
    """An HTML table; cells are escaped unless Markup."""
    head = join(render("<th>{h}</th>", h=h) for h in header)
    body = join(
        render("<tr>{cells}</tr>", cells=join(render("<td>{c}</td>", c=c) for c in row))
        for row in rows
    )
    return render(
        '<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>',
        cls=cls,
        head=head,
        body=body,
    )


def link(href: str, text: object, **attrs: object) -> Markup:
    """An ``<a>`` element; `attrs` become attributes (``cls`` → ``class``)."""
    extra = join(
        render(' {k}="{v}"', k="class" if k == "cls" else k.replace("_", "-"), v=v)
        for k, v in attrs.items()
        if v is not None
    )
    return render('<a href="{href}"{extra}>{text}</a>', href=href, extra=extra, text=text)


def definition_list(items: Mapping[str, object]) -> Markup:
    """A ``<dl>`` of facts (name → value)."""
    return render(
        '<dl class="facts">{items}</dl>',
        items=join(render("<dt>{k}</dt><dd>{v}</dd>", k=k, v=v) for k, v in items.items()),
    )


def document(
    title: str,
    body: Markup,
    *,
    crumbs: Iterable[tuple[str, str]] = (),
    nav: Iterable[tuple[str, str]] = (),
    current: str = "",
) -> Markup:
    """The whole HTML page: header with breadcrumbs (label, href) and run navigation, then `body`."""
    crumb_html = join(render(" / {a}", a=link(href, label)) for label, href in crumbs)
    nav_html = join(
        link(href, label, cls="current" if href == current else None) for label, href in nav
    )
    return render(
        """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mechscope</title>
<link rel="stylesheet" href="/static/viewer.css">
<script src="/static/viewer.js" defer></script>
</head>
<body>
<header class="top"><a class="brand" href="/">mechscope</a>{crumbs}<nav>{nav}</nav></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
""",
        title=title,
        crumbs=crumb_html,
        nav=nav_html,
        body=body,
    )
