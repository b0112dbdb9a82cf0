"""A fault-injecting, rate-limiting OpenAI-compatible HTTP proxy, for tests and benchmarks of API backends.

Test and benchmark tooling, not part of any plugin: a standalone module (standard library and aiohttp only).
Tests import it as ``faultproxy`` (pytest puts ``tools/`` on ``sys.path``); scripts add ``tools/`` to
``sys.path`` themselves.

It listens on 127.0.0.1 only and either forwards every ``/v1/...`` request to an upstream server
(``upstream="http://127.0.0.1:8080"``; an upstream ending in ``/v1`` works too) or answers chat and text
completions itself (``upstream=None``: the built-in *mock*, instant and deterministic: "The answer is B.", the
letter chosen by a hash of the messages or prompt, with an OpenAI-shaped ``usage`` block).

On the way it enforces a sliding-window rate limit (``rpm`` requests and optionally ``tpm`` estimated tokens
per ``window_s`` seconds; a request over the limit gets ``429`` with ``Retry-After`` and is not forwarded),
then injects faults at ``fault_rate`` (seeded), chosen uniformly among the enabled ``faults``:

======================  ==============================================================================
``429``                 status 429, ``Retry-After: <retry_after>`` (and ``retry-after-ms``)
``500``                 status 500, OpenAI-style error body
``stall``               waits ``stall_s`` seconds (longer than the client's timeout), then answers
``malformed``           status 200, ``application/json``, a body that is not valid JSON
``empty``               status 200, a valid completion with ``choices: []``
``drop``                closes the connection without answering
======================  ==============================================================================

Streaming (``"stream": true``) is rejected with 400. Request headers are never logged (they hold API keys).

In-process, async::

    proxy = FaultProxy(upstream=None, rpm=60, fault_rate=0.1)
    url = await proxy.start()          # "http://127.0.0.1:<port>"; OpenAI base_url is proxy.base_url
    ...
    await proxy.stop()

In-process, from synchronous code (the proxy runs its own event loop in a thread)::

    with ProxyThread(upstream=None, faults={"500"}, fault_rate=0.5, seed=1) as p:
        client = openai.OpenAI(base_url=p.base_url, api_key="x", max_retries=0)
        ...
        p.configure(fault_rate=0.0)     # change faults, limits, latency at runtime
        print(p.stats.to_dict())

From the command line (the first stdout line is the URL)::

    python tools/faultproxy.py --upstream http://127.0.0.1:8080 --port 0 --fault-rate 0.2 --rpm 60
    python tools/faultproxy.py --mock --mock-latency 0.05 --faults 429,drop --fault-rate 0.1

Control endpoints (never rate-limited or faulted): ``GET /_proxy/stats``, ``POST /_proxy/reset``
(resets the statistics), ``GET /_proxy/config`` and ``POST /_proxy/config`` with a JSON object of any of
``fault_rate, faults, seed, retry_after, stall_s, rpm, tpm, window_s, mock_latency``.

Order of operations for each ``/v1`` request: counted as received → ``stream: true`` rejected (400) → rate
limiter (rejections are counted and answered 429, nothing more) → accepted (timestamp recorded) → fault injection → forwarded to the upstream or
answered by the mock (``stall`` answers normally after its wait, unless the proxy stops first). Timestamps in
the statistics are ``time.monotonic()``, the system-wide clock, so a benchmark in another process on the same
machine can compare them with its own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

__all__ = ["FAULT_KINDS", "FaultProxy", "ProxyStats", "ProxyThread", "mock_answer", "main"]

log = logging.getLogger("faultproxy")

FAULT_KINDS: tuple[str, ...] = ("429", "500", "stall", "malformed", "empty", "drop")

# Hop-by-hop headers and those aiohttp recomputes; never copied between the two connections.
_SKIP_REQUEST_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                         "accept-encoding", "proxy-authorization", "proxy-connection", "te", "upgrade"}
_SKIP_RESPONSE_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive",
                          "content-encoding", "server", "date", "upgrade"}

_CONFIG_KEYS = ("fault_rate", "faults", "seed", "retry_after", "stall_s", "rpm", "tpm", "window_s",
                "mock_latency")


@dataclasses.dataclass
class ProxyStats:
    """Counters since start (or the last ``reset_stats()``).

    ``received`` counts every ``/v1`` request; ``rate_limited_rpm``/``rate_limited_tpm`` those the limiter
    answered 429 (never forwarded); ``accepted_times`` holds the ``time.monotonic()`` of each request the
    limiter accepted (faulted ones included); ``faults`` counts injected faults by kind; ``forwarded`` counts
    requests passed on to the upstream or answered by the mock; ``upstream_errors`` those whose upstream
    could not be reached (answered 502); ``last_auth_present`` whether the last request carried an
    ``Authorization`` header (never its value).
    """

    received: int = 0
    forwarded: int = 0
    rate_limited_rpm: int = 0
    rate_limited_tpm: int = 0
    upstream_errors: int = 0
    rejected_stream: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    accepted_times: list[float] = dataclasses.field(default_factory=list)
    last_auth_present: bool | None = None

    @property
    def rate_limited(self) -> int:
        """429s from the limiter (requests and tokens)."""
        return self.rate_limited_rpm + self.rate_limited_tpm

    @property
    def accepted(self) -> int:
        return len(self.accepted_times)

    def max_in_window(self, window_s: float = 60.0) -> int:
        """The largest number of accepted requests inside any window of ``window_s`` seconds."""
        times = sorted(self.accepted_times)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def achieved_rpm(self) -> float:
        """Accepted requests per minute between the first and the last accepted request (0 if fewer than 2)."""
        if len(self.accepted_times) < 2:
            return 0.0
        span = max(self.accepted_times) - min(self.accepted_times)
        return 0.0 if span <= 0 else (len(self.accepted_times) - 1) * 60.0 / span

    def copy(self) -> ProxyStats:
        return dataclasses.replace(self, faults=dict(self.faults), accepted_times=list(self.accepted_times))

    def to_dict(self, window_s: float = 60.0) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rate_limited"] = self.rate_limited
        d["accepted"] = self.accepted
        d["max_in_window"] = self.max_in_window(window_s)
        d["window_s"] = window_s
        d["achieved_rpm"] = self.achieved_rpm()
        return d


class _SlidingWindow:
    """Events with weights inside the last ``window_s`` seconds."""

    def __init__(self) -> None:
        self.events: collections.deque[tuple[float, float]] = collections.deque()
        self.total = 0.0

    def prune(self, now: float, window_s: float) -> None:
        while self.events and self.events[0][0] <= now - window_s:
            self.total -= self.events.popleft()[1]

    def wait_for(self, now: float, window_s: float, limit: float, weight: float) -> float:
        """Seconds until ``weight`` more fits under ``limit`` (0 if it fits now); call ``prune`` first."""
        if self.total + weight <= limit:
            return 0.0
        excess = self.total + weight - limit
        for t, w in self.events:
            excess -= w
            if excess <= 0:
                return max(t + window_s - now, 0.0)
        return window_s

    def add(self, now: float, weight: float) -> None:
        self.events.append((now, weight))
        self.total += weight

    def clear(self) -> None:
        self.events.clear()
        self.total = 0.0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _prompt_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("messages"), list):
        return "".join(_text_of(m.get("content")) for m in body["messages"] if isinstance(m, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def _estimate_tokens(body: dict[str, Any]) -> int:
    """Prompt characters / 4 plus ``max_tokens`` (or ``max_completion_tokens``)."""
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    if not isinstance(max_tokens, int):
        max_tokens = 0
    return math.ceil(len(_prompt_text(body)) / 4) + max_tokens


def _digest(body: dict[str, Any]) -> bytes:
    key = body["messages"] if isinstance(body.get("messages"), list) else body.get("prompt", "")
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).digest()


def mock_answer(body: dict[str, Any]) -> str:
    """The mock's answer to a request body: ``"The answer is X."``, X in A-D chosen by a hash of the
    messages (chat) or the prompt (completions)."""
    return f"The answer is {'ABCD'[_digest(body)[0] % 4]}."


def _mock_completion(body: dict[str, Any], *, chat: bool, default_model: str) -> dict[str, Any]:
    text = mock_answer(body)
    finish = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0 and math.ceil(len(text) / 4) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    n = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1
    prompt_tokens = max(1, math.ceil(len(_prompt_text(body)) / 4))
    completion_tokens = max(1, math.ceil(len(text) / 4)) * n
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None, "finish_reason": finish} for i in range(n)]
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i in range(n)]
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + _digest(body).hex()[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model") if isinstance(body.get("model"), str) else default_model,
        "system_fingerprint": "fp_faultproxy",
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _error(status: int, message: str, type_: str, code: str | None = None, *,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": type_, "param": None, "code": code}},
                             status=status, headers=headers)


def _retry_after_headers(seconds: float) -> dict[str, str]:
    seconds = max(seconds, 0.0)
    value = str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
    return {"Retry-After": value, "retry-after-ms": str(int(round(seconds * 1000)))}


class FaultProxy:
    """The proxy, on the caller's event loop: ``url = await proxy.start()`` ... ``await proxy.stop()``.

    Parameters (all but ``upstream``/``port`` can be changed at runtime, as attributes, with
    ``configure(...)`` or ``POST /_proxy/config``):

    - ``upstream``: base URL to forward to, or ``None`` for the built-in mock.
    - ``port``: port on 127.0.0.1; 0 picks a free one (see ``port``/``url`` after ``start()``).
    - ``fault_rate``: probability in [0, 1] that an accepted request gets a fault.
    - ``faults``: the enabled fault kinds, a subset of ``FAULT_KINDS`` (default: all).
    - ``seed``: seed of the ``random.Random`` that decides faults.
    - ``retry_after``: seconds in the ``Retry-After`` header of injected 429s.
    - ``stall_s``: how long a ``stall`` waits before answering.
    - ``rpm``/``tpm``: requests / estimated tokens (prompt chars / 4 + max_tokens) accepted per window;
      ``None`` for no limit. ``window_s``: the sliding window, 60 s by default.
    - ``mock_latency``: seconds the mock sleeps before each answer. ``mock_model``: the model name it reports
      when the request names none.
    - ``upstream_timeout``: total seconds for one upstream request.
    """

    def __init__(
        self,
        upstream: str | None = None,
        *,
        port: int = 0,
        fault_rate: float = 0.0,
        faults: Iterable[str] | None = None,
        seed: int | None = 0,
        retry_after: float = 1.0,
        stall_s: float = 30.0,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = 60.0,
        mock_latency: float = 0.0,
        mock_model: str = "mock-model",
        upstream_timeout: float = 600.0,
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.host = "127.0.0.1"
        self.port = port
        self.mock_model = mock_model
        self.upstream_timeout = upstream_timeout
        self.fault_rate = 0.0
        self.faults: frozenset[str] = frozenset(FAULT_KINDS)
        self.retry_after = retry_after
        self.stall_s = stall_s
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self.mock_latency = mock_latency
        self.seed = seed
        self._rng = random.Random(seed)
        self.configure(fault_rate=fault_rate, faults=FAULT_KINDS if faults is None else faults)
        self.stats = ProxyStats()
        self._requests = _SlidingWindow()
        self._tokens = _SlidingWindow()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._closing: asyncio.Event | None = None

    # -- configuration ------------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change any of ``fault_rate, faults, seed, retry_after, stall_s, rpm, tpm, window_s,
        mock_latency``; returns the resulting configuration. Raises ``ValueError`` on a bad value (nothing
        is changed then)."""
        unknown = set(changes) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {list(_CONFIG_KEYS)}")
        new = self.config() | changes
        rate = float(new["fault_rate"])
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {rate}")
        faults = new["faults"]
        if isinstance(faults, str):
            faults = [f for f in faults.split(",") if f]
        faults = frozenset(str(f) for f in faults)
        if faults - set(FAULT_KINDS):
            raise ValueError(f"unknown fault kind(s) {sorted(faults - set(FAULT_KINDS))}; known: {list(FAULT_KINDS)}")
        for key in ("rpm", "tpm"):
            if new[key] is not None and (not isinstance(new[key], int) or new[key] < 1):
                raise ValueError(f"{key} must be a positive integer or null, got {new[key]!r}")
        for key in ("retry_after", "stall_s", "window_s", "mock_latency"):
            if not isinstance(new[key], int | float) or new[key] < 0 or (key == "window_s" and new[key] == 0):
                raise ValueError(f"{key} must be a non-negative number, got {new[key]!r}")
        self.fault_rate, self.faults = rate, faults
        for key in ("retry_after", "stall_s", "rpm", "tpm", "window_s", "mock_latency"):
            setattr(self, key, new[key])
        if "seed" in changes:
            self.seed = changes["seed"]
            self._rng.seed(self.seed)
        return self.config()

    def config(self) -> dict[str, Any]:
        return {"fault_rate": self.fault_rate, "faults": sorted(self.faults), "seed": self.seed,
                "retry_after": self.retry_after, "stall_s": self.stall_s, "rpm": self.rpm, "tpm": self.tpm,
                "window_s": self.window_s, "mock_latency": self.mock_latency}

    def reset_stats(self) -> None:
        """Zero the counters and timestamps (the limiter's window is kept)."""
        self.stats = ProxyStats()

    # -- life cycle ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (after ``start()``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI SDK's ``base_url``: ``url + "/v1"``."""
        return self.url + "/v1"

    async def start(self) -> str:
        """Start listening; returns ``url``."""
        if self._runner is not None:
            raise RuntimeError("proxy already started")
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/_proxy/stats", self._handle_stats)
        app.router.add_post("/_proxy/reset", self._handle_reset)
        app.router.add_get("/_proxy/config", self._handle_get_config)
        app.router.add_post("/_proxy/config", self._handle_config)
        app.router.add_route("*", "/v1/{tail:.*}", self._handle_v1)
        # No access log (nothing about requests beyond our own debug lines); a client that goes away
        # cancels its handler, so stalls and drops end with their connection.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]  # the bound port, when port=0
        if self.upstream is not None:
            self._session = ClientSession(timeout=ClientTimeout(total=self.upstream_timeout),
                                          auto_decompress=True)
        log.info("faultproxy listening on %s (%s)", self.url,
                 f"upstream {self.upstream}" if self.upstream else "mock upstream")
        return self.url

    async def stop(self) -> None:
        """Stop listening; stalled requests are dropped."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control endpoints --------------------------------------------------------------------------------

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict(self.window_s))

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config())

    async def _handle_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            return web.json_response(self.configure(**changes))
        except (ValueError, TypeError) as exc:
            return _error(400, f"bad config: {exc}", "invalid_request_error")

    # -- the /v1 path -------------------------------------------------------------------------------------

    def _limit(self, body: dict[str, Any]) -> web.Response | None:
        """Apply the limiter; None when accepted (and recorded)."""
        now = time.monotonic()
        window = float(self.window_s)
        tokens = _estimate_tokens(body)
        self._requests.prune(now, window)
        self._tokens.prune(now, window)
        if self.rpm is not None:
            wait = self._requests.wait_for(now, window, self.rpm, 1)
            if wait > 0:
                self.stats.rate_limited_rpm += 1
                headers = _retry_after_headers(max(1, math.ceil(wait)))
                headers |= {"x-ratelimit-limit-requests": str(self.rpm), "x-ratelimit-remaining-requests": "0",
                            "x-faultproxy-limit": "rpm"}
                return _error(429, f"Rate limit reached: {self.rpm} requests per {window:g} s. "
                              f"Please try again in {wait:.3f}s.", "requests", "rate_limit_exceeded",
                              headers=headers)
        if self.tpm is not None:
            if tokens > self.tpm:
                self.stats.rate_limited_tpm += 1
                return _error(429, f"Request too large: about {tokens} tokens, limit {self.tpm} tokens per "
                              f"{window:g} s.", "tokens", "rate_limit_exceeded",
                              headers={"x-faultproxy-limit": "tpm"})
            wait = self._tokens.wait_for(now, window, self.tpm, tokens)
            if wait > 0:
                self.stats.rate_limited_tpm += 1
                headers = _retry_after_headers(max(1, math.ceil(wait)))
                headers |= {"x-ratelimit-limit-tokens": str(self.tpm), "x-faultproxy-limit": "tpm"}
                return _error(429, f"Rate limit reached: {self.tpm} tokens per {window:g} s. "
                              f"Please try again in {wait:.3f}s.", "tokens", "rate_limit_exceeded",
                              headers=headers)
        self._requests.add(now, 1)
        self._tokens.add(now, tokens)
        self.stats.accepted_times.append(now)
        return None

    async def _handle_v1(self, request: web.Request) -> web.StreamResponse:
        self.stats.received += 1
        self.stats.last_auth_present = "Authorization" in request.headers
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        fields = body if isinstance(body, dict) else {}
        if fields.get("stream") is True:
            self.stats.rejected_stream += 1
            return _error(400, "faultproxy does not support streaming; send stream: false",
                          "invalid_request_error", "stream_not_supported")
        limited = self._limit(fields)
        if limited is not None:
            log.debug("%s %s: rate limited", request.method, request.path)
            return limited
        kind = None
        if self.fault_rate > 0 and self.faults and self._rng.random() < self.fault_rate:
            kind = self._rng.choice(sorted(self.faults))
            self.stats.faults[kind] += 1
        log.debug("%s %s: %s", request.method, request.path, f"fault {kind}" if kind else "pass")
        if kind == "stall":
            assert self._closing is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.stall_s)
            if self._closing.is_set():
                return await self._drop(request)
        elif kind is not None:
            return await self._fault(kind, request, fields)
        self.stats.forwarded += 1
        if self.upstream is None:
            return await self._mock(request, body)
        return await self._forward(request, raw)

    async def _fault(self, kind: str, request: web.Request, fields: dict[str, Any]) -> web.StreamResponse:
        tag = {"x-faultproxy-fault": kind}
        if kind == "429":
            return _error(429, "Rate limit reached (injected fault).", "requests", "rate_limit_exceeded",
                          headers=_retry_after_headers(self.retry_after) | tag)
        if kind == "500":
            return _error(500, "The server had an error while processing your request (injected fault).",
                          "server_error", headers=tag)
        if kind == "drop":
            return await self._drop(request)
        chat = request.path.rstrip("/").endswith("chat/completions")
        completion = _mock_completion(fields, chat=chat, default_model=self.mock_model)
        if kind == "empty":
            completion["choices"] = []
            return web.json_response(completion, headers=tag)
        text = json.dumps(completion)  # malformed: a truncated JSON document
        return web.Response(text=text[: len(text) // 2], content_type="application/json", headers=tag)

    async def _drop(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()  # reset without an answer; connection_lost then cancels this handler
        await asyncio.sleep(5)
        raise ConnectionResetError("faultproxy dropped the connection")

    async def _mock(self, request: web.Request, body: Any) -> web.Response:
        if self.mock_latency > 0:
            await asyncio.sleep(self.mock_latency)
        path = request.path.rstrip("/")
        if path == "/v1/models" and request.method == "GET":
            return web.json_response({"object": "list", "data": [
                {"id": self.mock_model, "object": "model", "created": 0, "owned_by": "faultproxy"}]})
        if path in ("/v1/chat/completions", "/v1/completions") and request.method == "POST":
            chat = path.endswith("chat/completions")
            if not isinstance(body, dict) or ("messages" if chat else "prompt") not in body:
                return _error(400, f"expected a JSON object with '{'messages' if chat else 'prompt'}'",
                              "invalid_request_error")
            return web.json_response(_mock_completion(body, chat=chat, default_model=self.mock_model))
        return _error(404, f"mock upstream has no {request.method} {request.path}", "invalid_request_error",
                      "unknown_url")

    async def _forward(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        assert self.upstream is not None and self._session is not None
        path_qs = request.path_qs
        target = self.upstream + (path_qs[3:] if self.upstream.endswith("/v1") else path_qs)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST_HEADERS}
        try:
            async with self._session.request(request.method, target, data=raw or None, headers=headers,
                                             allow_redirects=False) as upstream:
                data = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items()
                               if k.lower() not in _SKIP_RESPONSE_HEADERS}
                return web.Response(body=data, status=upstream.status, headers=out_headers)
        except (ClientError, asyncio.TimeoutError, OSError) as exc:
            self.stats.upstream_errors += 1
            log.warning("upstream %s %s failed: %s", request.method, request.path, type(exc).__name__)
            return _error(502, f"faultproxy could not reach the upstream: {type(exc).__name__}",
                          "upstream_error")


class ProxyThread:
    """A ``FaultProxy`` on its own event loop in a daemon thread, for synchronous code and tests.

    Takes ``FaultProxy``'s parameters. ``start()`` returns once it listens (or raises what ``start`` raised);
    ``stop()`` shuts it down; also a context manager. ``url``/``base_url``/``port`` as on ``FaultProxy``;
    ``stats`` is a snapshot copy; ``configure(...)`` and ``reset_stats()`` run on the proxy's loop.
    """

    def __init__(self, upstream: str | None = None, **kwargs: Any) -> None:
        self.proxy = FaultProxy(upstream, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def base_url(self) -> str:
        return self.proxy.base_url

    @property
    def port(self) -> int:
        return self.proxy.port

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._loop is None:
            return fn(*args, **kwargs)

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    @property
    def stats(self) -> ProxyStats:
        return self._call(self.proxy.stats.copy)

    def reset_stats(self) -> None:
        self._call(self.proxy.reset_stats)

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._call(self.proxy.configure, **changes)

    def start(self) -> str:
        if self._thread is not None:
            raise RuntimeError("proxy thread already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.proxy.start())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=f"faultproxy-{id(self):x}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread
        return self.url

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.stop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._loop = self._thread = None

    def __enter__(self) -> ProxyThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/faultproxy.py",
        description="Fault-injecting, rate-limiting OpenAI-compatible proxy on 127.0.0.1. "
                    "Prints its URL on the first stdout line.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--upstream", help="base URL to forward /v1 requests to, e.g. http://127.0.0.1:8080")
    src.add_argument("--mock", action="store_true", help="answer completions with the built-in mock")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per accepted request")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help=f"comma-separated fault kinds (default: all of {','.join(FAULT_KINDS)})")
    p.add_argument("--seed", type=int, default=0, help="seed for fault decisions")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds of injected 429s")
    p.add_argument("--stall-s", type=float, default=30.0, help="seconds a stall waits before answering")
    p.add_argument("--rpm", type=int, default=None, help="requests accepted per window (default: no limit)")
    p.add_argument("--tpm", type=int, default=None,
                   help="estimated tokens (prompt chars/4 + max_tokens) accepted per window")
    p.add_argument("--window-s", type=float, default=60.0, help="the rate limiter's sliding window")
    p.add_argument("--mock-latency", type=float, default=0.0, help="seconds the mock waits per request")
    p.add_argument("--mock-model", default="mock-model", help="model name the mock reports by default")
    p.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds per upstream request")
    p.add_argument("--log-level", default="WARNING", help="logging level on stderr (DEBUG: one line a request)")
    return p


async def _serve(args: argparse.Namespace) -> None:
    proxy = FaultProxy(
        None if args.mock else args.upstream, port=args.port, fault_rate=args.fault_rate,
        faults=[f for f in args.faults.split(",") if f], seed=args.seed, retry_after=args.retry_after,
        stall_s=args.stall_s, rpm=args.rpm, tpm=args.tpm, window_s=args.window_s,
        mock_latency=args.mock_latency, mock_model=args.mock_model, upstream_timeout=args.upstream_timeout)
    url = await proxy.start()
    print(url, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await proxy.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
