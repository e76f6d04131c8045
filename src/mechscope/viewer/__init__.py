"""The local web viewer: ``mechscope serve RUN_DIR…`` shows run folders in a browser.

Standard library only (``http.server``), bound to 127.0.0.1 by default, no
CDN: CSS and JS are served from ``viewer/static``. Every run gets a page (its
config, record and figures); techniques add richer pages for their own run
kinds in ``viewer/pages/<technique>.py`` (see `registry` for how).

Example::

    from mechscope.viewer import serve

    with serve(["runs"]) as viewer:
        print(viewer.url)
"""

from __future__ import annotations

from .app import App
from .registry import Document, NotFound, Request, Response, home, page, redirect
from .runs import RunInfo, discover_runs
from .server import Viewer, serve, serve_forever

__all__ = [
    "App",
    "Document",
    "NotFound",
    "Request",
    "Response",
    "RunInfo",
    "Viewer",
    "discover_runs",
    "home",
    "page",
    "redirect",
    "serve",
    "serve_forever",
]
