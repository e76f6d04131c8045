"""The viewer under attack, on 127.0.0.1 only, in bounded loops.

Real run folders (a tiny Llama's harvest of a hostile corpus, its explain run
with hostile explanations, a trace of hostile facts, a run of an unknown kind)
are named and filled with markup and script; a secret with a unique marker
lies outside them, and symlinks inside a run point at it. Every route is sent
path traversals, hostile query strings and every method; the hostile pages are
opened in real Chromium; a real ``mechscope serve`` process answers 2,000
requests from 50 clients with its memory measured; and binding anywhere but
the loopback is warned about in one line.

The viewer suite's helpers (`fetch`, `make_run`, `png_bytes`, the `browser` and
`page` fixtures) are reused from ``tests/viewer/conftest.py``, loaded by path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import pytest


def _viewer_conftest() -> Any:
    path = Path(__file__).resolve().parents[1] / "viewer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("mechscope_viewer_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


VIEWER = _viewer_conftest()
fetch, make_run, png_bytes = VIEWER.fetch, VIEWER.make_run, VIEWER.png_bytes
browser, page = VIEWER.browser, VIEWER.page  # fixtures: real Chromium, dialogs recorded

MARKER = f"MECHSCOPE-SECRET-{uuid.uuid4().hex}"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
SVG = '"><svg onload=alert(1)>'
JS_URL = "javascript:alert(1)"
MARKUP = (SCRIPT, IMG, SVG, JS_URL)

# run folders, named to attack: the folder name is the run's id in every URL and page
HARVEST, EXPLAIN, TRACE, ODD, FILES = (
    JS_URL,
    IMG,
    SVG,
    "'><iframe src=javascript:alert(1)>",
    "files",
)
SITE = "blocks.1.mlp.post"
UNITS = [(SITE, u) for u in range(4)]


# --------------------------------------------------------------------------- the runs


def simulator() -> Any:
    """Simulated activations that fit the tokens; the first simulation fails with markup."""
    calls = Counter[str]()

    def answer(messages: Any) -> str:
        task = messages[-1]["content"]
        found = re.search(r"Tokens: (\[.*\])\n\nAnswer with a JSON list", task, re.DOTALL)
        if found is None:  # a judge's question
            return "Yes"
        calls["sim"] += 1
        if calls["sim"] == 1:
            return SCRIPT + " " + IMG + " no list here"
        tokens = json.loads(found.group(1))
        return json.dumps([(3 * len(t) + i) % 11 for i, t in enumerate(tokens)])

    return answer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Hostile runs under ``root``; the secret beside it, under it between runs, and linked into
    run ``files`` (a file, a folder, and a link to itself)."""
    from mechscope.autointerp import explain_run
    from mechscope.harvest import harvest, open_harvest
    from mechscope.testing import ScriptedBackend, tiny_model
    from mechscope.tracing.facts import Fact
    from mechscope.tracing.runs import trace_run

    base = tmp_path_factory.mktemp("attacks")
    secret = base / "secret.txt"
    secret.write_text(MARKER)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text(MARKER)
    root = base / "runs"
    model = tiny_model("llama")
    corpus = base / "corpus" / f"{SVG}.txt"
    corpus.parent.mkdir()
    corpus.write_text(
        "".join(f"The page said {m} and then {m} again & <b>more</b>.\n" for m in MARKUP) * 6
    )
    harvest(
        model,
        str(corpus),
        out=root / HARVEST,
        sites=SITE,
        tokens=48 * 16,
        window=16,
        k=10,
        n_random=6,
        batch_size=8,
        progress=False,
    )
    explain_run(
        open_harvest(root / HARVEST),
        UNITS,
        explainer=ScriptedBackend(list(MARKUP)),
        simulator=ScriptedBackend([simulator()]),
        out=root / EXPLAIN,
        n_show=3,
        n_test=2,
        progress=False,
    )
    facts = [
        Fact(IMG, SCRIPT + " the city of {} lies in", SVG),
        Fact(JS_URL, "The city of {} is in", SCRIPT),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MECHSCOPE_CACHE", str(base / "cache"))
        trace_run(
            model, facts, root / TRACE, samples=1, noise=5.0, kinds=("hidden",), progress=False
        )
    odd = make_run(
        root / ODD, SCRIPT, {"model": IMG, "note": SVG, "link": JS_URL}, {"summary": [SCRIPT]}
    )
    (odd / "figures").mkdir()
    (odd / "figures" / f"{IMG}.png").write_bytes(png_bytes())
    (odd / f"{SVG}.txt").write_text(SCRIPT)
    files = make_run(root / FILES, "files", {"model": "none"})
    (files / "figures").mkdir()
    (files / "figures" / "plot.png").write_bytes(png_bytes())
    (files / "link-out.txt").symlink_to(secret)
    (files / "dir-out").symlink_to(base / "outside", target_is_directory=True)
    (files / "loop").symlink_to(files / "loop")
    (root / "between.txt").write_text(MARKER)  # in the runs folder, in no run folder
    return SimpleNamespace(base=base, root=root, secret=secret)


@pytest.fixture(scope="module")
def base(runs: SimpleNamespace) -> Iterator[str]:
    """The root URL (``http://127.0.0.1:PORT``, no slash) of a real server of the hostile runs."""
    from mechscope.viewer import serve

    with serve([runs.root]) as viewer:
        assert viewer.host == "127.0.0.1"
        yield viewer.url.rstrip("/")


def q(*segments: object) -> str:
    """A URL path from segments, each percent-quoted."""
    return "/" + "/".join(quote(str(s), safe="") for s in segments)


def assert_refused(reply: Any, what: str) -> None:
    """A 4xx page that leaks no secret and shows no traceback."""
    assert 400 <= reply.status < 500, (what, reply.status, reply.body[:300])
    assert MARKER.encode() not in reply.body, what
    assert b"root:x:0:0" not in reply.body, what
    assert b"Traceback" not in reply.body, what


# ------------------------------------------------------------------ 1. path traversal

UP = "../" * 24  # more than enough to reach / from any folder
TRAVERSALS = {  # SECRET: the secret's absolute path without its leading slash
    "dotdot": "../../secret.txt",
    "dotdot-to-root": UP + "SECRET",
    "etc-passwd": UP + "etc/passwd",
    "encoded": "%2e%2e%2f%2e%2e%2fsecret.txt",
    "encoded-upper": "%2E%2E%2F%2E%2E%2Fsecret.txt",
    "encoded-slash": "..%2f..%2fsecret.txt",
    "encoded-to-root": quote(UP, safe="") + "SECRET",
    "double-encoded": "%252e%252e%252f%252e%252e%252fsecret.txt",
    "double-encoded-to-root": quote(quote(UP, safe=""), safe="") + "SECRET",
    "backslash": "..\\..\\secret.txt",
    "encoded-backslash": "..%5c..%5csecret.txt",
    "backslash-to-root": UP.replace("/", "\\") + "SECRET",
    "absolute": "/SECRET",
    "absolute-encoded": "%2FSECRET",
    "nul": "secret.txt%00",
    "nul-dotdot": "..%00/..%00/secret.txt",
    "nul-suffix": "../../secret.txt%00.png",
    "overlong-utf8": "%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afsecret.txt",
    "dots": "....//....//secret.txt",
    "dot-mix": ".%2e/.%2e/secret.txt",
    "between-runs": "../between.txt",
    "symlink-file": "link-out.txt",
    "symlink-dir": "dir-out/secret.txt",
    "symlink-loop": "loop",
    "too-long": "a" * 5000,
}
VALID = {"site": SITE, "unit": "0", "n": "0", "path": "config.json", "name": "viewer.css"}
RUN_OF_KIND = {"harvest": HARVEST, "explain": EXPLAIN, "trace": TRACE}


def route_targets() -> list[tuple[str, list[str]]]:
    """Each route's pattern with its segments; every field filled with a valid value.

    The run is one of the route's kinds where the fixtures have one (else ``files``),
    so a payload in any other field reaches the page itself.
    """
    from mechscope.viewer import pages  # noqa: F401  (registers every page)
    from mechscope.viewer.registry import REGISTRY

    targets = []
    for route in REGISTRY.routes:
        run = next((RUN_OF_KIND[k] for k in route.kinds or () if k in RUN_OF_KIND), FILES)
        segments = []
        for seg in route.pattern.strip("/").split("/") if route.pattern != "/" else []:
            field = re.fullmatch(r"\{(\w+)(?::\w+)?\}", seg)
            if field is None:
                segments.append(seg)
                continue
            name = field.group(1)
            assert name == "run" or name in VALID, f"give a valid {{{name}}} for {route.pattern}"
            segments.append(quote(run if name == "run" else VALID[name], safe=""))
        targets.append((route.pattern, segments))
    return targets


@pytest.mark.parametrize("attack", list(TRAVERSALS))
def test_path_traversal_is_refused_on_every_route(attack: str, base: str, runs: Any) -> None:
    """The payload in each path or name field of each route: a 4xx page, never the secret."""
    payload = TRAVERSALS[attack].replace("SECRET", str(runs.secret).lstrip("/"))
    sent = 0
    for pattern, segments in route_targets():
        spec = pattern.strip("/").split("/")
        for i, field in enumerate(spec):
            if "{" not in field or ":int}" in field:
                continue  # integers: see test_malformed_queries_and_paths_get_4xx_pages
            values = (payload, "figures/" + payload) if ":path}" in field else (payload,)
            for value in values:
                target = "/" + "/".join([*segments[:i], value, *segments[i + 1 :]])
                assert_refused(fetch(base, target), f"{attack}: {target[:200]}")
                sent += 1
    assert sent >= 20  # every run route's {run}, the sites, files and static


def raw_request(base: str, request_line: bytes) -> bytes:
    """The raw answer to one request line sent as bytes (what no HTTP client would send)."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_bytes_and_absolute_uris_do_not_escape(base: str, runs: Any) -> None:
    """Bytes no client sends (NUL, backslash, 0xff in the request line), and absolute-form URIs."""
    rel = str(runs.secret).lstrip("/").encode()
    for line in (
        b"GET /run/files/files/../../secret.txt\x00 HTTP/1.1",
        b"GET /run/files/files/..\\..\\secret.txt HTTP/1.1",
        b"GET /run/files/files/\xff/../../secret.txt HTTP/1.1",
        b"GET /static/" + UP.encode() + rel + b" HTTP/1.1",
    ):
        answer = raw_request(base, line)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500 and MARKER.encode() not in answer, (line, answer[:300])
    host = urlsplit(base).netloc
    for target in (
        f"http://{host}/run/files/files/../../secret.txt",
        f"http://{host}/static/{UP}{runs.secret}",
        f"file://{runs.secret}",
    ):
        assert_refused(fetch(base, target), target)


def crawl(base: str, start: list[str], limit: int) -> dict[str, Any]:
    """Every page reachable from `start` by same-site links (at most `limit`), by URL."""
    seen: dict[str, Any] = {}
    todo = list(start)
    while todo and len(seen) < limit:
        target = todo.pop(0)
        if target in seen:
            continue
        reply = seen[target] = fetch(base, target)
        if reply.headers.get("content-type", "").startswith("text/html"):
            for href in re.findall(
                r'(?:href|src)="(/[^"]*)"', reply.body.decode("utf-8", "replace")
            ):
                href = href.replace("&amp;", "&")
                if "/card/" not in href and href not in seen:  # cards are slow PNGs
                    todo.append(href)
    return seen


def test_no_page_or_listed_file_shows_the_secret(base: str, runs: Any) -> None:
    """Crawl every run's pages and listed files: the symlinks are listed, never followed out."""
    starts = ["/", *(q("run", r) for r in (HARVEST, EXPLAIN, TRACE, ODD, FILES))]
    starts += [q("run", r, "record") for r in (HARVEST, EXPLAIN, TRACE, ODD, FILES)]
    pages = crawl(base, starts, limit=300)
    assert len(pages) > 40
    for target, reply in pages.items():
        assert reply.status < 500 and MARKER.encode() not in reply.body, target
    for name in ("link-out.txt", "dir-out/secret.txt", "loop"):
        assert fetch(base, q("run", FILES, "files") + "/" + name).status == 404, name
    assert fetch(base, q("run", FILES, "files", "figures", "plot.png")).status == 200


# ------------------------------------------------------------- 2. markup shown as text

PROBE = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (a.name.startsWith('on')) bad.push(el.tagName + '[' + a.name + ']');
      const url = ['href', 'src', 'action', 'formaction', 'srcdoc', 'data', 'xlink:href'];
      if (url.includes(a.name) && /^\\s*javascript:/i.test(a.value)) bad.push(el.tagName + '[' + a.name + ']');
    }
  }
  for (const el of document.querySelectorAll('script')) {
    if (el.getAttribute('src') !== '/static/viewer.js') bad.push('script ' + el.outerHTML.slice(0, 80));
  }
  for (const el of document.querySelectorAll('main img, main svg, main iframe')) {
    const src = el.getAttribute('src') || '';
    if (el.tagName !== 'svg' && !src.startsWith('/run/')) bad.push(el.outerHTML.slice(0, 80));
    if (el.tagName === 'svg' && !el.classList.contains('hist')) bad.push(el.outerHTML.slice(0, 80));
  }
  return {bad, text: document.body.innerText};
}"""


EXPLAINED = tuple(m.strip('"') for m in MARKUP)  # the explainer's answers, quotes trimmed


def hostile_pages() -> list[tuple[str, str, tuple[str, ...]]]:
    """(what, URL path, the markup that page must show as text)."""
    return [
        ("index", "/", (IMG, SVG, JS_URL)),
        ("harvest home", q("run", HARVEST), (JS_URL, SVG)),
        ("harvest unit", q("run", HARVEST, "unit", SITE, 0), (JS_URL,)),
        ("harvest units", q("run", HARVEST, "units"), ()),
        *(
            (f"token search {m}", q("run", HARVEST, "search", "token") + "?q=" + quote(m), (m,))
            for m in MARKUP
        ),
        *(
            (f"unit search {m}", q("run", HARVEST, "search", "unit") + "?q=" + quote(m), (m,))
            for m in MARKUP
        ),
        ("bad sort", q("run", HARVEST, "units") + "?by=" + quote(IMG), (IMG,)),
        ("harvest record", q("run", HARVEST, "record"), (SVG,)),
        ("explain home", q("run", EXPLAIN), EXPLAINED),
        *(
            (f"explained unit {u}", q("run", EXPLAIN, "explained", SITE, u), (EXPLAINED[u],))
            for u in range(4)
        ),
        ("trace home", q("run", TRACE), (SVG,)),
        ("facts", q("run", TRACE, "facts"), (IMG, JS_URL, SCRIPT)),
        ("fact 0", q("run", TRACE, "fact", 0), (IMG, SVG, SCRIPT)),
        ("fact 1", q("run", TRACE, "fact", 1), (JS_URL, SCRIPT)),
        ("odd run", q("run", ODD), (SCRIPT, IMG, SVG, JS_URL, ODD)),
        ("unknown run", q("run", SCRIPT[:-9] + IMG), (IMG,)),
    ]


def test_markup_in_runs_is_shown_as_text_in_chromium(page: Any, base: str) -> None:
    """Corpus text, explanations, facts, run names and kinds: text on the page, nothing run."""
    shown = 0
    for what, target, texts in hostile_pages():
        page.errors.clear()
        response = page.goto(base + target)
        assert response is not None and response.status < 500, (what, response and response.status)
        found = page.evaluate(PROBE)
        assert found["bad"] == [], (what, found["bad"])
        for text in texts:
            assert text in found["text"], (what, text)
            shown += 1
        policy = [e for e in page.errors if "Content Security Policy" in e]
        assert policy == [], (what, policy)  # nothing inline was even attempted
    assert page.dialogs == []
    assert shown >= 35


# ----------------------------------------------------- 3. malformed requests get 4xx pages

H, T, E = (q("run", r) for r in (HARVEST, TRACE, EXPLAIN))
BAD_REQUESTS = {  # name: (target, status)
    "huge-query-100kB": (f"{H}/search/token?q=" + "a" * 100_000, 414),
    "long-query-10kB": ("/?x=" + "%41" * 3400, 414),
    "bad-escape": (f"{H}/units?by=%zz", 400),
    "bad-escape-trailing": ("/?q=%", 400),
    "bad-escape-half": (f"{H}/search/token?q=%e", 400),
    "bad-escape-in-key": ("/?%g0=1", 400),
    "not-utf8": (f"{H}/search/token?q=%ff%fe", 400),
    "truncated-utf8": ("/?q=%e2%82", 400),
    "surrogate-utf8": (f"{H}/search/token?q=%ed%a0%80", 400),
    "repeated-key": (f"{H}/units?by=max&by=mean", 400),
    "repeated-same-value": ("/?a=1&a=1", 400),
    "repeated-search": (f"{H}/search/token?q=a&q=b", 400),
    "limit-not-a-number": (f"{H}/units?limit=abc", 400),
    "limit-empty": (f"{H}/units?limit=", 400),
    "limit-float": (f"{H}/units?limit=1.5", 400),
    "limit-exponent": (f"{H}/units?limit=1e3", 400),
    "limit-negative": (f"{H}/units?limit=-5", 400),
    "limit-zero": (f"{H}/units?limit=0", 400),
    "limit-huge": (f"{H}/units?limit=" + "9" * 5000, 400),
    "limit-arabic-digits": (f"{H}/units?limit=%D9%A1%D9%A2", 400),
    "sort-unknown": (f"{H}/units?by=" + quote(SCRIPT), 400),
    "site-unknown": (f"{H}/units?site=..%2F..%2Fx", 404),
    "unit-search-nonsense": (f"{H}/search/unit?q=" + quote(IMG), 404),
    "unit-negative": (f"{H}/unit/{SITE}/-1", 404),
    "unit-huge": (f"{H}/unit/{SITE}/" + "9" * 40, 404),
    "unit-over-int-limit": (f"{H}/unit/{SITE}/" + "9" * 5000, 404),
    "unit-float": (f"{H}/unit/{SITE}/1.5", 404),
    "unit-hex": (f"{H}/unit/{SITE}/0x1", 404),
    "card-huge": (f"{H}/card/{SITE}/" + "9" * 5000, 404),
    "fact-negative": (f"{T}/fact/-1", 404),
    "fact-huge": (f"{T}/fact/" + "9" * 5000, 404),
    "fact-missing": (f"{T}/fact/99", 404),
    "explained-huge": (f"{E}/explained/{SITE}/" + "9" * 5000, 404),
    "explained-missing": (f"{E}/explained/{SITE}/999", 404),
    "route-unknown": ("/no/such/page", 404),
    "route-run-bare": ("/run", 404),
    "route-run-unknown-page": (f"{H}/nope", 404),
    "route-wrong-kind": (f"{T}/units", 404),
    "route-static-missing": ("/static/nope.js", 404),
    "route-static-bare": ("/static/", 404),
    "route-bad-escape": ("/%zz", 404),
    "route-nul": ("/%00", 404),
    "route-long": ("/" + "x" * 8000, 404),
    "route-many-slashes": ("/" + "/" * 2000 + "run", 404),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_malformed_queries_and_paths_get_4xx_pages(name: str, base: str) -> None:
    """Each row: its status and a page that says what was wrong, never a traceback."""
    target, status = BAD_REQUESTS[name]
    reply = fetch(base, target)
    assert reply.status == status, (name, reply.status, reply.body[:300])
    assert_refused(reply, name)
    assert reply.headers["content-type"].startswith("text/html")
    assert b'class="error"' in reply.body, name  # the shell's error page, with its message


METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND")


def test_every_method_but_get_and_head_gets_405_on_every_route(base: str) -> None:
    """Each route with each method it does not take: 405 naming GET, never 5xx."""
    targets = ["/" + "/".join(segments) for _, segments in route_targets()]
    statuses: Counter[int] = Counter()
    for target in targets:
        for method in METHODS:
            reply = fetch(base, target, method)
            assert_refused(reply, f"{method} {target}")
            assert reply.status == 405, (method, target, reply.status)
            assert "GET" in reply.headers.get("allow", ""), (method, target)
            statuses[reply.status] += 1
        assert fetch(base, target, "HEAD").status < 500, target
    assert statuses[405] == len(targets) * len(METHODS) >= 100
    for method in METHODS[:6]:  # nowhere: still 4xx
        assert_refused(fetch(base, "/no/such/page", method), method)


# ------------------------------------------------------- 4. load on a real server process


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                return proc.stdout.readline()
    raise AssertionError("mechscope serve printed no URL in time")


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid` in KiB (``VmRSS`` of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))


@pytest.fixture(scope="module")
def served(runs: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``mechscope serve ROOT --port 0`` in its own process (no --host): its process, URL, stderr."""
    err = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mechscope", "serve", str(runs.root), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        line = _read_line(proc, time.monotonic() + 120)
        m = re.search(r"at (http://[^/]+)/", line)
        assert m, line
        yield SimpleNamespace(proc=proc, url=m.group(1), stderr=err)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


