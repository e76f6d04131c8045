"""The HTTP side: a Starlette application in front of an `App`, served by uvicorn.

`asgi(app)` is the ASGI application (usable with any ASGI server, or with
Starlette's test client); `Viewer` runs uvicorn on a socket bound at once (so a
port in use fails at once, with one line) in a background thread or in this
one. Pages are synchronous (they read files and DuckDB), so each request runs
in Starlette's thread pool.

Example::

    from mechscope.viewer import serve

    with serve(["runs"]) as viewer:          # 127.0.0.1, a free port, in a background thread
        print(viewer.url)                    # http://127.0.0.1:54321/
        ...
    serve(["runs"], port=8000).serve_forever()   # blocking, until Ctrl-C
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, PlainTextResponse
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route

from ..errors import InputError
from .app import App
from .registry import Response

MAX_FORM_BYTES = 1 << 20
START_SECONDS = 10.0  # how long `start` waits for uvicorn to listen
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# passed on to the app, which answers those its pages do not take with a 405 page (and Allow)
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")


def asgi(app: App) -> Starlette:
    """The Starlette application serving `app`'s pages; a method a page does not take gets 405.

    Example::

        from starlette.testclient import TestClient
        TestClient(asgi(App(["runs"]))).get("/").status_code     # 200
    """

    async def endpoint(request: HTTPRequest) -> HTTPResponse:
        form: dict[str, str] = {}
        body, content_type = b"", ""
        if request.method == "POST":
            try:
                size = int(request.headers.get("content-length") or 0)
            except ValueError:
                return PlainTextResponse("bad Content-Length", 400)
            if size > MAX_FORM_BYTES:
                return PlainTextResponse("form too large", 413)
            raw = await request.body()
            if len(raw) > MAX_FORM_BYTES:
                return PlainTextResponse("form too large", 413)
            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type == "application/json":
                body = raw  # read by the page (`Request.json`); a form is parsed here
            else:
                parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
                form = {k: v[0] for k, v in parsed.items()}
        # the path as sent (still percent-encoded): the app decodes it segment by segment
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        target = raw_path.decode("latin-1")
        if request.url.query:
            target += "?" + request.url.query
        resp = await run_in_threadpool(app.handle, request.method, target, form, body, content_type)
        return _http(resp)

    route = Route("/{path:path}", endpoint, methods=list(METHODS))
    return Starlette(routes=[route])


def _http(resp: Response) -> HTTPResponse:
    headers = {**SECURITY_HEADERS, **resp.headers}
    if resp.file is not None:
        return FileResponse(resp.file, resp.status, headers, media_type=resp.content_type)
    return HTTPResponse(resp.body, resp.status, headers, media_type=resp.content_type)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise InputError(
            f"cannot listen on {host}:{port} ({err.strerror or err}); "
            "pick another --port, or 0 for a free one"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Viewer:
    """A viewer server bound to `host`:`port` (0: a free port); `start` serves in a thread.

    Example::

        with Viewer(App(["runs"]), port=0) as viewer:
            print(viewer.url)                        # http://127.0.0.1:33529/
    """

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        self._socket = _bind(host, port)
        self._address = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            asgi(app),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._address[0])

    @property
    def port(self) -> int:
        return int(self._address[1])

    @property
    def url(self) -> str:
        """The viewer's root URL, e.g. ``http://127.0.0.1:8000/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Viewer:
        """Serve in a background (daemon) thread once it listens; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.run,
                kwargs={"sockets": [self._socket]},
                name="mechscope-viewer",
                daemon=True,
            )
            self._thread.start()
            deadline = time.monotonic() + START_SECONDS
            while not self._server.started:
                if not self._thread.is_alive() or time.monotonic() > deadline:
                    raise InputError(f"the viewer did not start on {self.url}")
                time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C), then close."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving and release the port (and the runs' open resources)."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        self._socket.close()
        self.app.close()

    def __enter__(self) -> Viewer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self._thread is not None else "not started"
        return f"Viewer({self.url}, {len(self.app.runs)} runs, {state})"


def serve(paths: Iterable[str | Path], host: str = "127.0.0.1", port: int = 0) -> Viewer:
    """A `Viewer` of the runs under `paths`, bound but not yet serving (`start` or `with`).

    Raises `InputError` for a path that is missing or holds no runs, or a port in use.

    Example::

        with serve(["runs"]) as viewer:
            print(viewer.url)
    """
    return Viewer(App(paths), host, port)


def serve_forever(paths: Iterable[str | Path], host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the runs under `paths` in this thread until interrupted.

    Example: ``serve_forever(["runs"], port=8000)`` (blocks until Ctrl-C).
    """
    viewer = serve(paths, host, port)
    print(f"mechscope viewer at {viewer.url}", flush=True)
    viewer.serve_forever()
