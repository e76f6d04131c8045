"""An OpenAI-compatible chat-completions client, as an autointerp backend.

`OpenAIBackend` talks to any server that speaks OpenAI's
`POST /v1/chat/completions` (OpenAI itself, vLLM, llama.cpp, `transformers
serve`, ...) through the official `openai` SDK, which does the HTTP, retries
connection errors, timeouts, 429 and 5xx answers with backoff (waiting what a
`Retry-After` asks) and classifies errors; what is ours is reading the API key
from an environment variable at each request (never stored, logged or
cached), a bound on the requests in flight, a persistent sqlite cache of every
successful answer so that rerunning an experiment sends no request, and one
clear `BackendError` line per failure. Log-probabilities are parsed when the
server returns them (`transformers serve` ignores the field, so its
completions have `logprobs=None`).

Example::

    from mechscope.autointerp.http import OpenAIBackend
    backend = OpenAIBackend("https://api.openai.com", "gpt-4o-mini")  # key: $OPENAI_API_KEY
    c = backend.chat([{"role": "user", "content": "Say hi"}], max_tokens=5, logprobs=3)
    c.text, c.logprobs, c.cached
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

from ..core.loading import default_cache_dir
from ..errors import InputError, MechscopeError
from .backends import Completion, Message

_NO_KEY = "no-key"  # what the SDK is given as its key: ours goes in each request's headers
_SDK_FIRST_WAIT_S = 0.5  # the SDK's first retry wait, which `backoff` rescales
_RETRY_AFTER_MAX_S = 60.0  # a server asking for longer gets our backoff instead


class BackendError(MechscopeError):
    """A language-model server refused a request or could not be reached; `status` is the HTTP status.

    Example: ``BackendError("server busy", status=503).status`` → 503.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _root_url(base_url: str) -> str:
    """`base_url` without a trailing slash or `/v1`: `http://h:8000/v1/` -> `http://h:8000`."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise InputError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url


def _server_message(err: openai.APIStatusError) -> str:
    """The server's own words in an error answer (OpenAI's `error.message`, FastAPI's `detail`), on one line."""
    body = err.body  # the SDK's parse: the `error` object, else the JSON, else the text
    if isinstance(body, Mapping):
        body = body.get("message") or body.get("detail") or json.dumps(body)
    text = str(body) if body else err.response.reason_phrase
    return " ".join(text.split())[:500]


class _Client(openai.OpenAI):
    """The SDK's client with its retry waits rescaled so that the first is `backoff` seconds."""

    backoff = _SDK_FIRST_WAIT_S

    def _calculate_retry_timeout(
        self, remaining_retries: int, options: Any, response_headers: Any = None
    ) -> float:
        asked = self._parse_retry_after_header(response_headers)
        if asked is not None and 0 < asked <= _RETRY_AFTER_MAX_S:
            return asked  # the server said how long
        wait = super()._calculate_retry_timeout(remaining_retries, options, None)
        return wait * self.backoff / _SDK_FIRST_WAIT_S


