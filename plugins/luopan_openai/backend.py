"""The ``openai`` backend: the official async SDK on an event loop of its own, N workers, one shared limiter.

The kernel is synchronous; :meth:`OpenAIBackend.stream` hands the requests to the loop's thread and yields
each answer the moment it arrives, so the kernel caches as it goes and no worker waits for a batch to
drain. Every attempt (retries included) first takes a slot from the run-wide :class:`RateLimiter`.

Errors: 429, 5xx, timeouts, dropped connections, malformed bodies and empty ``choices`` are retried by
tenacity with exponential backoff and jitter, or after the server's ``Retry-After`` (which also pauses
every other worker). 400 and 422 (e.g. context too long) fail that request at once with the server's
message; 401, 403 and 404 (bad key, no access, unknown model) fail it and every request after it without
sending them, since no retry can fix them.

Until the server has answered once (any HTTP response), connection failures and timeouts are retried for at
most ``unreachable_after`` seconds from the first attempt; then the unit fails with one line naming the URL
(:class:`UnreachableError`), so a wrong ``base_url`` surfaces in half a minute, not after every request's
retries. Once it has answered, a blip is retried as above. While requests wait for a retry, or for a first
answer, :meth:`Backend.status` says so on the console: how many, why (connection refused, timed out, HTTP 503)
and to which host, and when the next try is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import structlog

from luopan.components import Backend
from luopan.deps import require
from luopan.errors import ConfigError, LuopanError
from luopan.secrets import add_secret
from luopan.types import (
    FailedResult,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
)
from luopan_openai.limiter import RateLimiter
from luopan_openai.params import OpenAIParams
from luopan_openai.tokens import estimate_tokens

log = structlog.get_logger("luopan.openai")

#: a probe whose later tokens any working model predicts well: with correct echo logprobs their mean is
#: close to 0; with logprobs shifted by one position (each token scored by the distribution of the next)
#: it is far below.
PROBE = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20"
PROBE_MIN_MEAN = -3.0
_DONE = object()
#: before the first answer, requests waiting this long are reported on the console
SLOW_FIRST_ANSWER_S = 10.0
#: the same kind of status line (numbers aside) is repeated at most this often
STATUS_EVERY_S = 5.0


class RetryableResponse(Exception):
    """A 200 answer that is unusable (no choices, no logprobs where asked): worth another attempt."""


class _Fatal(Exception):
    """No request to this model can succeed (bad key, unknown model): the rest fail without being sent."""


class UnreachableError(LuopanError):
    """The server never answered: every attempt failed to connect or timed out for ``unreachable_after``
    seconds. Raised from :meth:`OpenAIBackend.stream`, so the unit fails with this one line."""


def host_port(url: str) -> str:
    """``host:port`` of a URL (the scheme's default port when it names none); never the credentials."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def public_url(url: str) -> str:
    """The URL without user name, password or query: what error messages may show."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def cause(exc: BaseException, *, timeout: float, connect_timeout: float) -> tuple[str, str]:
    """Why an attempt failed, in a few words, and the preposition before the host: ``("connection refused",
    "to")``, ``("HTTP 503", "from")``. Never anything from the request (headers hold keys)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return (f"HTTP {exc.status_code}" + (" (rate limited)" if exc.status_code == 429 else ""), "from")
    if isinstance(exc, openai.APIConnectionError):
        e: BaseException | None = exc
        for _ in range(12):  # the SDK's error wraps the HTTP library's, which wraps the socket's
            if e is None:
                break
            name = type(e).__name__
            if name == "ConnectTimeout":
                return (f"connect timed out after {connect_timeout:g} s", "to")
            if name in ("ReadTimeout", "WriteTimeout"):
                return (f"no answer within {timeout:g} s", "from")
            if name == "PoolTimeout":
                return ("timed out waiting for a free connection", "to")
            if isinstance(e, ConnectionRefusedError):
                return ("connection refused", "to")
            if isinstance(e, socket.gaierror):
                return ("DNS lookup failed", "for")
            if isinstance(e, ssl.SSLError):
                return ("TLS handshake failed", "with")
            if isinstance(e, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) or name in (
                    "RemoteProtocolError", "ReadError", "WriteError"):
                return ("connection dropped", "by")
            e = e.__cause__ or e.__context__
        if isinstance(exc, openai.APITimeoutError):
            return (f"timed out after {timeout:g} s", "from")
        return ("connection failed", "to")
    if isinstance(exc, RetryableResponse):
        return ("an answer without choices", "from")
    return ("a malformed answer", "from")


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) header of the response behind ``exc``."""
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare for APIs; fall back to backoff
        return None


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (RetryableResponse, openai.APIConnectionError, openai.APIResponseValidationError,
                        ValueError)):  # ValueError: a body that is not JSON
        return not isinstance(exc, _Fatal)
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return False


def _message(exc: BaseException) -> str:
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        msg = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            msg = body["error"].get("message", msg)
        return f"HTTP {exc.status_code}: {(msg or exc.message or '').strip()}"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Truncate at the first stop string: servers honour at most 4 and some none, so the client does it too."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


class OpenAIBackend(Backend):
    """An OpenAI-compatible service. Generation through chat completions (chat models) or completions (base
    models); likelihood through completions with ``echo`` and ``logprobs`` where the server offers them."""

    capabilities = frozenset({"loglikelihood", "generate"})

    @classmethod
    def environment(cls) -> list[str]:
        from luopan_openai.checks import environment

        return environment()

    @classmethod
    def preflight(cls, params: Any) -> list[str]:
        """The SDK, the API key's variable and every ``env:`` header variable; nothing is sent."""
        from luopan_openai.checks import preflight

        return preflight(params)

    #: the limiter's schedule and Retry-After pauses hold for every replica of the run (luopan.limits)
    shares_state = True

    def __init__(self, **params: Any) -> None:
        self.p = OpenAIParams(**params)
        self.chunk_size = self.p.chunk_size
        self.price = self.p.price.model_dump() if self.p.price else None
        self.scope = self.p.rate_limit_scope or f"{self.p.base_url}|{self.p.api_key_env or ''}"
        self.limiter = RateLimiter(self.scope, self.p.rpm, self.p.tpm)
        self.client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fatal: str | None = None
        self._checked_logprobs = False
        self._context_echoes: dict[str, Any] = {}  # context -> future of its own echo (the offsets fallback)
        self.stats = {"sent": 0, "retried": 0, "rate_limited": 0, "failed": 0,
                      "prompt_tokens": 0, "completion_tokens": 0}
        self.host = host_port(self.p.base_url)
        # reachability: whether the server has ever answered (any HTTP response), and when the first attempt
        # of this backend was sent (the "no answer yet" deadline counts from it)
        self._heard = False
        self._first_try: float | None = None
        # what the console shows: requests waiting for a retry (call -> (since, cause, next try)) and attempts in
        # flight (call -> sent at), written on the loop's thread and read on the kernel's under this lock
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[float, str, float]] = {}
        self._inflight: dict[int, float] = {}
        self._call_ids = itertools.count()
        self._shown = self._shown_key = ""
        self._shown_at = self._problem_at = self._polled = 0.0

    # ------------------------------------------------------------ identity and set-up
    def api_for(self, request: Any) -> str:
        if isinstance(request, LoglikelihoodRequest):
            return "completions"
        if self.p.api != "auto":
            return self.p.api
        return "chat" if self.kind == "chat" else "completions"

    def identity(self) -> dict[str, Any]:
        api = self.p.api if self.p.api != "auto" else ("chat" if self.kind == "chat" else "completions")
        return {"backend": "openai", "base_url": self.p.base_url, "model": self.p.model, "api": api, "version": 1}

    def _api_key(self) -> str:
        name = self.p.api_key_env
        if not name:
            return "EMPTY"  # local servers without keys; the SDK insists on some value
        key = os.environ.get(name, "")
        if not key.strip():
            raise ConfigError(
                f"environment variable {name} is not set or empty: the openai backend reads the API key for "
                f"{self.p.base_url} from it (export {name}=..., or set api_key_env: null for a server without keys)"
            )
        add_secret(key.strip())
        return key.strip()

    def _headers(self) -> dict[str, str]:
        headers = {}
        for k, v in self.p.extra_headers.items():
            if v.startswith("env:"):
                name = v[4:]
                value = os.environ.get(name, "")
                if not value:
                    raise ConfigError(f"extra_headers.{k}: environment variable {name} is not set or empty")
                add_secret(value.strip())
                v = value
            headers[k] = v
        return headers

    def load(self) -> None:
        if self.client is not None:
            return
        openai = require("openai", extra="api", component="backend 'openai'")
        require("tenacity", extra="api", component="backend 'openai'")
        key = self._api_key()  # before anything is sent: a missing key is a clear error, not 401s
        headers = self._headers()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="luopan-openai", daemon=True)
        self._thread.start()

        timeout = openai.Timeout(self.p.timeout, connect=min(self.p.connect_timeout, self.p.timeout))

        async def make() -> Any:
            return openai.AsyncOpenAI(api_key=key, base_url=self.p.base_url, timeout=timeout,
                                      max_retries=0, default_headers=headers or None)

        self.client = asyncio.run_coroutine_threadsafe(make(), loop).result()

    def close(self) -> None:
        if self._loop is None:
            return
        loop = self._loop
        try:
            if self.client is not None:
                asyncio.run_coroutine_threadsafe(self.client.close(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = self.client = None
            log.info("api_usage", model=self.p.model, base_url=self.p.base_url, **self.stats)

    def estimate(self, requests: Sequence[Any]) -> dict[str, Any]:
        """Requests, ~prompt tokens, at most this many completion tokens, cost, and minutes at the limits."""
        prompt = completion = 0
        for r in requests:
            if isinstance(r, LoglikelihoodRequest):
                prompt += estimate_tokens(r.context) + estimate_tokens(r.continuation)
                completion += 1
            else:
                texts = [c for _, c in r.messages] if r.messages is not None else [r.prompt or ""]
                prompt += sum(estimate_tokens(t) for t in texts) + 4 * len(texts)
                completion += r.config.max_new_tokens
        est: dict[str, Any] = {"requests": len(requests), "prompt_tokens": prompt, "completion_tokens": completion}
        if self.price:
            est["cost"] = (prompt * self.price["prompt"] + completion * self.price["completion"]) / 1e6
            est["currency"] = self.price["currency"]
        minutes = [len(requests) / self.p.rpm] if self.p.rpm else []
        if self.p.tpm:
            minutes.append((prompt + completion) / self.p.tpm)
        if minutes:
            est["minutes"] = max(minutes)
        return est

    # ------------------------------------------------------------ the kernel's entry points
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._collect("likelihood", requests)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return self._collect("generate", requests)

    def _collect(self, mode: str, requests: Sequence[Any]) -> list[Any]:
        out: list[Any] = [None] * len(requests)
        for i, r in self.stream(mode, requests):
            if isinstance(r, FailedResult):
                raise RuntimeError(r.error)
            out[i] = r
        return out

    def stream(self, mode: str, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not requests:
            return
        self.load()
        assert self._loop is not None
        try:
            if mode == "likelihood" and self.p.logprobs_check and not self._checked_logprobs:
                self._wait(asyncio.run_coroutine_threadsafe(self._check_logprobs(), self._loop))
                self._checked_logprobs = True
            q: queue.SimpleQueue[Any] = queue.SimpleQueue()
            fut = asyncio.run_coroutine_threadsafe(self._run_all(mode, requests, q), self._loop)
            try:
                while True:
                    try:
                        item = q.get(timeout=0.5)
                    except queue.Empty:  # nothing answered for a while: say why, if there is a reason
                        self._report()
                        continue
                    if item is _DONE:
                        break
                    self._report()
                    yield item
                fut.result()
            finally:
                if not fut.done():  # the consumer stopped early (an interruption): stop sending
                    fut.cancel()
        finally:
            self._clear_status()

    def _wait(self, fut: concurrent.futures.Future[Any]) -> Any:
        """The result of work on the loop, reporting on the console meanwhile."""
        try:
            while not fut.done():
                concurrent.futures.wait([fut], timeout=0.5)
                self._report()
        finally:
            if not fut.done():  # an interruption
                fut.cancel()
        return fut.result()

    # ------------------------------------------------------------ what the console shows
    def _status_text(self, now: float) -> str:
        with self._lock:
            waiting = list(self._waiting.values())
            inflight = len(self._inflight)
            heard, first = self._heard, self._first_try
        limit = self.p.unreachable_after
        if waiting:
            n = len(waiting)
            why = max(waiting)[1]  # the latest failure's cause
            next_in = max(0, math.ceil(min(w[2] for w in waiting) - now))
            text = f"retrying {n} request{'s' if n != 1 else ''}: {why}, next try in {next_in} s"
            if not heard and limit is not None and first is not None:
                left = math.ceil(first + limit - now)
                text += (f"; no answer yet, giving up in {left} s" if left > 0
                         else "; no answer yet, giving up at the next failure")
            return text
        if not heard and inflight and first is not None and now - first >= SLOW_FIRST_ANSWER_S:
            age = int(now - first) // 5 * 5
            return (f"no answer yet from {self.host} after {age} s: {inflight} request{'s' if inflight != 1 else ''} "
                    f"waiting (timeout {self.p.timeout:g} s)")
        return ""

    def _report(self) -> None:
        """Show the backend's state through :attr:`status`, on the kernel's thread: a new kind of message at
        once, the same kind with new numbers at most every few seconds, and cleared once all is well for 2 s."""
        now = time.monotonic()
        if now - self._polled < 0.25:
            return
        self._polled = now
        text = self._status_text(now)
        if text:
            self._problem_at = now
        elif now - self._problem_at < 2.0:
            return
        if text == self._shown:
            return
        key = re.sub(r"\d+", "#", text)
        if key == self._shown_key and now - self._shown_at < STATUS_EVERY_S:
            return
        self._shown, self._shown_key, self._shown_at = text, key, now
        self.status(text)

    def _clear_status(self) -> None:
        if self._shown:
            self.status("")
        self._shown = self._shown_key = ""

    async def _run_all(self, mode: str, requests: Sequence[Any], q: queue.SimpleQueue[Any]) -> None:
        try:
            it = iter(enumerate(requests))
            one = self._loglikelihood if mode == "likelihood" else self._generate

            async def worker() -> None:
                for i, r in it:  # one shared iterator: each request is taken by exactly one worker
                    q.put((i, await self._guarded(one, r)))

            tasks = [asyncio.create_task(worker()) for _ in range(min(self.p.max_concurrency, len(requests)))]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:  # a fatal error (or cancellation) stops every worker, none sends on
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        finally:
            q.put(_DONE)

    async def _guarded(self, one: Any, r: Any) -> Any:
        if self._fatal is not None:
            self.stats["failed"] += 1
            return FailedResult(f"not sent: {self._fatal}")
        try:
            return await one(r)
        except asyncio.CancelledError:
            raise
        except (ConfigError, UnreachableError):
            raise
        except _Fatal as exc:
            self.stats["failed"] += 1
            return FailedResult(str(exc))
        except Exception as exc:  # one request's failure; the others go on
            self.stats["failed"] += 1
            return FailedResult(_message(exc))

    # ------------------------------------------------------------ one request, with retries
    async def _call(self, fn: Any, est_tokens: int, check: Any, **kwargs: Any) -> Any:
        import openai
        from tenacity import AsyncRetrying, retry_if_exception, wait_random_exponential

        backoff = wait_random_exponential(multiplier=0.5, max=self.p.retry_max_wait)
        call = next(self._call_ids)
        # the last failure was a connection failure or timeout before the server ever answered: the "no answer
        # yet" deadline bounds those retries, not max_retries
        unanswered = False
        counted = 0

        def stop(state: Any) -> bool:
            nonlocal counted
            if unanswered:
                return False
            counted += 1
            return counted >= self.p.max_retries + 1

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            ra = retry_after(exc) if exc is not None else None
            seconds = min(ra, 600.0) if ra is not None else backoff(state)
            if unanswered and self._first_try is not None and self.p.unreachable_after is not None:
                # the last try falls on the deadline, not after it
                seconds = min(seconds, max(0.1, self._first_try + self.p.unreachable_after - time.monotonic()))
            return seconds

        def before_sleep(state: Any) -> None:
            self.stats["retried"] += 1
            exc = state.outcome.exception()
            seconds = state.next_action.sleep if state.next_action else 0.0
            why, prep = cause(exc, timeout=self.p.timeout, connect_timeout=self.p.connect_timeout)
            now = time.monotonic()
            with self._lock:
                self._waiting[call] = (now, f"{why} {prep} {self.host}", now + seconds)
            log.warning("api_retry", model=self.p.model, attempt=state.attempt_number, error=_message(exc),
                        wait_s=round(seconds, 2))

        def slot_wait(seconds: float) -> None:  # a retry that waits for a rate-limit slot: its real next try
            with self._lock:
                if call in self._waiting:
                    since, why, _ = self._waiting[call]
                    self._waiting[call] = (since, why, time.monotonic() + seconds)

        retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(_retryable),
                                 before_sleep=before_sleep, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    await self.limiter.acquire(est_tokens, slot_wait)
                    self.stats["sent"] += 1
                    sent = time.monotonic()
                    with self._lock:
                        self._waiting.pop(call, None)
                        self._inflight[call] = sent
                        if self._first_try is None:
                            self._first_try = sent
                    unanswered = False
                    try:
                        resp = await fn(**kwargs)
                    except openai.APIConnectionError as exc:  # timeouts too: nothing came back
                        unanswered = not self._heard and self.p.unreachable_after is not None
                        if unanswered:
                            self._raise_if_unreachable(exc)
                        raise
                    except openai.RateLimitError as exc:
                        self._heard = True
                        self.stats["rate_limited"] += 1
                        ra = retry_after(exc)
                        if ra:
                            self.limiter.pause(ra)
                        raise
                    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                        self._heard = True
                        self._fatal = self._fatal or _message(exc)
                        raise _Fatal(_message(exc)) from None
                    except Exception:  # an HTTP error or a malformed body: the server is there
                        self._heard = True
                        raise
                    finally:
                        with self._lock:
                            self._inflight.pop(call, None)
                    self._heard = True
                    check(resp)
                    usage = getattr(resp, "usage", None)
                    if usage is not None:
                        pt, ct = usage.prompt_tokens or 0, usage.completion_tokens or 0
                        self.stats["prompt_tokens"] += pt
                        self.stats["completion_tokens"] += ct
                        self.limiter.correct_tokens(est_tokens, pt + ct)
        finally:
            with self._lock:
                self._waiting.pop(call, None)
                self._inflight.pop(call, None)
        return resp

    def _raise_if_unreachable(self, exc: BaseException) -> None:
        """Once ``unreachable_after`` seconds have passed since the first attempt without any answer, fail with
        one line naming the URL (every worker stops: the unit fails)."""
        first, limit = self._first_try, self.p.unreachable_after
        if first is None or limit is None:
            return
        elapsed = time.monotonic() - first
        if elapsed < limit:
            return
        why, _ = cause(exc, timeout=self.p.timeout, connect_timeout=self.p.connect_timeout)
        slow = why.startswith(("no answer", "timed out"))
        url = public_url(self.p.base_url)
        log.error("api_unreachable", model=self.p.model, base_url=url, error=why, seconds=round(elapsed, 1))
        raise UnreachableError(
            f"cannot reach {url}: {why} (every attempt for {elapsed:.0f} s; no request has been answered); "
            f"check base_url and that the server is running{' (or raise timeout if it is only slow)' if slow else ''}"
        )

    @staticmethod
    def _has_choices(resp: Any) -> None:
        if not getattr(resp, "choices", None):
            raise RetryableResponse("the server answered with no choices")

    @staticmethod
    def _has_logprobs(resp: Any) -> None:
        OpenAIBackend._has_choices(resp)
        lp = resp.choices[0].logprobs
        if lp is None or not getattr(lp, "token_logprobs", None) or not getattr(lp, "text_offset", None):
            raise _NoLogprobs("the server returned no prompt logprobs for echo=True, logprobs=1 on /completions")

    def _sampling(self, cfg: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": self.p.model, "temperature": cfg.temperature, "top_p": cfg.top_p,
                              "max_tokens": cfg.max_new_tokens}
        if cfg.stop:
            kw["stop"] = list(cfg.stop)[:4]  # OpenAI accepts at most 4; the rest are cut client-side
        seed = cfg.seed if cfg.seed is not None else self.p.seed
        if seed is not None:
            kw["seed"] = seed
        return kw

    async def _generate(self, r: GenerationRequest) -> GenerationResult:
        cfg = r.config
        kw = self._sampling(cfg)
        if self.api_for(r) == "chat":
            messages = r.message_dicts() if r.messages is not None else [{"role": "user", "content": r.prompt}]
            est = sum(estimate_tokens(m["content"]) + 4 for m in messages) + cfg.max_new_tokens
            resp = await self._call(self.client.chat.completions.create, est, self._has_choices,
                                    messages=messages, **kw)
            choice = resp.choices[0]
            text = choice.message.content or ""
        else:
            if r.messages is not None:
                raise ConfigError(f"model {self.p.model}: api 'completions' cannot take chat messages; "
                                  "use api: chat (or kind: base for plain prompts)")
            est = estimate_tokens(r.prompt or "") + cfg.max_new_tokens
            resp = await self._call(self.client.completions.create, est, self._has_choices,
                                    prompt=r.prompt or "", **kw)
            choice = resp.choices[0]
            text = choice.text or ""
        usage = resp.usage
        return GenerationResult(cut_at_stop(text, cfg.stop), usage.prompt_tokens if usage else None,
                                usage.completion_tokens if usage else None, choice.finish_reason)

    async def _echo(self, text: str) -> Any:
        try:
            resp = await self._call(self.client.completions.create, estimate_tokens(text) + 1, self._has_logprobs,
                                    model=self.p.model, prompt=text, max_tokens=1, temperature=0.0, echo=True,
                                    logprobs=1)
        except _NoLogprobs as exc:
            raise ConfigError(f"{self.p.base_url} ({self.p.model}): {exc}; likelihood scoring needs them "
                              "(use mode: generate for this model)") from None
        return resp.choices[0], resp.usage

    async def _check_logprobs(self) -> None:
        import openai

        try:
            choice, usage = await self._echo(PROBE)
        except openai.BadRequestError as exc:
            raise ConfigError(f"{self.p.base_url} ({self.p.model}) refuses echo with logprobs on /completions "
                              f"({_message(exc)}); likelihood scoring needs them (use mode: generate)") from None
        lp = choice.logprobs
        n_prompt = _prompt_token_count(lp, usage, len(PROBE))
        values = [v for v in lp.token_logprobs[:n_prompt][n_prompt // 2 :] if v is not None]
        mean = sum(values) / max(1, len(values))
        if mean < PROBE_MIN_MEAN:
            raise ConfigError(
                f"{self.p.base_url} ({self.p.model}): its echo logprobs do not score each token given the tokens "
                f"before it (mean {mean:.1f} on a counting probe; llama-cpp-python's server shifts them by one, its "
                "issue #1983), so likelihood scores would be wrong. Use the llamacpp backend, a vLLM or LMDeploy "
                "server, or logprobs_check: false if you know better"
            )

    async def _loglikelihood(self, r: LoglikelihoodRequest) -> LoglikelihoodResult:
        text = r.context + r.continuation
        choice, usage = await self._echo(text)
        lp = choice.logprobs
        n_prompt = _prompt_token_count(lp, usage, len(text))
        if offsets_usable(lp, text, n_prompt):
            return continuation_logprob(lp, usage, len(r.context), len(text))
        # Offsets that are not character positions in the prompt (vLLM sums the lengths of tokens decoded one
        # by one: a BOS's text and the U+FFFD of each byte piece push them off). Count by tokens instead: the
        # continuation starts where this echo first differs from the echo of the context alone.
        ctx = await self._context_echo(r.context)
        return logprob_after_common_prefix(lp, n_prompt, ctx)

    async def _context_echo(self, context: str) -> tuple[Any, int]:
        """The context's own echo, requested once and shared by all its continuations."""
        fut = self._context_echoes.get(context)
        if fut is None:
            if len(self._context_echoes) > 4096:
                self._context_echoes.clear()
            fut = asyncio.ensure_future(self._echo(context))
            self._context_echoes[context] = fut
        choice, usage = await asyncio.shield(fut)
        return choice.logprobs, _prompt_token_count(choice.logprobs, usage, len(context))


class _NoLogprobs(Exception):
    pass


def _prompt_token_count(lp: Any, usage: Any, text_len: int) -> int:
    """How many of the echoed tokens are the prompt's: usage says so; without it, the offsets."""
    n = len(lp.token_logprobs)
    if usage is not None and usage.prompt_tokens and usage.prompt_tokens <= n:
        return int(usage.prompt_tokens)
    return sum(1 for off in lp.text_offset if off < text_len)


def _plain(token: str) -> bool:
    return bool(token) and "\ufffd" not in token and not token.startswith("bytes:")


def offsets_usable(lp: Any, text: str, n_prompt: int) -> bool:
    """Whether ``text_offset`` holds character positions in the prompt (OpenAI's meaning): never decreasing,
    and every token with plain text found at its offset."""
    offsets, tokens = lp.text_offset, lp.tokens or []
    prev = 0
    for k in range(min(n_prompt, len(offsets))):
        off = offsets[k]
        if off < prev or off > len(text):
            return False
        prev = off
        if k < len(tokens) and _plain(tokens[k]) and not text.startswith(tokens[k], off):
            return False
    return True


def logprob_after_common_prefix(lp: Any, n_prompt: int, ctx: tuple[Any, int]) -> LoglikelihoodResult:
    """Sum the echoed logprobs after the tokens this echo shares with the context's own echo ``ctx``
    (same token text and logprob): the continuation, including a token merged across the boundary."""
    ctx_lp, n_ctx = ctx
    i = 0
    while i < min(n_ctx, n_prompt) and lp.tokens[i] == ctx_lp.tokens[i] and (
        (lp.token_logprobs[i] is None and ctx_lp.token_logprobs[i] is None)
        or (lp.token_logprobs[i] is not None and ctx_lp.token_logprobs[i] is not None
            and abs(lp.token_logprobs[i] - ctx_lp.token_logprobs[i]) <= 1e-3)
    ):
        i += 1
    if i >= n_prompt:
        raise ValueError("no echoed token covers the continuation")
    total, greedy = 0.0, True
    for k in range(i, n_prompt):
        value = lp.token_logprobs[k]
        if value is None:
            raise ValueError("the server gave no logprob for a continuation token (empty context?)")
        total += value
        tops = lp.top_logprobs[k] if lp.top_logprobs and k < len(lp.top_logprobs) else None
        if tops:
            best = max(tops.items(), key=lambda kv: kv[1])
            greedy = greedy and (best[0] == lp.tokens[k] or best[1] <= value + 1e-6)
    return LoglikelihoodResult(total, greedy, n_prompt - i)


def continuation_logprob(lp: Any, usage: Any, context_len: int, text_len: int) -> LoglikelihoodResult:
    """Sum the echoed logprobs of the tokens that cover the continuation ``text[context_len:]``.

    A token that straddles the boundary (context and continuation merged into one token) counts as a
    continuation token, as a tokenizer-agnostic client must. ``is_greedy`` holds when each of those tokens
    was the server's top choice (from ``top_logprobs``).
    """
    n_prompt = _prompt_token_count(lp, usage, text_len)
    offsets = lp.text_offset[:n_prompt]
    total, greedy, n = 0.0, True, 0
    for k in range(len(offsets)):
        end = offsets[k + 1] if k + 1 < len(offsets) else text_len
        if end <= context_len:
            continue
        value = lp.token_logprobs[k]
        if value is None:
            raise ValueError("the server gave no logprob for a continuation token (empty context?)")
        total += value
        n += 1
        tops = lp.top_logprobs[k] if lp.top_logprobs and k < len(lp.top_logprobs) else None
        if tops:
            best = max(tops.items(), key=lambda kv: kv[1])
            greedy = greedy and (best[0] == lp.tokens[k] or best[1] <= value + 1e-6)
    if n == 0:
        raise ValueError("no echoed token covers the continuation")
    return LoglikelihoodResult(total, greedy, n)


def build_limiter(params: OpenAIParams, *, shared: bool = True) -> RateLimiter:
    scope = params.rate_limit_scope or f"{params.base_url}|{params.api_key_env or ''}"
    return RateLimiter(scope, params.rpm, params.tpm, shared=shared)
