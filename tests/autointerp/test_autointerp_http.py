"""`OpenAIBackend` against real servers on 127.0.0.1: `transformers serve` with the default model,
and a tiny stdlib server in OpenAI's format that fails on cue, proving what the `openai` SDK does
for us (retries, `Retry-After`, error classes) and what we do (errors, logprobs, cache, keys)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mechscope.autointerp.backends import Backend, Completion, LocalBackend
from mechscope.autointerp.http import BackendError, OpenAIBackend
from mechscope.core.loading import list_cached

HI = [{"role": "user", "content": "Say hi"}]
PROMPTS = [
    [{"role": "user", "content": "Say hi"}],
    [
        {"role": "system", "content": "You explain what a neuron of a language model detects."},
        {
            "role": "user",
            "content": "The neuron fires on: 'Paris', 'London', 'Berlin'. In one phrase, it detects",
        },
    ],
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----- a tiny OpenAI-format server that fails on cue -----

LOGPROBS = [  # what the fake server sends for "echo:", in OpenAI's format
    {"token": "echo", "logprob": -0.1, "top_logprobs": [{"token": "echo", "logprob": -0.1}, {"token": "Echo", "logprob": -2.5}]},
    {"token": ":", "logprob": -0.01, "top_logprobs": [{"token": ":", "logprob": -0.01}, {"token": ";", "logprob": -4.0}]},
]  # fmt: skip


@dataclass
class FakeOpenAI:
    """Answers `/v1/chat/completions` with `"echo: <last message>"`, after playing `script`.

    `script` holds what to answer first, in order: an HTTP status, "hang" (no answer
    until the test ends) or "text" (a 200 that is not JSON). A last message "fail" always
    gets a 500. A 429 asks to wait `retry_after` seconds. `barrier`, when set, makes each
    request wait for another one in flight. Header names are recorded lower-cased.
    """

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    retry_after: str = "0"  # "0": the client picks its own wait
    requests: list[dict[str, Any]] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        with self.lock:
            step = self.script.pop(0) if self.script else 200
        last = body["messages"][-1]["content"]
        if step == "hang":
            self.release.wait(10)
            step = 200
        if last == "fail":
            step = 500
        if self.barrier is not None:
            try:
                self.barrier.wait(timeout=5)
            except threading.BrokenBarrierError:
                return 500, {"error": {"message": "no other request came"}}, {}
        if step == "text":
            return 200, "<html>a proxy's page</html>", {"Content-Type": "text/html"}
        if step == 400:
            message = "'max_tokens' is too large:\n  this model allows at most 4096"
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}, {}
        if step == 401:
            return 401, {"error": {"message": "Incorrect API key provided", "type": "auth"}}, {}
        if step == 429:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": self.retry_after}
        if step != 200:
            return int(step), {"error": {"message": "boom"}}, {}
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": f"echo: {last}"},
            "finish_reason": "stop",
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": LOGPROBS, "refusal": None}
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        return 200, {"object": "chat.completion", "model": "fake-model", "choices": [choice], "usage": usage}, {}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A FakeOpenAI on a free port of 127.0.0.1, stopped at the end."""
    state = FakeOpenAI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                headers = {name.lower(): value for name, value in self.headers.items()}
                state.requests.append({"path": self.path, "headers": headers, "body": body})
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                status, answer, headers = state.answer(body)
            finally:
                with state.lock:
                    state.in_flight -= 1
            data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


def backend(url: str, tmp_path: Path, **kwargs: Any) -> OpenAIBackend:
    kwargs = {"retries": 3, "backoff": 0.001, "cache_dir": tmp_path / "http", **kwargs}
    return OpenAIBackend(url, "fake-model", **kwargs)


