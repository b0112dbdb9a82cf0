"""Requests-per-minute and tokens-per-minute limits shared by every worker of a run, and by every process.

Peers limit per worker process, so N workers send N times the limit (OpenCompass #1418). Here all
workers of all processes that use the same *scope* (by default the service URL and the key's variable)
draw from one schedule kept in a small state file under ``~/.cache/luopan/ratelimit`` (or
``$LUOPAN_STATE_DIR/ratelimit``), read and written under an exclusive ``flock``.

The schedule is the generic cell rate algorithm (GCRA): each request takes the next free slot, slots
``60/rpm`` seconds apart (plus 1% against network jitter), so requests are spread evenly and a provider's sliding window never sees more
than ``rpm`` in any minute. Tokens are a bucket of one minute's capacity (``tpm``): a request costs its
estimated tokens up front, corrected once the usage is known. A ``429`` with ``Retry-After`` pauses every
worker until then (:meth:`RateLimiter.pause`), not just the one that got it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from luopan.limits import shared_state

try:  # POSIX: share the schedule between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: shared within the process only
    fcntl = None  # type: ignore[assignment]

SAFETY = 0.01
_LOCKS: dict[str, threading.Lock] = {}
_MEMORY: dict[str, dict[str, float]] = {}
_GUARD = threading.Lock()


def state_dir() -> Path:
    base = os.environ.get("LUOPAN_STATE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "luopan"
    return root / "ratelimit"


class RateLimiter:
    """A shared schedule for one scope. ``rpm``/``tpm`` of ``None`` mean no limit of that kind.

    ``shared=False`` keeps the schedule in this object only (one limiter per worker: the peers' way, kept
    for benchmarks that show why it exceeds the limit).
    """

    def __init__(self, scope: str, rpm: float | None = None, tpm: float | None = None, *,
                 shared: bool = True, directory: Path | None = None) -> None:
        self.scope = scope
        self.rpm = rpm
        self.tpm = tpm
        # slots 1% wider than 60/rpm: network jitter can bring two requests closer than their slots, and
        # exactly-spaced slots would then put rpm + 1 requests in some provider's sliding minute
        self.req_interval = 60.0 / rpm * (1 + SAFETY) if rpm else 0.0
        self.tok_interval = 60.0 / tpm * (1 + SAFETY) if tpm else 0.0
        digest = hashlib.sha256(scope.encode()).hexdigest()[:24]
        self.path: Path | None = None
        if shared and fcntl is not None:
            d = directory or state_dir()
            d.mkdir(parents=True, exist_ok=True)
            self.path = d / f"{digest}.json"
        key = str(self.path) if self.path else f"{digest}:{id(self) if not shared else 'mem'}"
        #: a runner's state shared by every machine of the run (luopan.limits), used instead of the file
        self.remote = shared_state() if shared else None
        self.remote_key = f"ratelimit:{digest}"
        with _GUARD:
            self._lock = _LOCKS.setdefault(key, threading.Lock())
            self._mem = _MEMORY.setdefault(key, {"req": 0.0, "tok": 0.0, "pause": 0.0})

    #: the wall-clock time of the last slot this object reserved
    last_slot: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.req_interval or self.tok_interval)

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, float]]:
        with self._lock:
            if self.path is None:
                yield self._mem
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.read(fd, 4096)
                try:
                    st: dict[str, Any] = json.loads(raw) if raw else {}
                except ValueError:  # a torn or foreign file: start afresh
                    st = {}
                st = {"req": float(st.get("req", 0.0)), "tok": float(st.get("tok", 0.0)),
                      "pause": float(st.get("pause", 0.0))}
                yield st
                data = json.dumps(st).encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, data)
            finally:
                os.close(fd)  # closing releases the flock

    def _apply(self, fn: Callable[[dict[str, float]], Any]) -> Any:
        """Run ``fn`` on the schedule, atomically for every worker of the scope."""
        if self.remote is not None:
            return self.remote.apply(self.remote_key, functools.partial(_on_state, fn))
        with self._state() as st:
            return fn(st)

    def reserve(self, tokens: int = 0) -> float:
        """Take the next slot for a request of ``tokens`` estimated tokens; returns how long to wait."""
        start, now = self._apply(functools.partial(_reserve, tokens * self.tok_interval, self.req_interval,
                                                   self.tok_interval))
        self.last_slot = start
        return start - now  # the wait, measured on the clock that holds the schedule

    async def acquire(self, tokens: int = 0, on_wait: Callable[[float], None] | None = None) -> None:
        """Wait for a slot. If a pause (a 429's Retry-After) was set meanwhile, take a new slot after it.
        ``on_wait(seconds)`` is told of each wait before it starts (the console's "next try in")."""
        if not self.active and not self._paused_until():
            return
        while True:
            delay = self.reserve(tokens)
            if delay > 0:
                if on_wait is not None:
                    on_wait(delay)
                await asyncio.sleep(delay)
            until = self._paused_until()
            if until <= time.time():
                return

    def _paused_until(self) -> float:
        if self.path is None and self.remote is None:
            return self._mem["pause"]
        return self._apply(_pause_of)

    def pause(self, seconds: float) -> None:
        """Hold every worker of this scope for ``seconds`` (a server's Retry-After)."""
        self._apply(functools.partial(_pause_until, time.time() + seconds))

    def correct_tokens(self, estimated: int, actual: int) -> None:
        """Charge the difference between a request's estimated and actual tokens."""
        if self.tok_interval and actual != estimated:
            self._apply(functools.partial(_charge, (actual - estimated) * self.tok_interval))


# The schedule's updates, as plain functions: a shared state may run them in another process.
def _on_state(fn: Callable[[dict[str, float]], Any], st: dict[str, Any]) -> Any:
    for k in ("req", "tok", "pause"):
        st.setdefault(k, 0.0)
    st["calls"] = st.get("calls", 0) + 1
    return fn(st)


def _reserve(cost: float, req_interval: float, tok_interval: float, st: dict[str, float]) -> tuple[float, float]:
    now = time.time()
    start = max(now, st["pause"])
    if req_interval:
        start = max(start, st["req"])
    if tok_interval:
        # a bucket holding one minute of tokens: conforming once TAT - (60 s - cost) has passed
        start = max(start, st["tok"] - max(0.0, 60.0 - cost))
        st["tok"] = max(st["tok"], start) + cost
    if req_interval:
        st["req"] = start + req_interval
    return start, now


def _pause_of(st: dict[str, float]) -> float:
    return st["pause"]


def _pause_until(until: float, st: dict[str, float]) -> None:
    st["pause"] = max(st["pause"], until)


def _charge(amount: float, st: dict[str, float]) -> None:
    st["tok"] += amount