class ResponseCache:
    """Successful server answers in one sqlite file, keyed by a request's sha256; safe across threads.

    Example::

        cache = ResponseCache(Path("cache/responses.sqlite"))
        cache.put("key", {"choices": []})
        cache.get("key")    # {"choices": []}; None for a key never put
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # one connection shared by the pool's threads, serialised by the lock; sqlite's own
        # file locking (with a busy timeout) serialises several processes
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"
            )

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r}, entries={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                (key, json.dumps(response), time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class OpenAIBackend:
    """A model behind an OpenAI-compatible server: `chat` and `chat_many` with retries and a cache.

    `base_url` may end in `/v1` or not. `api_key_env` names the environment
    variable holding the key (read at each request; no `Authorization` header
    when unset or when `api_key_env` is None). `retries` is the SDK's
    `max_retries`, the retries after the first attempt of a connection error,
    a timeout, a 408, 409, 429 or 5xx, each after the server's `Retry-After`
    (up to 60 s) or else `backoff * 2**n` seconds less up to 25% jitter
    (at most `16 * backoff`) before retry `n`. `concurrency` bounds the
    requests in flight, retries included, over `chat_many` and concurrent
    `chat` calls alike. The cache
    (`cache_dir/responses.sqlite`, default `default_cache_dir()/"http"`) is
    keyed by the server, the model and the whole request, so sampled answers
    (`temperature > 0`) are cached too, one per temperature (and `seed`): a
    rerun gets the same sample back; use `cache=False` to draw fresh ones.

    >>> backend = OpenAIBackend("http://127.0.0.1:8000", "my-model")  # doctest: +SKIP
    >>> backend.wait_ready(60)  # doctest: +SKIP
    >>> backend.chat([{"role": "user", "content": "Say hi"}], max_tokens=5).text  # doctest: +SKIP
    'Hello!'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 4,
        seed: int | None = None,
        cache_dir: Path | str | None = None,
        cache: bool = True,
    ) -> None:
        if not model:
            raise InputError("model must name the server's model, got an empty string")
        if timeout <= 0 or retries < 0 or backoff < 0 or concurrency < 1:
            raise InputError(
                "need timeout > 0, retries >= 0, backoff >= 0 and concurrency >= 1; got "
                f"timeout={timeout}, retries={retries}, backoff={backoff}, concurrency={concurrency}"
            )
        self.base_url = _root_url(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.seed = seed
        self.name = f"openai:{model}@{self.base_url}"
        self.cache: ResponseCache | None = None
        if cache:
            folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "http"
            self.cache = ResponseCache(folder.expanduser() / "responses.sqlite")
        self._in_flight = threading.BoundedSemaphore(concurrency)
        self._client = self._new_client()

    def __repr__(self) -> str:
        key = "no key" if self.api_key_env is None else f"key=${self.api_key_env}"
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            key += " (unset)"
        cache = str(self.cache.path) if self.cache is not None else "off"
        return (
            f"OpenAIBackend({self.base_url!r}, model={self.model!r}, {key}, "
            f"timeout={self.timeout}s, retries={self.retries}, concurrency={self.concurrency}, "
            f"cache={cache})"
        )

    # ----- requests -----

    def _new_client(self) -> _Client:
        client = _Client(
            base_url=f"{self.base_url}/v1",
            api_key=_NO_KEY,
            timeout=self.timeout,
            max_retries=self.retries,
        )
        client.backoff = self.backoff
        return client

    def _auth(self) -> dict[str, Any]:
        """This request's `Authorization`: the key in the environment now, else no such header."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return {"Authorization": f"Bearer {key}" if key else openai.Omit()}

    def request_body(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> dict[str, Any]:
        """The JSON body sent for one chat request (also what the cache key is made of)."""
        if not messages:
            raise InputError("messages is empty: give at least one {'role': ..., 'content': ...}")
        if max_tokens < 1 or temperature < 0 or (logprobs is not None and logprobs < 0):
            raise InputError(
                "need max_tokens >= 1, temperature >= 0 and logprobs None or >= 0; got "
                f"max_tokens={max_tokens}, temperature={temperature}, logprobs={logprobs}"
            )
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": int(max_tokens),
            # 0 is greedy on OpenAI and `transformers serve` (which maps it to do_sample=False)
            "temperature": float(temperature),
        }
        if logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = int(logprobs)
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def cache_key(self, body: dict[str, Any]) -> str:
        """sha256 of the server, the model and the request body (sorted keys); never the API key."""
        text = json.dumps(
            {"base_url": self.base_url, "model": self.model, "request": body},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send `body` through the SDK (which retries what may pass); the server's answer as JSON."""
        url = f"{self.base_url}/v1/chat/completions"
        attempts = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        try:
            with self._in_flight:
                answer = self._client.chat.completions.create(**body, extra_headers=self._auth())
        except openai.APIStatusError as err:
            retried = err.response.request.headers.get("x-stainless-retry-count", "0")
            after = f" after {retried} retries" if retried not in ("", "0") else ""
            raise BackendError(
                f"{url} answered {err.status_code} {err.response.reason_phrase}{after}: "
                f"{_server_message(err)}",
                err.status_code,
            ) from None
        except openai.APITimeoutError:
            raise BackendError(f"{url} did not answer within {self.timeout}s, {attempts}") from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise BackendError(
                f"{url} could not be reached, {attempts}: {type(cause).__name__}: {cause}"
            ) from None
        if isinstance(answer, str):  # the SDK hands back a body that is not JSON as text
            raise BackendError(
                f"{url} answered 200 with a body that is not JSON: {answer!r:.200}", 200
            )
        data = answer.to_dict()
        if not data.get("choices"):
            raise BackendError(f"{url} answered 200 without `choices`: {str(data)[:300]}", 200)
        return data

    @staticmethod
    def _completion(answer: dict[str, Any], seconds: float, cached: bool) -> Completion:
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        tops = None
        content = (choice.get("logprobs") or {}).get("content")
        if content:
            tops = []
            for step in content:
                alternatives = step.get("top_logprobs") or [step]  # top_logprobs=0: the token alone
                top: dict[str, float] = {}
                for alt in alternatives:  # best first; two ids may decode to one string
                    top.setdefault(alt["token"], float(alt["logprob"]))
                tops.append(top)
        usage = answer.get("usage") or {}
        return Completion(
            text=message.get("content") or "",
            logprobs=tops,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            cached=cached,
            meta={"finish_reason": choice.get("finish_reason"), "model": answer.get("model")},
        )

    # ----- the Backend protocol -----

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> Completion:
        """One chat completion (greedy when `temperature` is 0), from the cache when it holds it.

        A cached answer comes back with `cached=True` and `seconds` the time of the lookup.
        """
        start = time.perf_counter()
        body = self.request_body(
            messages, max_tokens=max_tokens, temperature=temperature, logprobs=logprobs
        )
        key = self.cache_key(body) if self.cache is not None else ""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return self._completion(hit, time.perf_counter() - start, cached=True)
        answer = self._post(body)
        completion = self._completion(answer, time.perf_counter() - start, cached=False)
        if self.cache is not None:
            self.cache.put(key, answer)
        return completion

    def chat_many(
        self,
        requests: Sequence[Sequence[Message]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        logprobs: int | None = None,
    ) -> list[Completion | Exception]:
        """`chat` for each request, `concurrency` at a time, in request order; errors are returned, not raised."""

        def one(messages: Sequence[Message]) -> Completion | Exception:
            try:
                return self.chat(
                    messages, max_tokens=max_tokens, temperature=temperature, logprobs=logprobs
                )
            except Exception as err:  # one bad request must not sink a batch
                return err

        if not requests:
            return []
        with ThreadPoolExecutor(min(self.concurrency, len(requests))) as pool:
            return list(pool.map(one, requests))

    # ----- helpers -----

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.1) -> None:
        """Poll `/health` (or `/v1/models` where there is none) until it answers 2xx, or raise.

        >>> OpenAIBackend("http://127.0.0.1:8000", "my-model").wait_ready(60)  # doctest: +SKIP
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            options: Any = {"max_retries": 0, "timeout": min(5.0, timeout), "headers": self._auth()}
            for path in ("/health", "/v1/models"):
                try:
                    self._client.get(self.base_url + path, cast_to=object, options=options)
                    return
                except openai.APIStatusError as err:
                    last = f"{path}: {err.status_code} {err.response.reason_phrase}"
                    if err.status_code == 404:
                        continue  # no /health here: ask /v1/models
                except openai.APIConnectionError as err:
                    last = f"{path}: {err.__cause__ or err}"
                break
            if time.monotonic() >= deadline:
                raise BackendError(f"{self.base_url} not ready after {timeout:.0f}s; last: {last}")
            time.sleep(interval)

    def close(self) -> None:
        """Close the cache file and the open connections (the backend still works, uncached, afterwards)."""
        if self.cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self.cache.close()
            self.cache = None
        self._client.close()
        self._client = self._new_client()
