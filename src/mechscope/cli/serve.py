"""``mechscope serve RUN_DIR…``: the local web viewer of run folders.

Kept apart from the other commands so that importing the CLI does not import
the viewer: it is imported when the command runs.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from ..errors import InputError


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only: ``localhost`` or a loopback address.

    Example: ``is_loopback("127.0.0.1")`` → True; ``is_loopback("0.0.0.0")`` → False.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def serve(
    paths: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR",
        help="Run folders, or folders that hold them (searched 2 levels down).",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 exposes your runs)."
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on; 0 picks a free one."),
    open_browser: bool = typer.Option(False, "--open", help="Open the viewer in a browser."),
) -> None:
    """Serve run folders in a local web viewer (neuron pages, figures, records) until Ctrl-C."""
    from ..viewer import serve as make_viewer

    if not 0 <= port <= 65535:
        raise InputError(f"--port must be 0 (any free port) to 65535, got {port}")
    if not host.strip():
        raise InputError("--host is empty; give an interface such as 127.0.0.1 (this machine only)")
    if not is_loopback(host):
        typer.echo(
            f"warning: --host {host} lets other machines read these runs (no login, no TLS); "
            "the default 127.0.0.1 serves this machine only",
            err=True,
        )
    viewer = make_viewer(paths, host=host, port=port)
    runs = len(viewer.app.runs)
    typer.echo(f"serving {runs} run{'s' if runs != 1 else ''} at {viewer.url} (Ctrl-C stops)")
    if open_browser:
        import webbrowser

        webbrowser.open(viewer.url)
    try:
        viewer.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
