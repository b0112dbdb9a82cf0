"""The request cache: content-addressed, crash-safe, shared by every run that uses the same folder.

key = sha256(backend identity, then the request's key parts: prompt or messages, continuation, generation
parameters). Resume is "rerun the same command": answered requests are found by content, so a changed
prompt template or decoding parameter misses exactly the requests it changes, and nothing stale is reused.
Storage is SQLite in WAL mode: every batch is one transaction, so a kill -9 at any moment leaves either the
whole batch or none of it, never a torn record.

A cache that cannot be used is one line naming the file and what to do (a corrupt or foreign file: move it
aside, which reruns everything; a full disk; a read-only folder), never a traceback. An entry that does not
decode as the result its request expects (a damaged or tampered value) is treated as missing, so the request
is asked again, and counted in :attr:`RequestCache.invalid`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from luopan.errors import LuopanError
from luopan.types import (
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Request,
    Result,
    likelihood_of,
    result_from_json,
)

SCHEMA_VERSION = 2

#: the look-up of many sha256 keys in one statement: ?1 the keys as one blob, ?2 their count minus one (a join of
#: the key index with the table's primary key, no bound parameter per key)
_SELECT_BULK = ("WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < ?2) "
                "SELECT r.key, r.value FROM i JOIN responses r ON r.key = substr(?1, i.n * 32 + 1, 32)")

#: whether SQLite's json_each is there for bulk inserts (checked on first use), and the batch size from which
#: they are used
_BULK = True
_BULK_MIN = 64


def _utf8(value: str) -> str:
    """A cached value's JSON text as valid UTF-8: a lone surrogate (only possible inside a JSON string) becomes
    its JSON escape, which decodes back to the same text."""
    try:
        value.encode()
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()


def _json_items(values: bytes) -> list[str]:
    """The elements of a JSON array, each as compact JSON text (what ``json_each`` stores for an array)."""
    import orjson

    return [orjson.dumps(v).decode() for v in orjson.loads(values)]


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _feed(h: Any, part: str) -> None:
    b = part.encode()
    h.update(len(b).to_bytes(8, "little"))  # length-prefixed: no two part lists hash alike
    h.update(b)


def request_keys(identity_json: str, requests: Sequence[Request]) -> list[bytes]:
    """The cache key of each request. Consecutive requests sharing their leading parts (the options of one
    question share its context) hash those parts once."""
    base = hashlib.sha256()
    _feed(base, identity_json)
    keys: list[bytes] = []
    append = keys.append
    last_head: Any = None
    head_hash = base
    for r in requests:
        if type(r) is LoglikelihoodRequest:  # the hot path: tens of thousands per run
            head: Any = r.context
            tail = r.continuation
            if head != last_head:
                head_hash = base.copy()
                _feed(head_hash, "loglikelihood")
                _feed(head_hash, head)
                last_head = head
        else:
            parts = r.key_parts()
            head, tail = parts[:-1], parts[-1]
            if head != last_head:
                head_hash = base.copy()
                for p in head:
                    _feed(head_hash, p)
                last_head = head
        h = head_hash.copy()
        b = tail.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        append(h.digest())
    return keys


class CacheError(LuopanError):
    """The request cache cannot be opened, read or written: the message names the file and what to do."""

    exit_code = 2


def _cause(exc: BaseException) -> str:
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return f"{text}: the disk is full; free some space and rerun the same command (finished work is kept)"
    if "readonly" in low or "read-only" in low:
        return f"{text}: the cache or its folder is read-only; make it writable or set run.cache to another file"
    return text


class RequestCache:
    """Maps request keys to results. ``path=None`` keeps nothing (caching disabled)."""

    def __init__(self, path: str | Path | None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        #: one connection, used by whichever thread executes a unit (runners may run several at once)
        self._lock = threading.RLock()
        #: entries found but unusable (they did not decode as the expected result): asked again
        self.invalid = 0
        #: transactions handed to the writer thread (``put_many(..., background=True)``), not yet waited for
        self._pending: list[Any] = []
        self._writer: Any = None
        self._pending_lock = threading.Lock()
        if self.path is None:
            return
        p = self.path
        if p.is_dir():
            raise CacheError(f"{p}: the request cache must be a file, and this is a folder; set run.cache to a "
                             f"file path (e.g. {p / 'requests.sqlite'}) or true for the default")
        if readonly:  # a dry run: look up, create and write nothing
            if p.exists():
                self._db = self._open(lambda: sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True,
                                                              timeout=60, check_same_thread=False), write=False)
            return
        from luopan.files import ensure_dir

        ensure_dir(p.parent, "cache folder")
        self._db = self._open(lambda: sqlite3.connect(p, timeout=60, isolation_level=None,
                                                            check_same_thread=False), write=True)

    def _open(self, connect: Any, *, write: bool) -> sqlite3.Connection:
        p = self.path
        aside = f"move it aside (mv {p} {p}.bad) and rerun: every request will be asked again"
        try:
            db = connect()
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"responses", "meta"} <= tables:
                db.close()
                raise CacheError(f"{p}: not a luopan request cache (a database with tables {', '.join(sorted(tables))}); "
                                 f"point run.cache at another file, or {aside}")
            if write:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-131072")  # 128 MiB of page cache: lookups are random-access
            db.execute("PRAGMA mmap_size=1073741824")
            if write:
                db.execute("CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value TEXT NOT NULL) "
                           "WITHOUT ROWID")
                db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone() if write or tables else None
            if row is not None and row[0] != str(SCHEMA_VERSION):
                db.close()
                raise CacheError(f"{p}: a request cache of schema {row[0]}, this luopan reads schema "
                                 f"{SCHEMA_VERSION}; {aside}")
            return db
        except sqlite3.DatabaseError as exc:
            low = str(exc).lower()
            if "not a database" in low or "malformed" in low or "corrupt" in low:
                raise CacheError(f"{p}: the request cache is damaged ({exc}); {aside}") from None
            if "unable to open" in low or "readonly" in low:
                raise CacheError(f"{p}: cannot open the request cache ({exc}); check that the file and its "
                                 f"folder are writable, or set run.cache to another file") from None
            raise CacheError(f"{p}: the request cache failed: {_cause(exc)}") from None

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def get_many(self, keys: Sequence[bytes], expect: Sequence[type] | None = None) -> dict[bytes, Result]:
        """The cached results of ``keys``. ``expect`` (one result type per key) drops entries of another type;
        entries that do not decode are dropped too; both are counted in :attr:`invalid`."""
        if self._db is None or not keys:
            return {}
        found: dict[bytes, Result] = {}
        unique = list(dict.fromkeys(keys))
        self.flush()
        with self._lock:
            self._lookup(unique, found)
        if expect is not None:
            for k, t in zip(keys, expect):
                r = found.get(k)
                if r is not None and type(r) is not t:
                    del found[k]
                    self.invalid += 1
        return found

    def _lookup(self, unique: Sequence[bytes], found: dict[bytes, Result]) -> None:
        assert self._db is not None
        try:
            if self._db.execute("SELECT 1 FROM responses LIMIT 1").fetchone() is None:
                return  # a new cache: nothing to look up
            if all(len(k) == 32 for k in unique):  # sha256 keys: one statement per million keys
                for i in range(0, len(unique), 1 << 20):
                    chunk = unique[i : i + (1 << 20)]
                    self._decode(self._db.execute(_SELECT_BULK, (b"".join(chunk), len(chunk) - 1)).fetchall(), found)
                return
            for i in range(0, len(unique), 900):  # SQLite's bound-parameter limit
                chunk = unique[i : i + 900]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk).fetchall()
                self._decode(rows, found)
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"{self.path}: cannot read the request cache: {_cause(exc)}; move it aside "
                             f"(mv {self.path} {self.path}.bad) and rerun: every request will be asked again") from None

    def _decode(self, rows: list[tuple[bytes, Any]], found: dict[bytes, Result]) -> None:
        """Cached values as results (a log-likelihood array decoded inline: tens of thousands per run); a value
        that is not a result is counted in :attr:`invalid` and left out (asked again)."""
        import orjson

        loads = orjson.loads
        for k, v in rows:
            if type(v) is not str:
                self.invalid += 1
                continue
            try:
                r = likelihood_of(loads(v)) if v[:1] == "[" else None
            except orjson.JSONDecodeError:
                r = None
            if r is None:
                try:
                    r = result_from_json(v)
                except ValueError:
                    self.invalid += 1
                    continue
            found[k] = r

    def put_many(self, items: Iterable[tuple[bytes, Result]], *, background: bool = False) -> None:
        """Store ``items`` in one transaction. ``background``: a batch of log-likelihoods (numbers only, one SQLite
        statement that runs without Python's lock) is written by the cache's writer thread while the caller goes
        on; :meth:`flush` waits for it and raises its error. Lookups, :meth:`merge` and :meth:`close` flush
        first, so no reader misses a write."""
        if self._db is None:
            return
        from luopan.secrets import redact_text, secret_values

        items = list(items)
        if not items:
            return
        if _BULK and len(items) >= _BULK_MIN and all(type(v) is LoglikelihoodResult for _, v in items):
            # numbers only (nothing to redact): the whole batch as one JSON array of [logprob, greedy, tokens]
            import orjson

            values = orjson.dumps([[v.logprob, 1 if v.is_greedy else 0, v.n_tokens] for _, v in items])
            if b"null" not in values:  # orjson writes NaN and infinities as null: to_json keeps them
                packed = ([k for k, _ in items], values)
                if background:
                    with self._pending_lock:
                        if self._writer is None:
                            from concurrent.futures import ThreadPoolExecutor

                            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="luopan-cache")
                        self._pending.append(self._writer.submit(self._locked_insert, packed))
                    return
                self.flush()
                self._locked_insert(packed)
                return
        self.flush()
        with self._lock:
            secrets = secret_values()
            rows = [(k, v.to_json()) for k, v in items]
            if secrets:
                rows = [(k, redact_text(j, secrets)) for k, j in rows]
            self._insert(rows)

    def flush(self) -> None:
        """Wait for the writer thread's transactions; raise the first one's error (each failed alone)."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        error: BaseException | None = None
        for f in pending:
            exc = f.exception()
            if exc is not None and error is None:
                error = exc
        if error is not None:
            raise error

    def _locked_insert(self, packed: tuple[list[bytes], bytes]) -> None:
        with self._lock:
            self._insert([], packed)

    def _insert(self, rows: list[tuple[bytes, str]], packed: tuple[list[bytes], bytes] | None = None) -> None:
        """One transaction: ``rows`` (key, value), or ``packed`` (the keys, and their values as one JSON array)."""
        db = self._db
        if db is None:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if packed is not None:
                    if not self._insert_bulk(db, *packed):
                        db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)",
                                       zip(packed[0], _json_items(packed[1])))
                else:
                    import orjson

                    try:
                        values = orjson.dumps([v for _, v in rows]) if len(rows) >= _BULK_MIN else None
                    except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate: executemany says what
                        values = None
                    if values is None or not self._insert_bulk(db, [k for k, _ in rows], values):
                        try:
                            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", rows)
                        except UnicodeEncodeError:  # a lone surrogate in a text (a JSON "\ud800" from an API)
                            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)",
                                           [(k, _utf8(v)) for k, v in rows])
                db.execute("COMMIT")
            except BaseException:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:  # SQLite may have rolled back itself (a full disk): keep the real error
                    pass
                raise
        except sqlite3.Error as exc:
            raise CacheError(f"{self.path}: cannot write to the request cache: {_cause(exc)}") from None

    def _insert_bulk(self, db: sqlite3.Connection, keys: list[bytes], values: bytes) -> bool:
        """Insert many rows in one statement: the keys as one blob, the values as one JSON array that SQLite's
        ``json_each`` unpacks (a string element as its text, an array element as its JSON text), so that no
        Python code runs per row (``executemany`` binds and steps each row from Python: slower by half). False,
        having written nothing, where that does not apply (a key that is not a sha256 digest, a batch too big for
        one value, an SQLite without ``json_each``)."""
        global _BULK
        if not _BULK or len(values) > 1 << 28 or any(len(k) != 32 for k in keys):
            return False
        try:
            db.execute("INSERT OR REPLACE INTO responses SELECT substr(?1, j.key * 32 + 1, 32), j.value "
                       "FROM json_each(?2) AS j", (b"".join(keys), values))
        except sqlite3.OperationalError as exc:
            if "no such" not in str(exc):  # a full disk, a lock: the caller's error
                raise
            _BULK = False  # an SQLite built without JSON functions
            return False
        return True

    def merge(self, other: str | Path) -> int:
        """Copy every entry of another request cache (a worker's, a job array task's) that this one lacks;
        returns how many were new. Entries are copied as stored, in one transaction."""
        if self._db is None:
            return 0
        self.flush()
        src = Path(other)
        if not src.is_file():
            raise CacheError(f"{src}: no such request cache to merge")
        with self._lock:
            db = self._db
            try:
                before = db.total_changes
                db.execute("ATTACH DATABASE ? AS other", (str(src),))
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT OR IGNORE INTO main.responses SELECT key, value FROM other.responses")
                    db.execute("COMMIT")
                finally:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    db.execute("DETACH DATABASE other")
                return db.total_changes - before
            except sqlite3.Error as exc:
                raise CacheError(f"{src}: cannot merge it into the request cache {self.path}: {_cause(exc)}") from None

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            if self._db is None:
                return 0
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None


def expected_types(requests: Sequence[Request]) -> list[type]:
    """The result type each request's cache entry must decode to."""
    from luopan.types import GenerationResult, LoglikelihoodResult

    return [LoglikelihoodResult if type(r) is LoglikelihoodRequest else GenerationResult for r in requests]
