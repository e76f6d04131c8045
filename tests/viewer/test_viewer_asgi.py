"""The viewer as an ASGI application: Starlette's test client, no socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mechscope.viewer.app import PAGE_POLICY, App
from mechscope.viewer.server import MAX_FORM_BYTES, asgi


@pytest.fixture
def client(runs_root: Path) -> TestClient:
    return TestClient(asgi(App([runs_root])))


def test_pages_come_with_their_policy_and_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == PAGE_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<h1>" in r.text and "ioi-demo" in r.text


def test_head_answers_without_a_body(client: TestClient) -> None:
    r = client.head("/run/ioi-demo")
    assert r.status_code == 200 and r.content == b""


def test_files_are_streamed_with_their_type(client: TestClient) -> None:
    r = client.get("/run/ioi-demo/files/figures/patch.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


def test_other_methods_unknown_pages_and_big_forms_get_4xx(client: TestClient) -> None:
    assert client.put("/").status_code == 405
    assert client.delete("/run/ioi-demo").status_code == 405
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/run/nope").status_code == 404
    big = client.post("/", content=b"x" * (MAX_FORM_BYTES + 1))
    assert big.status_code == 413


def test_encoded_separators_do_not_escape_the_run(client: TestClient) -> None:
    for path in ("/run/ioi-demo/files/..%2F..%2Fsecret.txt", "/run/..%2Fsecret.txt"):
        r = client.get(path)
        assert r.status_code == 404 and "secret" not in r.text.split("<main>")[0]
