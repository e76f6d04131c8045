"""``mechscope serve``: a real process serving on a free port, and its one-line errors."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The process's next stdout line, waiting at most until `deadline` (no sleeping)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                return proc.stdout.readline()
    raise AssertionError("mechscope serve printed no URL in time")


def test_serve_prints_the_url_serves_and_stops_on_ctrl_c(runs_root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mechscope", "serve", str(runs_root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        # a suite started in the background (`cmd &`) hands SIGINT down ignored; a user's
        # terminal does not, and that is what this test is about
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = _read_line(proc, time.monotonic() + 120)
        m = re.search(r"serving 3 runs at (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        with urllib.request.urlopen(m.group(1), timeout=10) as resp:
            page = resp.read().decode()
        assert 'href="/run/ioi-demo"' in page and 'href="/run/mystery"' in page
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_a_missing_folder_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mechscope.cli import main

    missing = tmp_path / "no-such-runs"
    monkeypatch.setattr(sys, "argv", ["mechscope", "serve", str(missing), "--port", "0"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no such folder") and str(missing) in err
    assert "\n" not in err and "Traceback" not in err