LOAD = 2000
CLIENTS = 50


def test_2000_requests_from_50_clients_are_all_answered_in_bounded_memory(served: Any) -> None:
    """A mix of pages, files and attacks: every request answered as when alone; RSS bounded."""
    mix = {
        "/": 200,
        q("run", HARVEST): 200,
        q("run", HARVEST, "unit", SITE, 1): 200,
        q("run", HARVEST, "search", "token") + "?q=e": 200,
        q("run", TRACE, "fact", 0): 200,
        q("run", EXPLAIN): 200,
        q("run", ODD, "record"): 200,
        q("run", FILES, "files", "figures", "plot.png"): 200,
        "/static/viewer.css": 200,
        q("run", FILES, "files") + "/../../secret.txt": 404,
        q("run", FILES, "files", "link-out.txt"): 404,
        q("run", HARVEST, "units") + "?limit=-1": 400,
        "/?a=%zz": 400,
        "/no/such/page": 404,
    }
    targets = [t for _ in range(LOAD // len(mix) + 1) for t in mix][:LOAD]
    for target, status in mix.items():  # warm the caches: a leak, not a cache, is measured
        assert fetch(served.url, target).status == status, target
    pid = served.proc.pid
    before = rss_kib(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        replies = list(pool.map(lambda t: (t, fetch(served.url, t)), targets))
    took = time.monotonic() - started
    after = rss_kib(pid)
    statuses = Counter(r.status for _, r in replies)
    wrong = [(t, r.status) for t, r in replies if r.status != mix[t]]
    print(
        f"\nload: {len(replies)} answered in {took:.1f} s by {CLIENTS} clients {dict(statuses)}; "
        f"server RSS {before / 1024:.1f} → {after / 1024:.1f} MiB"
    )
    assert len(replies) == LOAD and wrong == []
    assert all(MARKER.encode() not in r.body for _, r in replies)
    assert after - before < 150 * 1024, f"RSS grew {(after - before) / 1024:.0f} MiB"
    assert served.proc.poll() is None  # still serving


# ----------------------------------------------------------------- 5. where it listens


def listening_addresses(pid: int) -> set[str]:
    """The local addresses (``127.0.0.1:PORT``) of the TCP sockets `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        if m:
            inodes.add(m.group(1))
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addr, port = cols[1].split(":")
                raw = bytes.fromhex(addr)
                ip = (
                    socket.inet_ntop(socket.AF_INET, raw[::-1])
                    if width == 8
                    else socket.inet_ntop(
                        socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    )
                )
                found.add(f"{ip}:{int(port, 16)}")
    return found


def test_serve_binds_the_loopback_by_default_and_says_nothing(served: Any) -> None:
    """No --host: it listens on 127.0.0.1 only, and prints no warning."""
    port = urlsplit(served.url).port
    assert served.url.startswith("http://127.0.0.1:")
    assert listening_addresses(served.proc.pid) == {f"127.0.0.1:{port}"}
    assert "warning" not in served.stderr.read_text().lower()


class FakeViewer:
    """What `mechscope serve` gets instead of a server: records the host, binds nothing."""

    hosts: list[str] = []

    def __init__(self, paths: Any, host: str, port: int) -> None:
        FakeViewer.hosts.append(host)
        self.app = SimpleNamespace(runs={})
        self.url = f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, at once


HOSTS = {  # --host: whether it warns
    None: False,
    "127.0.0.1": False,
    "127.0.0.2": False,
    "localhost": False,
    "::1": False,
    "0.0.0.0": True,
    "::": True,
    "192.168.1.20": True,
    "my-laptop.example.org": True,
}


@pytest.mark.parametrize("host", list(HOSTS), ids=lambda h: str(h))
def test_a_host_beyond_the_loopback_is_warned_about_in_one_line(
    host: str | None, hostile: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is bound here (the viewer is faked): the host passed on, and the stderr lines."""
    import mechscope.viewer

    monkeypatch.setattr(mechscope.viewer, "serve", FakeViewer)
    FakeViewer.hosts.clear()
    args = ["serve", str(tmp_path), "--port", "0", *(["--host", host] if host else [])]
    res = hostile.cli(*args)
    assert res.traceback is None and res.code == 0, (res.code, res.err)
    assert FakeViewer.hosts == [host or "127.0.0.1"]
    lines = res.err.splitlines()
    if HOSTS[host]:
        assert len(lines) == 1 and lines[0].startswith("warning:"), lines
        assert host in lines[0] and "127.0.0.1" in lines[0]
    else:
        assert lines == []
