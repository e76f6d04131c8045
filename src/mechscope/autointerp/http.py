"""An OpenAI-compatible chat-completions client, as an autointerp backend.

`OpenAIBackend` talks to any server that speaks OpenAI's
`POST /v1/chat/completions` (OpenAI itself, vLLM, llama.cpp, `transformers
serve`, ...) with the standard library alone. It reads the API key from an
environment variable at call time (never stores, logs or caches it), retries
connection errors, timeouts, 429 and 5xx answers with exponential backoff,
bounds the number of requests in flight, and keeps every successful answer in
a persistent sqlite cache so that rerunning an experiment sends no request.
Log-probabilities are parsed when the server returns them (`transformers
serve` ignores the field, so its completions have `logprobs=None`).

Example::

    from mechscope.autointerp.http import OpenAIBackend
    backend = OpenAIBackend("https://api.openai.com", "gpt-4o-mini")  # key: $OPENAI_API_KEY
    c = backend.chat([{"role": "user", "content": "Say hi"}], max_tokens=5, logprobs=3)
    c.text, c.logprobs, c.cached
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..core.loading import default_cache_dir
from ..errors import InputError, MechscopeError
from .backends import Completion, Message

log = logging.getLogger(__name__)

_RETRY_AFTER_MAX_S = 60.0  # a server asking for longer is treated as asking for this


class BackendError(MechscopeError):
    """A language-model server refused a request or could not be reached; `status` is the HTTP status."""

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


def _server_error_text(body: bytes) -> str:
    """The error message in a server's answer: OpenAI's `error.message`, FastAPI's `detail`, or the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if err:
            return str(err)
        if data.get("detail"):
            return str(data["detail"])
    return text[:500]


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    """Seconds a 429/503 answer asks us to wait (`Retry-After` in seconds), if it says."""
    value = err.headers.get("Retry-After") if err.headers else None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_MAX_S) if value else None
    except ValueError:  # an HTTP date: fall back on our own backoff
        return None


class ResponseCache:
    """Successful server answers in one sqlite file, keyed by a request's sha256; safe across threads."""

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
    when unset or when `api_key_env` is None). `retries` is the number of
    retries after the first attempt, waiting `backoff * 2**n` seconds (plus up
    to 10% jitter) before retry `n`. `concurrency` bounds the requests in
    flight, over `chat_many` and concurrent `chat` calls alike. The cache
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
        self._jitter = random.Random()

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

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

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

    def _post_once(self, url: str, data: bytes) -> dict[str, Any]:
        request = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
        with self._in_flight, urllib.request.urlopen(request, timeout=self.timeout) as response:
            raw = response.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise BackendError(
                f"{url} answered 200 with a body that is not JSON: {raw[:200]!r}", 200
            ) from None
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise BackendError(f"{url} answered 200 without `choices`: {str(answer)[:300]}", 200)
        return answer

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body`, retrying what may pass (connection errors, timeouts, 429, 5xx)."""
        url = f"{self.base_url}/v1/chat/completions"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            wait += self._jitter.uniform(0, 0.1 * wait)
            try:
                return self._post_once(url, data)
            except urllib.error.HTTPError as err:
                text = _server_error_text(err.read() if err.fp else b"")
                if err.code != 429 and err.code < 500:
                    raise BackendError(
                        f"{url} answered {err.code} {err.reason}: {text}", err.code
                    ) from None
                last = f"{err.code} {err.reason}: {text}"
                asked = _retry_after(err)
                wait = wait if asked is None else asked
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = getattr(err, "reason", err)
                last = f"{type(reason).__name__}: {reason}"
            except http.client.HTTPException as err:  # e.g. a connection cut mid-answer
                last = f"{type(err).__name__}: {err}"
            if attempt < self.retries:
                log.info("%s: %s; retry %d/%d in %.2fs", url, last, attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise BackendError(f"{url} failed after {self.retries + 1} attempts; last: {last}")

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
        """Poll `/health` (or `/v1/models` where there is none) until it answers 200, or raise."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            for path in ("/health", "/v1/models"):
                request = urllib.request.Request(self.base_url + path, headers=self._headers())
                try:
                    with urllib.request.urlopen(request, timeout=min(5.0, timeout)) as response:
                        if response.status == 200:
                            return
                except urllib.error.HTTPError as err:
                    last = f"{path}: {err.code} {err.reason}"
                    if err.code == 404:
                        continue  # no /health here: ask /v1/models
                except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                    last = f"{path}: {getattr(err, 'reason', err)}"
                break
            if time.monotonic() >= deadline:
                raise BackendError(f"{self.base_url} not ready after {timeout:.0f}s; last: {last}")
            time.sleep(interval)

    def close(self) -> None:
        """Close the cache file (the backend still works, uncached, afterwards)."""
        if self.cache is not None:
            with contextlib.suppress(sqlite3.Error):
                self.cache.close()
            self.cache = None
