"""The HTTP server: the standard library's ``ThreadingHTTPServer`` in front of an `App`.

Example::

    from mechscope.viewer import serve

    with serve(["runs"]) as viewer:          # 127.0.0.1, a free port, in a background thread
        print(viewer.url)                    # http://127.0.0.1:54321/
        ...
    serve(["runs"], port=8000).serve_forever()   # blocking, until Ctrl-C
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs

from ..errors import InputError
from .app import App
from .registry import Response

MAX_FORM_BYTES = 1 << 20
POLL_SECONDS = 0.05  # how soon `stop` is noticed


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mechscope-viewer"
    protocol_version = "HTTP/1.1"
    timeout = 30  # close idle keep-alive connections

    def do_GET(self) -> None:
        self._answer(self.server.app.handle("GET", self.path))

    def do_HEAD(self) -> None:
        self._answer(self.server.app.handle("HEAD", self.path), body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_FORM_BYTES:
            self._answer(Response(b"form too large", 413, "text/plain; charset=utf-8"))
            return
        raw = self.rfile.read(length).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        self._answer(self.server.app.handle("POST", self.path, form))

    def _answer(self, resp: Response, body: bool = True) -> None:
        try:
            size = resp.file.stat().st_size if resp.file is not None else len(resp.body)
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(size))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not body:
                return
            if resp.file is not None:
                with resp.file.open("rb") as f:
                    shutil.copyfileobj(f, self.wfile)
            else:
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the viewer is local, and errors are shown on the pages


class Viewer:
    """A viewer server bound to `host`:`port` (0: a free port); `start` serves in a thread."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        try:
            self._server = _Server((host, port), app)
        except OSError as err:
            raise InputError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); "
                "pick another --port, or 0 for a free one"
            ) from err
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The viewer's root URL, e.g. ``http://127.0.0.1:8000/``."""
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Viewer:
        """Serve in a background (daemon) thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": POLL_SECONDS},
                name="mechscope-viewer",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C), then close."""
        try:
            self._server.serve_forever(poll_interval=POLL_SECONDS)
        finally:
            self._server.server_close()
            self.app.close()

    def stop(self) -> None:
        """Stop serving and release the port (and the runs' open resources)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
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
    """
    return Viewer(App(paths), host, port)


def serve_forever(paths: Iterable[str | Path], host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve the runs under `paths` in this thread until interrupted."""
    viewer = serve(paths, host, port)
    print(f"mechscope viewer at {viewer.url}", flush=True)
    viewer.serve_forever()
