"""Tokens as HTML, shared by every page that shows text: whitespace and control
characters made visible, activations shaded (orange positive, blue negative), and
the link to a harvested unit's page.

Example: ``token_spans([" The", " cat"], [0.5, 2.0], scale=2.0)`` → two shaded spans.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .html import Markup, join, render, url
from .runs import RunInfo

POSITIVE = (255, 110, 0)  # orange
NEGATIVE = (30, 110, 255)  # blue
VISIBLE = {"\n": "↵", "\r": "␍", "\t": "⇥"}


def unit_url(run: RunInfo, site: str, unit: int) -> str:
    """The page of unit `unit` of `site` in harvest run `run`.

    Example: ``unit_url(run, "blocks.0.mlp.post", 3)`` → ``"/run/ioi/unit/blocks.0.mlp.post/3"``.
    """
    return url("run", run.id, "unit", site, unit)


def show_token(token: str) -> Markup:
    """A token as HTML text, with newlines, tabs and control characters made visible.

    Example: ``show_token("a\\n")`` → ``Markup('a<span class="ws">↵</span>')``.
    """
    if token == "":
        return Markup('<span class="ws">∅</span>')
    parts: list[Markup] = []
    plain: list[str] = []
    for ch in token:
        glyph = VISIBLE.get(ch)
        if glyph is None and unicodedata.category(ch) == "Cc":
            glyph = f"\\x{ord(ch):02x}"
        if glyph is None:
            plain.append(ch)
            continue
        parts.append(render("{t}", t="".join(plain)))
        plain = []
        parts.append(render('<span class="ws">{g}</span>', g=glyph))
    parts.append(render("{t}", t="".join(plain)))
    return join(parts)


def token_background(act: float, scale: float) -> str:
    """CSS background for an activation: orange if positive, blue if negative, alpha |act|/scale.

    Example: ``token_background(0.5, 2.0)`` → ``"background:rgba(255,110,0,0.250)"``.
    """
    if scale <= 0 or act != act:  # NaN
        return ""
    alpha = min(abs(act) / scale, 1.0)
    if alpha < 0.005:
        return ""
    r, g, b = POSITIVE if act > 0 else NEGATIVE
    return f"background:rgba({r},{g},{b},{alpha:.3f})"


def token_spans(
    tokens: Sequence[str], acts: Sequence[float], scale: float, max_pos: int = -1, label: str = ""
) -> Markup:
    """Tokens shaded by activation relative to `scale`; hover shows `label` and the value.

    Example: ``token_spans([" The", " cat"], [0.5, 2.0], scale=2.0, max_pos=1, label="L3N7")``.
    """
    prefix = f"{label} " if label else ""
    return join(
        render(
            '<span class="{cls}" style="{style}" title="{tip}" data-act="{act}">{text}</span>',
            cls="tok max" if pos == max_pos else "tok",
            style=token_background(act, scale),
            tip=f"{tok!r}  {prefix}{act:.6g}",
            act=f"{act:.6g}",
            text=show_token(tok),
        )
        for pos, (tok, act) in enumerate(zip(tokens, acts, strict=False))
    )