def test_http_is_a_backend(
    fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    b = backend(fake.url + "/v1/", tmp_path)
    assert isinstance(b, Backend)
    assert b.base_url == fake.url
    assert "fake-model" in repr(b) and "OPENAI_API_KEY" in repr(b)


def test_http_retries_5xx_then_parses_logprobs(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script = [500, 503]
    c = backend(fake.url, tmp_path).chat(HI, max_tokens=5, logprobs=2)
    assert len(fake.requests) == 3
    assert c.text == "echo: Say hi" and not c.cached
    assert c.logprobs == [{"echo": -0.1, "Echo": -2.5}, {":": -0.01, ";": -4.0}]
    assert (c.tokens_in, c.tokens_out) == (7, 2)
    assert c.meta == {"finish_reason": "stop", "model": "fake-model"}
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"] == {
        "model": "fake-model",
        "messages": HI,
        "max_tokens": 5,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 2,
    }


def test_http_no_logprobs_requested_gives_none(fake: FakeOpenAI, tmp_path: Path) -> None:
    c = backend(fake.url, tmp_path, cache=False).chat(HI, max_tokens=5)
    assert c.logprobs is None
    assert "logprobs" not in fake.requests[0]["body"]


def test_http_honours_429_and_gives_up_after_retries(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script = [429]
    assert backend(fake.url, tmp_path).chat(HI).text == "echo: Say hi"
    assert len(fake.requests) == 2

    fake.requests.clear()
    fake.script = [500] * 10
    with pytest.raises(
        BackendError, match=r"answered 500 Internal Server Error after 2 retries: boom$"
    ):
        backend(fake.url, tmp_path, retries=2).chat(HI, max_tokens=3)
    assert len(fake.requests) == 3


def test_http_waits_what_retry_after_asks_else_our_backoff(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.script, fake.retry_after = [429], "0.3"  # honoured though our backoff is 1 ms
    start = time.monotonic()
    assert backend(fake.url, tmp_path, cache=False).chat(HI).text == "echo: Say hi"
    assert time.monotonic() - start >= 0.3 and len(fake.requests) == 2
    # no Retry-After: `backoff` sets the SDK's waits, 0.1 then 0.2 s less up to 25% jitter...
    fake.script = [500, 500]
    start = time.monotonic()
    backend(fake.url, tmp_path, retries=2, backoff=0.1, cache=False).chat(HI)
    assert time.monotonic() - start >= 0.2
    # ...and a tiny one makes 4 retries quick (the SDK's own waits alone would be over 5 s)
    fake.script = [500] * 4
    start = time.monotonic()
    backend(fake.url, tmp_path, retries=4, cache=False).chat(HI)
    assert time.monotonic() - start < 3.0 and len(fake.requests) == 2 + 3 + 5


def test_http_400_is_one_line_with_the_servers_message(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script = [400] * 10
    with pytest.raises(BackendError) as info:
        backend(fake.url, tmp_path).chat(HI, max_tokens=100_000)
    assert str(info.value) == (
        f"{fake.url}/v1/chat/completions answered 400 Bad Request: "
        "'max_tokens' is too large: this model allows at most 4096"
    )
    assert info.value.status == 400 and info.value.__cause__ is None
    assert len(fake.requests) == 1  # not retried


def test_http_200_that_is_not_json_is_an_error(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script = ["text"]
    with pytest.raises(BackendError, match=r"answered 200 with a body that is not JSON: .*proxy"):
        backend(fake.url, tmp_path).chat(HI)


def test_http_401_fails_at_once_and_is_not_cached(fake: FakeOpenAI, tmp_path: Path) -> None:
    b = backend(fake.url, tmp_path)
    fake.script = [401]
    with pytest.raises(BackendError, match="401.*Incorrect API key provided") as info:
        b.chat(HI)
    assert info.value.status == 401
    assert len(fake.requests) == 1
    assert not b.chat(HI).cached  # the failure left nothing in the cache
    assert len(fake.requests) == 2


def test_http_timeout_is_retried(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.script = ["hang"]
    c = backend(fake.url, tmp_path, timeout=0.3, cache=False).chat(HI)
    assert c.text == "echo: Say hi"
    assert len(fake.requests) == 2


def test_http_nothing_listening(tmp_path: Path) -> None:
    b = backend(f"http://127.0.0.1:{free_port()}", tmp_path, retries=2)
    with pytest.raises(BackendError, match=r"could not be reached, 3 attempts: \w+"):
        b.chat(HI)
    out = b.chat_many([HI, HI])
    assert len(out) == 2 and all(isinstance(o, BackendError) for o in out)
    with pytest.raises(BackendError, match="not ready"):
        b.wait_ready(timeout=0.3)


def test_http_chat_many_keeps_order_and_returns_errors(fake: FakeOpenAI, tmp_path: Path) -> None:
    asks = [[{"role": "user", "content": c}] for c in ["a", "fail", "b", "c"]]
    out = backend(fake.url, tmp_path, retries=1).chat_many(asks, max_tokens=3)
    assert [o.text if isinstance(o, Completion) else "ERROR" for o in out] == [
        "echo: a",
        "ERROR",
        "echo: b",
        "echo: c",
    ]
    assert isinstance(out[1], BackendError) and "500" in str(out[1])


@pytest.mark.parametrize("concurrency", [1, 2])
def test_http_concurrency_bounds_requests_in_flight(
    fake: FakeOpenAI, tmp_path: Path, concurrency: int
) -> None:
    # with 2, each request waits for a second one: the batch only passes if 2 run at once
    fake.barrier = threading.Barrier(2) if concurrency == 2 else None
    asks = [[{"role": "user", "content": str(i)}] for i in range(6)]
    b = backend(fake.url, tmp_path, concurrency=concurrency, retries=0, cache=False)
    out = b.chat_many(asks)
    assert [o.text for o in out if isinstance(o, Completion)] == [f"echo: {i}" for i in range(6)]
    assert fake.max_in_flight == concurrency


def test_http_api_key_from_env_never_stored(
    fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(fake.url, tmp_path, api_key_env="MECHSCOPE_TEST_KEY")
    monkeypatch.delenv("MECHSCOPE_TEST_KEY", raising=False)
    b.chat(HI, max_tokens=1)
    assert "authorization" not in fake.requests[-1]["headers"]
    monkeypatch.setenv("MECHSCOPE_TEST_KEY", "sk-secret-123")  # read at call time
    b.chat(HI, max_tokens=2)
    assert fake.requests[-1]["headers"]["authorization"] == "Bearer sk-secret-123"
    monkeypatch.delenv("MECHSCOPE_TEST_KEY")
    b.chat(HI, max_tokens=3)
    assert "authorization" not in fake.requests[-1]["headers"]
    assert "sk-secret" not in repr(b)
    assert b.cache is not None
    b.close()
    assert b"sk-secret" not in (tmp_path / "http" / "responses.sqlite").read_bytes()


def test_http_cache_makes_reruns_free(fake: FakeOpenAI, tmp_path: Path) -> None:
    b = backend(fake.url, tmp_path)
    first = b.chat(HI, max_tokens=5, logprobs=2)
    again = b.chat(HI, max_tokens=5, logprobs=2)
    assert not first.cached and again.cached
    assert (again.text, again.logprobs, again.tokens_out) == (
        first.text,
        first.logprobs,
        first.tokens_out,
    )
    assert len(fake.requests) == 1
    # a new backend on the same folder (a rerun), the URL spelled differently: still a hit
    rerun = backend(fake.url + "/v1/", tmp_path)
    assert rerun.chat(HI, max_tokens=5, logprobs=2).cached
    assert len(fake.requests) == 1
    # anything else in the request is another key, sampling included (and then cached)
    for kwargs in [
        {"max_tokens": 6, "logprobs": 2},
        {"max_tokens": 5},
        {"max_tokens": 5, "logprobs": 2, "temperature": 0.7},
    ]:
        assert not b.chat(HI, **kwargs).cached
        assert b.chat(HI, **kwargs).cached
    assert len(fake.requests) == 4
    other_model = OpenAIBackend(fake.url, "other-model", cache_dir=tmp_path / "http")
    assert not other_model.chat(HI, max_tokens=5, logprobs=2).cached
    assert len(fake.requests) == 5


def test_http_cache_off_always_asks(fake: FakeOpenAI, tmp_path: Path) -> None:
    b = backend(fake.url, tmp_path, cache=False)
    assert not b.chat(HI).cached and not b.chat(HI).cached
    assert len(fake.requests) == 2
    assert not (tmp_path / "http").exists()


# ----- a real `transformers serve` with the default model -----


def converted_folder(model: Any) -> Path:
    """The HF folder that `mechscope.load` converted `model` into (the cache's entry for it)."""
    for entry in list_cached():
        if entry["name"] == model.name and entry["source"] == model.source:
            return Path(entry["path"])
    pytest.fail(f"no converted folder for {model.name} in {list_cached()}")


@pytest.fixture(scope="module")
def served(smollm2: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`transformers serve <folder>` on a free port of 127.0.0.1: (url, model id); killed at the end."""
    from transformers.utils.import_utils import is_serve_available

    exe = Path(sys.executable).parent / "transformers"
    if not exe.is_file() or not is_serve_available():
        pytest.skip(
            "`transformers serve` needs the serving extra: pip install 'transformers[serving]'"
        )
    folder = str(converted_folder(smollm2))
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [str(exe), "serve", folder, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", "cpu", "--dtype", "float32"]  # as mechscope.load, for greedy parity
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    probe = OpenAIBackend(url, folder, cache=False)
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()}"
                )
            try:
                probe.wait_ready(timeout=1.0)
                break
            except BackendError:
                if time.monotonic() > deadline:
                    pytest.fail(f"transformers serve not ready in 120 s:\n{log_path.read_text()}")
        yield url, folder
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.model
def test_http_greedy_matches_local_backend(smollm2: Any, served: tuple[str, str]) -> None:
    url, folder = served
    local = LocalBackend(smollm2)
    remote = OpenAIBackend(url, folder, cache=False)
    for messages in PROMPTS:
        want = local.chat(messages, max_tokens=24)
        got = remote.chat(messages, max_tokens=24)
        assert got.text == want.text
        assert (got.tokens_in, got.tokens_out) == (want.tokens_in, want.tokens_out)
        assert got.meta["model"] == folder
        assert got.meta["finish_reason"] in ("stop", "length")


@pytest.mark.model
def test_http_real_server_cache_and_no_logprobs(served: tuple[str, str], tmp_path: Path) -> None:
    url, folder = served
    b = OpenAIBackend(url, folder, cache_dir=tmp_path)
    first = b.chat(HI, max_tokens=6, logprobs=3)
    assert first.logprobs is None  # transformers serve ignores the field
    out = b.chat_many([HI, PROMPTS[1]], max_tokens=6, logprobs=3)
    assert isinstance(out[0], Completion) and isinstance(out[1], Completion)
    assert out[0].cached and out[0].text == first.text
    assert not out[1].cached and out[1].text
    rerun = OpenAIBackend(url + "/v1", folder, cache_dir=tmp_path)
    assert rerun.chat(PROMPTS[1], max_tokens=6, logprobs=3).cached


@pytest.mark.model
def test_json_simulator_through_the_server_matches_local(
    smollm2: Any, served: tuple[str, str]
) -> None:
    """The simulator's JSON path over HTTP: same greedy answer as locally, parsed or failed alike."""
    from mechscope.autointerp import JsonSimulator

    url, folder = served
    tokens = ["<|endoftext|>", "The", " cat", " sat", " on", " the", " mat"]
    remote = JsonSimulator(OpenAIBackend(url, folder, cache=False)).simulate("cats", tokens)
    local = JsonSimulator(LocalBackend(smollm2)).simulate("cats", tokens)
    assert remote.raw == local.raw and remote.raw
    assert remote.values == local.values and remote.error == local.error
    assert remote.failed or len(remote.values) == len(tokens)


@pytest.mark.model
def test_http_real_server_error_names_status(served: tuple[str, str], tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(BackendError, match="400.*pinned") as info:
        OpenAIBackend(url, "not-the-served-model", cache=False).chat(HI, max_tokens=2)
    assert info.value.status == 400


def test_http_logprobs_from_configured_server() -> None:
    url = os.environ.get("MECHSCOPE_TEST_OPENAI_URL")
    model = os.environ.get("MECHSCOPE_TEST_OPENAI_MODEL")
    if not (url and model):
        pytest.skip(
            "set MECHSCOPE_TEST_OPENAI_URL and MECHSCOPE_TEST_OPENAI_MODEL (key in "
            "$OPENAI_API_KEY) to test log-probabilities against a server that returns them"
        )
    c = OpenAIBackend(url, model, cache=False).chat(HI, max_tokens=4, logprobs=3)
    assert c.text and c.logprobs is not None and 1 <= len(c.logprobs) <= 4
    for top in c.logprobs:
        assert 1 <= len(top) <= 3 and all(v <= 0 for v in top.values())
