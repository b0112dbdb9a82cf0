"""The one path every request takes: look it up in the cache, ask the backend for what is missing, record.

Single-turn units, later turns of multi-turn samples, peers' outputs, judge calls and repeats all go through
:meth:`RequestResolver.resolve`: results come back in request order, answers are cached as they arrive (a
backend chunk at a time, at most ten commits a second and at least one, so an interruption loses little), failures come back as errors by index
and are never cached. Backends are built once per model and loaded only when a request is not in the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from luopan.cache import RequestCache, canonical_json, expected_types, request_keys
from luopan.components import Backend
from luopan.config import ResolvedModel
from luopan.plugins import Registry
from luopan.progress import Progress
from luopan.scoring import usage_of
from luopan.types import FailedResult, Request

log = structlog.get_logger("luopan")


class ModelPool:
    """The run's backends: built once per model label (cheap: identities are needed at plan time), loaded on
    first use (weights, connections), closed at the end."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._backends: dict[str, Backend] = {}
        self._identity: dict[str, str] = {}
        self._loaded: set[str] = set()
        self._delegates: dict[str, Backend] = {}
        #: set by a runner that answers requests elsewhere (replicas on other processes or machines): called
        #: with a model and its backend as built here (unloaded), returns the backend that answers instead
        self.delegate: Callable[[ResolvedModel, Backend], Backend] | None = None
        self._lock = threading.RLock()  # runners may execute several units at once

    def backend(self, model: ResolvedModel) -> Backend:
        """The model's backend as built in this process: its identity makes the cache keys."""
        b = self._backends.get(model.label)
        if b is None:
            with self._lock:
                b = self._backends.get(model.label)
                if b is None:
                    b = self.registry.get("backend", model.backend).create(model.params)
                    if model.kind:
                        b.kind = model.kind
                    self._backends[model.label] = b
        return b

    def get(self, label: str) -> Backend | None:
        """The backend of ``label`` if it was built."""
        return self._backends.get(label)

    def identity_json(self, model: ResolvedModel) -> str:
        ident = self._identity.get(model.label)
        if ident is None:
            ident = self._identity[model.label] = canonical_json(self.backend(model).identity())
        return ident

    def loaded(self, model: ResolvedModel, status: Any = None) -> Backend:
        """The backend that answers the model's requests: loaded here, or the runner's delegate."""
        b = self.backend(model)
        if status is not None:
            b.status = status
        with self._lock:
            if self.delegate is not None:
                d = self._delegates.get(model.label)
                if d is None:
                    d = self._delegates[model.label] = self.delegate(model, b)
                return d
            if model.label not in self._loaded:
                b.load()
                self._loaded.add(model.label)
        return b

    def close(self) -> None:
        for b in [*self._delegates.values(), *self._backends.values()]:
            try:
                b.close()
            except Exception:  # closing must not hide the run's own outcome
                log.warning("backend_close_failed", exc_info=True)


#: the cache commits a backend's answers at most this often (unless FLUSH_ROWS are waiting) ...
COMMIT_EVERY_S = 0.1
#: ... and at least once a second; a killed run loses the answers of that last moment and the chunk in flight
FLUSH_ROWS = 16_384


class RequestResolver:
    """Answers requests from the cache or a model, recording what the model answers."""

    def __init__(self, cache: RequestCache, models: ModelPool, progress: Progress) -> None:
        self.cache = cache
        self.models = models
        self.progress = progress

    def keys(self, model: ResolvedModel, requests: Sequence[Request]) -> list[bytes]:
        return request_keys(self.models.identity_json(model), requests)

    def lookup(self, keys: Sequence[bytes], requests: Sequence[Request]) -> dict[bytes, Any]:
        if not self.cache.enabled:
            return {}
        return self.cache.get_many(keys, expected_types(requests))

    def resolve(self, model: ResolvedModel, mode: str, requests: Sequence[Request], *, unit_id: str,
                title: str | None = None, keys: Sequence[bytes] | None = None,
                found: dict[bytes, Any] | None = None, always_show: bool = False
                ) -> tuple[list[Any], dict[int, str]]:
        """Results in request order (None where a request failed) and the failed requests' errors by index.
        ``keys`` and ``found`` (the plan's cache look-up) are computed when not given. A progress line is
        shown when something must be asked (always, with ``always_show``)."""
        keys = self.keys(model, requests) if keys is None else keys
        found = self.lookup(keys, requests) if found is None else found
        out: list[Any] = [found.get(k) for k in keys]
        missing = [i for i, o in enumerate(out) if o is None]
        errors: dict[int, str] = {}
        if not missing and not always_show:
            return out, errors
        task = self.progress.add(title or unit_id, total=len(keys), completed=len(keys) - len(missing))
        if missing:
            errors = self._answer(self.models.loaded(model, self.progress.status), mode, requests, keys, missing,
                                  out, task, unit_id)
            self.progress.status("")
        self.progress.finish(task)
        return out, errors

    def _answer(self, backend: Backend, mode: str, requests: Sequence[Request], keys: Sequence[bytes],
                missing: list[int], out: list[Any], task: int, unit_id: str) -> dict[int, str]:
        """Stream the missing requests through the backend, caching answers as they arrive."""
        # a commit per backend chunk, but not more often than every COMMIT_EVERY_S (a commit costs as much as a
        # thousand rows: a fast backend's answers go in a few large transactions) and at least once a second
        flush_n = max(1, int(backend.chunk_size))
        failed: dict[int, str] = {}
        buf: list[tuple[bytes, Any]] = []
        n_done = 0
        last = time.monotonic()

        def flush() -> None:
            nonlocal buf, n_done, last
            if buf:  # written by the cache's writer thread while the work goes on; the unit waits for it at its end
                self.cache.put_many(buf, background=True)
            self.progress.advance(task, n_done, usage=usage_of([o for _, o in buf]))
            buf, n_done, last = [], 0, time.monotonic()

        try:
            for j, result in backend.stream(mode, [requests[i] for i in missing]):
                i = missing[j]
                n_done += 1
                if isinstance(result, FailedResult):
                    failed[i] = result.error
                    log.warning("request_failed", unit=unit_id, request=i, error=result.error)
                else:
                    out[i] = result
                    buf.append((keys[i], result))
                waited = time.monotonic() - last
                if (len(buf) >= flush_n and waited >= COMMIT_EVERY_S) or waited >= 1.0 or len(buf) >= FLUSH_ROWS:
                    flush()
        finally:
            flush()  # an exception or an interruption keeps every answer received so far
        unanswered = [i for i in missing if out[i] is None and i not in failed]
        if unanswered:
            raise RuntimeError(f"backend left {len(unanswered)} of {len(missing)} requests unanswered")
        return failed
